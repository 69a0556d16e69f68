//! The writes of status moves, in sets: the compare-and-set of the jobs' rows and their
//! timeline entries. [`super::transitions`] decides what moves; this module writes it
//! with as few statements as the moves allow — one read of all the jobs, one
//! `UPDATE … RETURNING` per group of jobs making the same move, one `INSERT` of all the
//! timeline entries — so cancelling a pipeline of a thousand jobs costs a handful of
//! statements, not four thousand.

use std::collections::HashMap;

use sqlx::Row;
use usher_core::api::{CancelMode, Job};

use super::change::Transitioned;
use super::pipeline_status::{PipelineFacts, pipeline_facts_from};
use super::transaction::Tx;
use super::{AnyQuery, JOB_COLUMNS, JOB_COLUMNS_OF_J, Store, job_from_row, placeholders};
use crate::plan::{Audit, JobWrite, Move, plan_batch};
use crate::{EngineError, now};

/// Jobs per statement: with 16 parameters a row at most, far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters.
const CHUNK: usize = 500;

/// One job's move as [`super::writer::Writer::write_single`] writes it: the row's new values,
/// its timeline entry, the time, and the job's pipeline.
pub(super) struct SingleWrite<'a> {
    pub write: &'a JobWrite,
    pub audit: &'a Audit,
    pub t: &'a str,
    pub pipeline_id: i64,
}

/// The start of every timeline insert; its [`AUDIT_PARAMS`] values are bound by
/// [`bind_audit`].
pub(super) const INSERT_AUDIT: &str = "INSERT INTO job_events (job_id, at, from_status, to_status, actor, mode, reason, detail)";
const AUDIT_PARAMS: usize = 8;

impl Store {
    /// The moves of a batch on distinct jobs (see [`super::Change::Batch`]), in the
    /// batch's order. Moves the table refuses or that change nothing are left out. None
    /// when another writer moved one of the jobs between the read and the write.
    /// `facts_of`: the pipeline whose facts to read after the moves, in the statement of
    /// their timeline entries (a round trip fewer), for a change that writes nothing else
    /// to it afterwards; None when no job moved. `known`: the jobs as they are inside `tx`
    /// already (a pipeline's just inserted), so they are not read again.
    pub(super) async fn batch_in(
        &self,
        tx: &mut Tx<'_>,
        moves: &[Move],
        facts_of: Option<i64>,
        known: Option<HashMap<i64, Job>>,
    ) -> Result<Option<(Vec<Transitioned>, Option<PipelineFacts>)>, EngineError> {
        let mut current = match known {
            Some(jobs) => jobs,
            None => {
                let ids: Vec<i64> = moves.iter().map(|m| m.job_id).collect();
                self.jobs_by_id_in(tx, &ids).await?
            }
        };
        let t = now();
        let plan = plan_batch(&current, moves, &t)?;
        for (write, ids) in &plan.groups {
            let Some(written) = self.write_moves(tx, write, ids).await? else {
                return Ok(None);
            };
            current.extend(written.into_iter().map(|j| (j.id, j)));
        }
        let facts = self.append_audits(tx, &plan.audits, &t, facts_of).await?;
        let moved = plan
            .audits
            .iter()
            .map(|e| Transitioned {
                job: current.remove(&e.job_id).expect("every moved job was read"),
                from: e.from,
                changed: true,
            })
            .collect();
        Ok(Some((moved, facts)))
    }

    /// The jobs with these ids, as they are inside `tx`.
    async fn jobs_by_id_in(&self, tx: &mut Tx<'_>, ids: &[i64]) -> Result<HashMap<i64, Job>, EngineError> {
        let mut jobs = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let job = job_from_row(&row)?;
                jobs.insert(job.id, job);
            }
        }
        Ok(jobs)
    }

    /// The compare-and-set of a group: the jobs move to `write.to` only if they are
    /// still in `write.from`. The rows as written, or None when one had moved already.
    pub(super) async fn write_moves(&self, tx: &mut Tx<'_>, write: &JobWrite, ids: &[i64]) -> Result<Option<Vec<Job>>, EngineError> {
        let mut written = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!("{} RETURNING {JOB_COLUMNS}", update_sql(chunk.len()));
            let mut query = bind_write(sqlx::query(&sql), write);
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&mut **tx).await?;
            if rows.len() != chunk.len() {
                return Ok(None);
            }
            for row in &rows {
                written.push(job_from_row(row)?);
            }
        }
        Ok(Some(written))
    }

    /// The timeline entries of these moves, in order. With `facts_of`, the statement of
    /// the last entries also reads that pipeline's facts, which see every move before it
    /// ([`super::writer::Writer::insert_then_facts`]). None without entries.
    async fn append_audits(
        &self,
        tx: &mut Tx<'_>,
        entries: &[Audit],
        t: &str,
        facts_of: Option<i64>,
    ) -> Result<Option<PipelineFacts>, EngineError> {
        const PER_ROW: usize = AUDIT_PARAMS;
        let chunks = entries.chunks(CHUNK).count();
        let mut facts = None;
        for (n, chunk) in entries.chunks(CHUNK).enumerate() {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + i * PER_ROW, PER_ROW)))
                .collect();
            let insert = format!("{INSERT_AUDIT} VALUES {}", rows.join(", "));
            let read = facts_of.filter(|_| n + 1 == chunks);
            let sql = match read {
                None => insert,
                Some(_) => self.writer.insert_then_facts(&insert, chunk.len() * PER_ROW + 1),
            };
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = bind_audit(query, e, t);
            }
            if let Some(pipeline_id) = read {
                let rows = query.bind(pipeline_id).fetch_all(&mut **tx).await?;
                facts = pipeline_facts_from(&rows)?;
            } else {
                query.execute(&mut **tx).await?;
            }
        }
        Ok(facts)
    }
}

/// A value a move writes to a column.
enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

/// How a column's value is found in a [`JobWrite`].
type ValueOf = for<'a> fn(&'a JobWrite) -> Value<'a>;

/// The columns a move writes besides `status`, each with its value in a [`JobWrite`]
/// (`None` keeps what the column holds): the one list the `UPDATE`'s text and its binds
/// both come from, so a new column is one line here.
const WRITTEN: &[(&str, ValueOf)] = &[
    ("started_at", |w| Value::Text(w.started_at.as_deref())),
    ("finished_at", |w| Value::Text(w.finished_at.as_deref())),
    ("runner_id", |w| Value::Int(w.runner_id)),
    ("exit_code", |w| Value::Int(w.exit_code)),
    ("failure_reason", |w| Value::Text(w.failure_reason)),
    ("cancel_mode", |w| Value::Text(w.cancel_mode)),
    ("cancel_by", |w| Value::Text(w.cancel_by.as_deref())),
    ("cancel_at", |w| Value::Text(w.cancel_at.as_deref())),
    ("cancel_reason", |w| Value::Text(w.cancel_reason)),
    ("cancel_message", |w| Value::Text(w.cancel_message.as_deref())),
    ("cancel_deadline", |w| Value::Text(w.cancel_deadline.as_deref())),
    ("after_exit_code", |w| Value::Int(w.after_exit_code)),
    ("after_duration_ms", |w| Value::Int(w.after_duration_ms)),
    ("after_timed_out", |w| Value::Int(w.after_timed_out)),
    ("dotenv", |w| Value::Text(w.dotenv.as_deref())),
    ("teardown", |w| Value::Text(w.teardown.as_deref())),
    ("allow_failure", |w| Value::Int(w.allow_failure)),
    ("play_at", |w| Value::Text(w.play_at.as_deref())),
];

/// How many parameters [`bind_write`] binds: the new status, [`WRITTEN`], the status the
/// job must still have. The ids follow.
const WRITE_PARAMS: usize = WRITTEN.len() + 2;

/// The compare-and-set `UPDATE` of `n` jobs: the new status is $1, [`WRITTEN`] $2 on,
/// the status the jobs must still have next, the ids after it (see [`bind_write`]).
pub(super) fn update_sql(n: usize) -> String {
    let sets: Vec<String> = WRITTEN
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{column} = COALESCE(${}, {column})", i + 2))
        .collect();
    format!(
        "UPDATE jobs SET status = $1, {} WHERE status = ${WRITE_PARAMS} AND id IN ({})",
        sets.join(", "),
        placeholders(WRITE_PARAMS + 1, n)
    )
}

/// Binds the [`WRITE_PARAMS`] parameters of [`update_sql`].
fn bind_write<'q>(query: AnyQuery<'q>, write: &'q JobWrite) -> AnyQuery<'q> {
    let mut query = query.bind(write.to.as_str());
    for (_, value) in WRITTEN {
        query = match value(write) {
            Value::Text(text) => query.bind(text),
            Value::Int(number) => query.bind(number),
        };
    }
    query.bind(write.from.as_str())
}

/// The parameters of a single move's statement as [`bind_single`] binds them: the
/// write's, then the job's id, then its timeline entry's from [`SINGLE_AUDIT_FIRST`] on;
/// [`SINGLE_NEXT_PARAM`] is the first number after them.
pub(super) const SINGLE_AUDIT_FIRST: usize = WRITE_PARAMS + 2;
pub(super) const SINGLE_NEXT_PARAM: usize = SINGLE_AUDIT_FIRST + AUDIT_PARAMS;

/// Binds a single move's parameters (see [`SINGLE_AUDIT_FIRST`]).
pub(super) fn bind_single<'q>(query: AnyQuery<'q>, single: &'q SingleWrite<'q>) -> AnyQuery<'q> {
    let query = bind_write(query, single.write).bind(single.audit.job_id);
    bind_audit(query, single.audit, single.t)
}

/// The read of the job a single-job change moves, with its pipeline's cancel mode (which
/// decides whether a cleanup job may be cancelled); `lock` ends the statement.
pub(super) fn move_read_sql(lock: &str) -> String {
    format!(
        "SELECT {}, p.cancel_mode AS pipeline_cancel_mode FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id WHERE j.id = $1{lock}",
        *JOB_COLUMNS_OF_J
    )
}

/// The job and its pipeline's cancel mode in a row of [`move_read_sql`].
pub(super) fn move_from_row(row: &sqlx::any::AnyRow) -> Result<(Job, Option<CancelMode>), EngineError> {
    let pipeline_cancel = row
        .try_get::<Option<String>, _>("pipeline_cancel_mode")?
        .and_then(|m| CancelMode::parse(&m));
    Ok((job_from_row(row)?, pipeline_cancel))
}

/// Binds one timeline row's eight values: job, time, from, to, actor, cancel mode,
/// reason (the cancel's or the failure's), detail.
fn bind_audit<'q>(query: AnyQuery<'q>, e: &'q Audit, t: &'q str) -> AnyQuery<'q> {
    query
        .bind(e.job_id)
        .bind(t)
        .bind(e.from.as_str())
        .bind(e.to.as_str())
        .bind(e.by.as_str())
        .bind(e.mode.map(|m| m.as_str()))
        .bind(e.reason)
        .bind(e.detail.as_deref())
}
