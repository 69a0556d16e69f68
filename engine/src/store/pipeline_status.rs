//! A pipeline's status, re-derived from its jobs' statuses inside the transaction that
//! moved them: the read of what the derivation needs, [`crate::plan::pipeline_after`]
//! over it, and the write of the answer when it changed.

use std::sync::LazyLock;

use sqlx::Row;
use sqlx::any::AnyRow;
use usher_core::api::{Pipeline, When};
use usher_core::status::Status;

use super::transaction::Tx;
use super::{AnyQuery, PIPELINE_COLUMNS, Store, bad_status, pipeline_from_row, qualified};
use crate::EngineError;
use crate::plan::pipeline_after;

/// [`PIPELINE_COLUMNS`] of a query's `p` (the pipeline joined with its jobs' statuses).
static PIPELINE_COLUMNS_OF_P: LazyLock<String> = LazyLock::new(|| qualified("p", PIPELINE_COLUMNS));

/// What a pipeline's derivation reads: the pipeline (its cancel included), and which
/// statuses its jobs count as (an allowed failure as a success) with which `when` (only
/// the newest attempt of each job counts; only which pairs occur matters).
pub(super) struct PipelineFacts {
    pipeline: Pipeline,
    jobs: Vec<(Status, When)>,
}

/// The read of [`PipelineFacts`], the pipeline's id its parameter `$param`: the pipeline
/// with the distinct (status, when) of its jobs, one row each. It ends with its `WHERE`
/// condition, so a writer may add to it.
pub(super) fn pipeline_facts_sql(param: usize) -> String {
    format!(
        "SELECT {}, s.status AS job_status, s.when_to_run AS job_when, s.allow_failure AS job_allowed FROM pipelines p \
         LEFT JOIN (SELECT DISTINCT status, when_to_run, allow_failure FROM jobs WHERE pipeline_id = ${param} AND retried = 0) s ON 1 = 1 \
         WHERE p.id = ${param}",
        *PIPELINE_COLUMNS_OF_P
    )
}

/// The facts in [`pipeline_facts_sql`]'s rows; None without rows (no such pipeline).
pub(super) fn pipeline_facts_from<'r>(rows: impl IntoIterator<Item = &'r AnyRow>) -> Result<Option<PipelineFacts>, EngineError> {
    let mut rows = rows.into_iter().peekable();
    let Some(first) = rows.peek() else {
        return Ok(None);
    };
    let pipeline = pipeline_from_row(first)?;
    let mut jobs = Vec::new();
    for row in rows {
        if let Some(s) = row.try_get::<Option<String>, _>("job_status")? {
            let when = row
                .try_get::<Option<String>, _>("job_when")?
                .and_then(|w| When::parse(&w))
                .unwrap_or_default();
            let allowed = row.try_get::<Option<i64>, _>("job_allowed")?.unwrap_or(0) != 0;
            let status = Status::parse(&s).ok_or_else(|| bad_status(&s))?;
            jobs.push((usher_core::pipeline::counted(status, allowed), when));
        }
    }
    Ok(Some(PipelineFacts { pipeline, jobs }))
}

impl Store {
    /// The facts of pipeline `pipeline_id` as they are inside `tx`.
    pub(super) async fn pipeline_facts_in(&self, tx: &mut Tx<'_>, pipeline_id: i64) -> Result<PipelineFacts, EngineError> {
        let rows = sqlx::query(&pipeline_facts_sql(1)).bind(pipeline_id).fetch_all(&mut **tx).await?;
        pipeline_facts_from(&rows)?.ok_or_else(|| EngineError::NotFound(format!("pipeline {pipeline_id}")))
    }
}

/// The pipeline with its status derived from `facts` (read inside the change's
/// transaction after its moves), when that status changed; the writer writes it when it
/// ends the change ([`super::writer::Writer::finish`]).
pub(super) fn rederive_pipeline(facts: PipelineFacts, t: &str) -> Option<Pipeline> {
    pipeline_after(&facts.pipeline, &facts.jobs, t)
}

/// The write of a pipeline's re-derived status, its parameters numbered from `first`.
pub(super) fn pipeline_status_sql(first: usize) -> String {
    let [status, started, finished, id] = [first, first + 1, first + 2, first + 3];
    // A pipeline that has finished has no `workflow: timeout` left: a retry or a late
    // Play runs it again without one.
    format!(
        "UPDATE pipelines SET status = ${status}, started_at = ${started}, finished_at = ${finished}, \
         timeout_at = CASE WHEN ${finished} IS NULL THEN timeout_at ELSE NULL END WHERE id = ${id}"
    )
}

pub(super) fn bind_pipeline_status<'q>(query: AnyQuery<'q>, pipeline: &'q Pipeline) -> AnyQuery<'q> {
    query
        .bind(pipeline.status.as_str())
        .bind(pipeline.started_at.as_deref())
        .bind(pipeline.finished_at.as_deref())
        .bind(pipeline.id)
}
