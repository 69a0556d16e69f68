//! Pipelines: create one in a project, list a project's, read one, cancel or abort one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use usher_core::api::{CancelRequest, CreatePipeline, ErrorBody, Pipeline};
use usher_core::status::Status;
use usher_engine::{Engine, PipelineQuery};

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalApiJson, id, number_param};

#[utoipa::path(post, path = "/projects/{id}/pipelines", tag = "pipelines", params(("id" = i64, Path, description = "The project id")), request_body = CreatePipeline,
    responses((status = 201, description = "Created, with its jobs; older pipelines on the ref are auto-cancelled per the config", body = Pipeline),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
pub async fn create_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    ApiJson(req): ApiJson<CreatePipeline>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_pipeline(&actor, id(&p, "project")?, req).await?),
    ))
}

#[derive(Deserialize)]
pub struct PipelineParams {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    status: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

#[utoipa::path(get, path = "/projects/{id}/pipelines", tag = "pipelines",
    params(("id" = i64, Path, description = "The project id"),
        ("ref" = Option<String>, Query, description = "Only this git ref"),
        ("status" = Option<usher_core::status::Status>, Query, description = "Only this status"),
        ("page" = Option<i64>, Query, minimum = 1, description = "Page, from 1"),
        ("per_page" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Pipelines per page (default 20)")),
    responses((status = 200, description = "Pipelines newest first, without jobs", body = Vec<Pipeline>), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody)))]
pub async fn list_pipelines(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    ApiQuery(q): ApiQuery<PipelineParams>,
) -> ApiResult<impl IntoResponse> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            Some(Status::parse(s).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{s}` is not a status")))?)
        }
    };
    let query = PipelineQuery {
        git_ref: q.git_ref.filter(|r| !r.is_empty()),
        status,
        page: number_param(q.page.as_deref(), "page", 1)?,
        per_page: number_param(q.per_page.as_deref(), "per_page", 20)?,
        lookahead: false,
    };
    Ok(Json(engine.list_pipelines(&actor, Some(id(&p, "project")?), query).await?))
}

#[utoipa::path(get, path = "/pipelines/{id}", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    responses((status = 200, description = "The pipeline with its jobs", body = Pipeline), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody)))]
pub async fn get_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_pipeline(&actor, id(&p, "pipeline")?).await?))
}

#[utoipa::path(post, path = "/pipelines/{id}/cancel", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    request_body(content = Option<CancelRequest>, description = "Optional: `{\"message\": \"…\"}`, kept with the pipeline's cancel and each job's", content_type = "application/json"),
    responses((status = 200, description = "Graceful: waiting jobs canceled, running ones canceling; unchanged if already canceling/canceled", body = Pipeline),
        (status = 400, description = "A body that is not `{\"message\"}`, or a message over 500 characters or with control characters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
pub async fn cancel_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_pipeline(&actor, id(&p, "pipeline")?, request).await?))
}

#[utoipa::path(post, path = "/pipelines/{id}/abort", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    request_body(content = Option<CancelRequest>, description = "Optional: `{\"message\": \"…\"}`, kept with the pipeline's cancel and each job's", content_type = "application/json"),
    responses((status = 200, description = "Every unfinished job canceled at once; unchanged if already canceled", body = Pipeline),
        (status = 400, description = "A body that is not `{\"message\"}`, or a message over 500 characters or with control characters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
pub async fn abort_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_pipeline(&actor, id(&p, "pipeline")?, request).await?))
}

#[utoipa::path(post, path = "/pipelines/{id}/retry", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    responses((status = 200, description = "Every failed or canceled job (and those skipped because of them) got a new attempt", body = Pipeline),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody), (status = 409, description = "Not finished, or nothing failed", body = ErrorBody)))]
pub async fn retry_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.retry_pipeline(&actor, id(&p, "pipeline")?).await?))
}
