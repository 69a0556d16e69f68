//! Pipelines: creating one from a project's configuration, listing and reading them,
//! cancelling or aborting all their unfinished jobs at once, superseding older ones
//! (auto-cancel), and scheduling: moving waiting jobs on once what they need is done.

use usher_core::api::{CancelMode, CancelReason, CancelRequest, CreatePipeline, Job, Pipeline};
use usher_core::pipeline::{JobNode, OlderJob, auto_cancel_targets, cancel_stops, ready_decisions};
use usher_core::roles::Action;
use usher_core::status::{JobEvent, Status, next};
use usher_core::{config, names};

use crate::pipeline_source::Origin;
use crate::plan::{Event, Move};
use crate::store::{Change, NewJob, NewPipeline, PipelineCancel, PipelineFilter, StoredSpec};
use crate::{Actor, Engine, EngineError, detached};

#[derive(Default)]
pub struct PipelineQuery {
    pub git_ref: Option<String>,
    pub status: Option<Status>,
    pub page: i64,
    pub per_page: i64,
    /// One pipeline more than a page, to tell whether an older page exists.
    pub lookahead: bool,
}

impl Engine {
    /// A pipeline of the project's configuration at `req.ref` (or `req.sha`): with a
    /// repository, its commit is resolved and the CI file read at that commit, unless
    /// inline YAML (the request's or the project's) overrides it.
    pub async fn create_pipeline(&self, actor: &Actor, project_id: i64, req: CreatePipeline) -> Result<Pipeline, EngineError> {
        self.create_pipeline_from(actor, project_id, req, Origin::Api).await
    }

    /// [`Engine::create_pipeline`] made by `origin`: the file's `workflow: rules` decide
    /// whether there is a pipeline, and each job's `rules`, `only` and `except` whether
    /// it is in it (`core::config::rules`).
    pub async fn create_pipeline_from(
        &self,
        actor: &Actor,
        project_id: i64,
        req: CreatePipeline,
        origin: Origin,
    ) -> Result<Pipeline, EngineError> {
        actor.require(Action::CreatePipeline)?;
        let git_ref = req.git_ref.trim().to_string();
        names::check_ref(&git_ref).map_err(EngineError::BadRequest)?;
        let project = self.get_project(actor, project_id).await?;
        let source = self.pipeline_source(&project, &git_ref, &req).await?;
        let context = self.include_context(&project, &git_ref, &source, origin).await?;
        let cfg = self.parsed_config(project_id, &source, context).await?.map_err(|mut e| {
            if let Some(file) = &source.file {
                e.message = format!("{file}: {}", e.message);
            }
            EngineError::InvalidConfig(e)
        })?;
        let max = self.inner.settings.max_pipeline_jobs;
        if cfg.jobs.len() > max {
            return Err(EngineError::InvalidConfig(config::ConfigError {
                line: None,
                key: None,
                message: format!("the configuration has {} jobs; a pipeline may have at most {max}", cfg.jobs.len()),
            }));
        }
        let ref_is_tag = source.commit.as_ref().is_some_and(|c| c.is_tag);
        let (pipeline_variables, chosen) = self.jobs_of_pipeline(&project, &git_ref, &source, origin, &cfg).await?;
        let jobs: Vec<NewJob> = chosen
            .iter()
            .map(|j| NewJob {
                name: j.name.clone(),
                stage: j.stage.clone(),
                stage_index: cfg.stages.iter().position(|s| *s == j.stage).unwrap_or(0) as i64,
                needs: j.needs.clone(),
                interruptible: j.interruptible,
                spec: StoredSpec {
                    job: j.clone(),
                    pipeline_variables: pipeline_variables.clone(),
                    ref_is_tag,
                    origin: Some(origin.as_str().to_string()),
                    cancel_on_job_failure: cfg.cancel_on_job_failure,
                },
            })
            .collect();
        // Once accepted, the pipeline is created, scheduled and supersedes older ones even
        // if the client goes away meanwhile.
        let engine = self.clone();
        let actor = actor.clone();
        detached(async move {
            let commit = source.commit.as_ref();
            let new = NewPipeline {
                project_id,
                git_ref: &git_ref,
                sha: commit.map(|c| c.sha.as_str()),
                commit_title: commit.map(|c| c.title.as_str()),
                triggered_by: &actor.name,
                jobs: &jobs,
                timeout_at: cfg
                    .timeout_secs
                    .map(|secs| crate::format_time(chrono::Utc::now() + chrono::Duration::seconds(secs as i64))),
            };
            let id = engine.insert_and_schedule(&new).await?;
            engine.auto_cancel_older(&actor, project_id, &git_ref, id, cfg.auto_cancel).await?;
            engine.pipeline_with_jobs(id).await
        })
        .await
    }

    /// A new pipeline supersedes older unfinished ones on the same ref, as its
    /// `workflow.auto_cancel.on_new_commit` says (the rule is `core::pipeline`'s).
    pub(crate) async fn auto_cancel_older(
        &self,
        actor: &Actor,
        project_id: i64,
        git_ref: &str,
        new_id: i64,
        mode: config::AutoCancel,
    ) -> Result<(), EngineError> {
        for older in self.store().unfinished_pipelines_before(project_id, git_ref, new_id).await? {
            let jobs: Vec<OlderJob> = self
                .store()
                .jobs_of_pipeline(older)
                .await?
                .iter()
                .map(|j| OlderJob {
                    id: j.id,
                    interruptible: j.interruptible,
                    status: j.status,
                    started: j.started_at.is_some(),
                    when: j.when,
                })
                .collect();
            // The stop jobs of environments are cancelled too: the newer pipeline on the
            // same ref deploys to the same environment, which they would tear down.
            let targets = auto_cancel_targets(mode, &jobs);
            if targets.is_empty() {
                continue;
            }
            let detail = Some(format!("superseded by pipeline #{new_id}"));
            let moves = self
                .stop_moves(actor, &targets, CancelMode::Graceful, CancelReason::Superseded, detail, None)
                .await?;
            // The whole pipeline is superseded only when every unfinished job goes.
            let cancel = (mode == config::AutoCancel::Conservative).then_some(PipelineCancel {
                mode: CancelMode::Graceful,
                by: actor.name.as_str(),
                reason: CancelReason::Superseded,
                message: None,
            });
            self.apply(Change::Batch {
                pipeline_id: older,
                moves: &moves,
                cancel,
                teardowns: None,
            })
            .await?;
        }
        Ok(())
    }

    pub async fn list_pipelines(&self, actor: &Actor, project_id: Option<i64>, q: PipelineQuery) -> Result<Vec<Pipeline>, EngineError> {
        actor.require(Action::Read)?;
        if let Some(id) = project_id {
            self.get_project(actor, id).await?;
        }
        let per_page = q.per_page.clamp(1, 100);
        let page = q.page.max(1);
        self.store()
            .list_pipelines(&PipelineFilter {
                project_id,
                git_ref: q.git_ref,
                status: q.status,
                limit: per_page + q.lookahead as i64,
                offset: (page - 1).saturating_mul(per_page),
            })
            .await
    }

    pub async fn get_pipeline(&self, actor: &Actor, id: i64) -> Result<Pipeline, EngineError> {
        actor.require(Action::Read)?;
        self.pipeline_with_jobs(id).await
    }

    /// The `needs:` of `pipeline`'s jobs by job name (a job without `needs:` waits for
    /// the stages before its own and is absent), for drawing the pipeline's graph.
    pub async fn job_needs(&self, actor: &Actor, pipeline: &Pipeline) -> Result<Vec<(String, Vec<String>)>, EngineError> {
        actor.require(Action::Read)?;
        let ids: Vec<i64> = pipeline.jobs.iter().flatten().filter(|j| !j.retried).map(|j| j.id).collect();
        let mut needs: Vec<(String, Vec<String>)> = self
            .store()
            .job_specs(&ids)
            .await?
            .into_values()
            .filter_map(|spec| spec.job.needs.map(|list| (spec.job.name, list)))
            .collect();
        needs.sort();
        Ok(needs)
    }

    pub(crate) async fn pipeline_with_jobs(&self, id: i64) -> Result<Pipeline, EngineError> {
        let mut p = self
            .store()
            .get_pipeline(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("pipeline {id}")))?;
        let mut jobs = self.store().jobs_of_pipeline(id).await?;
        self.explain_waiting(&mut jobs).await?;
        p.jobs = Some(jobs);
        Ok(p)
    }

    /// New attempts of a finished pipeline's failed and canceled jobs (and of the jobs that
    /// were skipped because of them); 409 while it runs or when nothing failed.
    pub async fn retry_pipeline(&self, actor: &Actor, id: i64) -> Result<Pipeline, EngineError> {
        actor.require(Action::Retry)?;
        let pipeline = self.pipeline_with_jobs(id).await?;
        if !pipeline.status.is_terminal() {
            return Err(EngineError::InvalidTransition(format!(
                "cannot retry a pipeline that is {}: only a finished one",
                pipeline.status
            )));
        }
        let latest: Vec<Job> = pipeline.jobs.unwrap_or_default().into_iter().filter(|j| !j.retried).collect();
        if !latest.iter().any(|j| matches!(j.status, Status::Failed | Status::Canceled)) {
            return Err(EngineError::InvalidTransition(format!(
                "pipeline {id} has no failed or canceled job to retry"
            )));
        }
        let targets: Vec<i64> = latest
            .iter()
            .filter(|j| matches!(j.status, Status::Failed | Status::Canceled | Status::Skipped))
            .map(|j| j.id)
            .collect();
        let (engine, actor) = (self.clone(), actor.clone());
        detached(async move {
            engine
                .apply(Change::Retry {
                    pipeline_id: id,
                    job_ids: &targets,
                    actor: &actor.name,
                })
                .await?;
            engine.advance_pipeline(id).await?;
            engine.pipeline_with_jobs(id).await
        })
        .await
    }

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

    /// Usher itself, as the actor of the cancels its own rules make.
    pub(crate) fn system_actor() -> Actor {
        Actor {
            user_id: 0,
            name: SCHEDULER.into(),
            role: usher_core::roles::Role::Admin,
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
    async fn environment_teardowns(&self, pipeline_id: i64) -> Result<Vec<i64>, EngineError> {
        let (rows, _) = self.store().job_nodes(pipeline_id).await?;
        let nodes: Vec<JobNode<'_>> = rows.iter().map(|r| r.node()).collect();
        Ok(usher_core::pipeline::environment_teardowns(&nodes)
            .into_iter()
            .map(|i| rows[i].id)
            .collect())
    }

    /// Stores a new pipeline and, in the same commit, what [`Engine::advance_pipeline`]
    /// would do next: every job is `created`, so core's decisions come from the
    /// definitions in hand, and they can only enqueue jobs that wait for nothing, which
    /// frees no other job (one batch, no loop). The new pipeline's id.
    async fn insert_and_schedule(&self, new: &NewPipeline<'_>) -> Result<i64, EngineError> {
        let nodes: Vec<JobNode<'_>> = new
            .jobs
            .iter()
            .map(|j| JobNode {
                name: &j.name,
                stage_index: j.stage_index as usize,
                needs: j.needs.as_deref(),
                status: Status::Created,
                when: j.spec.job.when,
                allow_failure: j.spec.job.allow_failure.any,
                on_stop: j.spec.job.on_stop.as_deref(),
                started: false,
            })
            .collect();
        let ready: Vec<(usize, Event)> = ready_decisions(&nodes, None)
            .into_iter()
            .map(|(i, event)| (i, Event::scheduled(event)))
            .collect();
        let committed = self
            .commit(Change::Create {
                new,
                ready: &ready,
                by: SCHEDULER,
            })
            .await?;
        committed
            .created
            .ok_or_else(|| EngineError::Internal("a created pipeline without its id".into()))
    }

    /// Enqueues or skips waiting jobs whose prerequisites have finished, until nothing moves.
    pub(crate) async fn advance_pipeline(&self, pipeline_id: i64) -> Result<(), EngineError> {
        loop {
            let (rows, cancel) = self.store().job_nodes(pipeline_id).await?;
            let nodes: Vec<JobNode<'_>> = rows.iter().map(|r| r.node()).collect();
            let moves: Vec<Move> = ready_decisions(&nodes, cancel)
                .into_iter()
                .map(|(index, event)| Move {
                    job_id: rows[index].id,
                    event: Event::scheduled(event),
                    by: SCHEDULER.into(),
                })
                .collect();
            if moves.is_empty() {
                return Ok(());
            }
            let committed = self
                .commit(Change::Batch {
                    pipeline_id,
                    moves: &moves,
                    cancel: None,
                    teardowns: None,
                })
                .await?;
            if committed.jobs.is_empty() {
                return Ok(());
            }
        }
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

/// Who makes the scheduler's moves.
const SCHEDULER: &str = "system";

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
