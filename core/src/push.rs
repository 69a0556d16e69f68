//! Push events from git hosts, reduced to what starts a pipeline: the ref pushed, the
//! commit it now points at, whether it was deleted, and who pushed. GitLab sends
//! `ref`/`after`/`checkout_sha`/`user_username`; GitHub, Gitea and Forgejo send
//! `ref`/`after`/`deleted`/`pusher.name` (a bare repository's post-receive hook can send
//! either shape).

use serde::Deserialize;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The branch or tag name (`main`, `v1.2`), without `refs/heads/` or `refs/tags/`.
    pub git_ref: String,
    pub is_tag: bool,
    /// The commit the ref points at now; None when the push deleted the ref.
    pub sha: Option<String>,
    /// Who pushed, as the host names them.
    pub pusher: Option<String>,
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    checkout_sha: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    pusher: Option<Pusher>,
}

#[derive(Deserialize)]
struct Pusher {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// Reads a push event body; an error says what is wrong with it.
pub fn parse_push(body: &[u8]) -> Result<Push, String> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| format!("not a push event: {e}"))?;
    let (git_ref, is_tag) = if let Some(branch) = p.git_ref.strip_prefix("refs/heads/") {
        (branch.to_string(), false)
    } else if let Some(tag) = p.git_ref.strip_prefix("refs/tags/") {
        (tag.to_string(), true)
    } else {
        return Err(format!("`ref` must be refs/heads/… or refs/tags/…, not `{}`", p.git_ref));
    };
    let after = p.checkout_sha.filter(|s| !s.is_empty()).or(p.after);
    let deleted = p.deleted == Some(true) || after.as_deref().is_none_or(|a| a == ZERO_SHA);
    let sha = match (deleted, after) {
        (true, _) | (false, None) => None,
        (false, Some(a)) if a.len() == 40 && a.bytes().all(|b| b.is_ascii_hexdigit()) => Some(a.to_ascii_lowercase()),
        (false, Some(a)) => return Err(format!("`after` is not a commit id: `{a}`")),
    };
    let pusher = p
        .user_username
        .or(p.user_name)
        .or_else(|| p.pusher.and_then(|u| u.username.or(u.name)));
    Ok(Push {
        git_ref,
        is_tag,
        sha,
        pusher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "95790bf891e76fee5e1747ab589903a6a1f80f22";

    #[test]
    fn gitlab_push() {
        let body = format!(
            r#"{{"object_kind":"push","ref":"refs/heads/main","before":"{ZERO_SHA}","after":"{SHA}","checkout_sha":"{SHA}","user_username":"jsmith"}}"#
        );
        let push = parse_push(body.as_bytes()).unwrap();
        assert_eq!(
            push,
            Push {
                git_ref: "main".into(),
                is_tag: false,
                sha: Some(SHA.into()),
                pusher: Some("jsmith".into())
            }
        );
    }

    #[test]
    fn github_tag_push_and_deletion() {
        let body = format!(r#"{{"ref":"refs/tags/v1.0","after":"{SHA}","deleted":false,"pusher":{{"name":"octocat"}}}}"#);
        let push = parse_push(body.as_bytes()).unwrap();
        assert_eq!(
            (push.git_ref.as_str(), push.is_tag, push.pusher.as_deref()),
            ("v1.0", true, Some("octocat"))
        );
        let gone = format!(r#"{{"ref":"refs/heads/old","after":"{ZERO_SHA}","deleted":true}}"#);
        assert_eq!(parse_push(gone.as_bytes()).unwrap().sha, None);
    }

    #[test]
    fn bad_events_are_refused() {
        assert!(parse_push(b"{").is_err());
        assert!(parse_push(br#"{"ref":"main","after":"x"}"#).is_err());
        assert!(parse_push(br#"{"ref":"refs/heads/a","after":"not-a-sha"}"#).is_err());
    }
}
