//! The OpenAPI document of every public route (`/api/v1` and the runner protocol's),
//! served at `GET /api/v1/openapi.json`, and the `/api/v1` router that serves it.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use usher_core::api::{ErrorBody, ErrorDetail};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Usher",
        description = "The JSON API of Usher, a CI server whose cancel lets jobs clean up (docs/api.md in its repository). \
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

/// `/api/v1`: the documented routes, the document itself, and a JSON 404 for the rest.
pub fn router() -> Router<AppState> {
    let (router, _) = v1_routes().split_for_parts();
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route") })
        .method_not_allowed_fallback(crate::error::method_not_allowed)
}

fn v1_routes() -> OpenApiRouter<AppState> {
    crate::api::routes().routes(routes!(openapi_json))
}

/// The description of every public route: `/api/v1` and the runner protocol's routes.
/// Wildcard segments (`{*path}` in axum) are plain parameters in OpenAPI.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1_routes())
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
