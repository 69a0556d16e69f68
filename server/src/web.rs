//! The router: Leptos pages and server functions, `/api/v1`, the runner protocol, the
//! login form, static files — and the layers every request passes: body size limit,
//! same-origin check for cookie-authenticated writes, sign-in guard for pages.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Form, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use serde::Deserialize;
use usher_app::{App, shell};

use crate::AppState;
use crate::caller::{SESSION_COOKIE, bearer, cookie, is_same_origin};
use crate::error::ApiError;
use crate::extract::BODY_LIMIT;

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let engine = state.engine.clone();
    let options = state.leptos_options.clone();
    Router::new()
        .nest("/api/v1", crate::openapi::router())
        .merge(crate::runner_ws::documented_routes().split_for_parts().0)
        .route("/ui/{*fn_name}", post(server_fn_handler).get(server_fn_handler))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(engine.clone()),
            move || shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn_with_state(state.clone(), require_sign_in))
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn server_fn_handler(State(state): State<AppState>, req: Request<Body>) -> impl IntoResponse {
    let engine = state.engine.clone();
    handle_server_fns_with_context(move || provide_context(engine.clone()), req).await
}

/// Cookie-authenticated writes (and the login form) must come from our own pages.
async fn refuse_cross_site(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let browser_write =
        !safe && bearer(req.headers()).is_none() && (cookie(req.headers(), SESSION_COOKIE).is_some() || req.uri().path() == "/auth/login");
    if browser_write && !is_same_origin(req.headers()) {
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
        || path.starts_with("/favicon");
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
        Redirect::to(&format!("/login?next={}", encode_query(target))).into_response()
    }
}

fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    match state.engine.login(&form.name, &form.password).await {
        Ok(session) => {
            let cookie = format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
                usher_engine::SESSION_DAYS * 24 * 3600
            );
            let mut response = Redirect::to(safe_next(form.next.as_deref())).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ascii cookie"));
            response
        }
        Err(_) => {
            let next = form
                .next
                .as_deref()
                .map(|n| format!("&next={}", encode_query(n)))
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
