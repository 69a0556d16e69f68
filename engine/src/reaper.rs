//! The reaper: ends what nobody else will. A `canceling` job whose runner never reported
//! by the cancel deadline becomes `canceled` (`cancel_timeout`); the jobs of a runner
//! that stopped heartbeating end with `runner_lost`; a pipeline that ran past its
//! `workflow: timeout` is cancelled gracefully (`timeout`); a delayed job whose
//! `start_in` has passed is played.

use std::time::Duration;

use crate::plan::{Event, Move};
use crate::{Engine, EngineError, format_time, now};

impl Engine {
    /// Ends `canceling` jobs whose deadline passed without a report. Returns how many.
    pub async fn reap_overdue_cancels(&self) -> Result<usize, EngineError> {
        self.reap_overdue_cancels_as_of(&now()).await
    }

    /// The reaper's pass as if the time were `as_of` (RFC 3339), for tests that cannot wait.
    pub async fn reap_overdue_cancels_as_of(&self, as_of: &str) -> Result<usize, EngineError> {
        let ids = self.store().overdue_canceling_jobs(as_of).await?;
        Ok(self.move_as_system(ids, || Event::CancelDeadline).await)
    }

    /// Ends the jobs of runners not heard from within `runner_lost_after_secs`:
    /// running → failed, canceling → canceled, reason `runner_lost`. Returns how many.
    pub async fn reap_lost_runners(&self) -> Result<usize, EngineError> {
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(self.inner.settings.runner_lost_after_secs as i64);
        self.reap_lost_runners_seen_before(&format_time(cutoff)).await
    }

    /// The lost-runner pass for runners last seen before `cutoff` (RFC 3339).
    pub async fn reap_lost_runners_seen_before(&self, cutoff: &str) -> Result<usize, EngineError> {
        let ids = self
            .store()
            .jobs_of_runners_seen_before(cutoff)
            .await?
            .into_iter()
            .map(|(id, _)| id);
        Ok(self.move_as_system(ids, || Event::RunnerLost).await)
    }

    /// Cancels gracefully (reason `timeout`) every pipeline whose `workflow: timeout` ran
    /// out before `as_of` (RFC 3339); its cleanup jobs then run as after any cancel, with
    /// no deadline of the pipeline's. Returns how many.
    pub async fn reap_timed_out_pipelines_as_of(&self, as_of: &str) -> Result<usize, EngineError> {
        let mut reaped = 0;
        for id in self.store().timed_out_pipelines(as_of).await? {
            let why = crate::pipeline_stop::Stop {
                reason: usher_core::api::CancelReason::Timeout,
                detail: Some("the pipeline ran longer than its `workflow: timeout`".into()),
                message: None,
            };
            tracing::info!(pipeline = id, "the pipeline's `workflow: timeout` ran out; cancelling it");
            match self
                .stop_pipeline(&Engine::system_actor(), id, usher_core::api::CancelMode::Graceful, why)
                .await
            {
                Ok(_) => reaped += 1,
                Err(EngineError::InvalidTransition(_)) => {}
                // One that cannot be cancelled now holds up none of the others: the
                // next pass tries it again.
                Err(e) => tracing::warn!(pipeline = id, "its timeout cancel failed: {e}"),
            }
        }
        Ok(reaped)
    }

    /// Plays the delayed jobs (`when: delayed`) whose `start_in` ran out before `as_of`
    /// (RFC 3339), as `system`. Returns how many.
    pub async fn play_due_delayed_jobs_as_of(&self, as_of: &str) -> Result<usize, EngineError> {
        let ids = self.store().due_delayed_jobs(as_of).await?;
        Ok(self.move_as_system(ids, || Event::Play).await)
    }

    /// Moves each job by `event` as `system`; how many moved. A job someone moved in the
    /// meantime is left as it is, and one that cannot be moved holds up none of the
    /// others (it is logged, and the next pass tries it again).
    async fn move_as_system(&self, ids: impl IntoIterator<Item = i64>, event: impl Fn() -> Event) -> usize {
        let mut moved = 0;
        for job_id in ids {
            let mv = Move {
                job_id,
                event: event(),
                by: "system".into(),
            };
            match self.apply_to_job(&mv).await {
                Ok(t) if t.changed => moved += 1,
                Ok(_) | Err(EngineError::InvalidTransition(_)) => {}
                Err(e) => tracing::warn!(job = job_id, "the reaper could not move the job: {e}"),
            }
        }
        moved
    }

    /// Runs the reapers every `every`, for as long as the task lives.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut ticks: u64 = 0;
            // Retention runs beside the reapers (deleting from a slow bucket must not hold
            // up cancels), one pass at a time; dropping the set stops it with the reaper.
            let mut retention = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                // Retention at start, then about every ten seconds.
                while retention.try_join_next().is_some() {}
                if ticks.is_multiple_of(10) && retention.is_empty() {
                    let engine = engine.clone();
                    retention.spawn(async move {
                        if let Err(e) = engine.apply_retention().await {
                            tracing::warn!("retention: {e}");
                        }
                    });
                }
                ticks += 1;
                if let Err(e) = engine.reap_overdue_cancels().await {
                    tracing::warn!("reaper: {e}");
                }
                if let Err(e) = engine.reap_lost_runners().await {
                    tracing::warn!("reaper: {e}");
                }
                if let Err(e) = engine.reap_timed_out_pipelines_as_of(&now()).await {
                    tracing::warn!("reaper: {e}");
                }
                if let Err(e) = engine.play_due_delayed_jobs_as_of(&now()).await {
                    tracing::warn!("reaper: {e}");
                }
            }
        })
    }
}
