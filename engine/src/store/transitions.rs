//! The one transaction every status change runs in. [`Store::commit`] takes a [`Change`]
//! (one job, several jobs of a pipeline, a new pipeline with its first moves, or a claim
//! of the next pending job) and, in one transaction: reads each job, asks
//! [`crate::plan`] what the change does to it, compare-and-sets the answer
//! ([`super::moves`]), appends the timeline entries, re-derives the pipeline's status
//! ([`super::pipeline_status`]), and ends with the database's writer
//! ([`super::writer`]: the pipeline's new status, on PostgreSQL the notices to every
//! replica, the commit).
//! When another writer moved a job between the read and the write, the whole change is
//! tried again from the start.

use usher_core::api::{CancelMode, Job};

use super::Store;
use super::change::{Change, Committed, PipelineCancel, Transitioned};
use super::moves::{SingleWrite, move_from_row, move_read_sql};
use super::pipeline_status::{PipelineFacts, rederive_pipeline};
use super::transaction::Tx;
use crate::plan::{Decision, Event, Move, plan_move};
use crate::{EngineError, now};

/// One job's transition and, when the statement that wrote it read them too, the facts
/// of its pipeline after it (a read fewer).
struct SingleMove {
    moved: Transitioned,
    pipeline: Option<PipelineFacts>,
}

impl Store {
    /// Commits `change` (see the module's paragraph); tries again while it loses races.
    pub async fn commit(&self, change: &Change<'_>) -> Result<Committed, EngineError> {
        loop {
            let mut conn = self.conn().await?;
            // These begin with their first statement: a single job's read of the job
            // (transition_in), a claim's read of the pending jobs (next_pending_in), a new
            // pipeline's insert (insert_pipeline_in).
            let begin_with_first_statement = matches!(change, Change::Job { .. } | Change::Claim { .. } | Change::Create { .. });
            let mut tx = Tx::begin(&mut conn, begin_with_first_statement).await?;
            let committed = match self.apply_in(&mut tx, change).await {
                Ok(Some(committed)) => committed,
                Ok(None) => {
                    // Someone moved a job between our read and write: read again.
                    tx.rollback().await?;
                    continue;
                }
                Err(e) => {
                    // Refused (a 404, a 409) or failed: ended now, so the next request
                    // does not pay for the rollback.
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            };
            self.writer.finish(tx, &committed).await?;
            return Ok(committed);
        }
    }

    /// The change inside `tx`; None when a compare-and-set lost a race.
    async fn apply_in(&self, tx: &mut Tx<'_>, change: &Change<'_>) -> Result<Option<Committed>, EngineError> {
        let mut created = None;
        // The pipeline's facts, when the statement of the change's last move read them.
        let mut facts = None;
        let (pipeline_id, jobs) = match change {
            Change::Job(mv) => {
                let Some(single) = self.transition_in(tx, mv, true).await? else {
                    return Ok(None);
                };
                facts = single.pipeline;
                (single.moved.job.pipeline_id, vec![single.moved])
            }
            Change::Claim { runner_id, runner_tags } => {
                let Some(target) = self.next_pending_in(tx, runner_tags).await? else {
                    return Ok(Some(Committed::default()));
                };
                let start = Move {
                    job_id: target.job_id,
                    event: Event::Start { runner_id: *runner_id },
                    by: format!("runner:{runner_id}"),
                };
                let moved = match target.locked {
                    Some(job) => self.transition_from(tx, job, None, &start, false).await,
                    None => self.transition_in(tx, &start, false).await,
                };
                match moved {
                    Ok(Some(single)) if single.moved.changed => {
                        facts = single.pipeline;
                        (target.pipeline_id, vec![single.moved])
                    }
                    Ok(_) | Err(EngineError::InvalidTransition(_)) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Change::Retry {
                pipeline_id,
                job_ids,
                actor,
                keep_cancel,
            } => {
                self.writer.lock_pipeline(tx, *pipeline_id).await?;
                let mut attempts = Vec::with_capacity(job_ids.len());
                for old in job_ids.iter() {
                    attempts.push(self.new_attempt_in(tx, *old, actor).await?);
                }
                // Retried, the pipeline runs again: it is no longer a cancelled one (whose
                // status would stay `canceling` while anything runs).
                if !keep_cancel {
                    self.clear_pipeline_cancel(tx, *pipeline_id).await?;
                }
                (*pipeline_id, attempts)
            }
            Change::Create { new, ready, by } => {
                // Nobody else sees the pipeline before the commit: no lock to take.
                let (pipeline_id, jobs) = self.insert_pipeline_in(tx, new).await?;
                let moves: Vec<Move> = ready
                    .iter()
                    .map(|(i, event)| Move {
                        job_id: jobs[*i].id,
                        event: event.clone(),
                        by: by.to_string(),
                    })
                    .collect();
                let stored = jobs.into_iter().map(|j| (j.id, j)).collect();
                let Some((moved, read)) = self.batch_in(tx, &moves, Some(pipeline_id), Some(stored)).await? else {
                    return Ok(None);
                };
                created = Some(pipeline_id);
                facts = read;
                (pipeline_id, moved)
            }
            Change::Batch {
                pipeline_id,
                moves,
                cancel,
                teardowns,
            } => {
                self.writer.lock_pipeline(tx, *pipeline_id).await?;
                if let Some(expected) = teardowns {
                    let (rows, _) = super::pipelines::job_nodes_on(tx, *pipeline_id).await?;
                    let nodes: Vec<_> = rows.iter().map(|r| r.node()).collect();
                    let now: Vec<i64> = usher_core::pipeline::environment_teardowns(&nodes)
                        .into_iter()
                        .map(|i| rows[i].id)
                        .collect();
                    if now != *expected {
                        return Err(EngineError::Outdated(format!(
                            "pipeline {pipeline_id} changed while it was being cancelled (a job started)"
                        )));
                    }
                }
                // A cancel is recorded on the pipeline after the moves: its facts are
                // read after that.
                let facts_of = cancel.is_none().then_some(*pipeline_id);
                let Some((moved, read)) = self.batch_in(tx, moves, facts_of, None).await? else {
                    return Ok(None);
                };
                if let (Some(cancel), false) = (cancel, moved.is_empty()) {
                    self.record_pipeline_cancel(tx, *pipeline_id, cancel).await?;
                }
                facts = read;
                (*pipeline_id, moved)
            }
        };
        let pipeline = if jobs.iter().any(|t| t.changed) {
            let facts = match facts {
                Some(facts) => facts,
                None => self.pipeline_facts_in(tx, pipeline_id).await?,
            };
            rederive_pipeline(facts, &now())
        } else {
            None
        };
        Ok(Some(Committed { jobs, pipeline, created }))
    }

    /// One job's transition inside `tx`; None when another writer moved it first.
    /// `first` when the job's read is the change's first statement: then it is the
    /// writer's ([`super::writer::Writer::read_for_move`]; on PostgreSQL it waits for the
    /// lock on the job's pipeline).
    async fn transition_in(&self, tx: &mut Tx<'_>, mv: &Move, first: bool) -> Result<Option<SingleMove>, EngineError> {
        let (job, pipeline_cancel) = if first {
            self.writer.read_for_move(tx, mv.job_id).await?
        } else {
            self.read_for_move_again(tx, mv.job_id).await?
        };
        let read_with_lock = first && self.writer.reads_with_lock();
        self.transition_from(tx, job, pipeline_cancel, mv, read_with_lock).await
    }

    /// The job and its pipeline's cancel mode, read inside a change that has begun.
    async fn read_for_move_again(&self, tx: &mut Tx<'_>, job_id: i64) -> Result<(Job, Option<CancelMode>), EngineError> {
        let row = sqlx::query(&move_read_sql(""))
            .bind(job_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        move_from_row(&row)
    }

    /// [`Store::transition_in`] of the job as already read (`current`); `read_with_lock`
    /// when it was read while waiting for its pipeline's lock.
    async fn transition_from(
        &self,
        tx: &mut Tx<'_>,
        current: Job,
        pipeline_cancel: Option<CancelMode>,
        mv: &Move,
        read_with_lock: bool,
    ) -> Result<Option<SingleMove>, EngineError> {
        let t = now();
        let (write, audit) = match plan_move(&current, pipeline_cancel, mv, &t)? {
            // Having waited for the lock, the row read with it may predate a change
            // committed meanwhile: a move's compare-and-set would notice, an answer of
            // "unchanged" would not, so it reads the job again.
            Decision::Unchanged if read_with_lock => return Box::pin(self.transition_in(tx, mv, false)).await,
            Decision::Unchanged => {
                return Ok(Some(SingleMove {
                    moved: Transitioned {
                        from: current.status,
                        job: current,
                        changed: false,
                    },
                    pipeline: None,
                }));
            }
            Decision::Write { write, audit } => (write, audit),
        };
        let single = SingleWrite {
            write: &write,
            audit: &audit,
            t: &t,
            pipeline_id: current.pipeline_id,
        };
        let Some((job, pipeline)) = self.writer.write_single(tx, &single).await? else {
            return Ok(None);
        };
        Ok(Some(SingleMove {
            moved: Transitioned {
                job,
                from: current.status,
                changed: true,
            },
            pipeline,
        }))
    }

    async fn clear_pipeline_cancel(&self, tx: &mut Tx<'_>, pipeline_id: i64) -> Result<(), EngineError> {
        sqlx::query(
            "UPDATE pipelines SET cancel_mode = NULL, cancel_by = NULL, cancel_at = NULL, cancel_reason = NULL, cancel_message = NULL \
             WHERE id = $1",
        )
        .bind(pipeline_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn record_pipeline_cancel(&self, tx: &mut Tx<'_>, pipeline_id: i64, cancel: &PipelineCancel<'_>) -> Result<(), EngineError> {
        sqlx::query(
            "UPDATE pipelines SET cancel_mode = $1, cancel_by = $2, cancel_at = $3, cancel_reason = $4, cancel_message = $5 \
             WHERE id = $6 AND (cancel_mode IS NULL OR ($1 = 'abort' AND cancel_mode <> 'abort'))",
        )
        .bind(cancel.mode.as_str())
        .bind(cancel.by)
        .bind(now())
        .bind(cancel.reason.as_str())
        .bind(cancel.message)
        .bind(pipeline_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
