//! The writes of status moves, in sets: the compare-and-set of the jobs' rows and their
//! timeline entries. [`super::transitions`] decides what moves; this module writes it
//! with as few statements as the moves allow — one read of all the jobs, one
//! `UPDATE … RETURNING` per group of jobs making the same move, one `INSERT` of all the
//! timeline entries — so cancelling a pipeline of a thousand jobs costs a handful of
//! statements, not four thousand.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use usher_core::api::Job;

use super::change::Transitioned;
use super::pipeline_status::{PipelineFacts, is_facts_row, pipeline_facts_from, pipeline_facts_sql};
use super::transaction::Tx;
use super::{AnyQuery, Backend, JOB_COLUMNS, Store, job_from_row, placeholders};
use crate::plan::{Audit, JobWrite, Move, plan_batch};
use crate::{EngineError, now};

/// Jobs per statement: with 16 parameters a row at most, far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters.
const CHUNK: usize = 500;

/// One job's move as [`Store::write_move_with_audit`] writes it: the row's new values,
/// its timeline entry, the time, and the job's pipeline.
pub(super) struct SingleWrite<'a> {
    pub write: &'a JobWrite,
    pub audit: &'a Audit,
    pub t: &'a str,
    pub pipeline_id: i64,
}

/// The start of every timeline insert; its values are bound by [`bind_audit`].
const INSERT_AUDIT: &str = "INSERT INTO job_events (job_id, at, from_status, to_status, actor, mode, reason, detail)";

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

    /// One job's compare-and-set ([`Store::write_moves`]) and its timeline entry, the
    /// entry inserted only when the row moved; None when the job had moved already.
    ///
    /// On PostgreSQL one statement (a data-modifying CTE). On SQLite one call with three
    /// statements, which sqlx hands to the connection's worker thread at once: the
    /// update, the entry, and the read of the pipeline's facts after the move
    /// (`pipeline_id` is the job's pipeline), returned with the job. Each call to that
    /// thread and back costs about 45 µs here, a third of a cancel's transaction.
    pub(super) async fn write_move_with_audit(
        &self,
        tx: &mut Tx<'_>,
        single: &SingleWrite<'_>,
    ) -> Result<Option<(Job, Option<PipelineFacts>)>, EngineError> {
        let audit_values = "$17, $18, $19, $20, $21, $22, $23, $24";
        let sql = match self.backend {
            Backend::Postgres => format!(
                "WITH moved AS ({} RETURNING {JOB_COLUMNS}), \
                 audit AS ({INSERT_AUDIT} SELECT {audit_values} FROM moved) \
                 SELECT {JOB_COLUMNS} FROM moved",
                update_sql(1)
            ),
            Backend::Sqlite => format!(
                "{} RETURNING {JOB_COLUMNS}; {INSERT_AUDIT} SELECT {audit_values} WHERE changes() = 1; {}",
                update_sql(1),
                pipeline_facts_sql(25)
            ),
        };
        let query = bind_write(sqlx::query(&sql), single.write).bind(single.audit.job_id);
        let query = bind_audit(query, single.audit, single.t);
        let query = match self.backend {
            Backend::Postgres => query,
            Backend::Sqlite => query.bind(single.pipeline_id),
        };
        let rows = query.fetch_all(&mut **tx).await?;
        let (facts, moved): (Vec<&AnyRow>, Vec<&AnyRow>) = rows.iter().partition(|row| is_facts_row(row));
        let Some(job) = moved.first() else {
            return Ok(None);
        };
        Ok(Some((job_from_row(job)?, pipeline_facts_from(facts)?)))
    }

    /// The timeline entries of these moves, in order. With `facts_of`, the statement of
    /// the last entries also reads that pipeline's facts, which see every move before it:
    /// on PostgreSQL the insert is a CTE of the read, on SQLite a statement before it in
    /// the same call to the connection's worker. None without entries.
    async fn append_audits(
        &self,
        tx: &mut Tx<'_>,
        entries: &[Audit],
        t: &str,
        facts_of: Option<i64>,
    ) -> Result<Option<PipelineFacts>, EngineError> {
        const PER_ROW: usize = 8;
        let chunks = entries.chunks(CHUNK).count();
        let mut facts = None;
        for (n, chunk) in entries.chunks(CHUNK).enumerate() {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + i * PER_ROW, PER_ROW)))
                .collect();
            let insert = format!("{INSERT_AUDIT} VALUES {}", rows.join(", "));
            let read = facts_of.filter(|_| n + 1 == chunks);
            let sql = match (read, self.backend) {
                (None, _) => insert,
                (Some(_), Backend::Postgres) => format!("WITH audit AS ({insert}) {}", pipeline_facts_sql(chunk.len() * PER_ROW + 1)),
                (Some(_), Backend::Sqlite) => format!("{insert}; {}", pipeline_facts_sql(chunk.len() * PER_ROW + 1)),
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

/// The compare-and-set `UPDATE` of `n` jobs: `write`'s values are $1–$15 (see
/// [`bind_write`]), the ids $16 on.
fn update_sql(n: usize) -> String {
    format!(
        "UPDATE jobs SET status = $1, \
         started_at = COALESCE($2, started_at), finished_at = COALESCE($3, finished_at), \
         runner_id = COALESCE($4, runner_id), exit_code = COALESCE($5, exit_code), \
         failure_reason = COALESCE($6, failure_reason), \
         cancel_mode = COALESCE($7, cancel_mode), cancel_by = COALESCE($8, cancel_by), \
         cancel_at = COALESCE($9, cancel_at), cancel_reason = COALESCE($10, cancel_reason), \
         cancel_deadline = COALESCE($11, cancel_deadline), \
         after_exit_code = COALESCE($12, after_exit_code), after_duration_ms = COALESCE($13, after_duration_ms), \
         after_timed_out = COALESCE($14, after_timed_out) \
         WHERE status = $15 AND id IN ({})",
        placeholders(16, n)
    )
}

/// Binds $1–$15 of [`update_sql`].
fn bind_write<'q>(query: AnyQuery<'q>, write: &'q JobWrite) -> AnyQuery<'q> {
    query
        .bind(write.to.as_str())
        .bind(write.started_at.as_deref())
        .bind(write.finished_at.as_deref())
        .bind(write.runner_id)
        .bind(write.exit_code)
        .bind(write.failure_reason)
        .bind(write.cancel_mode)
        .bind(write.cancel_by.as_deref())
        .bind(write.cancel_at.as_deref())
        .bind(write.cancel_reason)
        .bind(write.cancel_deadline.as_deref())
        .bind(write.after_exit_code)
        .bind(write.after_duration_ms)
        .bind(write.after_timed_out)
        .bind(write.from.as_str())
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
