//! The one transaction every status change runs in: read the job, ask
//! `usher_core::status::next`, compare-and-set the answer, append the audit row,
//! re-derive the pipeline's status and (PostgreSQL) NOTIFY every replica, then commit.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use usher_core::api::{AfterScriptResult, CancelMode, CancelReason, Job, Pipeline};
use usher_core::pipeline::derive_status;
use usher_core::status::{JobEvent, Outcome, Status, next};

use super::*;
use crate::{EngineError, now};

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

impl Store {
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
}
