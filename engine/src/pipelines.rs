//! Pipelines: creating one from a project's configuration, listing and reading them,
//! superseding older ones (auto-cancel), and scheduling: moving waiting jobs on once what
//! they need is done. Stopping a whole pipeline is [`crate::pipeline_stop`].

use usher_core::api::{CancelMode, CancelReason, CreatePipeline, Job, Pipeline};
use usher_core::pipeline::{JobNode, OlderJob, auto_cancel_targets, ready_decisions};
use usher_core::roles::Action;
use usher_core::status::Status;
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
                    keep_cancel: false,
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

    /// Usher itself, as the actor of the cancels its own rules make.
    pub(crate) fn system_actor() -> Actor {
        Actor {
            user_id: 0,
            name: SCHEDULER.into(),
            role: usher_core::roles::Role::Admin,
        }
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

/// Who makes the scheduler's moves.
const SCHEDULER: &str = "system";
