//! The gate's writer on SQLite: one writer, no notices, and as few calls to the
//! connection's worker thread as the change allows.
//!
//! A call is a round trip to that thread (about 45 µs here, more when it has to be
//! woken). sqlx runs every statement of a call's text in turn, so the writer sends a
//! change in three calls where a statement a call would take six or seven: its first
//! statement carries the transaction's `BEGIN` ([`opening`]); a move's compare-and-set,
//! its timeline entry and the read of the pipeline's facts after it go together
//! ([`write_single`], [`insert_then_facts`]); and the pipeline's new status goes with
//! the `COMMIT` ([`finish`]). benchmarks.md has what that saves a cancel. (sqlx 0.8
//! marks several statements in one call as behaviour it may drop; the gate's tests
//! would fail the day it does, and the writer would fall back to a call a statement.)

use std::borrow::Cow;

use usher_core::api::{CancelMode, Job};

use crate::EngineError;
use crate::store::change::Committed;
use crate::store::claims::{Candidate, ClaimTarget};
use crate::store::moves::{
    INSERT_AUDIT, SINGLE_AUDIT_FIRST, SINGLE_NEXT_PARAM, SingleWrite, bind_single, move_from_row, move_read_sql, update_sql,
};
use crate::store::pipeline_status::{PipelineFacts, bind_pipeline_status, pipeline_facts_from, pipeline_facts_sql, pipeline_status_sql};
use crate::store::transaction::Tx;
use crate::store::{JOB_COLUMNS, job_from_row, placeholders};

pub(super) fn opening<'s>(tx: &mut Tx<'_>, sql: &'s str) -> Cow<'s, str> {
    if tx.begin_with_next_statement() {
        Cow::Owned(format!("BEGIN; {sql}"))
    } else {
        Cow::Borrowed(sql)
    }
}

pub(super) async fn read_for_move(tx: &mut Tx<'_>, job_id: i64) -> Result<(Job, Option<CancelMode>), EngineError> {
    let read = move_read_sql("");
    let sql = opening(tx, &read);
    // All rows: a stream stopped at the first would leave the statement open.
    let row = sqlx::query(&sql)
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?
        .pop()
        .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
    move_from_row(&row)
}

/// One call of three statements: the compare-and-set, the timeline entry (only if the
/// row moved), and the pipeline's facts (only if the entry was written). Its rows are
/// the job as written, then the facts; none when the job had moved already.
pub(super) async fn write_single(tx: &mut Tx<'_>, single: &SingleWrite<'_>) -> Result<Option<(Job, Option<PipelineFacts>)>, EngineError> {
    let sql = format!(
        "{} RETURNING {JOB_COLUMNS}; {INSERT_AUDIT} SELECT {} WHERE changes() = 1; {} AND changes() = 1",
        update_sql(1),
        placeholders(SINGLE_AUDIT_FIRST, SINGLE_NEXT_PARAM - SINGLE_AUDIT_FIRST),
        pipeline_facts_sql(SINGLE_NEXT_PARAM)
    );
    let rows = bind_single(sqlx::query(&sql), single)
        .bind(single.pipeline_id)
        .fetch_all(&mut **tx)
        .await?;
    let Some((job, facts)) = rows.split_first() else {
        return Ok(None);
    };
    Ok(Some((job_from_row(job)?, pipeline_facts_from(facts)?)))
}

pub(super) fn insert_then_facts(insert: &str, facts_param: usize) -> String {
    format!("{insert}; {}", pipeline_facts_sql(facts_param))
}

/// One writer: nothing can take the first candidate between this read and the claim's
/// compare-and-set.
pub(super) fn pick_claim(candidates: Vec<Candidate>) -> Option<ClaimTarget> {
    candidates.into_iter().next().map(|c| ClaimTarget {
        job_id: c.job,
        pipeline_id: c.pipeline,
        locked: None,
    })
}

/// The pipeline's new status and the `COMMIT` in one call.
pub(super) async fn finish(tx: &mut Tx<'_>, committed: &Committed) -> Result<(), EngineError> {
    if let Some(pipeline) = &committed.pipeline {
        let sql = format!("{}; COMMIT", pipeline_status_sql(1));
        bind_pipeline_status(sqlx::query(&sql), pipeline).execute(&mut **tx).await?;
        tx.committed_by_last_statement();
    }
    Ok(())
}
