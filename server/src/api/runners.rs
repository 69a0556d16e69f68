//! `/api/v1/runners`: the runners that connected, and pausing or resuming one (admin).

use axum::Json;
use axum::extract::State;
use usher_core::api::{ErrorBody, RunnerInfo};
use usher_engine::Engine;

use crate::caller::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiPath, id};

#[utoipa::path(get, path = "/runners", tag = "runners",
    responses((status = 200, description = "Every runner that connected, newest first", body = [RunnerInfo]),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)))]
pub async fn list_runners(State(engine): State<Engine>, Caller(actor): Caller) -> ApiResult<Json<Vec<RunnerInfo>>> {
    actor.require(usher_core::roles::Action::Administer)?;
    Ok(Json(engine.list_runners(&actor).await?))
}

#[utoipa::path(post, path = "/runners/{id}/pause", tag = "runners", params(("id" = i64, Path, description = "The runner id")),
    responses((status = 200, description = "Paused: it keeps its running jobs and takes no new one", body = RunnerInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody), (status = 404, description = "No such runner", body = ErrorBody)))]
pub async fn pause_runner(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<Json<RunnerInfo>> {
    Ok(Json(engine.pause_runner(&actor, id(&p, "runner")?, true).await?))
}

#[utoipa::path(post, path = "/runners/{id}/resume", tag = "runners", params(("id" = i64, Path, description = "The runner id")),
    responses((status = 200, description = "Resumed: it takes jobs again (within a heartbeat, 10 s)", body = RunnerInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody), (status = 404, description = "No such runner", body = ErrorBody)))]
pub async fn resume_runner(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
) -> ApiResult<Json<RunnerInfo>> {
    Ok(Json(engine.pause_runner(&actor, id(&p, "runner")?, false).await?))
}
