//! Repository URLs: what `git clone` accepts (a path, `file://`, `http(s)://`, `ssh://`,
//! `git://`, or scp-like `user@host:path`), and the credentials an HTTPS URL may carry
//! (`https://user:token@host/repo.git`). Credentials are split off when a project is
//! stored: the URL kept and shown everywhere has none, and git gets them through its
//! askpass mechanism, never on a command line or in a message.

/// Username and password (or token) for an HTTP(S) repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoCredentials {
    pub username: String,
    pub password: String,
}

/// A repository URL without credentials, and the credentials it carried.
pub fn split_credentials(url: &str) -> Result<(String, Option<RepoCredentials>), String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("the repository URL is empty".into());
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_control()) {
        return Err("the repository URL cannot start with `-` or contain control characters".into());
    }
    if url.len() > 2048 {
        return Err("the repository URL has at most 2048 characters".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        // A path, or scp-like `user@host:path` (its user is not a secret).
        if url.contains("::") {
            return Err("remote helpers (`transport::address`) are not accepted".into());
        }
        return Ok((url.to_string(), None));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !["http", "https", "ssh", "git", "file"].contains(&scheme.as_str()) {
        return Err(format!(
            "`{scheme}://` repositories are not supported (use https, ssh, git, file or a path)"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok((format!("{scheme}://{rest}"), None));
    };
    if scheme == "ssh" || scheme == "git" || scheme == "file" {
        // An ssh user name is not a secret; a password in an ssh URL is not supported.
        if userinfo.contains(':') {
            return Err("put SSH credentials in the project's SSH key, not in the URL".into());
        }
        return Ok((format!("{scheme}://{rest}"), None));
    }
    let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = RepoCredentials {
        username: crate::url::percent_decode(username),
        password: crate::url::percent_decode(password),
    };
    Ok((format!("{scheme}://{host}{path}"), Some(credentials)))
}

/// The first `len` characters of a commit id (GitLab's short sha is 8).
pub fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(8)]
}

/// The CI files looked for at a commit, in order.
pub const CI_FILES: [&str; 2] = [".usher-ci.yml", ".gitlab-ci.yml"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_credentials_are_split_off() {
        let (url, creds) = split_credentials("https://ci-bot:glpat-s3cr%40t@git.example.com/group/app.git").unwrap();
        assert_eq!(url, "https://git.example.com/group/app.git");
        assert_eq!(
            creds,
            Some(RepoCredentials {
                username: "ci-bot".into(),
                password: "glpat-s3cr@t".into()
            })
        );
        let (url, creds) = split_credentials("https://oauth2@host/x").unwrap();
        assert_eq!((url.as_str(), creds.unwrap().password.as_str()), ("https://host/x", ""));
    }

    #[test]
    fn other_urls_pass_unchanged() {
        for ok in [
            "/srv/git/app.git",
            "file:///srv/app.git",
            "git@github.com:me/app.git",
            "ssh://git@host:22/app.git",
            "git://127.0.0.1:9418/app.git",
            "https://host/app.git",
        ] {
            assert_eq!(split_credentials(ok).unwrap(), (ok.to_string(), None), "{ok}");
        }
    }

    #[test]
    fn dangerous_urls_are_refused() {
        for bad in [
            "",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "ftp://host/x",
            "ssh://u:p@host/x",
            "a\nb",
        ] {
            assert!(split_credentials(bad).is_err(), "{bad:?}");
        }
    }
}
