//! All of Usher's SQL, and nothing else: sqlx over the `Any` driver, so one set of
//! queries serves SQLite (the embedded default) and PostgreSQL (scale-out).
//!
//! Every status change goes through [`Store::commit`] (in `transitions`): a
//! compare-and-set on the job's status, its audit event and the pipeline's re-derived
//! status, in one transaction. What to write comes from [`crate::plan`] (and its rule
//! from `usher_core::status::next`); the store only writes it. One module a concept, each with the queries of that concept.

use sqlx::Row;
use sqlx::any::AnyRow;
use usher_core::api::{AfterScriptResult, CancelInfo, CancelMode, CancelReason, FailureReason, Job, Pipeline, Project, Teardown, When};
use usher_core::roles::Role;
use usher_core::status::{Status, StatusGroup};

use crate::{Actor, EngineError};

mod accounts;
mod artifacts;
mod caches;
mod change;
mod claims;
mod connections;
mod jobs;
mod logs;
mod moves;
mod pipeline_status;
mod pipelines;
mod projects;
mod retries;
mod runners;
mod transaction;
mod transitions;
mod variables;
mod writer;

pub use artifacts::PipelineArtifact;
pub use change::{CHANGES_CHANNEL, Change, ChangeNotice, Committed, PipelineCancel, Transitioned};
pub use jobs::{AssignmentSource, DeferredLimits, HandedOver};
pub use logs::LOGS_CHANNEL;
pub use pipelines::{JobNodeRow, NewJob, NewPipeline, PipelineFilter, StoredSpec};
pub use projects::{NewProject, ProjectChange, ProjectSecrets};
pub use variables::VariableValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    connections: connections::Connections,
    writer: writer::Writer,
}

impl Store {
    /// Connects and migrates. `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, EngineError> {
        let (connections, backend) = connections::open(url).await?;
        let store = Store {
            connections,
            writer: writer::Writer::of(backend),
        };
        store.migrate().await?;
        Ok(store)
    }
}

const JOB_COLUMNS: &str = "id, pipeline_id, project_id, name, stage, status, interruptible, created_at, started_at, \
    finished_at, runner_id, exit_code, failure_reason, cancel_mode, cancel_by, cancel_at, cancel_reason, cancel_message, \
    after_exit_code, after_duration_ms, after_timed_out, tags, retry_of, retried, when_to_run, teardown, deferred, allow_failure, coverage, resource_group, start_in, play_at";

/// [`JOB_COLUMNS`] of a query's `j` (a job joined with its pipeline).
static JOB_COLUMNS_OF_J: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| qualified("j", JOB_COLUMNS));

/// `columns` (`a, b, …`) as columns of the table aliased `alias` (`x.a, x.b, …`).
fn qualified(alias: &str, columns: &str) -> String {
    columns.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

const PIPELINE_COLUMNS: &str = "id, project_id, git_ref, status, created_at, started_at, finished_at, triggered_by, \
    cancel_mode, cancel_by, cancel_at, cancel_reason, cancel_message, sha, commit_title";

/// `'running', 'canceling'`: the statuses of a group of core's, for an SQL `IN (…)`
/// list. The SQL never names statuses itself; core's groups do.
fn sql_statuses(group: StatusGroup) -> String {
    Status::in_group(group)
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query with its parameters, as the helpers that bind a shared part of one take it.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `$first, $first+1, …` for `n` values of an `IN (…)` or `VALUES` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn bad_status(text: &str) -> EngineError {
    EngineError::Internal(format!("unknown status `{text}` in the database"))
}

fn cancel_info(row: &AnyRow) -> Result<Option<CancelInfo>, sqlx::Error> {
    let mode: Option<String> = row.try_get("cancel_mode")?;
    let Some(mode) = mode.and_then(|m| CancelMode::parse(&m)) else {
        return Ok(None);
    };
    Ok(Some(CancelInfo {
        mode,
        requested_by: row.try_get::<Option<String>, _>("cancel_by")?.unwrap_or_default(),
        requested_at: row.try_get::<Option<String>, _>("cancel_at")?.unwrap_or_default(),
        reason: row
            .try_get::<Option<String>, _>("cancel_reason")?
            .and_then(|r| CancelReason::parse(&r))
            .unwrap_or(CancelReason::User),
        message: row.try_get("cancel_message")?,
    }))
}

fn job_from_row(row: &AnyRow) -> Result<Job, EngineError> {
    let status: String = row.try_get("status")?;
    let started_at: Option<String> = row.try_get("started_at")?;
    let after_duration: Option<i64> = row.try_get("after_duration_ms")?;
    Ok(Job {
        id: row.try_get("id")?,
        pipeline_id: row.try_get("pipeline_id")?,
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        stage: row.try_get("stage")?,
        status: Status::parse(&status).ok_or_else(|| bad_status(&status))?,
        interruptible: row.try_get::<i64, _>("interruptible")? != 0,
        created_at: row.try_get("created_at")?,
        started_at: started_at.clone(),
        finished_at: row.try_get("finished_at")?,
        runner_id: row.try_get("runner_id")?,
        exit_code: row.try_get::<Option<i64>, _>("exit_code")?.map(|c| c as i32),
        failure_reason: match row.try_get::<Option<String>, _>("failure_reason")? {
            None => None,
            Some(r) => Some(FailureReason::parse(&r).ok_or_else(|| EngineError::Internal(format!("unknown failure reason `{r}`")))?),
        },
        cancel: cancel_info(row)?,
        after_script: match after_duration {
            None => None,
            Some(ms) => Some(AfterScriptResult {
                exit_code: row.try_get::<Option<i64>, _>("after_exit_code")?.map(|c| c as i32),
                duration_ms: ms.max(0) as u64,
                timed_out: row.try_get::<Option<i64>, _>("after_timed_out")?.unwrap_or(0) != 0,
            }),
        },
        tags: strings_from(row.try_get("tags")?),
        waiting_for: None,
        retry_of: row.try_get("retry_of")?,
        retried: row.try_get::<i64, _>("retried")? != 0,
        when: {
            let when: String = row.try_get("when_to_run")?;
            When::parse(&when).ok_or_else(|| EngineError::Internal(format!("unknown `when` `{when}` in the database")))?
        },
        teardown: teardown_of(row, &status, &started_at)?,
        deferred: strings_from(row.try_get("deferred")?),
        allow_failure: row.try_get::<i64, _>("allow_failure")? != 0,
        coverage: row.try_get("coverage")?,
        resource_group: row.try_get("resource_group")?,
        start_in: row.try_get::<Option<i64>, _>("start_in")?.map(|s| s.max(0) as u64),
        // Only while it waits: once played (or cancelled) it is history.
        play_at: if status == Status::Manual.as_str() {
            row.try_get("play_at")?
        } else {
            None
        },
    })
}

/// A job's teardown receipt: as its runner reported it, or for a finished job no runner
/// ever took, the receipt of nothing having run; None until then.
fn teardown_of(row: &AnyRow, status: &str, started_at: &Option<String>) -> Result<Option<Teardown>, EngineError> {
    if let Some(text) = row.try_get::<Option<String>, _>("teardown")? {
        return serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("a stored teardown receipt: {e}")));
    }
    let finished = Status::parse(status).is_some_and(|s| s.is_terminal());
    Ok((finished && started_at.is_none()).then(Teardown::nothing_ran))
}

/// A JSON array of strings as stored (tags, deferred commands; NULL: none).
fn strings_from(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

fn tags_to(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

fn pipeline_from_row(row: &AnyRow) -> Result<Pipeline, EngineError> {
    let status: String = row.try_get("status")?;
    Ok(Pipeline {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        git_ref: row.try_get("git_ref")?,
        status: Status::parse(&status).ok_or_else(|| bad_status(&status))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        triggered_by: row.try_get("triggered_by")?,
        cancel: cancel_info(row)?,
        sha: row.try_get("sha")?,
        commit_title: row.try_get("commit_title")?,
        jobs: None,
    })
}

fn project_from_row(row: &AnyRow) -> Result<Project, EngineError> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        repository_url: row.try_get("repository_url")?,
        default_branch: row.try_get("default_branch")?,
        ci_config: Some(row.try_get::<String, _>("ci_config")?).filter(|c| !c.is_empty()),
        created_at: row.try_get("created_at")?,
    })
}

fn actor_from_row(row: &AnyRow) -> Result<Actor, EngineError> {
    let role: String = row.try_get("role")?;
    Ok(Actor {
        user_id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| EngineError::Internal(format!("unknown role `{role}`")))?,
    })
}
