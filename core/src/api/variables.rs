//! Project CI variables as the API takes and shows them (never a value).

use serde::{Deserialize, Serialize};

/// A project CI variable as the API shows it: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Variable {
    pub key: String,
    /// Its value is replaced by `[MASKED]` in job logs.
    pub masked: bool,
    pub created_at: String,
}

/// A new project CI variable (`POST /api/v1/projects/{id}/variables`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateVariable {
    /// `[A-Za-z_][A-Za-z0-9_]*`, not one Usher sets for every job (`CI`, `CI_JOB_ID`…;
    /// GitLab's others, like `CI_REGISTRY`, may be set).
    pub key: String,
    /// Write-only: no answer ever shows it.
    pub value: String,
    /// Default false. A masked value is at least 8 characters on one line.
    #[serde(default)]
    pub masked: Option<bool>,
}

impl CreateVariable {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        if !crate::variables::is_name(&self.key) || self.key.len() > 255 {
            return Some("`key` must be letters, digits and `_` (at most 255), not starting with a digit".into());
        }
        // GitLab's other `CI_*` names (`CI_REGISTRY`, `CI_SERVER_HOST`…), which Usher does
        // not set, are the project's to set, as they are the CI file's.
        if crate::config::limits::is_set_by_usher(&self.key) {
            return Some(format!(
                "`{}` is set by Usher for every job; it cannot be a project variable",
                self.key
            ));
        }
        if self.value.len() > 64 * 1024 {
            return Some("`value` is longer than 64 KiB".into());
        }
        if self.masked == Some(true) && !crate::masking::maskable(&self.value) {
            return Some(format!(
                "a masked value must be at least {} characters, without blanks, quotes or backslashes \
                 (a shell prints those changed, and the change would not be masked)",
                crate::masking::MIN_MASKED_LEN
            ));
        }
        None
    }
}
