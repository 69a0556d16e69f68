//! Caches (`cache:`): files a job keeps on its runner's host for later jobs of the same
//! project — the downloaded dependencies, a compiler cache. GitLab's keywords: `key`
//! (with `$VARIABLES`, expanded with the job's own variables when it is assigned),
//! `paths`, `policy` (`pull`, `push`, `pull-push`) and `when`. The runner keeps one copy
//! per project and key; a cache is a speed-up, never a promise, so a job must run just
//! as well on a runner that has none.

use serde::{Deserialize, Serialize};

pub use crate::config::CachePolicy;
use crate::config::{ArtifactsWhen, CacheConfig};

/// A cache as the runner gets it: its key, expanded and scoped to the project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheAssignment {
    /// `<project id>/<expanded key>`: projects never share a cache.
    pub key: String,
    pub paths: Vec<String>,
    pub policy: CachePolicy,
    pub when: ArtifactsWhen,
    /// Also every file of the build directory the checked-out commit does not have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
}

/// The longest key, in bytes, after expansion.
pub const MAX_KEY_BYTES: usize = 255;

/// `config`'s cache for a job of `project_id` whose variables are `variables` (later
/// ones win): `$NAME` and `${NAME}` replaced by their values (an unset one by nothing,
/// as GitLab does when a job runs), cut to [`MAX_KEY_BYTES`]; an empty key is `default`.
pub fn assign(project_id: i64, config: &CacheConfig, variables: &[(String, String)]) -> CacheAssignment {
    let mut key = crate::variables::expand(&config.key, variables, crate::variables::Unset::Empty);
    if key.trim().is_empty() {
        key = "default".into();
    }
    let mut cut = key.len().min(MAX_KEY_BYTES);
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    key.truncate(cut);
    CacheAssignment {
        key: format!("{project_id}/{key}"),
        paths: config.paths.clone(),
        policy: config.policy,
        when: config.when,
        untracked: config.untracked,
    }
}

/// GitLab's `CI_COMMIT_REF_SLUG`: the ref lowercased, every character but `a-z` and
/// `0-9` a `-`, at most 63 bytes, no `-` at either end.
pub fn ref_slug(git_ref: &str) -> String {
    let slug: String = git_ref
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(63)
        .collect();
    slug.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> CacheConfig {
        CacheConfig {
            key: key.into(),
            paths: vec![".cargo/".into()],
            policy: CachePolicy::PullPush,
            when: ArtifactsWhen::OnSuccess,
            untracked: false,
        }
    }

    #[test]
    fn keys_are_expanded_with_the_jobs_variables_and_scoped_to_the_project() {
        let vars = [
            ("CI_COMMIT_REF_SLUG".to_string(), "feature-x".to_string()),
            ("CI_JOB_NAME".to_string(), "test".to_string()),
        ];
        assert_eq!(assign(7, &config("gradle-$CI_COMMIT_REF_SLUG"), &vars).key, "7/gradle-feature-x");
        assert_eq!(assign(7, &config("${CI_JOB_NAME}-cache"), &vars).key, "7/test-cache");
        assert_eq!(assign(7, &config("$UNSET-x"), &vars).key, "7/-x");
        assert_eq!(assign(8, &config("$UNSET"), &vars).key, "8/default");
        assert_eq!(assign(8, &config("a$"), &vars).key, "8/a$");
        assert_eq!(assign(8, &config(&"é".repeat(200)), &vars).key.len(), 2 + 254);
    }

    #[test]
    fn ref_slugs_are_gitlabs() {
        assert_eq!(ref_slug("Feature/ABC_1.2"), "feature-abc-1-2");
        assert_eq!(ref_slug("-main-"), "main");
        assert_eq!(ref_slug(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn policies() {
        assert_eq!(serde_json::to_string(&CachePolicy::PullPush).unwrap(), "\"pull-push\"");
        assert!(CachePolicy::Pull.pulls() && !CachePolicy::Pull.pushes());
        assert!(!CachePolicy::Push.pulls() && CachePolicy::Push.pushes());
        assert_eq!(CachePolicy::parse("pull"), Some(CachePolicy::Pull));
        assert_eq!(CachePolicy::parse("sometimes"), None);
    }
}
