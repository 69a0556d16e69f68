//! [`Engine`]: one method per action. Every way in (REST handler, server function,
//! websocket, runner session, reaper) calls these, so a rule enforced here holds
//! everywhere. Methods check the actor's role, apply events through
//! [`Store::transition_job`], publish what committed, and advance the pipeline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use usher_core::api::{Artifact, CancelMode, CancelReason, CreatePipeline, CreateProject, Job, Pipeline, Project, TimelineEvent};
use usher_core::config;
use usher_core::pipeline::{JobNode, OlderJob, auto_cancel_targets, ready_decisions};
use usher_core::protocol::{ArtifactsAssignment, JobAssignment, JobReport};
use usher_core::roles::{Action, Role};
use usher_core::status::{JobEvent, Status, next};

use crate::auth::{hash_password, hash_token, new_token, verify_password};
use crate::store::{Backend, NewJob, PipelineFilter, StoredSpec, TransitionCtx, Transitioned};
use crate::{Actor, Bus, BusEvent, EngineError, Store, format_time, now};

/// Timing rules of the engine; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Extra time past cancel_grace + after_script_timeout before the reaper gives up
    /// on a canceling job's report.
    pub cancel_margin_secs: u64,
    /// A runner not heard from for this long is lost; its jobs end `runner_lost`.
    pub runner_lost_after_secs: u64,
    /// A job's log stops growing here, with a line saying so.
    pub max_log_bytes: u64,
    /// Where artifact files are kept (`job-{id}/{path}` below it); None refuses uploads.
    pub artifacts_dir: Option<PathBuf>,
    /// The most bytes of artifacts one job may keep.
    pub max_artifact_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cancel_margin_secs: 30,
            runner_lost_after_secs: 60,
            max_log_bytes: 4 * 1024 * 1024,
            artifacts_dir: None,
            max_artifact_bytes: 100 * 1024 * 1024,
        }
    }
}

/// How long a browser session lasts.
pub const SESSION_DAYS: i64 = 14;

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Store,
    bus: Bus,
    /// See [`Engine::commit_order`].
    publish_order: tokio::sync::Mutex<()>,
    /// The LISTEN task feeding the bus (PostgreSQL).
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// First-start credentials of `admin`, to print once.
pub struct BootstrapCredentials {
    pub password: String,
    /// Only when it was generated (not given through USHER_ADMIN_TOKEN).
    pub token: Option<String>,
}

pub struct PipelineQuery {
    pub git_ref: Option<String>,
    pub status: Option<Status>,
    pub page: i64,
    pub per_page: i64,
}

impl Engine {
    pub async fn open(database_url: &str) -> Result<Engine, EngineError> {
        Engine::open_with(database_url, Settings::default()).await
    }

    pub async fn open_with(database_url: &str, settings: Settings) -> Result<Engine, EngineError> {
        let store = Store::connect(database_url).await?;
        let bus = Bus::new(4096);
        // Listening starts before the engine is used, so no committed change is missed.
        let listener = match store.backend() {
            Backend::Postgres => Some(crate::bus::spawn_postgres_listener(database_url, bus.clone()).await?),
            Backend::Sqlite => None,
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                settings,
                store,
                bus,
                publish_order: tokio::sync::Mutex::new(()),
                listener: std::sync::Mutex::new(listener),
            }),
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    pub async fn close(&self) {
        if let Some(listener) = self.inner.listener.lock().expect("not poisoned").take() {
            listener.abort();
        }
        self.store().close().await;
    }

    // ---- users, tokens, sessions ----

    /// On an empty database, creates `admin`. Returns what to print, or None.
    pub async fn bootstrap_admin(&self, admin_token: Option<&str>) -> Result<Option<BootstrapCredentials>, EngineError> {
        if self.store().count_users().await? > 0 {
            return Ok(None);
        }
        let password = new_token("")[..24].to_string();
        let user_id = self
            .store()
            .create_user("admin", Role::Admin, Some(&hash_password(&password)?))
            .await?;
        let (token, generated) = match admin_token {
            Some(t) if !t.is_empty() => (t.to_string(), false),
            _ => (new_token("usher_"), true),
        };
        self.store().add_api_token(user_id, &hash_token(&token)).await?;
        Ok(Some(BootstrapCredentials {
            password,
            token: generated.then_some(token),
        }))
    }

    /// `usher user add` (local administration: whoever can open the database).
    pub async fn add_user(&self, name: &str, role: Role, password: Option<&str>) -> Result<i64, EngineError> {
        if name.trim().is_empty() {
            return Err(EngineError::BadRequest("a user needs a name".into()));
        }
        let hash = password.map(hash_password).transpose()?;
        self.store().create_user(name, role, hash.as_deref()).await
    }

    /// `usher token create NAME`: a new API token for that user.
    pub async fn create_api_token(&self, user_name: &str) -> Result<String, EngineError> {
        let user_id = self
            .store()
            .user_id_by_name(user_name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("user `{user_name}`")))?;
        let token = new_token("usher_");
        self.store().add_api_token(user_id, &hash_token(&token)).await?;
        Ok(token)
    }

    /// `usher runner-token create`.
    pub async fn create_runner_token(&self) -> Result<String, EngineError> {
        let token = new_token("usher_rt_");
        self.store().add_runner_token(&hash_token(&token)).await?;
        Ok(token)
    }

    /// `usher token revoke`: the token stops working at once (401 from then on).
    pub async fn revoke_api_token(&self, token: &str) -> Result<(), EngineError> {
        if self.store().revoke_api_token(&hash_token(token)).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("a live API token with that value".into()))
        }
    }

    /// `usher runner-token revoke`: new connections and uploads are refused at once, and
    /// connected runners using it are dropped at their next heartbeat.
    pub async fn revoke_runner_token(&self, token: &str) -> Result<(), EngineError> {
        if self.store().revoke_runner_token(&hash_token(token)).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("a live runner token with that value".into()))
        }
    }

    pub async fn runner_token_is_live(&self, token_id: i64) -> Result<bool, EngineError> {
        self.store().runner_token_is_live(token_id).await
    }

    pub async fn authenticate_token(&self, token: &str) -> Result<Actor, EngineError> {
        self.store()
            .actor_by_token_hash(&hash_token(token))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    pub async fn authenticate_session(&self, session: &str) -> Result<Actor, EngineError> {
        self.store()
            .actor_by_session_hash(&hash_token(session))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    /// Checks a password and opens a browser session; returns the session secret.
    pub async fn login(&self, name: &str, password: &str) -> Result<String, EngineError> {
        let refused = || EngineError::BadRequest("unknown user or wrong password".into());
        let (user_id, hash) = self.store().user_credentials(name).await?.ok_or_else(refused)?;
        let hash = hash.ok_or_else(refused)?;
        let ok = tokio::task::spawn_blocking({
            let password = password.to_string();
            move || verify_password(&password, &hash)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        if !ok {
            return Err(refused());
        }
        let session = new_token("");
        let expires = format_time(chrono::Utc::now() + chrono::Duration::days(SESSION_DAYS));
        self.store().add_session(&hash_token(&session), user_id, &expires).await?;
        Ok(session)
    }

    pub async fn logout(&self, session: &str) -> Result<(), EngineError> {
        self.store().delete_session(&hash_token(session)).await
    }

    // ---- projects ----

    pub async fn create_project(&self, actor: &Actor, req: CreateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        if req.name.trim().is_empty() {
            return Err(EngineError::BadRequest("a project needs a name".into()));
        }
        config::parse(&req.ci_config)?;
        self.store().create_project(req.name.trim(), &req.ci_config).await
    }

    pub async fn list_projects(&self, actor: &Actor) -> Result<Vec<Project>, EngineError> {
        actor.require(Action::Read)?;
        self.store().list_projects().await
    }

    pub async fn get_project(&self, actor: &Actor, id: i64) -> Result<Project, EngineError> {
        actor.require(Action::Read)?;
        self.store()
            .get_project(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
    }

    pub async fn update_project(&self, actor: &Actor, id: i64, ci_config: &str) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        config::parse(ci_config)?;
        self.store()
            .update_project_config(id, ci_config)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
    }

    // ---- pipelines ----

    pub async fn create_pipeline(&self, actor: &Actor, project_id: i64, req: CreatePipeline) -> Result<Pipeline, EngineError> {
        actor.require(Action::CreatePipeline)?;
        let project = self.get_project(actor, project_id).await?;
        if req.git_ref.trim().is_empty() {
            return Err(EngineError::BadRequest("`ref` must not be empty".into()));
        }
        let source = req.ci_config.as_deref().unwrap_or(&project.ci_config);
        let cfg = config::parse(source)?;
        let jobs: Vec<NewJob> = cfg
            .jobs
            .iter()
            .map(|j| NewJob {
                name: j.name.clone(),
                stage: j.stage.clone(),
                stage_index: cfg.stages.iter().position(|s| *s == j.stage).unwrap_or(0) as i64,
                needs: j.needs.clone(),
                interruptible: j.interruptible,
                spec: StoredSpec {
                    job: j.clone(),
                    pipeline_variables: cfg.variables.clone(),
                },
            })
            .collect();
        let git_ref = req.git_ref.trim();
        let id = self.store().create_pipeline(project_id, git_ref, &actor.name, &jobs).await?;
        self.advance_pipeline(id).await?;
        self.auto_cancel_older(actor, project_id, git_ref, id, cfg.auto_cancel).await?;
        self.pipeline_with_jobs(id).await
    }

    /// A new pipeline supersedes older unfinished ones on the same ref, as its
    /// `workflow.auto_cancel.on_new_commit` says (the rule is `core::pipeline`'s).
    async fn auto_cancel_older(
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
                })
                .collect();
            let targets = auto_cancel_targets(mode, &jobs);
            if targets.is_empty() {
                continue;
            }
            let mut moves = Vec::with_capacity(targets.len());
            for job_id in targets {
                let detail = Some(format!("superseded by pipeline #{new_id}"));
                let ctx = self
                    .stop_ctx(actor, job_id, JobEvent::Cancel, CancelReason::Superseded, detail)
                    .await?;
                moves.push((job_id, JobEvent::Cancel, ctx));
            }
            // The whole pipeline is superseded only when every unfinished job goes.
            let cancel =
                (mode == config::AutoCancel::Conservative).then_some((CancelMode::Graceful, actor.name.as_str(), CancelReason::Superseded));
            self.apply_batch(older, &moves, cancel).await?;
        }
        Ok(())
    }

    /// Moves several jobs of one pipeline in one transaction (see
    /// [`Store::transition_pipeline_jobs`]), publishes what committed, then schedules.
    async fn apply_batch(
        &self,
        pipeline_id: i64,
        moves: &[(i64, JobEvent, TransitionCtx)],
        cancel: Option<(CancelMode, &str, CancelReason)>,
    ) -> Result<(), EngineError> {
        self.commit_batch(pipeline_id, moves, cancel).await?;
        self.advance_pipeline(pipeline_id).await
    }

    /// One batch committed and published in commit order; returns whether a job moved.
    async fn commit_batch(
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
                limit: per_page,
                offset: (page - 1).saturating_mul(per_page),
            })
            .await
    }

    pub async fn get_pipeline(&self, actor: &Actor, id: i64) -> Result<Pipeline, EngineError> {
        actor.require(Action::Read)?;
        self.pipeline_with_jobs(id).await
    }

    async fn pipeline_with_jobs(&self, id: i64) -> Result<Pipeline, EngineError> {
        let mut p = self
            .store()
            .get_pipeline(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("pipeline {id}")))?;
        p.jobs = Some(self.store().jobs_of_pipeline(id).await?);
        Ok(p)
    }

    /// Graceful cancel of every unfinished job of a pipeline.
    pub async fn cancel_pipeline(&self, actor: &Actor, id: i64) -> Result<Pipeline, EngineError> {
        actor.require(Action::Cancel)?;
        self.stop_pipeline(actor, id, CancelMode::Graceful).await
    }

    /// Abort of every unfinished job of a pipeline.
    pub async fn abort_pipeline(&self, actor: &Actor, id: i64) -> Result<Pipeline, EngineError> {
        actor.require(Action::Abort)?;
        self.stop_pipeline(actor, id, CancelMode::Abort).await
    }

    async fn stop_pipeline(&self, actor: &Actor, id: i64, mode: CancelMode) -> Result<Pipeline, EngineError> {
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
        let unfinished: Vec<Job> = pipeline
            .jobs
            .unwrap_or_default()
            .into_iter()
            .filter(|j| !j.status.is_terminal())
            .collect();
        if unfinished.is_empty() {
            return self.pipeline_with_jobs(id).await;
        }
        // One transaction for all of them (the store leaves out jobs that finished
        // meanwhile), then one publish in commit order and one scheduling pass. Running
        // jobs come first, so their runners' frames go out first.
        let mut moves = Vec::with_capacity(unfinished.len());
        for job in stop_order(&unfinished, mode) {
            let ctx = self.stop_ctx(actor, job.id, event, CancelReason::Pipeline, None).await?;
            moves.push((job.id, event, ctx));
        }
        self.apply_batch(id, &moves, Some((mode, actor.name.as_str(), CancelReason::Pipeline)))
            .await?;
        self.pipeline_with_jobs(id).await
    }

    // ---- jobs ----

    pub async fn get_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Read)?;
        self.store()
            .get_job(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))
    }

    /// Graceful cancel: created/pending → canceled; running → canceling (runner told now).
    pub async fn cancel_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Cancel)?;
        self.stop_job(actor, id, JobEvent::Cancel, CancelReason::User, None).await
    }

    /// Abort: canceled at once; the runner kills every process of the job.
    pub async fn abort_job(&self, actor: &Actor, id: i64) -> Result<Job, EngineError> {
        actor.require(Action::Abort)?;
        self.stop_job(actor, id, JobEvent::Abort, CancelReason::User, None).await
    }

    async fn stop_job(
        &self,
        actor: &Actor,
        id: i64,
        event: JobEvent,
        reason: CancelReason,
        detail: Option<String>,
    ) -> Result<Job, EngineError> {
        let ctx = self.stop_ctx(actor, id, event, reason, detail).await?;
        Ok(self.apply(id, event, ctx).await?.job)
    }

    /// What a cancel or abort of job `id` records: mode, who, why and (graceful) the
    /// deadline for the runner's report.
    async fn stop_ctx(
        &self,
        actor: &Actor,
        id: i64,
        event: JobEvent,
        reason: CancelReason,
        detail: Option<String>,
    ) -> Result<TransitionCtx, EngineError> {
        let (mode, deadline) = if event == JobEvent::Abort {
            (CancelMode::Abort, None)
        } else {
            let spec = self.store().job_spec(id).await?;
            let secs = spec.job.cancel_grace_secs + spec.job.after_script_timeout_secs + self.inner.settings.cancel_margin_secs;
            (
                CancelMode::Graceful,
                Some(format_time(chrono::Utc::now() + chrono::Duration::seconds(secs as i64))),
            )
        };
        Ok(TransitionCtx {
            actor: actor.name.clone(),
            cancel: Some((mode, reason)),
            cancel_deadline: deadline,
            detail,
            ..Default::default()
        })
    }

    /// Jobs in one status across all projects (the admin page's "stuck cleanups").
    pub async fn jobs_with_status(&self, actor: &Actor, status: Status) -> Result<Vec<Job>, EngineError> {
        actor.require(Action::Read)?;
        self.store().jobs_with_status(status, 500).await
    }

    /// The runners this server has seen; online = heard from within the runner-lost window.
    pub async fn list_runners(&self, actor: &Actor) -> Result<Vec<usher_core::api::RunnerInfo>, EngineError> {
        actor.require(Action::Read)?;
        let since = chrono::Utc::now() - chrono::Duration::seconds(self.inner.settings.runner_lost_after_secs as i64);
        self.store().list_runners(&format_time(since)).await
    }

    pub async fn job_log(&self, actor: &Actor, id: i64, offset: u64) -> Result<(String, bool), EngineError> {
        let job = self.get_job(actor, id).await?;
        let text = self.store().read_log(id, offset).await?;
        Ok((text, job.status.is_terminal()))
    }

    pub async fn job_timeline(&self, actor: &Actor, id: i64) -> Result<Vec<TimelineEvent>, EngineError> {
        self.get_job(actor, id).await?;
        self.store().timeline(id).await
    }

    // ---- runners ----

    /// The runner token's id, or 401.
    pub async fn authenticate_runner(&self, token: &str) -> Result<i64, EngineError> {
        self.store()
            .runner_token_id(&hash_token(token))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    /// Registers a connecting runner; a runner reconnecting with its previous id (and
    /// the same token) keeps it, so the jobs it holds stay its own.
    pub async fn register_runner(&self, name: &str, token_id: i64, previous_id: Option<i64>) -> Result<i64, EngineError> {
        if let Some(id) = previous_id {
            if self.store().touch_runner(id, token_id).await? {
                return Ok(id);
            }
        }
        self.store().add_runner(name, token_id).await
    }

    /// A runner's heartbeat.
    pub async fn runner_seen(&self, runner_id: i64) -> Result<(), EngineError> {
        self.store().runner_seen(runner_id).await
    }

    pub async fn job_status(&self, job_id: i64) -> Result<Status, EngineError> {
        Ok(self
            .store()
            .get_job(job_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?
            .status)
    }

    /// Hands the oldest pending job to this runner, if there is one.
    pub async fn claim_job(&self, runner_id: i64) -> Result<Option<JobAssignment>, EngineError> {
        let ctx = TransitionCtx {
            actor: format!("runner:{runner_id}"),
            runner_id: Some(runner_id),
            ..Default::default()
        };
        let claimed = {
            let _order = self.commit_order().await;
            let claimed = self.store().claim_next_pending(&ctx).await?;
            if let Some(t) = &claimed {
                self.publish(t);
            }
            claimed
        };
        match claimed {
            Some(t) => Ok(Some(self.assignment(&t.job).await?)),
            None => Ok(None),
        }
    }

    async fn assignment(&self, job: &Job) -> Result<JobAssignment, EngineError> {
        let spec = self.store().job_spec(job.id).await?;
        let pipeline = self
            .store()
            .get_pipeline(job.pipeline_id)
            .await?
            .ok_or_else(|| EngineError::NotFound("pipeline".into()))?;
        let project = self
            .store()
            .get_project(job.project_id)
            .await?
            .ok_or_else(|| EngineError::NotFound("project".into()))?;
        let mut variables = vec![
            ("CI".to_string(), "true".to_string()),
            ("CI_JOB_ID".to_string(), job.id.to_string()),
            ("CI_PIPELINE_ID".to_string(), job.pipeline_id.to_string()),
            ("CI_PROJECT_NAME".to_string(), project.name.clone()),
            ("CI_COMMIT_REF_NAME".to_string(), pipeline.git_ref.clone()),
            ("CI_JOB_NAME".to_string(), job.name.clone()),
            ("CI_JOB_STAGE".to_string(), job.stage.clone()),
        ];
        variables.extend(spec.pipeline_variables);
        variables.extend(spec.job.variables);
        Ok(JobAssignment {
            job_id: job.id,
            pipeline_id: job.pipeline_id,
            project_name: project.name,
            git_ref: pipeline.git_ref,
            name: job.name.clone(),
            stage: job.stage.clone(),
            variables,
            before_script: spec.job.before_script,
            script: spec.job.script,
            after_script: spec.job.after_script,
            timeout_secs: spec.job.timeout_secs,
            cancel_grace_secs: spec.job.cancel_grace_secs,
            after_script_timeout_secs: spec.job.after_script_timeout_secs,
            artifacts: spec.job.artifacts.map(|a| ArtifactsAssignment {
                paths: a.paths,
                when: a.when,
            }),
        })
    }

    pub async fn append_log(&self, runner_id: i64, job_id: i64, offset: u64, data: &str) -> Result<(u64, Status), EngineError> {
        self.store()
            .append_log(job_id, runner_id, offset, data, self.inner.settings.max_log_bytes)
            .await
    }

    /// The runner's final report. A job that was aborted or reaped meanwhile stays as it
    /// is (the report is late, not wrong); the answer is the job's status.
    pub async fn finish_job(&self, runner_id: i64, job_id: i64, report: JobReport) -> Result<Status, EngineError> {
        let ok = report.exit_code == Some(0) && report.failure_reason.is_none();
        let timed_out = report.failure_reason.as_deref() == Some("timeout");
        let ctx = TransitionCtx {
            actor: format!("runner:{runner_id}"),
            runner_id: Some(runner_id),
            exit_code: report.exit_code,
            // A script stopped by a cancel has no exit code and is no failure.
            failure_reason: report
                .failure_reason
                .clone()
                .or_else(|| report.exit_code.is_some_and(|c| c != 0).then(|| "script_failure".to_string())),
            after_script: report.after_script.clone(),
            detail: report.after_script.as_ref().map(|a| {
                format!(
                    "after_script {} in {} ms",
                    match (a.timed_out, a.exit_code) {
                        (true, _) => "timed out".to_string(),
                        (false, Some(c)) => format!("exited {c}"),
                        (false, None) => "was killed".to_string(),
                    },
                    a.duration_ms
                )
            }),
            ..Default::default()
        };
        let event = if timed_out { JobEvent::Timeout } else { JobEvent::Finish { ok } };
        let result = match self.apply(job_id, event, ctx.clone()).await {
            Err(EngineError::InvalidTransition(_)) if timed_out => self.apply(job_id, JobEvent::Finish { ok: false }, ctx).await,
            other => other,
        };
        match result {
            Ok(t) => Ok(t.job.status),
            Err(EngineError::InvalidTransition(_)) => self.job_status(job_id).await,
            Err(e) => Err(e),
        }
    }

    // ---- artifacts ----

    /// Stores one artifact file uploaded by the runner holding job `job_id` (runner token
    /// `token_id`) while the job is still active: the body goes to a temporary file, and
    /// only a complete upload within the job's byte allowance replaces `path`.
    pub async fn store_artifact<S, B, E>(&self, token_id: i64, job_id: i64, path: &str, mut body: S) -> Result<Artifact, EngineError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let path = usher_core::artifacts::normalize_path(path)
            .ok_or_else(|| EngineError::BadRequest(format!("artifact path {path:?} is not a plain relative path")))?;
        self.check_artifact_upload(token_id, job_id).await?;
        let root = self
            .inner
            .settings
            .artifacts_dir
            .clone()
            .ok_or_else(|| EngineError::Internal("this server keeps no artifacts (no artifacts dir)".into()))?;
        let max = self.inner.settings.max_artifact_bytes;
        let allowed = max.saturating_sub(self.store().artifact_bytes_besides(job_id, &path).await?);
        let job_dir = root.join(format!("job-{job_id}"));
        let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
        tokio::fs::create_dir_all(&job_dir).await.map_err(io)?;
        let tmp = job_dir.join(format!(".upload-{}", hex::encode(rand::random::<[u8; 8]>())));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| EngineError::BadRequest(format!("the upload broke off: {e}")))?;
                size += chunk.as_ref().len() as u64;
                if size > allowed {
                    return Err(EngineError::TooLarge(format!(
                        "job {job_id}'s artifacts would exceed the limit of {max} bytes"
                    )));
                }
                file.write_all(chunk.as_ref()).await.map_err(io)?;
            }
            file.flush().await.map_err(io)?;
            // The job may have been aborted meanwhile: nothing more is kept then.
            self.check_artifact_upload(token_id, job_id).await?;
            let target = job_dir.join(&path);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| EngineError::Conflict(format!("artifact {path} collides with another: {e}")))?;
            }
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(|e| EngineError::Conflict(format!("artifact {path} collides with another: {e}")))?;
            self.store().put_artifact(job_id, &path, size).await?;
            Ok(Artifact { path: path.clone(), size })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn check_artifact_upload(&self, token_id: i64, job_id: i64) -> Result<(), EngineError> {
        match self.store().job_holder_token(job_id).await? {
            None => Err(EngineError::NotFound(format!("job {job_id}"))),
            Some((_, holder)) if holder != Some(token_id) => Err(EngineError::Conflict(format!("job {job_id} is not held by this runner"))),
            Some((status, _)) if !status.is_active() => Err(EngineError::Conflict(format!(
                "job {job_id} is {status}: artifacts are taken only while it runs or cleans up"
            ))),
            Some(_) => Ok(()),
        }
    }

    pub async fn list_artifacts(&self, actor: &Actor, job_id: i64) -> Result<Vec<Artifact>, EngineError> {
        self.get_job(actor, job_id).await?;
        self.store().list_artifacts(job_id).await
    }

    /// The stored file of one artifact and its size.
    pub async fn artifact_file(&self, actor: &Actor, job_id: i64, path: &str) -> Result<(PathBuf, u64), EngineError> {
        self.get_job(actor, job_id).await?;
        let not_found = || EngineError::NotFound(format!("artifact {path:?} of job {job_id}"));
        let path = usher_core::artifacts::normalize_path(path).ok_or_else(not_found)?;
        let size = self.store().artifact_size(job_id, &path).await?.ok_or_else(not_found)?;
        let root = self.inner.settings.artifacts_dir.as_ref().ok_or_else(not_found)?;
        Ok((root.join(format!("job-{job_id}")).join(&path), size))
    }

    // ---- reaper ----

    /// Ends `canceling` jobs whose deadline passed without a report. Returns how many.
    pub async fn reap_overdue_cancels(&self) -> Result<usize, EngineError> {
        self.reap_overdue_cancels_as_of(&now()).await
    }

    /// The reaper's pass as if the time were `as_of` (RFC 3339), for tests that cannot wait.
    pub async fn reap_overdue_cancels_as_of(&self, as_of: &str) -> Result<usize, EngineError> {
        let mut reaped = 0;
        for id in self.store().overdue_canceling_jobs(as_of).await? {
            let ctx = TransitionCtx {
                actor: "system".into(),
                cancel: Some((CancelMode::Graceful, CancelReason::CancelTimeout)),
                detail: Some("no report from the runner by the cancel deadline".into()),
                ..Default::default()
            };
            match self.apply(id, JobEvent::CancelDeadline, ctx).await {
                Ok(t) if t.changed => reaped += 1,
                Ok(_) | Err(EngineError::InvalidTransition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reaped)
    }

    /// Ends the jobs of runners not heard from within `runner_lost_after_secs`:
    /// running → failed, canceling → canceled, reason `runner_lost`. Returns how many.
    pub async fn reap_lost_runners(&self) -> Result<usize, EngineError> {
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(self.inner.settings.runner_lost_after_secs as i64);
        self.reap_lost_runners_seen_before(&format_time(cutoff)).await
    }

    /// The lost-runner pass for runners last seen before `cutoff` (RFC 3339).
    pub async fn reap_lost_runners_seen_before(&self, cutoff: &str) -> Result<usize, EngineError> {
        let mut reaped = 0;
        for (job_id, status) in self.store().jobs_of_runners_seen_before(cutoff).await? {
            let mut ctx = TransitionCtx {
                actor: "system".into(),
                detail: Some("the runner stopped answering".into()),
                ..Default::default()
            };
            if status == Status::Canceling {
                ctx.cancel = Some((CancelMode::Graceful, CancelReason::RunnerLost));
            } else {
                ctx.failure_reason = Some("runner_lost".into());
            }
            match self.apply(job_id, JobEvent::RunnerLost, ctx).await {
                Ok(t) if t.changed => reaped += 1,
                Ok(_) | Err(EngineError::InvalidTransition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reaped)
    }

    /// Runs both reapers every `every`, for as long as the task lives.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = engine.reap_overdue_cancels().await {
                    tracing::warn!("reaper: {e}");
                }
                if let Err(e) = engine.reap_lost_runners().await {
                    tracing::warn!("reaper: {e}");
                }
            }
        })
    }

    // ---- the one path of every status change ----

    /// On SQLite, held from a transition's commit to its publication so subscribers see
    /// changes in commit order. PostgreSQL needs no lock: NOTIFY is sent inside the
    /// transaction and delivered in commit order.
    async fn commit_order(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.store().backend() {
            Backend::Sqlite => Some(self.inner.publish_order.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Publishes a committed change on this process's bus (SQLite). On PostgreSQL the
    /// change reaches every replica's bus, this one included, through LISTEN/NOTIFY.
    fn publish(&self, t: &Transitioned) {
        if !t.changed || self.store().backend() == Backend::Postgres {
            return;
        }
        self.bus().publish(BusEvent::Job(t.job.clone()));
        if let Some(p) = &t.pipeline {
            self.bus().publish(BusEvent::Pipeline(p.clone()));
        }
    }

    async fn apply(&self, job_id: i64, event: JobEvent, ctx: TransitionCtx) -> Result<Transitioned, EngineError> {
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

    /// Enqueues or skips waiting jobs whose prerequisites have finished, until nothing moves.
    async fn advance_pipeline(&self, pipeline_id: i64) -> Result<(), EngineError> {
        loop {
            let rows = self.store().job_nodes(pipeline_id).await?;
            let nodes: Vec<JobNode<'_>> = rows
                .iter()
                .map(|r| JobNode {
                    name: &r.name,
                    stage_index: r.stage_index,
                    needs: r.needs.as_deref(),
                    status: r.status,
                })
                .collect();
            let ctx = TransitionCtx {
                actor: "system".into(),
                ..Default::default()
            };
            let moves: Vec<_> = ready_decisions(&nodes)
                .into_iter()
                .map(|(index, event)| (rows[index].id, event, ctx.clone()))
                .collect();
            if moves.is_empty() || !self.commit_batch(pipeline_id, &moves, None).await? {
                return Ok(());
            }
        }
    }
}

/// The order of a pipeline cancel's or abort's moves (all in one transaction, so this is
/// the order of the audit rows and of the frames): running jobs first on a graceful cancel
/// (they have cleaning up to do, so their runners hear first), `created` jobs of later
/// stages before the jobs they wait on.
fn stop_order(unfinished: &[Job], mode: CancelMode) -> Vec<&Job> {
    let created = unfinished.iter().rev().filter(|j| j.status == Status::Created);
    let active = unfinished.iter().filter(|j| j.status.is_active());
    let pending = unfinished.iter().filter(|j| j.status == Status::Pending);
    match mode {
        CancelMode::Graceful => active.chain(created).chain(pending).collect(),
        CancelMode::Abort => created.chain(active).chain(pending).collect(),
    }
}
