//! Pipelines and the jobs they are created with: insertion in one transaction, the list
//! pages' queries, and what the scheduler and auto-cancel read.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use usher_core::api::{CancelMode, Job, Pipeline, When};
use usher_core::config::JobConfig;
use usher_core::status::Status;

use super::transaction::Tx;
use super::{JOB_COLUMNS, PIPELINE_COLUMNS, Store, bad_status, job_from_row, pipeline_from_row, sql_statuses, tags_to};
use crate::{EngineError, now};
use usher_core::status::StatusGroup;

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
    /// Whether the pipeline's ref is a tag (CI_COMMIT_TAG) rather than a branch.
    #[serde(default)]
    pub ref_is_tag: bool,
    /// What made the pipeline (`CI_PIPELINE_SOURCE`: push, web, api); None for pipelines
    /// stored before it was kept.
    #[serde(default)]
    pub origin: Option<String>,
    /// Its pipeline's `workflow: auto_cancel: on_job_failure: all`.
    #[serde(default)]
    pub cancel_on_job_failure: bool,
}

/// A pipeline to insert with its jobs.
pub struct NewPipeline<'a> {
    pub project_id: i64,
    pub git_ref: &'a str,
    pub sha: Option<&'a str>,
    pub commit_title: Option<&'a str>,
    pub triggered_by: &'a str,
    pub jobs: &'a [NewJob],
    /// When it has run too long (`workflow: timeout`), RFC 3339.
    pub timeout_at: Option<String>,
}

/// A job as the scheduler needs it.
pub struct JobNodeRow {
    pub id: i64,
    pub name: String,
    pub stage_index: usize,
    pub needs: Option<Vec<String>>,
    /// As it is; the scheduler counts it with `allow_failure`.
    pub status: Status,
    pub when: When,
    pub allow_failure: bool,
    /// `environment: on_stop` (the stop job's name).
    pub on_stop: Option<String>,
    /// This attempt or an earlier one of the same job was taken by a runner (and may
    /// have made something); a retry of one that never ran has not.
    pub started: bool,
}

impl JobNodeRow {
    /// As core's scheduler sees it.
    pub fn node(&self) -> usher_core::pipeline::JobNode<'_> {
        usher_core::pipeline::JobNode {
            name: &self.name,
            stage_index: self.stage_index,
            needs: self.needs.as_deref(),
            status: self.status,
            when: self.when,
            allow_failure: self.allow_failure,
            on_stop: self.on_stop.as_deref(),
            started: self.started,
        }
    }
}

pub struct PipelineFilter {
    pub project_id: Option<i64>,
    pub git_ref: Option<String>,
    pub status: Option<Status>,
    pub limit: i64,
    pub offset: i64,
}

impl Store {
    /// Inserts a pipeline and its jobs (all `created`, each with its first timeline
    /// event) inside `tx`; returns the pipeline's id and its jobs as stored, in the order
    /// of `new.jobs`, so that scheduling them needs no read. Only [`Change::Create`] calls
    /// it, so a new pipeline's first moves commit with it.
    pub(super) async fn insert_pipeline_in(&self, tx: &mut Tx<'_>, new: &NewPipeline<'_>) -> Result<(i64, Vec<Job>), EngineError> {
        let NewPipeline {
            project_id,
            git_ref,
            triggered_by,
            jobs,
            ..
        } = *new;
        let t = now();
        let sql = self.writer.opening(
            tx,
            "INSERT INTO pipelines (project_id, git_ref, status, created_at, triggered_by, sha, commit_title, timeout_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        );
        // All rows: a stream stopped at the first would leave the statement open.
        let row = sqlx::query(&sql)
            .bind(project_id)
            .bind(git_ref)
            .bind(Status::Created.as_str())
            .bind(&t)
            .bind(triggered_by)
            .bind(new.sha)
            .bind(new.commit_title)
            .bind(new.timeout_at.as_deref())
            .fetch_all(&mut **tx)
            .await?
            .pop()
            .ok_or(sqlx::Error::RowNotFound)?;
        let pipeline_id: i64 = row.try_get("id")?;
        let insert_job = format!(
            "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_index, needs, status, interruptible, spec, created_at, tags, \
             when_to_run, allow_failure, resource_group, on_stop, start_in) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING {JOB_COLUMNS}"
        );
        let mut stored = Vec::with_capacity(jobs.len());
        for job in jobs {
            let spec = serde_json::to_string(&job.spec).map_err(|e| EngineError::Internal(e.to_string()))?;
            let needs = job.needs.as_ref().map(|n| serde_json::to_string(n).unwrap_or_default());
            let row = sqlx::query(&insert_job)
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
                .bind(tags_to(&job.spec.job.tags))
                .bind(job.spec.job.when.as_str())
                .bind(job.spec.job.allow_failure.any as i64)
                .bind(job.spec.job.resource_group.as_deref())
                .bind(job.spec.job.on_stop.as_deref())
                .bind(job.spec.job.start_in.map(|s| s as i64))
                .fetch_one(&mut **tx)
                .await?;
            stored.push(job_from_row(&row)?);
        }
        let job_ids: Vec<i64> = stored.iter().map(|j| j.id).collect();
        // Each job's first timeline entry (created, by whoever triggered the pipeline),
        // 500 to a statement.
        for chunk in job_ids.chunks(500) {
            let rows: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, $1, NULL, $2, $3)", i + 4)).collect();
            let sql = format!(
                "INSERT INTO job_events (job_id, at, from_status, to_status, actor) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(&t).bind(Status::Created.as_str()).bind(triggered_by);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut **tx).await?;
        }
        Ok((pipeline_id, stored))
    }

    pub async fn get_pipeline(&self, id: i64) -> Result<Option<Pipeline>, EngineError> {
        let row = sqlx::query(&format!("SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
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
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(pipeline_from_row).collect()
    }

    /// Unfinished pipelines of a project and ref created before `before_id`.
    pub async fn unfinished_pipelines_before(&self, project_id: i64, git_ref: &str, before_id: i64) -> Result<Vec<i64>, EngineError> {
        let finished = sql_statuses(StatusGroup::Finished);
        let rows = sqlx::query(&format!(
            "SELECT id FROM pipelines WHERE project_id = $1 AND git_ref = $2 AND id < $3 \
             AND status NOT IN ({finished}) ORDER BY id"
        ))
        .bind(project_id)
        .bind(git_ref)
        .bind(before_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// Unfinished pipelines not cancelled yet whose `workflow: timeout` ran out before
    /// `now`.
    pub async fn timed_out_pipelines(&self, now: &str) -> Result<Vec<i64>, EngineError> {
        let finished = sql_statuses(StatusGroup::Finished);
        let rows = sqlx::query(&format!(
            "SELECT id FROM pipelines WHERE timeout_at < $1 AND cancel_mode IS NULL AND status NOT IN ({finished}) ORDER BY id"
        ))
        .bind(now)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    pub async fn jobs_of_pipeline(&self, pipeline_id: i64) -> Result<Vec<Job>, EngineError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE pipeline_id = $1 ORDER BY stage_index, id"
        ))
        .bind(pipeline_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn job_nodes(&self, pipeline_id: i64) -> Result<(Vec<JobNodeRow>, Option<CancelMode>), EngineError> {
        job_nodes_on(&mut *self.conn().await?, pipeline_id).await
    }
}

/// [`Store::job_nodes`] on `conn` (inside a change's transaction, say).
pub(super) async fn job_nodes_on(
    conn: &mut sqlx::AnyConnection,
    pipeline_id: i64,
) -> Result<(Vec<JobNodeRow>, Option<CancelMode>), EngineError> {
    // The newest attempt of each job: older ones no longer count. With the pipeline's
    // cancel, on every row.
    let rows = sqlx::query(
        "SELECT j.id, j.name, j.stage_index, j.needs, j.status, j.when_to_run, j.allow_failure, j.on_stop, \
             CAST(CASE WHEN s.name IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS started, p.cancel_mode \
             FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
             LEFT JOIN (SELECT DISTINCT name FROM jobs WHERE pipeline_id = $1 AND started_at IS NOT NULL) s ON s.name = j.name \
             WHERE j.pipeline_id = $1 AND j.retried = 0 \
             ORDER BY j.stage_index, j.id",
    )
    .bind(pipeline_id)
    .fetch_all(&mut *conn)
    .await?;
    let cancel = match rows.first() {
        Some(r) => r.try_get::<Option<String>, _>("cancel_mode")?.and_then(|m| CancelMode::parse(&m)),
        None => None,
    };
    let nodes = rows
        .iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            let needs: Option<String> = r.try_get("needs")?;
            Ok(JobNodeRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                stage_index: r.try_get::<i64, _>("stage_index")?.max(0) as usize,
                needs: needs.and_then(|n| serde_json::from_str(&n).ok()),
                status: Status::parse(&status).ok_or_else(|| bad_status(&status))?,
                allow_failure: r.try_get::<i64, _>("allow_failure")? != 0,
                on_stop: r.try_get("on_stop")?,
                started: r.try_get::<i64, _>("started")? != 0,
                when: {
                    let when: String = r.try_get("when_to_run")?;
                    When::parse(&when).unwrap_or_default()
                },
            })
        })
        .collect::<Result<_, EngineError>>()?;
    Ok((nodes, cancel))
}
