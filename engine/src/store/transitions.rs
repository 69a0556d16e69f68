//! The one transaction every status change runs in. [`Store::commit`] takes a [`Change`]
//! (one job, several jobs of a pipeline, a new pipeline with its first moves, or a claim
//! of the next pending job) and, in one transaction: reads each job, asks
//! [`crate::plan`] what the change does to it, compare-and-sets the answer
//! ([`super::moves`]), appends the timeline entries, re-derives the pipeline's status
//! ([`super::pipeline_status`]), and on PostgreSQL sends the change to every replica
//! (NOTIFY, delivered at commit in commit order).
//! When another writer moved a job between the read and the write, the whole change is
//! tried again from the start.

use sqlx::Row;
use usher_core::api::{CancelMode, Job};

use super::change::{CHANGES_CHANNEL, Change, ChangeNotice, Committed, PipelineCancel, Transitioned};
use super::moves::SingleWrite;
use super::pipeline_status::{PipelineFacts, bind_pipeline_status, pipeline_status_sql};
use super::transaction::Tx;
use super::{Backend, JOB_COLUMNS_OF_J, Store, job_from_row};
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
            if self.backend == Backend::Postgres {
                self.notify_in(&mut tx, &committed).await?;
            }
            tx.commit().await?;
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
                // PostgreSQL: the job is read together with the lock on its pipeline.
                // SQLite has one writer already.
                let lock = self.backend == Backend::Postgres;
                let Some(single) = self.transition_in(tx, mv, lock).await? else {
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
            } => {
                self.lock_pipeline(tx, *pipeline_id).await?;
                let mut attempts = Vec::with_capacity(job_ids.len());
                for old in job_ids.iter() {
                    attempts.push(self.new_attempt_in(tx, *old, actor).await?);
                }
                // Retried, the pipeline runs again: it is no longer a cancelled one (whose
                // status would stay `canceling` while anything runs).
                self.clear_pipeline_cancel(tx, *pipeline_id).await?;
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
            } => {
                self.lock_pipeline(tx, *pipeline_id).await?;
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
            self.rederive_pipeline(tx, facts, &now()).await?
        } else {
            None
        };
        Ok(Some(Committed { jobs, pipeline, created }))
    }

    /// PostgreSQL: transitions of one pipeline take turns, so each re-derivation of the
    /// pipeline status sees every job change committed before it.
    async fn lock_pipeline(&self, tx: &mut Tx<'_>, pipeline_id: i64) -> Result<(), EngineError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE")
                .bind(pipeline_id)
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// One job's transition inside `tx`; None when another writer moved it first.
    /// `lock_pipeline` (PostgreSQL): the job is read in the statement that locks its
    /// pipeline (see [`Store::lock_pipeline`]), one round trip instead of two.
    async fn transition_in(&self, tx: &mut Tx<'_>, mv: &Move, lock_pipeline: bool) -> Result<Option<SingleMove>, EngineError> {
        let job_id = mv.job_id;
        // With the pipeline's cancel, which decides whether a cleanup job may be cancelled.
        let sql = format!(
            "SELECT {}, p.cancel_mode AS pipeline_cancel_mode FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id WHERE j.id = $1{}",
            *JOB_COLUMNS_OF_J,
            if lock_pipeline { " FOR UPDATE OF p" } else { "" }
        );
        // All rows: a stream stopped at the first would leave the statement open.
        let sql = format!("{}{sql}", tx.begin_prefix());
        let row = sqlx::query(&sql)
            .bind(job_id)
            .fetch_all(&mut **tx)
            .await?
            .pop()
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        let pipeline_cancel = row
            .try_get::<Option<String>, _>("pipeline_cancel_mode")?
            .and_then(|m| CancelMode::parse(&m));
        self.transition_from(tx, job_from_row(&row)?, pipeline_cancel, mv, lock_pipeline)
            .await
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
        let Some((job, pipeline)) = self.write_move_with_audit(tx, &single).await? else {
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
        sqlx::query("UPDATE pipelines SET cancel_mode = NULL, cancel_by = NULL, cancel_at = NULL, cancel_reason = NULL WHERE id = $1")
            .bind(pipeline_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn record_pipeline_cancel(&self, tx: &mut Tx<'_>, pipeline_id: i64, cancel: &PipelineCancel<'_>) -> Result<(), EngineError> {
        sqlx::query(
            "UPDATE pipelines SET cancel_mode = $1, cancel_by = $2, cancel_at = $3, cancel_reason = $4 \
             WHERE id = $5 AND (cancel_mode IS NULL OR ($1 = 'abort' AND cancel_mode <> 'abort'))",
        )
        .bind(cancel.mode.as_str())
        .bind(cancel.by)
        .bind(now())
        .bind(cancel.reason.as_str())
        .bind(pipeline_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// PostgreSQL: one notice per moved job, then the pipeline's, delivered to every
    /// replica's listener at commit, in commit order. The first statement also writes
    /// the pipeline's re-derived status (a data-modifying CTE): a round trip fewer.
    async fn notify_in(&self, tx: &mut Tx<'_>, committed: &Committed) -> Result<(), EngineError> {
        let jobs = committed.jobs.iter().filter(|t| t.changed).map(|t| ChangeNotice {
            job: Some(t.job.clone()),
            pipeline: None,
        });
        let pipeline = committed.pipeline.iter().map(|p| ChangeNotice {
            job: None,
            pipeline: Some(p.clone()),
        });
        let payloads = jobs
            .chain(pipeline)
            .map(|notice| serde_json::to_string(&notice))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        // Many notices to a statement: a VALUES list is scanned in its order, so the
        // notices are queued (and delivered) in the order of the change.
        for (n, chunk) in payloads.chunks(500).enumerate() {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${})", i + 2)).collect();
            let pipeline = committed.pipeline.as_ref().filter(|_| n == 0);
            let with = match pipeline {
                Some(_) => format!("WITH derived AS ({}) ", pipeline_status_sql(chunk.len() + 2)),
                None => String::new(),
            };
            let sql = format!(
                "{with}SELECT pg_notify($1, v.payload) FROM (VALUES {}) AS v(payload)",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(CHANGES_CHANNEL);
            for payload in chunk {
                query = query.bind(payload.as_str());
            }
            if let Some(pipeline) = pipeline {
                query = bind_pipeline_status(query, pipeline);
            }
            query.fetch_all(&mut **tx).await?;
        }
        Ok(())
    }
}
