//! The receipt of a job's teardown (`teardown` of a finished job).

use serde::{Deserialize, Serialize};

use super::AfterScriptResult;

/// The most teardown commands a job may register with `usher-defer`.
pub const MAX_DEFERRED_COMMANDS: usize = 100;
/// The most bytes of them all together (as the runner keeps them, base64-encoded).
pub const MAX_DEFERRED_BYTES: usize = 64 * 1024;

/// What ending a job stopped and removed, and what the final sweep still found: the
/// receipt of its teardown (`teardown` of a finished job).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Teardown {
    /// Processes of the job still running once its script and after_script had ended or
    /// been stopped, and killed: what it left in the background.
    pub processes_killed: u32,
    /// Docker objects of the job removed (docker executor).
    pub docker_removed: DockerRemoved,
    /// `success`, `failed`, `timed_out`, or `skipped` (none, or the job never got there).
    pub after_script: String,
    /// Each deferred command (`usher-defer`), in the order they ran.
    #[serde(default)]
    pub deferred: Vec<DeferredResult>,
    /// What the final sweep still found of the job (processes, Docker objects) and
    /// removed: 0 is the goal; more means the usual teardown missed something.
    pub leftovers: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerRemoved {
    pub containers: u32,
    pub networks: u32,
    pub volumes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeferredResult {
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

impl Teardown {
    /// The receipt of a job that ended before a runner ran anything of it.
    pub fn nothing_ran() -> Teardown {
        Teardown {
            after_script: "skipped".into(),
            ..Teardown::default()
        }
    }

    /// after_script's outcome as the receipt names it.
    pub fn after_script_outcome(result: Option<&AfterScriptResult>) -> &'static str {
        match result {
            None => "skipped",
            Some(a) if a.timed_out => "timed_out",
            Some(a) if a.exit_code == Some(0) => "success",
            Some(_) => "failed",
        }
    }
}
