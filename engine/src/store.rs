//! All of Usher's SQL, and nothing else: sqlx over the `Any` driver, so one set of
//! queries serves SQLite (the embedded default) and PostgreSQL (scale-out).
//!
//! Every status change goes through [`Store::transition_job`]: a compare-and-set on the
//! job's status, its audit event and the pipeline's re-derived status, in one transaction.
//! The rule it applies comes from `usher_core::status::next`; the store only writes it.

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use usher_core::api::{AfterScriptResult, Artifact, CancelInfo, CancelMode, CancelReason, Job, Pipeline, Project, TimelineEvent};
use usher_core::config::JobConfig;
use usher_core::pipeline::derive_status;
use usher_core::roles::Role;
use usher_core::status::{JobEvent, Outcome, Status, next};

use crate::{Actor, EngineError, now};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A job to insert with a new pipeline.
pub struct NewJob {
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub needs: Option<Vec<String>>,
    pub interruptible: bool,
    pub spec: StoredSpec,
}

/// What the runner needs to run a job, kept with the job as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSpec {
    pub job: JobConfig,
    pub pipeline_variables: Vec<(String, String)>,
}

/// Everything a transition may record besides the new status.
#[derive(Clone, Debug, Default)]
pub struct TransitionCtx {
    /// Who caused it: a user name, `runner:<id>` or `system`.
    pub actor: String,
    pub cancel: Option<(CancelMode, CancelReason)>,
    pub detail: Option<String>,
    /// Set on start; checked on runner reports (only the holder may report).
    pub runner_id: Option<i64>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub after_script: Option<AfterScriptResult>,
    pub cancel_deadline: Option<String>,
}

/// The PostgreSQL NOTIFY channel that carries committed changes to every replica.
pub const CHANGES_CHANNEL: &str = "usher_changes";

/// One committed transition, as sent on [`CHANGES_CHANNEL`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// None for the one notice of a batch that carries only the re-derived pipeline.
    #[serde(default)]
    pub job: Option<Job>,
    pub pipeline: Option<Pipeline>,
}

/// The result of [`Store::transition_job`].
pub struct Transitioned {
    pub job: Job,
    /// The status the job had when the event was applied.
    pub from: Status,
    /// False when the table answered `Unchanged` (idempotent repeat).
    pub changed: bool,
    /// The pipeline, when its derived status changed.
    pub pipeline: Option<Pipeline>,
}

/// A job as the scheduler needs it.
pub struct JobNodeRow {
    pub id: i64,
    pub name: String,
    pub stage_index: usize,
    pub needs: Option<Vec<String>>,
    pub status: Status,
}

pub struct PipelineFilter {
    pub project_id: Option<i64>,
    pub git_ref: Option<String>,
    pub status: Option<Status>,
    pub limit: i64,
    pub offset: i64,
}

const JOB_COLUMNS: &str = "id, pipeline_id, project_id, name, stage, status, interruptible, created_at, started_at, \
    finished_at, runner_id, exit_code, failure_reason, cancel_mode, cancel_by, cancel_at, cancel_reason, \
    after_exit_code, after_duration_ms, after_timed_out";

const PIPELINE_COLUMNS: &str = "id, project_id, git_ref, status, created_at, started_at, finished_at, triggered_by, \
    cancel_mode, cancel_by, cancel_at, cancel_reason";

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
    }))
}

fn job_from_row(row: &AnyRow) -> Result<Job, EngineError> {
    let status: String = row.try_get("status")?;
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
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        runner_id: row.try_get("runner_id")?,
        exit_code: row.try_get::<Option<i64>, _>("exit_code")?.map(|c| c as i32),
        failure_reason: row.try_get("failure_reason")?,
        cancel: cancel_info(row)?,
        after_script: match after_duration {
            None => None,
            Some(ms) => Some(AfterScriptResult {
                exit_code: row.try_get::<Option<i64>, _>("after_exit_code")?.map(|c| c as i32),
                duration_ms: ms.max(0) as u64,
                timed_out: row.try_get::<Option<i64>, _>("after_timed_out")?.unwrap_or(0) != 0,
            }),
        },
    })
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
        jobs: None,
    })
}

fn project_from_row(row: &AnyRow) -> Result<Project, EngineError> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        ci_config: row.try_get("ci_config")?,
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

impl Store {
    /// Connects and migrates. `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, EngineError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        // No idle timeout and no max lifetime, so sqlx starts no pool maintenance task:
        // in sqlx 0.8.6 that task can spin forever at 100% CPU once its idle count
        // underflows (sqlx#3645, fixed only after 0.8.6); seen here as `usher token revoke`
        // never exiting.
        let options = AnyPoolOptions::new().idle_timeout(None).max_lifetime(None);
        let pool = match backend {
            // SQLite has one writer; one connection serialises every transaction, so a
            // compare-and-set never meets SQLITE_BUSY and commit order is publish order.
            Backend::Sqlite => options.max_connections(1).connect(url).await?,
            Backend::Postgres => options.max_connections(16).connect(url).await?,
        };
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode=WAL").fetch_all(&pool).await?;
            sqlx::query("PRAGMA foreign_keys=ON").execute(&pool).await?;
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users and credentials ----

    pub async fn count_users(&self) -> Result<i64, EngineError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    pub async fn create_user(&self, name: &str, role: Role, password_hash: Option<&str>) -> Result<i64, EngineError> {
        let row = sqlx::query("INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    EngineError::Conflict(format!("a user named `{name}` already exists"))
                }
                e => e.into(),
            })?;
        Ok(row.try_get("id")?)
    }

    /// (user id, password hash) of a user.
    pub async fn user_credentials(&self, name: &str) -> Result<Option<(i64, Option<String>)>, EngineError> {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("id")?, r.try_get("password_hash")?)),
            None => None,
        })
    }

    pub async fn user_id_by_name(&self, name: &str) -> Result<Option<i64>, EngineError> {
        let row = sqlx::query("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn add_api_token(&self, user_id: i64, token_hash: &str) -> Result<(), EngineError> {
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(token_hash)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an API token revoked; false if no live token has that hash.
    pub async fn revoke_api_token(&self, token_hash: &str) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Marks a runner token revoked; false if no live token has that hash.
    pub async fn revoke_runner_token(&self, token_hash: &str) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE runner_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn runner_token_is_live(&self, id: i64) -> Result<bool, EngineError> {
        let row = sqlx::query("SELECT id FROM runner_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn actor_by_token_hash(&self, token_hash: &str) -> Result<Option<Actor>, EngineError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(actor_from_row).transpose()
    }

    pub async fn add_session(&self, token_hash: &str, user_id: i64, expires_at: &str) -> Result<(), EngineError> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn actor_by_session_hash(&self, token_hash: &str) -> Result<Option<Actor>, EngineError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(actor_from_row).transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), EngineError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_runner_token(&self, token_hash: &str) -> Result<i64, EngineError> {
        let row = sqlx::query("INSERT INTO runner_tokens (token_hash, created_at) VALUES ($1, $2) RETURNING id")
            .bind(token_hash)
            .bind(now())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn runner_token_id(&self, token_hash: &str) -> Result<Option<i64>, EngineError> {
        let row = sqlx::query("SELECT id FROM runner_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn add_runner(&self, name: &str, token_id: i64) -> Result<i64, EngineError> {
        let t = now();
        let row = sqlx::query("INSERT INTO runners (name, token_id, connected_at, last_seen_at) VALUES ($1, $2, $3, $3) RETURNING id")
            .bind(name)
            .bind(token_id)
            .bind(t)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Marks a runner seen; false if no runner with that id uses that token.
    pub async fn touch_runner(&self, id: i64, token_id: i64) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE runners SET last_seen_at = $1 WHERE id = $2 AND token_id = $3")
            .bind(now())
            .bind(id)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn runner_seen(&self, id: i64) -> Result<(), EngineError> {
        sqlx::query("UPDATE runners SET last_seen_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Active jobs held by runners last seen before `cutoff`.
    pub async fn jobs_of_runners_seen_before(&self, cutoff: &str) -> Result<Vec<(i64, Status)>, EngineError> {
        let rows = sqlx::query(
            "SELECT j.id, j.status FROM jobs j JOIN runners r ON r.id = j.runner_id \
             WHERE j.status IN ('running', 'canceling') AND r.last_seen_at < $1 ORDER BY j.id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get("status")?;
                Ok((r.try_get("id")?, Status::parse(&s).ok_or_else(|| bad_status(&s))?))
            })
            .collect()
    }

    // ---- projects ----

    pub async fn create_project(&self, name: &str, ci_config: &str) -> Result<Project, EngineError> {
        let row =
            sqlx::query("INSERT INTO projects (name, ci_config, created_at) VALUES ($1, $2, $3) RETURNING id, name, ci_config, created_at")
                .bind(name)
                .bind(ci_config)
                .bind(now())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        EngineError::Conflict(format!("a project named `{name}` already exists"))
                    }
                    e => e.into(),
                })?;
        project_from_row(&row)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, EngineError> {
        let rows = sqlx::query("SELECT id, name, ci_config, created_at FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    pub async fn get_project(&self, id: i64) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query("SELECT id, name, ci_config, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    pub async fn update_project_config(&self, id: i64, ci_config: &str) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query("UPDATE projects SET ci_config = $1 WHERE id = $2 RETURNING id, name, ci_config, created_at")
            .bind(ci_config)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    // ---- pipelines ----

    /// Inserts a pipeline and its jobs (all `created`, each with its first timeline event).
    pub async fn create_pipeline(&self, project_id: i64, git_ref: &str, triggered_by: &str, jobs: &[NewJob]) -> Result<i64, EngineError> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO pipelines (project_id, git_ref, status, created_at, triggered_by) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(project_id)
        .bind(git_ref)
        .bind(Status::Created.as_str())
        .bind(&t)
        .bind(triggered_by)
        .fetch_one(&mut *tx)
        .await?;
        let pipeline_id: i64 = row.try_get("id")?;
        for job in jobs {
            let spec = serde_json::to_string(&job.spec).map_err(|e| EngineError::Internal(e.to_string()))?;
            let needs = job.needs.as_ref().map(|n| serde_json::to_string(n).unwrap_or_default());
            let row = sqlx::query(
                "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_index, needs, status, interruptible, spec, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(pipeline_id)
            .bind(project_id)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(job.stage_index)
            .bind(needs)
            .bind(Status::Created.as_str())
            .bind(job.interruptible as i64)
            .bind(spec)
            .bind(&t)
            .fetch_one(&mut *tx)
            .await?;
            let job_id: i64 = row.try_get("id")?;
            sqlx::query("INSERT INTO job_events (job_id, at, from_status, to_status, actor) VALUES ($1, $2, NULL, $3, $4)")
                .bind(job_id)
                .bind(&t)
                .bind(Status::Created.as_str())
                .bind(triggered_by)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(pipeline_id)
    }

    pub async fn get_pipeline(&self, id: i64) -> Result<Option<Pipeline>, EngineError> {
        let row = sqlx::query(&format!("SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pipeline_from_row).transpose()
    }

    /// Newest first.
    pub async fn list_pipelines(&self, filter: &PipelineFilter) -> Result<Vec<Pipeline>, EngineError> {
        let rows = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines \
             WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR git_ref = $2) AND ($3 IS NULL OR status = $3) \
             ORDER BY id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(filter.project_id)
        .bind(filter.git_ref.as_deref())
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pipeline_from_row).collect()
    }

    /// Unfinished pipelines of a project and ref created before `before_id`.
    pub async fn unfinished_pipelines_before(&self, project_id: i64, git_ref: &str, before_id: i64) -> Result<Vec<i64>, EngineError> {
        let rows = sqlx::query(
            "SELECT id FROM pipelines WHERE project_id = $1 AND git_ref = $2 AND id < $3 \
             AND status NOT IN ('success', 'failed', 'canceled', 'skipped') ORDER BY id",
        )
        .bind(project_id)
        .bind(git_ref)
        .bind(before_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// Jobs with `status`, oldest first (the ones stuck longest come first).
    pub async fn jobs_with_status(&self, status: Status, limit: i64) -> Result<Vec<Job>, EngineError> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id LIMIT $2"))
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every runner, newest first, with its active jobs; `online` when seen at or after `seen_since`.
    pub async fn list_runners(&self, seen_since: &str) -> Result<Vec<usher_core::api::RunnerInfo>, EngineError> {
        let rows = sqlx::query("SELECT id, name, connected_at, last_seen_at FROM runners ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await?;
        let active =
            sqlx::query("SELECT id, runner_id FROM jobs WHERE status IN ('running', 'canceling') AND runner_id IS NOT NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let mut held: Vec<(i64, i64)> = Vec::new();
        for r in &active {
            held.push((r.try_get("runner_id")?, r.try_get("id")?));
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let last_seen_at: String = r.try_get("last_seen_at")?;
                Ok(usher_core::api::RunnerInfo {
                    id,
                    name: r.try_get("name")?,
                    connected_at: r.try_get("connected_at")?,
                    online: last_seen_at.as_str() >= seen_since,
                    last_seen_at,
                    active_jobs: held.iter().filter(|(runner, _)| *runner == id).map(|(_, job)| *job).collect(),
                })
            })
            .collect()
    }

    pub async fn jobs_of_pipeline(&self, pipeline_id: i64) -> Result<Vec<Job>, EngineError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE pipeline_id = $1 ORDER BY stage_index, id"
        ))
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn job_nodes(&self, pipeline_id: i64) -> Result<Vec<JobNodeRow>, EngineError> {
        let rows = sqlx::query("SELECT id, name, stage_index, needs, status FROM jobs WHERE pipeline_id = $1 ORDER BY stage_index, id")
            .bind(pipeline_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let needs: Option<String> = r.try_get("needs")?;
                Ok(JobNodeRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    stage_index: r.try_get::<i64, _>("stage_index")?.max(0) as usize,
                    needs: needs.and_then(|n| serde_json::from_str(&n).ok()),
                    status: Status::parse(&status).ok_or_else(|| bad_status(&status))?,
                })
            })
            .collect()
    }

    /// Records who asked to cancel or abort a whole pipeline (the latest request wins).
    // ---- jobs ----

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>, EngineError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn job_spec(&self, id: i64) -> Result<StoredSpec, EngineError> {
        let row = sqlx::query("SELECT spec FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        let spec: String = row.try_get("spec")?;
        serde_json::from_str(&spec).map_err(|e| EngineError::Internal(format!("job {id} has a broken spec: {e}")))
    }

    /// `canceling` jobs whose cancel deadline is before `now`.
    pub async fn overdue_canceling_jobs(&self, now: &str) -> Result<Vec<i64>, EngineError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1 AND cancel_deadline < $2 ORDER BY id")
            .bind(Status::Canceling.as_str())
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// Applies `event` to a job: reads its status, asks the transition table, writes the
    /// answer with a compare-and-set, appends the audit event and re-derives the pipeline
    /// status, all in one transaction. Retries when another writer moved the job first.
    pub async fn transition_job(&self, job_id: i64, event: JobEvent, ctx: &TransitionCtx) -> Result<Transitioned, EngineError> {
        loop {
            let mut tx = self.pool.begin().await?;
            match self.transition_in(&mut tx, job_id, event, ctx, true).await? {
                Some(t) => {
                    tx.commit().await?;
                    return Ok(t);
                }
                // Someone moved the job between our read and write: read again.
                None => tx.rollback().await?,
            }
        }
    }

    /// Hands the oldest pending job to a runner (the `Start` event with `ctx`). On
    /// PostgreSQL the candidate is locked with `FOR UPDATE SKIP LOCKED`, so replicas
    /// claiming at once take different jobs instead of queueing on one row.
    pub async fn claim_next_pending(&self, ctx: &TransitionCtx) -> Result<Option<Transitioned>, EngineError> {
        loop {
            let mut tx = self.pool.begin().await?;
            let query = match self.backend {
                Backend::Postgres => {
                    "SELECT j.id FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
                     WHERE j.status = 'pending' ORDER BY j.id LIMIT 1 FOR UPDATE OF j, p SKIP LOCKED"
                }
                Backend::Sqlite => "SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1",
            };
            let Some(row) = sqlx::query(query).fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let job_id: i64 = row.try_get("id")?;
            match self.transition_in(&mut tx, job_id, JobEvent::Start, ctx, true).await {
                Ok(Some(t)) if t.changed => {
                    tx.commit().await?;
                    return Ok(Some(t));
                }
                Ok(_) | Err(EngineError::InvalidTransition(_)) => tx.rollback().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// One transition inside `tx`; None if the compare-and-set lost a race.
    /// Transitions of several jobs of one pipeline in one transaction, with one
    /// re-derivation of the pipeline status at the end: a pipeline cancel of n jobs costs
    /// O(n) instead of n re-derivations over n jobs. A move the table refuses (the job
    /// finished meanwhile) is left out. Returns the jobs that changed, in order, and the
    /// pipeline if its status changed.
    ///
    /// `cancel` (mode, by whom, why) is recorded on the pipeline in the same transaction
    /// when a job moved and the pipeline has no cancel yet or an abort escalates a
    /// graceful one, so a repeated cancel leaves the pipeline exactly as it was.
    pub async fn transition_pipeline_jobs(
        &self,
        pipeline_id: i64,
        moves: &[(i64, JobEvent, TransitionCtx)],
        cancel: Option<(CancelMode, &str, CancelReason)>,
    ) -> Result<(Vec<Transitioned>, Option<Pipeline>), EngineError> {
        'retry: loop {
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE")
                    .bind(pipeline_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let mut changed = Vec::new();
            for (job_id, event, ctx) in moves {
                match self.transition_in(&mut tx, *job_id, *event, ctx, false).await {
                    Ok(Some(t)) if t.changed => changed.push(t),
                    Ok(Some(_)) | Err(EngineError::InvalidTransition(_)) => {}
                    Ok(None) => {
                        tx.rollback().await?;
                        continue 'retry;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let (Some((mode, by, reason)), false) = (cancel, changed.is_empty()) {
                sqlx::query(
                    "UPDATE pipelines SET cancel_mode = $1, cancel_by = $2, cancel_at = $3, cancel_reason = $4 \
                     WHERE id = $5 AND (cancel_mode IS NULL OR ($1 = 'abort' AND cancel_mode <> 'abort'))",
                )
                .bind(mode.as_str())
                .bind(by)
                .bind(now())
                .bind(reason.as_str())
                .bind(pipeline_id)
                .execute(&mut *tx)
                .await?;
            }
            let pipeline = self.rederive_pipeline(&mut tx, pipeline_id, &now()).await?;
            if self.backend == Backend::Postgres && pipeline.is_some() {
                self.notify_in(&mut tx, None, pipeline.clone()).await?;
            }
            tx.commit().await?;
            return Ok((changed, pipeline));
        }
    }

    /// PostgreSQL: a change notice delivered to every replica's listener at commit, in
    /// commit order.
    async fn notify_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: Option<Job>,
        pipeline: Option<Pipeline>,
    ) -> Result<(), EngineError> {
        let payload = serde_json::to_string(&ChangeNotice { job, pipeline }).map_err(|e| EngineError::Internal(e.to_string()))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .fetch_all(&mut **tx)
            .await?;
        Ok(())
    }

    /// One transition inside `tx`; None when another writer moved the job first. With
    /// `rederive` the pipeline status is derived again too (a batch does that once at its end).
    async fn transition_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job_id: i64,
        event: JobEvent,
        ctx: &TransitionCtx,
        rederive: bool,
    ) -> Result<Option<Transitioned>, EngineError> {
        {
            if self.backend == Backend::Postgres && rederive {
                // Transitions of one pipeline take turns, so each re-derivation of the
                // pipeline status sees every job change committed before it.
                sqlx::query("SELECT p.id FROM pipelines p JOIN jobs j ON j.pipeline_id = p.id WHERE j.id = $1 FOR UPDATE OF p")
                    .bind(job_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            }
            let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(job_id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
            let current = job_from_row(&row)?;
            let is_runner_report = matches!(event, JobEvent::Finish { .. } | JobEvent::Timeout);
            if is_runner_report && ctx.runner_id.is_some() && current.runner_id != ctx.runner_id {
                return Err(EngineError::Conflict(format!("job {job_id} is not held by this runner")));
            }
            let to = match next(current.status, event)? {
                Outcome::Unchanged => {
                    return Ok(Some(Transitioned {
                        from: current.status,
                        job: current,
                        changed: false,
                        pipeline: None,
                    }));
                }
                Outcome::Move(to) => to,
            };
            let t = now();
            let finished_at = to.is_terminal().then(|| t.clone());
            let started_at = (event == JobEvent::Start).then(|| t.clone());
            let (cancel_mode, cancel_reason) = match ctx.cancel {
                Some((m, r)) => (Some(m.as_str()), Some(r.as_str())),
                None => (None, None),
            };
            let cancel_at = ctx.cancel.map(|_| t.clone());
            let cancel_by = ctx.cancel.map(|_| ctx.actor.clone());
            let after = ctx.after_script.as_ref();
            let result = sqlx::query(
                "UPDATE jobs SET status = $1, \
                 started_at = COALESCE($2, started_at), finished_at = COALESCE($3, finished_at), \
                 runner_id = COALESCE($4, runner_id), exit_code = COALESCE($5, exit_code), \
                 failure_reason = COALESCE($6, failure_reason), \
                 cancel_mode = COALESCE($7, cancel_mode), cancel_by = COALESCE($8, cancel_by), \
                 cancel_at = COALESCE($9, cancel_at), cancel_reason = COALESCE($10, cancel_reason), \
                 cancel_deadline = COALESCE($11, cancel_deadline), \
                 after_exit_code = COALESCE($12, after_exit_code), after_duration_ms = COALESCE($13, after_duration_ms), \
                 after_timed_out = COALESCE($14, after_timed_out) \
                 WHERE id = $15 AND status = $16",
            )
            .bind(to.as_str())
            .bind(started_at)
            .bind(finished_at)
            .bind(if event == JobEvent::Start { ctx.runner_id } else { None })
            .bind(ctx.exit_code.map(i64::from))
            .bind(ctx.failure_reason.as_deref())
            .bind(cancel_mode)
            .bind(cancel_by)
            .bind(cancel_at)
            .bind(cancel_reason)
            .bind(ctx.cancel_deadline.as_deref())
            .bind(after.and_then(|a| a.exit_code).map(i64::from))
            .bind(after.map(|a| a.duration_ms as i64))
            .bind(after.map(|a| a.timed_out as i64))
            .bind(job_id)
            .bind(current.status.as_str())
            .execute(&mut **tx)
            .await?;
            if result.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query(
                "INSERT INTO job_events (job_id, at, from_status, to_status, actor, mode, reason, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(job_id)
            .bind(&t)
            .bind(current.status.as_str())
            .bind(to.as_str())
            .bind(&ctx.actor)
            .bind(cancel_mode)
            .bind(cancel_reason.or(ctx.failure_reason.as_deref()))
            .bind(ctx.detail.as_deref())
            .execute(&mut **tx)
            .await?;
            let pipeline = if rederive {
                self.rederive_pipeline(tx, current.pipeline_id, &t).await?
            } else {
                None
            };
            let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(job_id)
                .fetch_one(&mut **tx)
                .await?;
            let job = job_from_row(&row)?;
            if self.backend == Backend::Postgres {
                // Delivered to every replica's listener at commit, in commit order.
                self.notify_in(tx, Some(job.clone()), pipeline.clone()).await?;
            }
            Ok(Some(Transitioned {
                job,
                from: current.status,
                changed: true,
                pipeline,
            }))
        }
    }

    /// Recomputes a pipeline's status from its jobs; returns it when it changed.
    async fn rederive_pipeline(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        pipeline_id: i64,
        t: &str,
    ) -> Result<Option<Pipeline>, EngineError> {
        let rows = sqlx::query("SELECT status FROM jobs WHERE pipeline_id = $1")
            .bind(pipeline_id)
            .fetch_all(&mut **tx)
            .await?;
        let statuses: Vec<Status> = rows
            .iter()
            .map(|r| {
                let s: String = r.try_get("status")?;
                Status::parse(&s).ok_or_else(|| bad_status(&s))
            })
            .collect::<Result<_, EngineError>>()?;
        let derived = derive_status(statuses.iter().copied());
        let row = sqlx::query(&format!("SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"))
            .bind(pipeline_id)
            .fetch_one(&mut **tx)
            .await?;
        let mut pipeline = pipeline_from_row(&row)?;
        if pipeline.status == derived {
            return Ok(None);
        }
        let started = statuses
            .iter()
            .any(|s| *s != Status::Created && *s != Status::Pending && *s != Status::Skipped);
        if started && pipeline.started_at.is_none() {
            pipeline.started_at = Some(t.to_string());
        }
        pipeline.finished_at = derived.is_terminal().then(|| t.to_string());
        pipeline.status = derived;
        sqlx::query("UPDATE pipelines SET status = $1, started_at = $2, finished_at = $3 WHERE id = $4")
            .bind(derived.as_str())
            .bind(pipeline.started_at.as_deref())
            .bind(pipeline.finished_at.as_deref())
            .bind(pipeline_id)
            .execute(&mut **tx)
            .await?;
        Ok(Some(pipeline))
    }

    pub async fn timeline(&self, job_id: i64) -> Result<Vec<TimelineEvent>, EngineError> {
        let rows =
            sqlx::query("SELECT at, from_status, to_status, actor, mode, reason, detail FROM job_events WHERE job_id = $1 ORDER BY id")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_status")?;
                let to: String = r.try_get("to_status")?;
                let mode: Option<String> = r.try_get("mode")?;
                Ok(TimelineEvent {
                    at: r.try_get("at")?,
                    from: from.and_then(|f| Status::parse(&f)),
                    to: Status::parse(&to).ok_or_else(|| bad_status(&to))?,
                    actor: r.try_get("actor")?,
                    mode: mode.and_then(|m| CancelMode::parse(&m)),
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    // ---- artifacts ----

    /// A job's status and the runner token of the runner holding it (if any).
    pub async fn job_holder_token(&self, job_id: i64) -> Result<Option<(Status, Option<i64>)>, EngineError> {
        let row = sqlx::query("SELECT j.status, r.token_id FROM jobs j LEFT JOIN runners r ON r.id = j.runner_id WHERE j.id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let status_text: String = row.try_get("status")?;
        let status = Status::parse(&status_text).ok_or_else(|| bad_status(&status_text))?;
        Ok(Some((status, row.try_get("token_id")?)))
    }

    /// Bytes taken by a job's artifacts other than `path`.
    pub async fn artifact_bytes_besides(&self, job_id: i64, path: &str) -> Result<u64, EngineError> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM job_artifacts WHERE job_id = $1 AND path <> $2")
            .bind(job_id)
            .bind(path)
            .fetch_one(&self.pool)
            .await?;
        let total: i64 = row.try_get("total")?;
        Ok(total.max(0) as u64)
    }

    /// Records (or replaces) an artifact file of a job.
    pub async fn put_artifact(&self, job_id: i64, path: &str, size: u64) -> Result<(), EngineError> {
        sqlx::query(
            "INSERT INTO job_artifacts (job_id, path, size, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, path) DO UPDATE SET size = excluded.size, created_at = excluded.created_at",
        )
        .bind(job_id)
        .bind(path)
        .bind(size as i64)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_artifacts(&self, job_id: i64) -> Result<Vec<Artifact>, EngineError> {
        let rows = sqlx::query("SELECT path, size FROM job_artifacts WHERE job_id = $1 ORDER BY path")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let size: i64 = r.try_get("size")?;
                Ok(Artifact {
                    path: r.try_get("path")?,
                    size: size.max(0) as u64,
                })
            })
            .collect()
    }

    pub async fn artifact_size(&self, job_id: i64, path: &str) -> Result<Option<u64>, EngineError> {
        let row = sqlx::query("SELECT size FROM job_artifacts WHERE job_id = $1 AND path = $2")
            .bind(job_id)
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("size").map(|s| s.max(0) as u64)).transpose()?)
    }

    // ---- logs ----

    /// Appends `data` at byte `offset` if that is the log's current end and the job is
    /// still held by a runner; past `max_bytes` the log ends with a truncation line and
    /// takes nothing more. Returns the log's length and the job's status either way.
    pub async fn append_log(
        &self,
        job_id: i64,
        runner_id: i64,
        offset: u64,
        data: &str,
        max_bytes: u64,
    ) -> Result<(u64, Status), EngineError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT log_length, status, runner_id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        let length: i64 = row.try_get("log_length")?;
        let status_text: String = row.try_get("status")?;
        let status = Status::parse(&status_text).ok_or_else(|| bad_status(&status_text))?;
        let holder: Option<i64> = row.try_get("runner_id")?;
        if holder != Some(runner_id) {
            return Err(EngineError::Conflict(format!("job {job_id} is not held by this runner")));
        }
        let length = length.max(0) as u64;
        // A frame sent again after a reconnect may overlap what is already stored: keep
        // only its new tail (frames start at character boundaries, so the cut does too).
        let (offset, data) = match length.checked_sub(offset) {
            Some(0) => (offset, data),
            Some(seen) if seen < data.len() as u64 && data.is_char_boundary(seen as usize) => (length, &data[seen as usize..]),
            _ => (offset, ""),
        };
        if offset != length || !status.is_active() || data.is_empty() || length >= max_bytes {
            tx.commit().await?;
            return Ok((length, status));
        }
        let room = (max_bytes - length) as usize;
        let truncated;
        let data = if data.len() > room {
            let mut cut = room;
            while !data.is_char_boundary(cut) {
                cut -= 1;
            }
            truncated = format!(
                "{}\n\x1b[33;1m[usher] The log reached its limit of {max_bytes} bytes; the rest is not kept.\x1b[0m\n",
                &data[..cut]
            );
            truncated.as_str()
        } else {
            data
        };
        sqlx::query("INSERT INTO job_log_chunks (job_id, byte_offset, byte_end, data) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(offset as i64)
            .bind((offset + data.len() as u64) as i64)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        let new_length = length + data.len() as u64;
        sqlx::query("UPDATE jobs SET log_length = $1 WHERE id = $2")
            .bind(new_length as i64)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((new_length, status))
    }

    /// The log from byte `offset` on (snapped forward to a character boundary).
    pub async fn read_log(&self, job_id: i64, offset: u64) -> Result<String, EngineError> {
        let rows = sqlx::query("SELECT byte_offset, data FROM job_log_chunks WHERE job_id = $1 AND byte_end > $2 ORDER BY byte_offset")
            .bind(job_id)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut out = String::new();
        for r in rows {
            let start: i64 = r.try_get("byte_offset")?;
            let data: String = r.try_get("data")?;
            let start = start.max(0) as u64;
            if start >= offset {
                out.push_str(&data);
            } else {
                let mut skip = (offset - start) as usize;
                while skip < data.len() && !data.is_char_boundary(skip) {
                    skip += 1;
                }
                out.push_str(&data[skip.min(data.len())..]);
            }
        }
        Ok(out)
    }
}
