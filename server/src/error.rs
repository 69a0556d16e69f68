//! The error every API answer uses: `{"error": {"code", "message"}}` with the HTTP status
//! of its code (docs/api.md "Errors"). Engine errors map onto it one to one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use usher_core::api::{ErrorBody, ErrorDetail};
use usher_engine::EngineError;

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

/// A plain HTTP request to a websocket route gets the API's error shape.
pub fn not_a_websocket(rejection: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("this route is a websocket; send an upgrade request ({rejection})"),
    )
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A known path with another method: 405 in the API's error shape, with `Allow` kept.
pub async fn method_not_allowed(axum::extract::OriginalUri(uri): axum::extract::OriginalUri, method: axum::http::Method) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
