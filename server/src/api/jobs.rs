//! Jobs: read one, cancel or abort it, its log from an offset, its timeline, and its
//! artifact files (listed, and downloaded as attachments).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use usher_core::api::{Artifact, CancelRequest, ErrorBody, Job, TimelineEvent};
use usher_engine::Engine;

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery, OptionalApiJson, id};

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = Job), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn get_job(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_job(&actor, id(&p, "job")?).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    request_body(content = Option<CancelRequest>, description = "Optional: `{\"message\": \"…\"}`, kept with the cancel", content_type = "application/json"),
    responses((status = 200, description = "created/manual/pending → canceled, running → canceling; unchanged if already canceling/canceled", body = Job),
        (status = 400, description = "A body that is not `{\"message\"}`, or a message over 500 characters or with control characters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
pub async fn cancel_job(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_job(&actor, id(&p, "job")?, request).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/abort", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    request_body(content = Option<CancelRequest>, description = "Optional: `{\"message\": \"…\"}`, kept with the abort", content_type = "application/json"),
    responses((status = 200, description = "Killed at once: canceled; unchanged if already canceled", body = Job),
        (status = 400, description = "A body that is not `{\"message\"}`, or a message over 500 characters or with control characters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
pub async fn abort_job(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_job(&actor, id(&p, "job")?, request).await?))
}

#[derive(Deserialize)]
pub struct LogParams {
    offset: Option<String>,
}

#[utoipa::path(get, path = "/jobs/{id}/log", tag = "jobs",
    params(("id" = i64, Path, description = "The job id"), ("offset" = Option<u64>, Query, description = "Byte offset to read from")),
    responses((status = 200, description = "The log from `offset` on", content_type = "text/plain", body = String,
            headers(("X-Log-Complete" = String, description = "`true` once the job is terminal and its log closed"))),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn job_log(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> ApiResult<Response> {
    let offset = match q.offset.as_deref().filter(|o| !o.is_empty()) {
        None => 0,
        Some(o) => o.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("`offset` must be a byte count, not `{o}`"),
            )
        })?,
    };
    // Streamed a page at a time, the next read when the connection has room for it: a
    // client that reads slowly (or never) holds one page.
    let (pages, complete) = engine.job_log_pages(&actor, id(&p, "job")?, offset).await?;
    let body = axum::body::Body::from_stream(futures::StreamExt::map(pages, |page| page.map_err(std::io::Error::other)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::HeaderName::from_static("x-log-complete"),
                if complete { "true" } else { "false" },
            ),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job's timeline, oldest first", body = Vec<TimelineEvent>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn job_events(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.job_timeline(&actor, id(&p, "job")?).await?))
}

#[utoipa::path(get, path = "/jobs/{id}/artifacts", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job's artifact files", body = Vec<Artifact>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn list_artifacts(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_artifacts(&actor, id(&p, "job")?).await?))
}

/// The file, always as a download: an uploaded `.html` must never run as a page of ours.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{*path}", tag = "jobs",
    params(("id" = i64, Path, description = "The job id"), ("path" = String, Path, description = "The artifact's path, as listed")),
    responses((status = 200, description = "The file, as a download", content_type = "application/octet-stream", body = String),
        (status = 206, description = "The part a `Range` header asked for", content_type = "application/octet-stream", body = String),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job or artifact (or it expired)", body = ErrorBody),
        (status = 416, description = "A `Range` outside the file")))]
pub async fn download_artifact(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath((p, path)): ApiPath<(String, String)>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let (stored, size) = engine.artifact_file(&actor, id(&p, "job")?, &path).await?;
    crate::artifact_download::artifact_download(&stored, size, &path, &headers).await
}

#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 201, description = "The new attempt (retry_of = this job); this one is marked retried", body = Job),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "Not finished, or retried already", body = ErrorBody)))]
pub async fn retry_job(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(engine.retry_job(&actor, id(&p, "job")?).await?)))
}

#[utoipa::path(post, path = "/jobs/{id}/play", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job, now `pending`: a runner takes it", body = Job),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "The job is not `manual`", body = ErrorBody)))]
pub async fn play_job(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<Json<Job>> {
    Ok(Json(engine.play_job(&actor, id(&p, "job")?).await?))
}
