//! Artifact rules shared by the runner (what to upload) and the server (what to accept):
//! when a job's artifacts are kept, and which relative paths are acceptable names.
//! A path that could leave the job's directory (absolute, `..`, empty or odd segments)
//! is refused on both sides.

use crate::config::ArtifactsWhen;

/// Longest accepted artifact path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

impl ArtifactsWhen {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactsWhen::OnSuccess => "on_success",
            ArtifactsWhen::OnFailure => "on_failure",
            ArtifactsWhen::Always => "always",
        }
    }

    /// Whether artifacts are uploaded for a job that `succeeded` (a cancelled job did not).
    pub fn applies(self, succeeded: bool) -> bool {
        match self {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        }
    }
}

/// The canonical form of an artifact path (`a/b/c.txt`), or None when it is not a plain
/// relative path inside the job's directory.
pub fn normalize_path(path: &str) -> Option<String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return None,
            p if p.chars().any(|c| c == '\\' || c.is_control()) => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_kept_and_tidied() {
        assert_eq!(normalize_path("out/report.txt").as_deref(), Some("out/report.txt"));
        assert_eq!(normalize_path("./out//a.txt").as_deref(), Some("out/a.txt"));
        assert_eq!(normalize_path("dir/").as_deref(), Some("dir"));
    }

    #[test]
    fn paths_that_could_escape_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", ".", "a\\..\\b", "a\nb", "a\0b"] {
            assert_eq!(normalize_path(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_path(&"a".repeat(MAX_PATH_BYTES + 1)), None);
    }

    #[test]
    fn a_cancelled_job_counts_as_not_successful() {
        assert!(ArtifactsWhen::OnFailure.applies(false));
        assert!(!ArtifactsWhen::OnSuccess.applies(false));
        assert!(ArtifactsWhen::Always.applies(false) && ArtifactsWhen::Always.applies(true));
    }
}
