//! The JSON API `/api/v1` (API.md "Resources"): thin handlers that parse the request,
//! call one engine method and shape the answer. Errors use API.md's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use usher_core::api::{CreatePipeline, CreateProject, ErrorBody, ErrorDetail, UpdateProject};
use usher_core::status::Status;
use usher_engine::service::PipelineQuery;
use usher_engine::{Engine, EngineError};

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

type ApiResult<T> = Result<T, ApiError>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects", post(create_project).get(list_projects))
        .route("/projects/{id}", get(get_project).put(update_project))
        .route("/projects/{id}/pipelines", post(create_pipeline).get(list_pipelines))
        .route("/pipelines/{id}", get(get_pipeline))
        .route("/pipelines/{id}/cancel", post(cancel_pipeline))
        .route("/pipelines/{id}/abort", post(abort_pipeline))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/abort", post(abort_job))
        .route("/jobs/{id}/log", get(job_log))
        .route("/jobs/{id}/events", get(job_events))
        .route("/jobs/{id}/artifacts", get(list_artifacts))
        .route("/jobs/{id}/artifacts/{*path}", get(download_artifact))
        .route("/events", get(crate::events::events_ws))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route") })
}

/// Path ids: a non-integer is a 404 of that resource, not a 400.
fn id(text: &str, what: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| EngineError::NotFound(format!("{what} {text}")).into())
}

async fn create_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(engine.create_project(&actor, req).await?)))
}

async fn list_projects(State(engine): State<Engine>, Caller(actor): Caller) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_projects(&actor).await?))
}

async fn get_project(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_project(&actor, id(&p, "project")?).await?))
}

async fn update_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
    ApiJson(req): ApiJson<UpdateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.update_project(&actor, id(&p, "project")?, &req.ci_config).await?))
}

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

async fn list_pipelines(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
    Query(q): Query<PipelineParams>,
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

async fn get_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_pipeline(&actor, id(&p, "pipeline")?).await?))
}

async fn cancel_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_pipeline(&actor, id(&p, "pipeline")?).await?))
}

async fn abort_pipeline(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_pipeline(&actor, id(&p, "pipeline")?).await?))
}

async fn get_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_job(&actor, id(&p, "job")?).await?))
}

async fn cancel_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.cancel_job(&actor, id(&p, "job")?).await?))
}

async fn abort_job(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.abort_job(&actor, id(&p, "job")?).await?))
}

#[derive(Deserialize)]
struct LogParams {
    offset: Option<String>,
}

async fn job_log(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    Path(p): Path<String>,
    Query(q): Query<LogParams>,
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

async fn job_events(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.job_timeline(&actor, id(&p, "job")?).await?))
}

async fn list_artifacts(State(engine): State<Engine>, Caller(actor): Caller, Path(p): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_artifacts(&actor, id(&p, "job")?).await?))
}

/// The file, always as a download: an uploaded `.html` must never run as a page of ours.
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
