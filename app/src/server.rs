//! Server functions: each resolves the signed-in user from the session cookie, calls one
//! engine method, and maps the error. No rule lives here.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use usher_core::api::{Artifact, Job, Pipeline, Project, RunnerInfo, TimelineEvent};
use usher_core::roles::Role;
use usher_core::status::Status;

/// The signed-in user, for deciding what to show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Viewer {
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineListData {
    pub viewer: Viewer,
    pub project: Option<Project>,
    /// Each pipeline with its project's name.
    pub pipelines: Vec<(Pipeline, String)>,
    /// The server's time of this answer (relative times are computed against it).
    pub now: String,
    /// This page (from 1) and whether an older one exists.
    pub page: i64,
    pub has_more: bool,
    /// The project's CI variables, keys only, for a viewer who may see them.
    #[serde(default)]
    pub variables: Vec<usher_core::api::Variable>,
}

/// What the list pages are asked for (their URL's query).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    pub page: Option<i64>,
    pub status: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelinePageData {
    pub viewer: Viewer,
    pub project_name: String,
    /// With its jobs.
    pub pipeline: Pipeline,
    /// The `needs:` of its jobs, by job name (jobs without `needs:` are absent).
    pub needs: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPageData {
    pub viewer: Viewer,
    pub job: Job,
    pub timeline: Vec<TimelineEvent>,
    /// The log as HTML lines, rendered on the server. Never serialized: a page rendered
    /// on the server already holds it, and the browser fetches the text itself when it
    /// builds the page (navigation), so a long log never travels twice.
    #[serde(skip)]
    pub log_html: String,
    /// Where the shown part of the log starts (in bytes; 0 unless the log is longer than
    /// [`PAGE_LOG_BYTES`]) and how many lines come before it.
    pub log_start: u64,
    pub log_lines_before: u64,
    /// Where it ends, and the renderer's state there.
    pub log_length: u64,
    pub log_state: crate::terminal::LogState,
    pub artifacts: Vec<Artifact>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminJobsData {
    pub viewer: Viewer,
    pub status: Status,
    pub jobs: Vec<Job>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminRunnersData {
    pub viewer: Viewer,
    pub runners: Vec<RunnerInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectsData {
    pub viewer: Viewer,
    pub projects: Vec<Project>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminUsersData {
    pub viewer: Viewer,
    pub users: Vec<usher_core::api::UserInfo>,
}

#[cfg(feature = "ssr")]
mod ssr {
    use leptos::prelude::*;
    use usher_engine::{Actor, Engine, EngineError};

    pub fn engine() -> Result<Engine, ServerFnError> {
        use_context::<Engine>().ok_or_else(|| ServerFnError::new("the engine is not available"))
    }

    /// The engine's refusal as the server function's error, with its HTTP status (401,
    /// 403, 404, 409…) on the response, as the JSON API would answer.
    pub fn fail(e: EngineError) -> ServerFnError {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::from_u16(e.http_status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR));
        }
        ServerFnError::new(e.to_string())
    }

    /// Who sent the current request (the engine's one lookup: token, else session cookie).
    pub async fn actor() -> Result<(Engine, Actor), ServerFnError> {
        let engine = engine()?;
        let parts = use_context::<http::request::Parts>().ok_or_else(|| ServerFnError::new("no request"))?;
        let actor = engine.authenticate_request(&parts.headers).await.map_err(fail)?;
        Ok((engine, actor))
    }

    pub fn viewer(actor: &Actor) -> super::Viewer {
        super::Viewer {
            name: actor.name.clone(),
            role: actor.role,
        }
    }
}

#[server(prefix = "/ui")]
pub async fn list_pipelines(
    project_id: Option<i64>,
    page: Option<i64>,
    status: Option<String>,
    git_ref: Option<String>,
) -> Result<PipelineListData, ServerFnError> {
    let query = ListQuery { page, status, git_ref };
    use usher_engine::PipelineQuery;
    const PER_PAGE: i64 = 25;
    let (engine, actor) = ssr::actor().await?;
    let projects = engine.list_projects(&actor).await.map_err(ssr::fail)?;
    let page = query.page.unwrap_or(1).max(1);
    let status = query.status.as_deref().filter(|s| !s.is_empty()).and_then(Status::parse);
    // One more than a page: whether an older page exists.
    let mut pipelines = engine
        .list_pipelines(
            &actor,
            project_id,
            PipelineQuery {
                git_ref: query.git_ref.filter(|r| !r.trim().is_empty()),
                status,
                page,
                per_page: PER_PAGE,
                lookahead: true,
            },
        )
        .await
        .map_err(ssr::fail)?;
    let has_more = pipelines.len() as i64 > PER_PAGE;
    pipelines.truncate(PER_PAGE as usize);
    let name_of = |id: i64| projects.iter().find(|p| p.id == id).map(|p| p.name.clone()).unwrap_or_default();
    let variables = match project_id {
        Some(id) if actor.role.may(usher_core::roles::Action::ListVariables) => {
            engine.list_variables(&actor, id).await.map_err(ssr::fail)?
        }
        _ => Vec::new(),
    };
    Ok(PipelineListData {
        variables,
        viewer: ssr::viewer(&actor),
        now: usher_engine::now(),
        page,
        has_more,
        project: project_id.and_then(|id| projects.iter().find(|p| p.id == id).cloned()),
        pipelines: pipelines
            .into_iter()
            .map(|p| (name_of(p.project_id), p))
            .map(|(n, p)| (p, n))
            .collect(),
    })
}

#[server(prefix = "/ui")]
pub async fn pipeline_page(id: i64) -> Result<PipelinePageData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let pipeline = engine.get_pipeline(&actor, id).await.map_err(ssr::fail)?;
    let project = engine.get_project(&actor, pipeline.project_id).await.map_err(ssr::fail)?;
    let needs = engine.job_needs(&actor, &pipeline).await.map_err(ssr::fail)?;
    Ok(PipelinePageData {
        viewer: ssr::viewer(&actor),
        project_name: project.name,
        pipeline,
        needs,
    })
}

#[server(prefix = "/ui")]
pub async fn job_page(id: i64) -> Result<JobPageData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let job = engine.get_job(&actor, id).await.map_err(ssr::fail)?;
    let timeline = engine.job_timeline(&actor, id).await.map_err(ssr::fail)?;
    let log = engine.job_log_stretch(&actor, id, None, PAGE_LOG_BYTES).await.map_err(ssr::fail)?;
    let artifacts = engine.list_artifacts(&actor, id).await.map_err(ssr::fail)?;
    let (log_html, log_state) = crate::terminal::render_from(log.lines_before, &log.text);
    Ok(JobPageData {
        viewer: ssr::viewer(&actor),
        job,
        timeline,
        log_html,
        log_start: log.start,
        log_lines_before: log.lines_before,
        log_length: log.end(),
        log_state,
        artifacts,
    })
}

/// A job and its timeline, re-read when the page's event socket (re)opens.
#[server(prefix = "/ui")]
pub async fn job_now(id: i64) -> Result<(Job, Vec<TimelineEvent>), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let job = engine.get_job(&actor, id).await.map_err(ssr::fail)?;
    let timeline = engine.job_timeline(&actor, id).await.map_err(ssr::fail)?;
    Ok((job, timeline))
}

#[server(prefix = "/ui")]
pub async fn job_artifacts(id: i64) -> Result<Vec<Artifact>, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.list_artifacts(&actor, id).await.map_err(ssr::fail)
}

/// How much of a log the job page is rendered with: its last lines, within this many
/// bytes. The rest comes a [`LOG_READ_BYTES`] read at a time, when asked for: what the
/// server holds for one page (or one read) that its reader stops taking stays small,
/// however long the log.
pub const PAGE_LOG_BYTES: usize = 16 * 1024;
/// The most log one read from the page takes.
pub const LOG_READ_BYTES: usize = 32 * 1024;

/// At most [`LOG_READ_BYTES`] of the log from byte `offset`, and whether more follows.
#[server(prefix = "/ui")]
pub async fn job_log_since(id: i64, offset: u64) -> Result<(String, bool), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.job_log_page(&actor, id, offset, LOG_READ_BYTES).await.map_err(ssr::fail)
}

/// The lines of the log just before byte `before`, at most [`LOG_READ_BYTES`] of them:
/// (where they start, the number of lines before them, their text).
#[server(prefix = "/ui")]
pub async fn job_log_before(id: i64, before: u64) -> Result<(u64, u64, String), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let stretch = engine
        .job_log_stretch(&actor, id, Some(before), LOG_READ_BYTES)
        .await
        .map_err(ssr::fail)?;
    Ok((stretch.start, stretch.lines_before, stretch.text))
}

#[server(prefix = "/ui")]
pub async fn job_timeline(id: i64) -> Result<Vec<TimelineEvent>, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.job_timeline(&actor, id).await.map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn cancel_job(job_id: i64, message: Option<String>) -> Result<Job, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine
        .cancel_job(&actor, job_id, usher_core::api::CancelRequest { message })
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn abort_job(job_id: i64, message: Option<String>) -> Result<Job, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine
        .abort_job(&actor, job_id, usher_core::api::CancelRequest { message })
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn cancel_pipeline(pipeline_id: i64, message: Option<String>) -> Result<Pipeline, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine
        .cancel_pipeline(&actor, pipeline_id, usher_core::api::CancelRequest { message })
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn abort_pipeline(pipeline_id: i64, message: Option<String>) -> Result<Pipeline, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine
        .abort_pipeline(&actor, pipeline_id, usher_core::api::CancelRequest { message })
        .await
        .map_err(ssr::fail)
}

/// Plays a manual job: it becomes `pending`.
#[server(prefix = "/ui")]
pub async fn play_job(job_id: i64) -> Result<Job, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.play_job(&actor, job_id).await.map_err(ssr::fail)
}

/// A new attempt of a finished job; the browser goes to the new attempt's page.
#[server(prefix = "/ui")]
pub async fn retry_job(job_id: i64) -> Result<Job, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let attempt = engine.retry_job(&actor, job_id).await.map_err(ssr::fail)?;
    leptos_axum::redirect(&format!("/jobs/{}", attempt.id));
    Ok(attempt)
}

/// New attempts of a finished pipeline's failed and canceled jobs.
#[server(prefix = "/ui")]
pub async fn retry_pipeline(pipeline_id: i64) -> Result<Pipeline, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.retry_pipeline(&actor, pipeline_id).await.map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn run_pipeline(project_id: i64, git_ref: String) -> Result<Pipeline, ServerFnError> {
    use usher_core::api::CreatePipeline;
    let (engine, actor) = ssr::actor().await?;
    let git_ref = if git_ref.trim().is_empty() { "main".to_string() } else { git_ref };
    engine
        .create_pipeline_from(
            &actor,
            project_id,
            CreatePipeline {
                git_ref,
                ..Default::default()
            },
            usher_engine::Origin::Web,
        )
        .await
        .map_err(ssr::fail)
}

/// `/admin/jobs?status=`: jobs in one status across all projects.
#[server(prefix = "/ui")]
pub async fn admin_jobs(status: Status) -> Result<AdminJobsData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let jobs = engine.jobs_with_status(&actor, status).await.map_err(ssr::fail)?;
    Ok(AdminJobsData {
        viewer: ssr::viewer(&actor),
        status,
        jobs,
    })
}

#[server(prefix = "/ui")]
pub async fn admin_runners() -> Result<AdminRunnersData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let runners = engine.list_runners(&actor).await.map_err(ssr::fail)?;
    Ok(AdminRunnersData {
        viewer: ssr::viewer(&actor),
        runners,
    })
}

/// Pauses (`paused: true`) or resumes a runner (admin).
#[server(prefix = "/ui")]
pub async fn pause_runner(runner_id: i64, paused: bool) -> Result<RunnerInfo, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.pause_runner(&actor, runner_id, paused).await.map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn projects_page() -> Result<ProjectsData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let projects = engine.list_projects(&actor).await.map_err(ssr::fail)?;
    Ok(ProjectsData {
        viewer: ssr::viewer(&actor),
        projects,
    })
}

/// The new-project form of `/projects` (empty fields are left out).
#[server(prefix = "/ui")]
pub async fn create_project_form(
    name: String,
    repository_url: String,
    default_branch: String,
    webhook_secret: String,
    ci_config: String,
) -> Result<Project, ServerFnError> {
    use usher_core::api::CreateProject;
    let (engine, actor) = ssr::actor().await?;
    let given = |s: String| Some(s).filter(|s| !s.trim().is_empty());
    let request = CreateProject {
        name,
        repository_url: given(repository_url),
        default_branch: given(default_branch),
        ci_config: given(ci_config),
        webhook_secret: given(webhook_secret),
        ssh_private_key: None,
    };
    engine.create_project(&actor, request).await.map_err(ssr::fail)
}

/// The edit form of `/projects`: an empty webhook secret keeps the current one; an empty
/// repository or YAML removes it (a project keeps one of the two).
#[server(prefix = "/ui")]
pub async fn update_project_form(
    id: i64,
    name: String,
    repository_url: String,
    default_branch: String,
    webhook_secret: String,
    ci_config: String,
) -> Result<Project, ServerFnError> {
    use usher_core::api::UpdateProject;
    let (engine, actor) = ssr::actor().await?;
    let request = UpdateProject {
        name: Some(name),
        repository_url: Some(repository_url),
        default_branch: Some(default_branch).filter(|b| !b.trim().is_empty()),
        ci_config: Some(ci_config),
        webhook_secret: Some(webhook_secret).filter(|s| !s.is_empty()),
        ssh_private_key: None,
    };
    engine.update_project(&actor, id, request).await.map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn admin_users_page() -> Result<AdminUsersData, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let users = engine.list_users(&actor).await.map_err(ssr::fail)?;
    Ok(AdminUsersData {
        viewer: ssr::viewer(&actor),
        users,
    })
}

/// The role a form names.
#[cfg(feature = "ssr")]
fn role_arg(role: &str) -> Result<Role, ServerFnError> {
    Role::parse(role).ok_or_else(|| ssr::fail(usher_engine::EngineError::BadRequest(format!("`{role}` is not a role"))))
}

#[server(prefix = "/ui")]
pub async fn add_user_form(name: String, role: String, password: String) -> Result<(), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let role = role_arg(&role)?;
    engine
        .create_user(&actor, &name, role, Some(password.as_str()))
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn set_role_form(name: String, role: String) -> Result<(), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    let role = role_arg(&role)?;
    engine.set_role(&actor, &name, role).await.map_err(ssr::fail)
}

/// A new API token for a user: the answer is the only time it is shown.
#[server(prefix = "/ui")]
pub async fn create_token_form(name: String) -> Result<String, ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.create_token_for(&actor, &name).await.map_err(ssr::fail)
}

#[server(prefix = "/ui")]
pub async fn revoke_token_form(token_id: i64) -> Result<(), ServerFnError> {
    let (engine, actor) = ssr::actor().await?;
    engine.revoke_token_id(&actor, token_id).await.map_err(ssr::fail)
}
