//! The JSON API `/api/v1` (API.md "Resources"): thin handlers that parse the request,
//! call one engine method and shape the answer. Errors use API.md's error shape.
//!
//! Every route is registered through utoipa-axum's `routes!`, so the router and
//! `GET /api/v1/openapi.json` come from the same annotations and cannot drift apart.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use usher_core::api::{
    Artifact, CreatePipeline, CreateProject, ErrorBody, ErrorDetail, Job, Pipeline, Project, TimelineEvent, UpdateProject,
};
use usher_core::status::Status;
use usher_engine::PipelineQuery;
use usher_engine::{Engine, EngineError};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::caller::Caller;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// An error answered as `{"error": {"code", "message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// `Json` whose rejections use the API error shape (400 bad_request, 413 too_large).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is over the limit of {BODY_LIMIT} bytes"),
            )),
            Err(rejection) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        }
    }
}

/// `Query` whose rejections use the API error shape (400 bad_request).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: axum::extract::FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        }
    }
}

/// A plain HTTP request to a websocket route gets the API's error shape.
pub fn not_a_websocket(rejection: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("this route is a websocket; send an upgrade request ({rejection})"),
    )
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Usher",
        description = "The JSON API of Usher, a CI server whose cancel lets jobs clean up (API.md). \
            Authenticate with `Authorization: Bearer <token>` (from `usher token create`).",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail, usher_core::api::EventFrame))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API token (`usher token create`), or for runner routes a runner token"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The routes of `/api/v1`, each with its description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project))
        .routes(routes!(create_pipeline, list_pipelines))
        .routes(routes!(get_pipeline))
        .routes(routes!(cancel_pipeline))
        .routes(routes!(abort_pipeline))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(abort_job))
        .routes(routes!(job_log))
        .routes(routes!(job_events))
        .routes(routes!(list_artifacts))
        .routes(routes!(download_artifact))
        .routes(routes!(crate::events::events_ws))
        .routes(routes!(openapi_json))
}

pub fn router() -> Router<AppState> {
    let (router, _) = documented_routes().split_for_parts();
    router.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route") })
}

/// The description of every public route: `/api/v1` and the runner protocol's routes.
/// Wildcard segments (`{*path}` in axum) are plain parameters in OpenAPI.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", documented_routes())
        .merge(crate::runner_ws::documented_routes())
        .into_openapi();
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths = paths.into_iter().map(|(path, item)| (path.replace("{*", "{"), item)).collect();
    api
}

static OPENAPI_JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// This description, as OpenAPI 3.1 JSON.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    let text = OPENAPI_JSON.get_or_init(|| openapi().to_pretty_json().expect("serialisable"));
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// Path ids: a non-integer is a 404 of that resource, not a 400.
fn id(text: &str, what: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| EngineError::NotFound(format!("{what} {text}")).into())
}

#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, description = "Created", body = Project), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 409, description = "A project with that name exists", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
async fn create_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(engine.create_project(&actor, req).await?)))
}

#[utoipa::path(get, path = "/projects", tag = "projects",
    responses((status = 200, description = "Every project", body = Vec<Project>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody)))]
async fn list_projects(State(engine): State<Engine>, Caller(actor): Caller) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_projects(&actor).await?))
}

#[utoipa::path(get, path = "/projects/{id}", tag = "projects", params(("id" = i64, Path, description = "The project id")),
    responses((status = 200, description = "The project", body = Project), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody)))]
async fn get_project(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_project(&actor, id(&p, "project")?).await?))
}

#[utoipa::path(put, path = "/projects/{id}", tag = "projects", params(("id" = i64, Path, description = "The project id")), request_body = UpdateProject,
    responses((status = 200, description = "Updated", body = Project), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
async fn update_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
    ApiJson(req): ApiJson<UpdateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.update_project(&actor, id(&p, "project")?, &req.ci_config).await?))
}

#[utoipa::path(post, path = "/projects/{id}/pipelines", tag = "pipelines", params(("id" = i64, Path, description = "The project id")), request_body = CreatePipeline,
    responses((status = 201, description = "Created, with its jobs; older pipelines on the ref are auto-cancelled per the config", body = Pipeline),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
async fn create_pipeline(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
    ApiJson(req): ApiJson<CreatePipeline>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_pipeline(&actor, id(&p, "project")?, req).await?),
    ))
}

#[derive(Deserialize)]
struct PipelineParams {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    status: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

fn number_param(value: Option<&str>, name: &str, default: i64) -> ApiResult<i64> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("`{name}` must be a positive integer, not `{v}`"),
            )
        }),
    }
}

#[utoipa::path(get, path = "/projects/{id}/pipelines", tag = "pipelines",
    params(("id" = i64, Path, description = "The project id"),
        ("ref" = Option<String>, Query, description = "Only this git ref"),
        ("status" = Option<usher_core::status::Status>, Query, description = "Only this status"),
        ("page" = Option<i64>, Query, minimum = 1, description = "Page, from 1"),
        ("per_page" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Pipelines per page (default 20)")),
    responses((status = 200, description = "Pipelines newest first, without jobs", body = Vec<Pipeline>), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody)))]
async fn list_pipelines(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
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
    };
    Ok(Json(engine.list_pipelines(&actor, Some(id(&p, "project")?), query).await?))
}

#[utoipa::path(get, path = "/pipelines/{id}", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    responses((status = 200, description = "The pipeline with its jobs", body = Pipeline), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody)))]
async fn get_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_pipeline(&actor, id(&p, "pipeline")?).await?))
}

#[utoipa::path(post, path = "/pipelines/{id}/cancel", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    responses((status = 200, description = "Graceful: waiting jobs canceled, running ones canceling; unchanged if already canceling/canceled", body = Pipeline),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
async fn cancel_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_pipeline(&actor, id(&p, "pipeline")?).await?))
}

#[utoipa::path(post, path = "/pipelines/{id}/abort", tag = "pipelines", params(("id" = i64, Path, description = "The pipeline id")),
    responses((status = 200, description = "Every unfinished job canceled at once; unchanged if already canceled", body = Pipeline),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such pipeline", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
async fn abort_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_pipeline(&actor, id(&p, "pipeline")?).await?))
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = Job), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
async fn get_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_job(&actor, id(&p, "job")?).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "created/pending → canceled, running → canceling; unchanged if already canceling/canceled", body = Job),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
async fn cancel_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_job(&actor, id(&p, "job")?).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/abort", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "Killed at once: canceled; unchanged if already canceled", body = Job),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "Not possible in the current status; the message names it", body = ErrorBody)))]
async fn abort_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_job(&actor, id(&p, "job")?).await?))
}

#[derive(Deserialize)]
struct LogParams {
    offset: Option<String>,
}

#[utoipa::path(get, path = "/jobs/{id}/log", tag = "jobs",
    params(("id" = i64, Path, description = "The job id"), ("offset" = Option<u64>, Query, description = "Byte offset to read from")),
    responses((status = 200, description = "The log from `offset` on", content_type = "text/plain", body = String,
            headers(("X-Log-Complete" = String, description = "`true` once the job is terminal and its log closed"))),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_log(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
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
    let (text, complete) = engine.job_log(&actor, id(&p, "job")?, offset).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::HeaderName::from_static("x-log-complete"),
                if complete { "true" } else { "false" },
            ),
        ],
        text,
    )
        .into_response())
}

#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job's timeline, oldest first", body = Vec<TimelineEvent>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_events(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.job_timeline(&actor, id(&p, "job")?).await?))
}

#[utoipa::path(get, path = "/jobs/{id}/artifacts", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, description = "The job's artifact files", body = Vec<Artifact>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
async fn list_artifacts(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_artifacts(&actor, id(&p, "job")?).await?))
}

/// The file, always as a download: an uploaded `.html` must never run as a page of ours.
#[utoipa::path(get, path = "/jobs/{id}/artifacts/{*path}", tag = "jobs",
    params(("id" = i64, Path, description = "The job id"), ("path" = String, Path, description = "The artifact's path, as listed")),
    responses((status = 200, description = "The file, as a download", content_type = "application/octet-stream", body = String),
        (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such job or artifact", body = ErrorBody)))]
async fn download_artifact(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path((p, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (file_path, size) = engine.artifact_file(&actor, id(&p, "job")?, &path).await?;
    let file = tokio::fs::File::open(&file_path)
        .await
        .map_err(|_| EngineError::NotFound(format!("artifact {path:?}")))?;
    let name = path.rsplit('/').next().unwrap_or("artifact");
    let ascii_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii_name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}
