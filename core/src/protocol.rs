//! Runner protocol v1: the JSON text frames exchanged over one websocket at
//! `/api/runner/v1/connect` (see docs/runner-protocol.md).
//!
//! The server pushes jobs, cancels and aborts; the runner streams logs and reports.
//! Every answer to the runner carries the job's current status, so a runner that missed
//! a push still learns of a cancel with its next log append.

use crate::api::{AfterScriptResult, FailureReason};
use crate::config::ArtifactsWhen;
use crate::repository::RepoCredentials;
use crate::status::{JobEvent, Status};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 4;

/// Runner → server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    /// First frame. `held_jobs`: jobs it is still working on (after a reconnect);
    /// `runner_id`: the id the server gave it before, to keep after a reconnect.
    Hello {
        version: u32,
        name: String,
        concurrency: u32,
        held_jobs: Vec<i64>,
        runner_id: Option<i64>,
        /// Jobs with tags go only to runners that have every one of them.
        #[serde(default)]
        tags: Vec<String>,
        /// How it runs jobs (`shell`, `docker`), for the admin's list (version 4).
        #[serde(default)]
        executor: Option<String>,
    },
    /// One more free slot: hand me a job when there is one.
    RequestJob,
    /// It is draining: it asks for no more jobs and exits once its jobs are done
    /// (version 4).
    Draining,
    /// Log bytes of a job starting at byte `offset` (appended only if it is the current end).
    Log {
        job_id: i64,
        offset: u64,
        data: String,
    },
    /// The job registered a teardown command with `usher-defer` (masked as its log is);
    /// sent as soon as the runner sees it, and again after a reconnect. `index`: its
    /// place among the job's registrations (0 first), so a frame sent twice counts once.
    Deferred {
        job_id: i64,
        index: u32,
        command: String,
    },
    /// The receipt of a job that a previous run of this runner (same builds directory,
    /// same token) was running when it died: its deferred commands ran when this run
    /// started. The job ends now as `runner_lost` if the server had not ended it yet.
    Recovered {
        job_id: i64,
        teardown: crate::api::Teardown,
    },
    /// The job is over on the runner side.
    Finished {
        job_id: i64,
        report: JobReport,
    },
    Heartbeat,
}

/// Server → runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        runner_id: i64,
        version: u32,
    },
    Job {
        job: Box<JobAssignment>,
    },
    /// Graceful: stop the script (TERM, grace, KILL), run after_script, report. Who
    /// asked, why, and in what words (version 4), for the job's log.
    Cancel {
        job_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Kill every process of the job now; no after_script, nothing more to report.
    Abort {
        job_id: i64,
    },
    /// Answer to `Log`: the log's length on the server and the job's status.
    LogAck {
        job_id: i64,
        log_length: u64,
        status: Status,
    },
    /// Answer to `Finished`.
    FinishedAck {
        job_id: i64,
        status: Status,
    },
    /// Answer to `Hello` for each held job.
    JobStatus {
        job_id: i64,
        status: Status,
    },
    Error {
        message: String,
    },
}

/// Its `Debug` names the variables without their values (project variables are secrets).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAssignment {
    pub job_id: i64,
    pub pipeline_id: i64,
    pub project_name: String,
    pub git_ref: String,
    pub name: String,
    pub stage: String,
    /// Pipeline and job variables, already merged, in order.
    pub variables: Vec<(String, String)>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub timeout_secs: u64,
    pub cancel_grace_secs: u64,
    pub after_script_timeout_secs: u64,
    pub artifacts: Option<ArtifactsAssignment>,
    /// The commit to check out into the build directory first, if the project has a
    /// repository.
    #[serde(default)]
    pub checkout: Option<Checkout>,
    /// For the docker executor: the job's image and its service containers.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub services: Vec<crate::config::Service>,
    /// What every service container gets in its environment before its own
    /// `variables`: the CI file's variables (sent once, not once a service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_variables: Vec<(String, String)>,
    /// Values the job's log must not show: each becomes `[MASKED]` (see
    /// `crate::masking`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// Artifacts of earlier jobs of the pipeline the runner puts into the build
    /// directory before the scripts run (version 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<DependencyArtifacts>,
    /// How many files of those jobs were left out of `dependencies` for being over
    /// [`MAX_DEPENDENCY_FILES`] or [`MAX_DEPENDENCY_BYTES`]: the runner then fails the
    /// job before its scripts run instead of starting it without them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dependencies_left_out: u64,
    /// The job's caches, keys expanded and scoped to its project (version 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<crate::cache::CacheAssignment>,
}

/// The most artifact files of earlier jobs one job gets (all jobs together).
pub const MAX_DEPENDENCY_FILES: usize = 10_000;
/// The most bytes of artifacts of earlier jobs one job gets (all jobs together).
pub const MAX_DEPENDENCY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The artifact files of one earlier job that a job gets, fetched with
/// `GET /api/runner/v1/jobs/{job}/dependencies/{job_id}/artifacts/{path}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyArtifacts {
    pub job_id: i64,
    pub job_name: String,
    pub files: Vec<DependencyFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyFile {
    pub path: String,
    pub size: u64,
}

impl std::fmt::Debug for JobAssignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.variables.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("JobAssignment")
            .field("job_id", &self.job_id)
            .field("pipeline_id", &self.pipeline_id)
            .field("name", &self.name)
            .field("variables", &names)
            .field("artifacts", &self.artifacts)
            .field("checkout", &self.checkout)
            .field("image", &self.image)
            .field("masked", &self.masked.len())
            .field("dependencies", &self.dependencies.len())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Where a job's code comes from. The credentials are for git only (askpass / ssh key),
/// never for the job's environment or log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    /// Without credentials.
    pub url: String,
    pub sha: String,
    #[serde(default)]
    pub credentials: Option<RepoCredentials>,
    #[serde(default)]
    pub ssh_private_key: Option<String>,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("url", &self.url)
            .field("sha", &self.sha)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .field("ssh_private_key", &self.ssh_private_key.as_ref().map(|_| "…"))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsAssignment {
    pub paths: Vec<String>,
    pub when: ArtifactsWhen,
    /// `reports: dotenv:` files, read when the job ends however it ended (an abort
    /// aside), whatever `when` says.
    #[serde(default)]
    pub dotenv: Vec<String>,
    /// `exclude:` patterns (files only, as in GitLab).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `untracked: true`: the files of the build directory the checked-out commit does
    /// not have are kept too (all of them without a checkout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// The most bytes of artifacts the server keeps of this job: a file that would pass
    /// it is not sent (the server refuses it anyway, but only once it has come, and a
    /// refusal in the middle of a big upload reaches the runner as a broken connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// Exit code of the script shell (None when killed by a signal).
    pub exit_code: Option<i32>,
    /// Why the script did not succeed (`script_failure`, `timeout`, `runner_shutdown`…).
    pub failure_reason: Option<FailureReason>,
    pub duration_ms: u64,
    pub after_script: Option<AfterScriptResult>,
    /// A word for the job's timeline (e.g. that a cancel came during the checkout).
    #[serde(default)]
    pub detail: Option<String>,
    /// The variables its `reports: dotenv:` files hand over to later jobs, when it has
    /// such files (see `crate::dotenv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dotenv: Option<Vec<(String, String)>>,
    /// What ending the job stopped and removed (see `crate::api::Teardown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<crate::api::Teardown>,
}

impl JobReport {
    /// The event this report is for the job's status: a timeout is its own event (the
    /// table treats it like a failure), anything else finishes the job, successfully only
    /// when the script exited 0 and nothing went wrong.
    pub fn event(&self) -> JobEvent {
        match self.failure_reason {
            Some(FailureReason::Timeout) => JobEvent::Timeout,
            Some(_) => JobEvent::Finish { ok: false },
            None => JobEvent::Finish {
                ok: self.exit_code == Some(0),
            },
        }
    }

    /// The failure reason to record: the runner's, or `script_failure` for a non-zero
    /// exit. A script stopped by a cancel has no exit code and is no failure.
    pub fn recorded_failure(&self) -> Option<FailureReason> {
        self.failure_reason
            .or_else(|| self.exit_code.is_some_and(|c| c != 0).then_some(FailureReason::ScriptFailure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let m = ServerMessage::Cancel {
            job_id: 7,
            requested_by: None,
            reason: None,
            message: None,
        };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"type":"cancel","job_id":7}"#);
        let r: RunnerMessage = serde_json::from_str(r#"{"type":"request_job"}"#).unwrap();
        assert_eq!(r, RunnerMessage::RequestJob);
    }
}
