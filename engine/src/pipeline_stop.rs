//! Stopping a whole pipeline: a user's cancel (graceful) or abort, a failed job's
//! (`on_job_failure: all`), the timeout reaper's. One transaction moves every unfinished
//! job; a graceful cancel leaves the cleanup jobs to run, and with them the stop jobs of
//! the environments the pipeline began (decided again under the pipeline's lock).

use usher_core::api::{CancelMode, CancelReason, CancelRequest, Job, Pipeline};
use usher_core::pipeline::{JobNode, cancel_stops};
use usher_core::roles::Action;
use usher_core::status::{JobEvent, Status, next};

use crate::store::{Change, PipelineCancel};
use crate::{Actor, Engine, EngineError, detached};

impl Engine {
    /// Graceful cancel of every unfinished job of a pipeline; `request`'s message is kept
    /// with the cancel of the pipeline and of each job.
    pub async fn cancel_pipeline(&self, actor: &Actor, id: i64, request: CancelRequest) -> Result<Pipeline, EngineError> {
        actor.require(Action::Cancel)?;
        self.stop_pipeline_for(actor, id, CancelMode::Graceful, request).await
    }

    /// Abort of every unfinished job of a pipeline.
    pub async fn abort_pipeline(&self, actor: &Actor, id: i64, request: CancelRequest) -> Result<Pipeline, EngineError> {
        actor.require(Action::Abort)?;
        self.stop_pipeline_for(actor, id, CancelMode::Abort, request).await
    }

    /// A user's cancel or abort of a pipeline, completed even if the client goes away.
    async fn stop_pipeline_for(&self, actor: &Actor, id: i64, mode: CancelMode, request: CancelRequest) -> Result<Pipeline, EngineError> {
        let message = request.message().map_err(EngineError::BadRequest)?;
        let (engine, actor) = (self.clone(), actor.clone());
        let why = Stop {
            reason: CancelReason::Pipeline,
            detail: None,
            message,
        };
        detached(async move { engine.stop_pipeline(&actor, id, mode, why).await }).await
    }

    /// `workflow: auto_cancel: on_job_failure: all`: `job` failed (for good: no `retry:`
    /// left, not an allowed failure), so the rest of its pipeline is cancelled gracefully
    /// (its cleanup jobs then run as after any cancel). Nothing when the pipeline does
    /// not say so, or has nothing left to stop.
    pub(crate) async fn cancel_after_job_failure(&self, job: &Job) -> Result<(), EngineError> {
        if !self.store().job_spec(job.id).await?.cancel_on_job_failure {
            return Ok(());
        }
        let why = Stop {
            reason: CancelReason::JobFailed,
            detail: Some(format!("job {} (#{}) failed", job.name, job.id)),
            message: None,
        };
        tracing::info!(
            job = job.id,
            pipeline = job.pipeline_id,
            "a job failed; `on_job_failure: all` cancels the rest"
        );
        let stopped = self
            .stop_pipeline(&Engine::system_actor(), job.pipeline_id, CancelMode::Graceful, why)
            .await;
        match stopped {
            Ok(_) | Err(EngineError::InvalidTransition(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn stop_pipeline(&self, actor: &Actor, id: i64, mode: CancelMode, why: Stop) -> Result<Pipeline, EngineError> {
        // Which stop jobs run is decided from the jobs that have started; one starting
        // between that and the commit makes the commit refuse, and it is decided again.
        // Each refusal means another job started, and a pipeline has a bounded number of
        // them (a cancelled one retries none): this ends; the bound is for safety only.
        let mut attempts = 0;
        loop {
            match self.stop_pipeline_once(actor, id, mode, why.clone()).await {
                Err(EngineError::Outdated(_)) if attempts < 1000 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn stop_pipeline_once(&self, actor: &Actor, id: i64, mode: CancelMode, why: Stop) -> Result<Pipeline, EngineError> {
        let Stop { reason, detail, message } = why;
        let pipeline = self.pipeline_with_jobs(id).await?;
        // A pipeline answers a cancel or abort as a job in its status would (core's table).
        let event = if mode == CancelMode::Abort {
            JobEvent::Abort
        } else {
            JobEvent::Cancel
        };
        if next(pipeline.status, event).is_err() {
            return Err(EngineError::InvalidTransition(format!(
                "cannot {} a pipeline that is {}",
                event.name(),
                pipeline.status
            )));
        }
        let jobs: Vec<Job> = pipeline.jobs.unwrap_or_default().into_iter().filter(|j| !j.retried).collect();
        // The stop jobs of environments a started job began to make are cleanup jobs of
        // a graceful cancel.
        let teardowns = if mode == CancelMode::Graceful {
            self.environment_teardowns(id).await?
        } else {
            Vec::new()
        };
        let cleans_up = |j: &Job| j.when.is_cleanup() || teardowns.contains(&j.id);
        // A cancelled pipeline's cleanup jobs are its teardown: a second graceful cancel
        // would stop nothing else, and must not be taken for having stopped them.
        let cleaning_up = jobs.iter().any(|j| cleans_up(j) && !j.status.is_terminal());
        if mode == CancelMode::Graceful && pipeline.cancel.is_some() && cleaning_up {
            return Err(EngineError::InvalidTransition(format!(
                "pipeline {id} is running its cleanup jobs after a cancel; only an abort stops them"
            )));
        }
        // A teardown stop job must run before the pipeline is over: an optional manual one
        // would count as finished (skipped) and the pipeline would end before it ran.
        let waiting_teardowns: Vec<i64> = jobs
            .iter()
            .filter(|j| teardowns.contains(&j.id) && !j.status.is_terminal() && j.allow_failure)
            .map(|j| j.id)
            .collect();
        if !waiting_teardowns.is_empty() {
            self.store().make_required(&waiting_teardowns).await?;
        }
        // A graceful cancel leaves the cleanup jobs to run; an abort stops them too.
        let unfinished: Vec<Job> = jobs
            .into_iter()
            .filter(|j| !j.status.is_terminal() && cancel_stops(mode, j.when) && !teardowns.contains(&j.id))
            .collect();
        if unfinished.is_empty() {
            return self.pipeline_with_jobs(id).await;
        }
        // One transaction for all of them (the store leaves out jobs that finished
        // meanwhile), then one publish in commit order and one scheduling pass. Running
        // jobs come first, so their runners' frames go out first.
        let order: Vec<i64> = stop_order(&unfinished, mode).iter().map(|j| j.id).collect();
        let moves = self.stop_moves(actor, &order, mode, reason, detail, message.clone()).await?;
        let cancel = PipelineCancel {
            mode,
            by: actor.name.as_str(),
            reason,
            message: message.as_deref(),
        };
        self.apply(Change::Batch {
            pipeline_id: id,
            moves: &moves,
            cancel: Some(cancel),
            teardowns: (mode == CancelMode::Graceful).then_some(&teardowns[..]),
        })
        .await?;
        self.pipeline_with_jobs(id).await
    }

    /// The ids of the pipeline's stop jobs that a graceful cancel runs rather than stops
    /// (core's `tears_down_an_environment`).
    pub(crate) async fn environment_teardowns(&self, pipeline_id: i64) -> Result<Vec<i64>, EngineError> {
        let (rows, _) = self.store().job_nodes(pipeline_id).await?;
        let nodes: Vec<JobNode<'_>> = rows.iter().map(|r| r.node()).collect();
        Ok(usher_core::pipeline::environment_teardowns(&nodes)
            .into_iter()
            .map(|i| rows[i].id)
            .collect())
    }
}

/// Why a pipeline is stopped: the reason each job's cancel records, Usher's words on
/// its timeline, and the canceller's message.
#[derive(Clone)]
pub(crate) struct Stop {
    pub reason: CancelReason,
    pub detail: Option<String>,
    pub message: Option<String>,
}

/// The order of a pipeline cancel's or abort's moves (all in one transaction, so this is
/// the order of the audit rows and of the frames): running jobs first on a graceful cancel
/// (they have cleaning up to do, so their runners hear first), `created` jobs of later
/// stages before the jobs they wait on, `pending` and `manual` ones last. Every unfinished
/// job is in it once.
fn stop_order(unfinished: &[Job], mode: CancelMode) -> Vec<&Job> {
    use Status::*;
    // Every status has its place (the match is exhaustive), so no job is ever left out.
    let place = |status: Status| match (status, mode) {
        (Running | Canceling, CancelMode::Graceful) | (Created, CancelMode::Abort) => 0,
        (Created, CancelMode::Graceful) | (Running | Canceling, CancelMode::Abort) => 1,
        // Picked, or waiting only for someone to play them: nothing waits on their cancel.
        (Pending | Manual, _) => 2,
        (Success | Failed | Canceled | Skipped, _) => 3,
    };
    let mut order: Vec<(usize, &Job)> = unfinished.iter().enumerate().collect();
    // `created` jobs latest first; the others in the pipeline's order.
    order.sort_by_key(|(i, j)| (place(j.status), if j.status == Created { -(*i as i64) } else { *i as i64 }));
    order.into_iter().map(|(_, j)| j).collect()
}
