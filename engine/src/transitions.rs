//! The one path of every status change: commit it through the store, then publish it in
//! commit order, then let the pipeline move on.

use usher_core::api::{CancelMode, CancelReason};
use usher_core::status::JobEvent;

use crate::store::{Backend, TransitionCtx, Transitioned};
use crate::{BusEvent, Engine, EngineError};

impl Engine {
    /// Moves several jobs of one pipeline in one transaction (see
    /// [`Store::transition_pipeline_jobs`]), publishes what committed, then schedules.
    pub(crate) async fn apply_batch(
        &self,
        pipeline_id: i64,
        moves: &[(i64, JobEvent, TransitionCtx)],
        cancel: Option<(CancelMode, &str, CancelReason)>,
    ) -> Result<(), EngineError> {
        self.commit_batch(pipeline_id, moves, cancel).await?;
        self.advance_pipeline(pipeline_id).await
    }

    /// One batch committed and published in commit order; returns whether a job moved.
    pub(crate) async fn commit_batch(
        &self,
        pipeline_id: i64,
        moves: &[(i64, JobEvent, TransitionCtx)],
        cancel: Option<(CancelMode, &str, CancelReason)>,
    ) -> Result<bool, EngineError> {
        let _order = self.commit_order().await;
        let (changed, pipeline) = self.store().transition_pipeline_jobs(pipeline_id, moves, cancel).await?;
        for t in &changed {
            self.publish(t);
        }
        if let Some(p) = pipeline {
            if self.store().backend() == Backend::Sqlite {
                self.bus().publish(BusEvent::Pipeline(p));
            }
        }
        Ok(!changed.is_empty())
    }

    /// On SQLite, held from a transition's commit to its publication so subscribers see
    /// changes in commit order. PostgreSQL needs no lock: NOTIFY is sent inside the
    /// transaction and delivered in commit order.
    pub(crate) async fn commit_order(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.store().backend() {
            Backend::Sqlite => Some(self.inner.publish_order.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Publishes a committed change on this process's bus (SQLite). On PostgreSQL the
    /// change reaches every replica's bus, this one included, through LISTEN/NOTIFY.
    pub(crate) fn publish(&self, t: &Transitioned) {
        if !t.changed || self.store().backend() == Backend::Postgres {
            return;
        }
        self.bus().publish(BusEvent::Job(t.job.clone()));
        if let Some(p) = &t.pipeline {
            self.bus().publish(BusEvent::Pipeline(p.clone()));
        }
    }

    pub(crate) async fn apply(&self, job_id: i64, event: JobEvent, ctx: TransitionCtx) -> Result<Transitioned, EngineError> {
        let transitioned = {
            let _order = self.commit_order().await;
            let t = self.store().transition_job(job_id, event, &ctx).await?;
            self.publish(&t);
            t
        };
        if transitioned.changed && transitioned.job.status.is_terminal() {
            self.advance_pipeline(transitioned.job.pipeline_id).await?;
        }
        Ok(transitioned)
    }
}
