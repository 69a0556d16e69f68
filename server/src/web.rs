//! The router: Leptos pages and server functions, `/api/v1`, the runner protocol, the
//! login form, static files — and the layers every request passes: body size limit,
//! same-origin check for cookie-authenticated writes, sign-in guard for pages.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use serde::Deserialize;
use std::net::SocketAddr;
use usher_app::{App, shell};
use usher_engine::EngineError;

use crate::AppState;
use crate::caller::{SESSION_COOKIE, bearer, cookie, is_same_origin};
use crate::error::ApiError;
use crate::extract::BODY_LIMIT;

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let engine = state.engine.clone();
    let options = state.leptos_options.clone();
    // The hashes of the build's file names, from the hash.txt Leptos was given.
    let hashes = options
        .hash_files
        .then(|| crate::assets::build_hashes(std::path::Path::new(&*options.hash_file)))
        .flatten();
    Router::new()
        .nest("/api/v1", crate::openapi::router())
        .merge(crate::runner_ws::documented_routes().split_for_parts().0)
        .route("/ui/{*fn_name}", post(server_fn_handler).get(server_fn_handler))
        .route("/auth/login", post(login))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/auth/logout", post(logout))
        .nest_service("/pkg", crate::assets::router(&options.site_root, hashes))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(engine.clone()),
            move || shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_sign_in))
        .layer(middleware::from_fn(bad_form_arguments))
        .layer(middleware::from_fn(complete_writes))
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A request body that stops arriving for a minute is given up on (its bytes may
        // come slowly, as a large artifact upload's do, but not stop).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(
            60,
        )))
        // One log line per request: method, path (never a query's secrets: there are
        // none in Usher's URLs), status and latency.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(state)
}

/// `GET /healthz`: 200 `ok` when the database answers, else 503 (no sign-in needed).
async fn healthz(State(state): State<AppState>) -> Response {
    if state.engine.healthy().await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
    }
}

/// `GET /metrics`: Prometheus text format, counts and timings only (no sign-in needed).
async fn metrics(State(state): State<AppState>) -> Response {
    match state.engine.metrics_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, usher_engine::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn server_fn_handler(State(state): State<AppState>, req: Request<Body>) -> impl IntoResponse {
    let engine = state.engine.clone();
    handle_server_fns_with_context(move || provide_context(engine.clone()), req).await
}

/// The browser's form endpoints (`/ui/…`). A server function answers arguments it cannot
/// decode (missing, repeated, not a number) with 500 and `Args|…`/`Deserialization|…`;
/// those are the client's mistake, so they become 400 `bad_request`. (A browser's plain
/// form post never sees this: leptos redirects it back with the error.)
async fn bad_form_arguments(req: Request, next: Next) -> Response {
    let is_form_endpoint = req.uri().path().starts_with("/ui/");
    let response = next.run(req).await;
    if !is_form_endpoint || response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let client_error = ["Args|", "Deserialization|", "MissingArg|"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix));
    match client_error {
        Some(why) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("bad form arguments: {why}")).into_response(),
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A request that changes state runs on a task of its own: once it has arrived, it is
/// carried out whole even if the client hangs up before the answer (hyper drops a
/// connection's handler when the connection closes; a half-done cancel would be lost).
async fn complete_writes(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the request failed: {e}")).into_response(),
    }
}

/// Cookie-authenticated writes (and the login form) must come from our own pages.
async fn refuse_cross_site(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let browser_write =
        !safe && bearer(req.headers()).is_none() && (cookie(req.headers(), SESSION_COOKIE).is_some() || req.uri().path() == "/auth/login");
    if browser_write && !is_same_origin(req.headers(), req.uri()) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "cross-site request refused").into_response();
    }
    next.run(req).await
}

/// Pages need a signed-in user; the API, assets and the login page answer for themselves.
async fn require_sign_in(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/login"
        || path.starts_with("/api/")
        || path.starts_with("/ui/")
        || path.starts_with("/auth/")
        || path.starts_with("/pkg/")
        || path.starts_with("/favicon")
        || path == "/healthz"
        || path == "/metrics";
    if open || req.method() != Method::GET {
        return next.run(req).await;
    }
    let signed_in = match cookie(req.headers(), SESSION_COOKIE) {
        Some(session) => state.engine.authenticate_session(&session).await.is_ok(),
        None => false,
    };
    if signed_in {
        next.run(req).await
    } else {
        let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        Redirect::to(&format!("/login?next={}", usher_core::url::percent_encode(target))).into_response()
    }
}

/// Only local paths, so the login form cannot bounce a user to another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n,
        _ => "/",
    }
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let client = state.trusted_proxies.client(client.ip(), &headers);
    match state.engine.login(&form.name, &form.password, Some(client)).await {
        Ok(session) => {
            let cookie = format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                usher_engine::SESSION_DAYS * 24 * 3600,
                if state.secure_cookies { "; Secure" } else { "" }
            );
            let mut response = Redirect::to(safe_next(form.next.as_deref())).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ascii cookie"));
            response
        }
        Err(e @ EngineError::TooManyRequests(_)) => {
            // A browser goes back to the form, which says why; a program gets the 429.
            let wants_html = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            if wants_html {
                Redirect::to("/login?error=throttled").into_response()
            } else {
                ApiError::from(e).into_response()
            }
        }
        Err(_) => {
            let next = form
                .next
                .as_deref()
                .map(|n| format!("&next={}", usher_core::url::percent_encode(n)))
                .unwrap_or_default();
            Redirect::to(&format!("/login?error=1{next}")).into_response()
        }
    }
}

async fn logout(State(state): State<AppState>, req: Request) -> Response {
    if let Some(session) = cookie(req.headers(), SESSION_COOKIE) {
        let _ = state.engine.logout(&session).await;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("usher_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/pipelines/3")), "/pipelines/3");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
