//! Retry inside the gate: a finished job's new attempt is a fresh `created` copy of its
//! definition that points back at it (`retry_of`); the old job is marked retried, so it
//! stops counting for its pipeline and cannot be retried twice.

use sqlx::Row;
use usher_core::status::Status;

use super::change::Transitioned;
use super::transaction::Tx;
use super::{JOB_COLUMNS, Store, job_from_row};
use crate::{EngineError, now};

impl Store {
    /// A new `created` attempt of job `old` (refused if `old` was retried already).
    pub(super) async fn new_attempt_in(&self, tx: &mut Tx<'_>, old: i64, actor: &str) -> Result<Transitioned, EngineError> {
        let t = now();
        let marked = sqlx::query("UPDATE jobs SET retried = 1 WHERE id = $1 AND retried = 0")
            .bind(old)
            .execute(&mut **tx)
            .await?;
        if marked.rows_affected() != 1 {
            return Err(EngineError::InvalidTransition(format!(
                "job {old} was retried already: retry its newest attempt"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_index, needs, status, interruptible, spec, \
             created_at, tags, retry_of, when_to_run, allow_failure, resource_group, on_stop, start_in) \
             SELECT pipeline_id, project_id, name, stage, stage_index, needs, $1, interruptible, spec, $2, tags, id, when_to_run, \
             CASE WHEN allow_failure = $4 THEN 0 ELSE allow_failure END, resource_group, on_stop, start_in \
             FROM jobs WHERE id = $3 RETURNING id",
        )
        .bind(Status::Created.as_str())
        .bind(&t)
        .bind(old)
        .bind(crate::plan::ALLOWED_BY_EXIT_CODE)
        .fetch_one(&mut **tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        sqlx::query("INSERT INTO job_events (job_id, at, from_status, to_status, actor, detail) VALUES ($1, $2, NULL, $3, $4, $5)")
            .bind(id)
            .bind(&t)
            .bind(Status::Created.as_str())
            .bind(actor)
            .bind(format!("retry of job #{old}"))
            .execute(&mut **tx)
            .await?;
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        Ok(Transitioned {
            job: job_from_row(&row)?,
            from: Status::Created,
            changed: true,
        })
    }
}
