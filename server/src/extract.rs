//! Request extractors whose refusals answer in the API's error shape: a JSON body
//! (400 `bad_request`, 413 `too_large`), a query string, and path ids and numbers.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::StatusCode;
use usher_engine::EngineError;

use crate::error::{ApiError, ApiResult};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

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

/// A JSON body that may be left out (an empty body is `T::default()`), with
/// [`ApiJson`]'s refusals; the content type is not asked for, as a client that sends no
/// body sends none either.
pub struct OptionalApiJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    T: Default + serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is over the limit of {BODY_LIMIT} bytes"),
                ));
            }
            Err(rejection) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(T::default()));
        }
        serde_json::from_slice(&bytes).map(OptionalApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not what this request takes: {e}"),
            )
        })
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

/// Path ids: a non-integer is a 404 of that resource, not a 400.
pub fn id(text: &str, what: &str) -> ApiResult<i64> {
    text.parse().map_err(|_| EngineError::NotFound(format!("{what} {text}")).into())
}

pub fn number_param(value: Option<&str>, name: &str, default: i64) -> ApiResult<i64> {
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

/// `Path` whose rejections (a segment that is not valid UTF-8 once decoded, say) answer
/// 400 `bad_request` in the API's shape instead of axum's plain text.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    Path<T>: axum::extract::FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        }
    }
}
