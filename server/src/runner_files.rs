//! The files runners move over plain HTTP beside their protocol's websocket (docs/
//! runner-protocol.md): a job's artifacts up, the artifacts of the earlier jobs it gets
//! down, and its caches both ways. Only the runner holding the job, while it is active.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use usher_core::api::{Artifact, ErrorBody};
use usher_engine::EngineError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::caller::bearer;
use crate::error::ApiError;
use crate::extract::ApiPath;

/// The id of the runner token the request carries, or 401.
async fn runner_token(state: &AppState, headers: &HeaderMap) -> Result<i64, EngineError> {
    let token = bearer(headers).ok_or(EngineError::Unauthorized)?;
    state.engine.authenticate_runner(&token).await
}

/// A job id of the path; a path segment that is not one names no job.
fn job_number(text: &str) -> Result<i64, EngineError> {
    text.parse().map_err(|_| EngineError::NotFound(format!("job {text}")))
}

/// The routes, with their descriptions (they join `openapi.json`).
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_artifact))
        .routes(routes!(download_dependency_artifact))
        .routes(routes!(upload_cache, download_cache))
}

/// One artifact file from the runner holding the job, streamed to disk (see
/// [`Engine::store_artifact`] for the checks); 201 with `{path, size}`.
#[utoipa::path(put, path = "/api/runner/v1/jobs/{id}/artifacts/{*path}", tag = "runners",
    params(("id" = i64, Path, description = "The job id"), ("path" = String, Path, description = "The file's path in the build directory")),
    request_body(content = String, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored", body = Artifact),
        (status = 400, description = "A path that is not plain and relative", body = ErrorBody),
        (status = 401, description = "No valid runner token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not active or not held by this runner", body = ErrorBody),
        (status = 413, description = "The job's artifacts would exceed the limit", body = ErrorBody)))]
pub async fn upload_artifact(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((job, path)): ApiPath<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let token_id = runner_token(&state, &headers).await?;
    let job_id = job_number(&job)?;
    let artifact = state
        .engine
        .store_artifact(token_id, job_id, &path, body.into_data_stream())
        .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(artifact)).into_response())
}

/// An artifact file of an earlier job (`dependency`) for the runner holding job `id`,
/// which gets that job's artifacts (see [`Engine::dependency_artifact_file`]).
#[utoipa::path(get, path = "/api/runner/v1/jobs/{id}/dependencies/{dependency}/artifacts/{*path}", tag = "runners",
    params(("id" = i64, Path, description = "The job the runner holds"), ("dependency" = i64, Path, description = "The earlier job whose artifact it gets"),
        ("path" = String, Path, description = "The artifact's path, as listed in the job's `dependencies`")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = String),
        (status = 401, description = "No valid runner token", body = ErrorBody),
        (status = 404, description = "No such job, or no such artifact of a job it gets artifacts from", body = ErrorBody),
        (status = 409, description = "The job is not active or not held by this runner", body = ErrorBody)))]
pub async fn download_dependency_artifact(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((job, dependency, path)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let token_id = runner_token(&state, &headers).await?;
    let (job_id, dependency) = (job_number(&job)?, job_number(&dependency)?);
    let (stored, size) = state.engine.dependency_artifact_file(token_id, job_id, dependency, &path).await?;
    crate::artifact_download::artifact_download(&stored, size, &path, &headers).await
}

/// The archive of a cache the runner holding the job saved (a tar of the cache's files),
/// kept by the server for every runner of the project (see [`Engine::store_cache`]).
///
/// [`Engine::store_cache`]: usher_engine::Engine::store_cache
#[utoipa::path(put, path = "/api/runner/v1/jobs/{id}/caches/{*key}", tag = "runners",
    params(("id" = i64, Path, description = "The job id"), ("key" = String, Path, description = "The cache's key as the assignment gave it (`<project id>/<key>`)")),
    request_body(content = String, content_type = "application/octet-stream", description = "The cache's files, as a tar archive"),
    responses(
        (status = 204, description = "Kept"),
        (status = 400, description = "A key of another project", body = ErrorBody),
        (status = 401, description = "No valid runner token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not active or not held by this runner", body = ErrorBody),
        (status = 413, description = "Larger than the server keeps", body = ErrorBody)))]
pub async fn upload_cache(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((job, key)): ApiPath<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let token_id = runner_token(&state, &headers).await?;
    let job_id = job_number(&job)?;
    state.engine.store_cache(token_id, job_id, &key, body.into_data_stream()).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// The archive of a cache the server keeps, for the runner holding a job of its project.
#[utoipa::path(get, path = "/api/runner/v1/jobs/{id}/caches/{*key}", tag = "runners",
    params(("id" = i64, Path, description = "The job the runner holds"), ("key" = String, Path, description = "The cache's key as the assignment gave it (`<project id>/<key>`)")),
    responses(
        (status = 200, description = "The archive (a tar)", content_type = "application/octet-stream", body = String),
        (status = 400, description = "A key of another project", body = ErrorBody),
        (status = 401, description = "No valid runner token", body = ErrorBody),
        (status = 404, description = "No such job, or the server keeps no such cache", body = ErrorBody),
        (status = 409, description = "The job is not active or not held by this runner", body = ErrorBody)))]
pub async fn download_cache(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((job, key)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let token_id = runner_token(&state, &headers).await?;
    let job_id = job_number(&job)?;
    let (stored, size) = state.engine.cache_file(token_id, job_id, &key).await?;
    crate::artifact_download::artifact_download(&stored, size, "cache.tar", &headers).await
}
