//! The JSON resources of docs/api.md, shared by the REST handlers, the event websocket and the UI.
//! Field names here are the public contract: renaming one is a breaking change.

use crate::status::Status;
use serde::{Deserialize, Serialize};

mod teardown;
mod variables;

pub use teardown::{DeferredResult, DockerRemoved, MAX_DEFERRED_BYTES, MAX_DEFERRED_COMMANDS, Teardown};
pub use variables::{CreateVariable, Variable};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Project {
    pub id: i64,
    pub name: String,
    /// The repository, without credentials; None for a project with inline YAML only.
    pub repository_url: Option<String>,
    /// The branch "Run pipeline" and the demo use by default.
    pub default_branch: String,
    /// Inline CI YAML; when set it overrides the repository's CI file.
    pub ci_config: Option<String>,
    pub created_at: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub status: Status,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub triggered_by: String,
    pub cancel: Option<CancelInfo>,
    /// The commit the pipeline runs (None without a repository).
    pub sha: Option<String>,
    /// The first line of that commit's message.
    pub commit_title: Option<String>,
    /// Present on the single-pipeline read and on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<Job>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub status: Status,
    pub interruptible: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub runner_id: Option<i64>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub cancel: Option<CancelInfo>,
    pub after_script: Option<AfterScriptResult>,
    /// The `tags` of its configuration: only a runner with all of them takes the job.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Why a pending job is not being taken (e.g. no connected runner has its tags), or
    /// null.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// The job this one is a new attempt of, or null.
    #[serde(default)]
    pub retry_of: Option<i64>,
    /// A newer attempt of this job exists; the pipeline's status follows that one.
    #[serde(default)]
    pub retried: bool,
    /// When it runs once the jobs it waits for have finished (`when:` of its
    /// configuration).
    #[serde(default)]
    pub when: When,
    /// The receipt of its teardown: null until it has finished (and, for a job a runner
    /// ran, until the runner has reported it).
    #[serde(default)]
    pub teardown: Option<Teardown>,
    /// `when: delayed`: how many seconds it waits, once the jobs it waits for have
    /// finished, before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<u64>,
    /// A delayed job waiting in `manual`: when Usher plays it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_at: Option<String>,
    /// `allow_failure: true` from the CI file: its failure neither fails the pipeline nor
    /// stops later stages.
    #[serde(default)]
    pub allow_failure: bool,
    /// The coverage (percent) its log reported, by the CI file's `coverage:` pattern;
    /// null without one, or until the job has finished.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// Its `resource_group`: while another job of the project with the same group runs or
    /// cancels, this one waits in `pending` (`waiting_for` says which job holds it).
    #[serde(default)]
    pub resource_group: Option<String>,
    /// The teardown commands the job registered with `usher-defer`, in order, as the
    /// runner reported them while the job ran (masked); what each did is in `teardown`.
    #[serde(default)]
    pub deferred: Vec<String>,
}

/// When a job runs, once the jobs it waits for have finished (`when:`). `on_failure`,
/// `always` and `on_cancel` make cleanup jobs: a graceful cancel of the pipeline leaves
/// them to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Every job it waits for succeeded (the default).
    #[default]
    OnSuccess,
    /// One of the jobs it waits for failed.
    OnFailure,
    /// Whatever they ended as, a graceful cancel of the pipeline included.
    Always,
    /// Only after a graceful cancel of the pipeline (a user's, the API's or an
    /// auto-cancel's), once no other job of the pipeline is running.
    OnCancel,
    /// As `on_success`, and then it waits (`manual`) until someone plays it.
    Manual,
    /// As `on_success`, and then it waits (`manual`, its `play_at` set) for its
    /// `start_in`, when Usher plays it; playing it sooner runs it at once.
    Delayed,
}

impl When {
    pub const ALL: [When; 6] = [
        When::OnSuccess,
        When::OnFailure,
        When::Always,
        When::OnCancel,
        When::Manual,
        When::Delayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::OnCancel => "on_cancel",
            When::Manual => "manual",
            When::Delayed => "delayed",
        }
    }

    pub fn parse(text: &str) -> Option<When> {
        When::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// A job that runs when things went wrong: a graceful pipeline cancel leaves it
    /// alone, and it cannot itself be cancelled gracefully once its pipeline is.
    pub fn is_cleanup(self) -> bool {
        matches!(self, When::OnFailure | When::Always | When::OnCancel)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CancelMode {
    Graceful,
    Abort,
}

impl CancelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelMode::Graceful => "graceful",
            CancelMode::Abort => "abort",
        }
    }
    pub fn parse(text: &str) -> Option<CancelMode> {
        [CancelMode::Graceful, CancelMode::Abort].into_iter().find(|m| m.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    User,
    Pipeline,
    Superseded,
    CancelTimeout,
    RunnerLost,
    /// Another job of the pipeline failed (`workflow: auto_cancel: on_job_failure: all`).
    JobFailed,
    /// The pipeline ran longer than its `workflow: timeout`.
    Timeout,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Pipeline => "pipeline",
            CancelReason::Superseded => "superseded",
            CancelReason::CancelTimeout => "cancel_timeout",
            CancelReason::RunnerLost => "runner_lost",
            CancelReason::JobFailed => "job_failed",
            CancelReason::Timeout => "timeout",
        }
    }
    pub fn parse(text: &str) -> Option<CancelReason> {
        [
            CancelReason::User,
            CancelReason::Pipeline,
            CancelReason::Superseded,
            CancelReason::CancelTimeout,
            CancelReason::RunnerLost,
            CancelReason::JobFailed,
            CancelReason::Timeout,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// Why a job ended `failed` (or, for `runner_shutdown`, was stopped by its runner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The script (or before_script) exited non-zero.
    ScriptFailure,
    /// The job's own `timeout` ran out (after_script still ran).
    Timeout,
    /// The runner stopped heartbeating; the reaper ended the job.
    RunnerLost,
    /// The runner was shut down while the job ran (its cleanup ran).
    RunnerShutdown,
    /// The runner could not run the job at all (e.g. no build directory).
    RunnerSystemFailure,
    /// The commit could not be checked out (unreachable repository, missing commit).
    CheckoutFailed,
    /// The docker executor could not find or pull the job's `image` or a service's.
    ImagePullFailed,
    /// The artifacts of an earlier job it depends on could not be put into its build
    /// directory (expired meanwhile, a link in the way, a full disk). GitLab's name.
    #[serde(rename = "missing_dependency_failure")]
    MissingDependency,
}

impl FailureReason {
    pub const ALL: [FailureReason; 8] = [
        FailureReason::ScriptFailure,
        FailureReason::Timeout,
        FailureReason::RunnerLost,
        FailureReason::RunnerShutdown,
        FailureReason::RunnerSystemFailure,
        FailureReason::CheckoutFailed,
        FailureReason::ImagePullFailed,
        FailureReason::MissingDependency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::Timeout => "timeout",
            FailureReason::RunnerLost => "runner_lost",
            FailureReason::RunnerShutdown => "runner_shutdown",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::CheckoutFailed => "checkout_failed",
            FailureReason::ImagePullFailed => "image_pull_failed",
            FailureReason::MissingDependency => "missing_dependency_failure",
        }
    }

    pub fn parse(text: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for a cancel or abort, when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelInfo {
    pub mode: CancelMode,
    pub requested_by: String,
    pub requested_at: String,
    pub reason: CancelReason,
    /// What the canceller said (at most [`CANCEL_MESSAGE_CHARS`] characters).
    #[serde(default)]
    pub message: Option<String>,
}

/// The longest cancel or abort message, in characters.
pub const CANCEL_MESSAGE_CHARS: usize = 500;

/// The body a cancel or abort may have: `{"message": "…"}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, in the canceller's words: kept with the cancel (of the pipeline and of each
    /// job it stops), at the end of the timeline entry, on the job and pipeline pages, and
    /// in a running job's log. At most 500 characters, no control characters.
    #[serde(default)]
    pub message: Option<String>,
}

impl CancelRequest {
    /// The message as kept (trimmed; None when empty), or why it is refused.
    pub fn message(&self) -> Result<Option<String>, String> {
        let Some(text) = self.message.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > CANCEL_MESSAGE_CHARS {
            return Err(format!("a cancel message has at most {CANCEL_MESSAGE_CHARS} characters"));
        }
        if text.chars().any(char::is_control) {
            return Err("a cancel message may not hold control characters (line breaks, escapes)".into());
        }
        Ok(Some(text.to_string()))
    }
}

/// What after_script did, as the runner reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AfterScriptResult {
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub timed_out: bool,
}

/// One entry of a job's timeline (`GET /api/v1/jobs/{id}/events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEvent {
    pub at: String,
    pub from: Option<Status>,
    pub to: Status,
    pub actor: String,
    pub mode: Option<CancelMode>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// One stored artifact file of a job (`GET /api/v1/jobs/{id}/artifacts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    pub path: String,
    pub size: u64,
    /// When the file is deleted (`artifacts.expire_in`), or null: kept.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The file was deleted (it expired, or made room under the storage cap); it is
    /// still listed so the job page can say so.
    #[serde(default)]
    pub expired: bool,
}

/// A runner as the admin page and `GET /api/v1/runners` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerInfo {
    pub id: i64,
    pub name: String,
    /// What it advertised: jobs with tags go only to runners having all of them.
    pub tags: Vec<String>,
    /// `shell` or `docker`, as it said when it connected.
    pub executor: Option<String>,
    pub connected_at: String,
    pub last_seen_at: String,
    /// Seen within the server's runner-lost window.
    pub connected: bool,
    /// An admin paused it: it keeps its running jobs and takes no new one.
    pub paused: bool,
    /// It was told to drain (SIGQUIT): it takes no new job and exits once its running
    /// jobs have finished.
    pub draining: bool,
    /// Its jobs that are `running` or `canceling`.
    pub active_jobs: Vec<i64>,
}

/// A user as the admin page shows it (never a password or a token, only their ids).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub role: crate::roles::Role,
    pub created_at: String,
    pub has_password: bool,
    pub tokens: Vec<TokenInfo>,
}

/// One API token of a user: when it was made and whether it was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub created_at: String,
    pub revoked: bool,
}

/// One text frame of the event websocket.
// A frame is made, sent (or decoded and applied) and dropped: the size of its largest
// variant costs nothing worth a box in every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventFrame {
    Job {
        job: Job,
    },
    Pipeline {
        pipeline: Pipeline,
    },
    /// Only on sockets filtered by `job_id`.
    Log(LogAppend),
}

/// New output of a running job: its log's bytes from `offset` up to `length`. `text`
/// is left out when the piece was too large for one frame; then read
/// `/api/v1/jobs/{id}/log?offset=…`. A reader whose log is shorter than `offset` missed
/// a piece and reads from its own length the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogAppend {
    pub job_id: i64,
    pub offset: u64,
    pub length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateProject {
    pub name: String,
    /// Anything `git clone` accepts; HTTPS credentials in it are kept server-side only.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// Default `main`.
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Inline CI YAML (required without a repository; overrides the repository's file).
    #[serde(default)]
    pub ci_config: Option<String>,
    /// Write-only: authenticates push webhooks.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Write-only: an SSH private key for `ssh://` and `user@host:path` repositories.
    #[serde(default)]
    pub ssh_private_key: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateProject {
    /// A new name (409 `conflict` if another project has it).
    #[serde(default)]
    pub name: Option<String>,
    /// A new repository (`""` removes it).
    #[serde(default)]
    pub repository_url: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
    /// A new CI configuration (`""` removes the inline one: the repository's file is used).
    #[serde(default)]
    pub ci_config: Option<String>,
    /// A new webhook secret (`""` removes it).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// A new SSH private key (`""` removes it).
    #[serde(default)]
    pub ssh_private_key: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePipeline {
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// A commit to run instead of the ref's current one.
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub ci_config: Option<String>,
}

/// The error shape of every failed API call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_round_trip_as_their_json_strings() {
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }
}
