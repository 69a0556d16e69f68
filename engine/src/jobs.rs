//! Jobs: reading one, its timeline, the jobs in a status (the admin page), playing a
//! manual one, and the two ways to stop one: a graceful cancel (after_script cleans up)
//! and an abort.

use std::collections::HashMap;

use usher_core::api::{CancelMode, CancelReason, CancelRequest, Job, TimelineEvent};
use usher_core::roles::Action;
use usher_core::status::Status;

use crate::cancel_windows::CancelWindows;
use crate::plan::{Event, Move};
use crate::store::Change;
use crate::{Actor, Engine, EngineError, detached, format_time};

impl Engine {
    pub async fn get_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Read)?;
        let mut job = self
            .store()
            .get_job(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        self.explain_waiting(std::slice::from_mut(&mut job)).await?;
        Ok(job)
    }

    /// A new attempt of a finished job (`success`, `failed` or `canceled`), with the jobs of
    /// its pipeline that were skipped (they get their chance again); 409 otherwise, or when
    /// it was retried already. The new attempt is returned.
    pub async fn retry_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Retry)?;
        let job = self.get_job(actor, id).await?;
        if job.retried {
            return Err(EngineError::InvalidTransition(format!(
                "job {id} was retried already: retry its newest attempt"
            )));
        }
        if !job.status.can_retry() {
            return Err(EngineError::InvalidTransition(format!(
                "cannot retry a job that is {}: only a finished one",
                job.status
            )));
        }
        // A retry makes the pipeline run again (no longer a cancelled one): not while it
        // is tearing down after its cancel, which would lose the teardown's rules.
        let pipeline = self
            .store()
            .get_pipeline(job.pipeline_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("pipeline {}", job.pipeline_id)))?;
        if pipeline.cancel.is_some() && !pipeline.status.is_terminal() {
            return Err(EngineError::InvalidTransition(format!(
                "pipeline {} is running its cleanup jobs after a cancel; retry once it has ended",
                job.pipeline_id
            )));
        }
        let skipped: Vec<i64> = self
            .store()
            .jobs_of_pipeline(job.pipeline_id)
            .await?
            .into_iter()
            .filter(|j| !j.retried && j.status == Status::Skipped)
            .map(|j| j.id)
            .collect();
        let targets: Vec<i64> = std::iter::once(id).chain(skipped).collect();
        let (engine, actor) = (self.clone(), actor.clone());
        detached(async move {
            let committed = engine
                .apply(Change::Retry {
                    keep_cancel: false,
                    pipeline_id: job.pipeline_id,
                    job_ids: &targets,
                    actor: &actor.name,
                })
                .await?;
            engine.advance_pipeline(job.pipeline_id).await?;
            let attempt = committed
                .jobs
                .first()
                .map(|t| t.job.id)
                .ok_or_else(|| EngineError::Internal("the retry made no job".into()))?;
            engine.get_job(&actor, attempt).await
        })
        .await
    }

    /// Plays a `manual` job: it becomes `pending`, and a runner takes it. 409 for a job
    /// in any other status.
    pub async fn play_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Play)?;
        let job = self.get_job(actor, id).await?;
        if !job.status.can_play() {
            return Err(EngineError::InvalidTransition(format!(
                "cannot play a job that is {}: only a manual one",
                job.status
            )));
        }
        let play = Move {
            job_id: id,
            event: Event::Play,
            by: actor.name.clone(),
        };
        let engine = self.clone();
        let job = detached(async move { Ok(engine.apply_to_job(&play).await?.job) }).await?;
        let mut jobs = [job];
        self.explain_waiting(&mut jobs).await?;
        let [job] = jobs;
        Ok(job)
    }

    /// Sets `waiting_for` on pending jobs that cannot start yet: another job holds their
    /// `resource_group`, or no runner seen lately can take them (none is connected, or
    /// none has all of the job's tags).
    pub(crate) async fn explain_waiting(&self, jobs: &mut [Job]) -> Result<(), EngineError> {
        if !jobs.iter().any(|j| j.status == Status::Pending) {
            return Ok(());
        }
        // Only jobs of a group can wait for one: most pipelines ask nothing more here.
        let grouped: Vec<i64> = jobs
            .iter()
            .filter(|j| j.status == Status::Pending && j.resource_group.is_some())
            .map(|j| j.id)
            .collect();
        let held = self.store().resource_group_holders(&grouped).await?;
        let since = chrono::Utc::now() - chrono::Duration::seconds(self.inner.settings.runner_lost_after_secs as i64);
        let runners = self.store().online_runner_tags(&format_time(since)).await?;
        for job in jobs.iter_mut().filter(|j| j.status == Status::Pending) {
            let takeable = runners.iter().any(|have| job.tags.iter().all(|t| have.contains(t)));
            job.waiting_for = match (takeable, job.tags.is_empty()) {
                (true, _) => None,
                (false, true) => Some("a runner (none is connected, or all are paused)".into()),
                (false, false) => Some(format!("a runner with tags {}", job.tags.join(", "))),
            };
            if let Some((_, group, holder)) = held.iter().find(|(waiting, _, _)| *waiting == job.id) {
                job.waiting_for = Some(format!("the resource group {group} (held by job #{holder})"));
            }
        }
        Ok(())
    }

    /// Graceful cancel: created/pending → canceled; running → canceling (runner told now).
    /// `request`'s message is kept with the cancel.
    pub async fn cancel_job(&self, actor: &Actor, id: i64, request: CancelRequest) -> Result<Job, EngineError> {
        actor.require(Action::Cancel)?;
        self.stop_job(actor, id, CancelMode::Graceful, request).await
    }

    /// Abort: canceled at once; the runner kills every process of the job.
    pub async fn abort_job(&self, actor: &Actor, id: i64, request: CancelRequest) -> Result<Job, EngineError> {
        actor.require(Action::Abort)?;
        self.stop_job(actor, id, CancelMode::Abort, request).await
    }

    async fn stop_job(&self, actor: &Actor, id: i64, mode: CancelMode, request: CancelRequest) -> Result<Job, EngineError> {
        let message = request.message().map_err(EngineError::BadRequest)?;
        let stop = self
            .stop_moves(actor, &[id], mode, CancelReason::User, None, message)
            .await?
            .pop()
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        // Once accepted, the stop completes even if the client goes away meanwhile.
        let engine = self.clone();
        detached(async move { Ok(engine.apply_to_job(&stop).await?.job) }).await
    }

    /// The moves of a cancel or abort of jobs by `actor`: an abort records its reason, a
    /// graceful cancel also the deadline of each job's runner's report (from each job's
    /// grace and after_script timeout, read once for all of them).
    pub(crate) async fn stop_moves(
        &self,
        actor: &Actor,
        ids: &[i64],
        mode: CancelMode,
        reason: CancelReason,
        detail: Option<String>,
        message: Option<String>,
    ) -> Result<Vec<Move>, EngineError> {
        let at = chrono::Utc::now();
        let windows = match mode {
            CancelMode::Abort => HashMap::new(),
            CancelMode::Graceful => self.cancel_windows(ids).await?,
        };
        ids.iter()
            .map(|id| {
                let event = match mode {
                    CancelMode::Abort => Event::Abort {
                        reason,
                        detail: detail.clone(),
                        message: message.clone(),
                    },
                    CancelMode::Graceful => {
                        let window = windows.get(id).ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
                        let secs = window + self.inner.settings.cancel_margin_secs;
                        Event::Cancel {
                            reason,
                            deadline: format_time(at + chrono::Duration::seconds(secs as i64)),
                            detail: detail.clone(),
                            message: message.clone(),
                        }
                    }
                };
                Ok(Move {
                    job_id: *id,
                    event,
                    by: actor.name.clone(),
                })
            })
            .collect()
    }

    /// Each job's graceful-cancel time: remembered where this replica has read the
    /// job's definition before, else read (and remembered).
    async fn cancel_windows(&self, ids: &[i64]) -> Result<HashMap<i64, u64>, EngineError> {
        let remembered = &self.inner.cancel_windows;
        let mut windows: HashMap<i64, u64> = ids.iter().filter_map(|id| Some((*id, remembered.get(*id)?))).collect();
        let unknown: Vec<i64> = ids.iter().copied().filter(|id| !windows.contains_key(id)).collect();
        if !unknown.is_empty() {
            for (id, spec) in self.store().job_specs(&unknown).await? {
                remembered.remember(id, &spec);
                windows.insert(id, CancelWindows::of(&spec));
            }
        }
        Ok(windows)
    }

    /// Jobs in one status across all projects (the admin page's "stuck cleanups").
    pub async fn jobs_with_status(&self, actor: &Actor, status: Status) -> Result<Vec<Job>, EngineError> {
        actor.require(Action::Read)?;
        let mut jobs = self.store().jobs_with_status(status, 500).await?;
        self.explain_waiting(&mut jobs).await?;
        Ok(jobs)
    }

    pub async fn job_timeline(&self, actor: &Actor, id: i64) -> Result<Vec<TimelineEvent>, EngineError> {
        self.get_job(actor, id).await?;
        self.store().timeline(id).await
    }

    pub async fn job_status(&self, job_id: i64) -> Result<Status, EngineError> {
        Ok(self
            .store()
            .get_job(job_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?
            .status)
    }
}
