//! The JSON API `/api/v1` (docs/api.md): thin handlers, one module a resource, that parse
//! the request, call one engine method and shape the answer. [`routes`] registers each
//! through utoipa-axum's `routes!`, so the router and the OpenAPI document
//! ([`crate::openapi`]) come from the same annotations and cannot drift apart.

pub mod hooks;
pub mod jobs;
pub mod pipelines;
pub mod projects;
pub mod runners;
pub mod variables;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// The routes of `/api/v1` (the OpenAPI document's own route is added by
/// [`crate::openapi`]), each with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(projects::get_project, projects::update_project))
        .routes(routes!(variables::add_variable, variables::list_variables))
        .routes(routes!(variables::delete_variable))
        .routes(routes!(pipelines::create_pipeline, pipelines::list_pipelines))
        .routes(routes!(hooks::push_hook))
        .routes(routes!(pipelines::get_pipeline))
        .routes(routes!(pipelines::cancel_pipeline))
        .routes(routes!(pipelines::abort_pipeline))
        .routes(routes!(pipelines::retry_pipeline))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::abort_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::play_job))
        .routes(routes!(jobs::job_log))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::list_artifacts))
        .routes(routes!(jobs::download_artifact))
        .routes(routes!(runners::list_runners))
        .routes(routes!(runners::pause_runner))
        .routes(routes!(runners::resume_runner))
        .routes(routes!(crate::events::events_ws))
}
