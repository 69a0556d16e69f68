//! A pipeline's status, re-derived from its jobs' statuses inside the transaction that
//! moved them: the read of what the derivation needs, core's `derive_status` over it,
//! and the write of the answer when it changed.

use std::sync::LazyLock;

use sqlx::Row;
use usher_core::api::Pipeline;
use usher_core::pipeline::derive_status;
use usher_core::status::Status;

use super::transitions::{Tx, qualified};
use super::*;
use crate::EngineError;

/// [`PIPELINE_COLUMNS`] of a query's `p` (the pipeline joined with its jobs' statuses).
static PIPELINE_COLUMNS_OF_P: LazyLock<String> = LazyLock::new(|| qualified("p", PIPELINE_COLUMNS));

impl Store {
    /// Recomputes a pipeline's status from its jobs; returns it when it changed.
    pub(super) async fn rederive_pipeline(&self, tx: &mut Tx<'_>, pipeline_id: i64, t: &str) -> Result<Option<Pipeline>, EngineError> {
        // The pipeline with the distinct statuses of its jobs, one row per status (the
        // derivation depends only on which statuses occur). Only the newest attempt of
        // each job counts.
        let rows = sqlx::query(&format!(
            "SELECT {}, s.status AS job_status FROM pipelines p \
             LEFT JOIN (SELECT DISTINCT status FROM jobs WHERE pipeline_id = $1 AND retried = 0) s ON 1 = 1 \
             WHERE p.id = $1",
            *PIPELINE_COLUMNS_OF_P
        ))
        .bind(pipeline_id)
        .fetch_all(&mut **tx)
        .await?;
        let first = rows
            .first()
            .ok_or_else(|| EngineError::NotFound(format!("pipeline {pipeline_id}")))?;
        let mut pipeline = pipeline_from_row(first)?;
        let mut statuses = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(s) = row.try_get::<Option<String>, _>("job_status")? {
                statuses.push(Status::parse(&s).ok_or_else(|| bad_status(&s))?);
            }
        }
        let derived = derive_status(statuses.iter().copied());
        if pipeline.status == derived {
            return Ok(None);
        }
        if statuses.iter().any(|s| s.has_started()) && pipeline.started_at.is_none() {
            pipeline.started_at = Some(t.to_string());
        }
        pipeline.finished_at = derived.is_terminal().then(|| t.to_string());
        pipeline.status = derived;
        // PostgreSQL writes it in the statement that sends the change's notices.
        if self.backend != Backend::Postgres {
            bind_pipeline_status(sqlx::query(&pipeline_status_sql(1)), &pipeline)
                .execute(&mut **tx)
                .await?;
        }
        Ok(Some(pipeline))
    }
}

/// The write of a pipeline's re-derived status, its parameters numbered from `first`.
pub(super) fn pipeline_status_sql(first: usize) -> String {
    let [status, started, finished, id] = [first, first + 1, first + 2, first + 3];
    format!("UPDATE pipelines SET status = ${status}, started_at = ${started}, finished_at = ${finished} WHERE id = ${id}")
}

pub(super) fn bind_pipeline_status<'q>(query: AnyQuery<'q>, pipeline: &'q Pipeline) -> AnyQuery<'q> {
    query
        .bind(pipeline.status.as_str())
        .bind(pipeline.started_at.as_deref())
        .bind(pipeline.finished_at.as_deref())
        .bind(pipeline.id)
}
