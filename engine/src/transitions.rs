//! The gate every status change passes, whoever asks (REST, server functions, runner
//! sessions, the reaper, auto-cancel, scheduling): [`Engine::commit`] commits a
//! [`Change`] through [`crate::Store::commit`] and publishes what committed, in commit
//! order. It is the one place that knows how SQLite and PostgreSQL publish: on SQLite the
//! engine publishes on its bus while holding a lock taken before the commit; on
//! PostgreSQL the store's NOTIFY inside the transaction reaches every replica's bus,
//! this one included, in commit order. [`Engine::apply`] adds the consequence: once a job
//! has finished, its pipeline's waiting jobs may move on.

use crate::plan::Move;
use crate::store::{Change, Committed, Transitioned};
use crate::{BusEvent, Engine, EngineError};

impl Engine {
    /// Commits `change` and publishes every job that moved, then the pipeline.
    pub(crate) async fn commit(&self, change: Change<'_>) -> Result<Committed, EngineError> {
        let committed = self.commit_and_publish(change).await?;
        for t in committed.jobs.iter().filter(|t| t.changed) {
            let job = &t.job;
            self.inner.metrics.count_move(t.from, job);
            tracing::info!(job = job.id, pipeline = job.pipeline_id, from = %t.from, to = %job.status, "job {}", job.status);
            if let (Some(teardown), true) = (&job.teardown, job.status.is_terminal())
                && teardown.leftovers > 0
            {
                tracing::warn!(
                    job = job.id,
                    leftovers = teardown.leftovers,
                    "the final sweep found what the teardown missed"
                );
                self.inner.metrics.teardown_leftovers.inc_by(u64::from(teardown.leftovers));
            }
            if let (Some(cancel), true) = (&job.cancel, job.status.is_terminal()) {
                self.inner
                    .metrics
                    .cancel_to_terminal
                    .observe(crate::metrics::seconds_since(&cancel.requested_at));
            }
        }
        Ok(committed)
    }

    async fn commit_and_publish(&self, change: Change<'_>) -> Result<Committed, EngineError> {
        match self.store().notifies_replicas() {
            true => self.store().commit(&change).await,
            false => {
                // Held from before the commit until published, so subscribers see changes
                // in commit order.
                let _order = self.inner.publish_order.lock().await;
                let committed = self.store().commit(&change).await?;
                for t in committed.jobs.iter().filter(|t| t.changed) {
                    self.bus().publish(BusEvent::Job(t.job.clone()));
                }
                if let Some(p) = &committed.pipeline {
                    self.bus().publish(BusEvent::Pipeline(p.clone()));
                }
                Ok(committed)
            }
        }
    }

    /// [`Engine::commit`], then schedules the pipeline when a job reached a terminal status
    /// (a failed job its `retry:` allows is tried again first; one that failed for good
    /// cancels the rest of a pipeline with `on_job_failure: all`).
    pub(crate) async fn apply(&self, change: Change<'_>) -> Result<Committed, EngineError> {
        let committed = self.commit(change).await?;
        let finished = committed.jobs.iter().find(|t| t.changed && t.job.status.is_terminal());
        if let Some(t) = finished {
            if t.job.status == usher_core::status::Status::Failed && !Box::pin(self.retry_by_itself(&t.job)).await? && !t.job.allow_failure
            {
                Box::pin(self.cancel_after_job_failure(&t.job)).await?;
            }
            self.advance_pipeline(t.job.pipeline_id).await?;
        }
        Ok(committed)
    }

    /// A new attempt of `job`, which failed, when its `retry:` allows one (and its pipeline
    /// is not being cancelled); whether there is one.
    async fn retry_by_itself(&self, job: &usher_core::api::Job) -> Result<bool, EngineError> {
        let Some(retry) = self.store().job_spec(job.id).await?.job.retry else {
            return Ok(false);
        };
        let attempts = self.store().attempts(job.pipeline_id, &job.name).await?;
        if !retry.applies(job.failure_reason, job.exit_code, attempts) {
            return Ok(false);
        }
        // In a cancelled pipeline only its cleanup is tried again (an `on_cancel` job, a
        // stop job tearing down an environment): the rest is being stopped.
        let cancelled = self.store().get_pipeline(job.pipeline_id).await?.is_none_or(|p| p.cancel.is_some());
        if cancelled && !job.when.is_cleanup() && !self.environment_teardowns(job.pipeline_id).await?.contains(&job.id) {
            return Ok(false);
        }
        tracing::info!(job = job.id, attempts, "job failed; its `retry:` tries it again");
        self.commit(Change::Retry {
            pipeline_id: job.pipeline_id,
            job_ids: &[job.id],
            actor: "retry",
            keep_cancel: cancelled,
        })
        .await?;
        Ok(true)
    }

    /// One move of one job through [`Engine::apply`]; the job as it is afterwards.
    pub(crate) async fn apply_to_job(&self, mv: &Move) -> Result<Transitioned, EngineError> {
        let committed = self.apply(Change::Job(mv)).await?;
        committed
            .jobs
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Internal(format!("job {}'s transition returned no job", mv.job_id)))
    }
}
