//! `/api/v1/projects`: create, list, read and change projects.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use usher_core::api::{CreateProject, ErrorBody, Project, UpdateProject};
use usher_engine::Engine;

use crate::caller::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, id};

#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, description = "Created", body = Project), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 409, description = "A project with that name exists", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
pub async fn create_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(engine.create_project(&actor, req).await?)))
}

#[utoipa::path(get, path = "/projects", tag = "projects",
    responses((status = 200, description = "Every project", body = Vec<Project>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody)))]
pub async fn list_projects(State(engine): State<Engine>, Caller(actor): Caller) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_projects(&actor).await?))
}

#[utoipa::path(get, path = "/projects/{id}", tag = "projects", params(("id" = i64, Path, description = "The project id")),
    responses((status = 200, description = "The project", body = Project), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody)))]
pub async fn get_project(State(engine): State<Engine>, Caller(actor): Caller, ApiPath(p): ApiPath<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.get_project(&actor, id(&p, "project")?).await?))
}

#[utoipa::path(put, path = "/projects/{id}", tag = "projects", params(("id" = i64, Path, description = "The project id")), request_body = UpdateProject,
    responses((status = 200, description = "Updated", body = Project), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody), (status = 409, description = "Another project has that name", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "The CI YAML does not parse or validate; the message names the line", body = ErrorBody)))]
pub async fn update_project(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateProject>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.update_project(&actor, id(&p, "project")?, req).await?))
}
