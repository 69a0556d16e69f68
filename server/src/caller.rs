//! Who is calling: an API client with `Authorization: Bearer <token>`, or a browser with
//! the session cookie. Also the same-origin check that protects cookie-authenticated
//! requests from cross-site use.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use usher_engine::{Actor, Engine};

use crate::error::ApiError;

pub use usher_engine::auth::{SESSION_COOKIE, bearer, cookie};

/// Whether a browser request comes from a page of this server: `Sec-Fetch-Site` says
/// same-origin (or user-initiated), or `Origin` names this host — the `Host` header, or
/// over HTTP/2 (which has none) the request's `:authority`, in `uri`. A request carrying
/// neither is refused, since every current browser sends at least one.
pub fn is_same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host),
        _ => false,
    }
}

/// Extractor: the authenticated caller of an API request, or 401.
pub struct Caller(pub Actor);

impl<S> FromRequestParts<S> for Caller
where
    Engine: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let engine = Engine::from_ref(state);
        Ok(Caller(engine.authenticate_request(&parts.headers).await?))
    }
}
