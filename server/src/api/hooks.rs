//! `POST /api/v1/projects/{id}/hooks/push`: push events from GitLab, GitHub, Gitea,
//! Forgejo or a bare repository's post-receive hook. Authenticated by the project's
//! webhook secret (see `usher_engine::hooks`), not by a token.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use usher_core::api::{ErrorBody, Pipeline};
use usher_engine::Engine;
use usher_engine::hooks::PushAuth;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, BODY_LIMIT, id};

/// A push: a branch or tag push starts a pipeline at the pushed commit; a deletion
/// starts nothing.
#[utoipa::path(post, path = "/projects/{id}/hooks/push", tag = "projects", security(()),
    params(("id" = i64, Path, description = "The project id"),
        ("X-Gitlab-Token" = Option<String>, Header, description = "GitLab: the project's webhook secret"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub, Gitea, Forgejo: sha256=<HMAC-SHA256 of the body with the webhook secret>")),
    request_body(content = Object, description = "A GitLab or GitHub-style push event", content_type = "application/json"),
    responses((status = 201, description = "A pipeline at the pushed commit", body = Pipeline),
        (status = 204, description = "A deletion: nothing to run"),
        (status = 400, description = "Not a push event", body = ErrorBody),
        (status = 401, description = "No webhook secret, or a wrong or missing one", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "Unknown commit, or no valid CI file at it", body = ErrorBody)))]
pub async fn push_hook(State(engine): State<Engine>, ApiPath(p): ApiPath<String>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let project = id(&p, "project")?;
    let body = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over the limit of {BODY_LIMIT} bytes"),
        )
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = match (header("x-gitlab-token"), header("x-hub-signature-256")) {
        (Some(token), _) => PushAuth::Token(token),
        (None, Some(signature)) => PushAuth::Signature(signature),
        (None, None) => PushAuth::None,
    };
    match engine.receive_push(project, auth, &body).await? {
        Some(pipeline) => Ok((StatusCode::CREATED, Json(pipeline)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
