//! `/api/v1/projects/{id}/variables`: a project's CI variables. Values are write-only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use usher_core::api::{CreateVariable, ErrorBody, Variable};
use usher_engine::Engine;

use crate::caller::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, id};

#[utoipa::path(post, path = "/projects/{id}/variables", tag = "projects", params(("id" = i64, Path, description = "The project id")), request_body = CreateVariable,
    responses((status = 201, description = "Added; the answer never holds the value", body = Variable), (status = 400, description = "A malformed key or value, or a masked value shorter than 8 characters", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low (maintainer and above)", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody), (status = 409, description = "The project has a variable of that key", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody)))]
pub async fn add_variable(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
    ApiJson(req): ApiJson<CreateVariable>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(engine.add_variable(&actor, id(&p, "project")?, req).await?),
    ))
}

#[utoipa::path(get, path = "/projects/{id}/variables", tag = "projects", params(("id" = i64, Path, description = "The project id")),
    responses((status = 200, description = "The project's variables by key, without values", body = Vec<Variable>), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low (developer and above)", body = ErrorBody), (status = 404, description = "No such project", body = ErrorBody)))]
pub async fn list_variables(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath(p): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.list_variables(&actor, id(&p, "project")?).await?))
}

#[utoipa::path(delete, path = "/projects/{id}/variables/{key}", tag = "projects",
    params(("id" = i64, Path, description = "The project id"), ("key" = String, Path, description = "The variable's key")),
    responses((status = 204, description = "Deleted"), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Role too low (maintainer and above)", body = ErrorBody), (status = 404, description = "No such project or variable", body = ErrorBody)))]
pub async fn delete_variable(
    State(engine): State<Engine>,
    Caller(actor): Caller,
    ApiPath((p, key)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    engine.delete_variable(&actor, id(&p, "project")?, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
