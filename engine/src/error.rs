//! What can go wrong in an engine call, with the API error code and HTTP status each
//! maps to (docs/api.md "Errors"). The adapters (REST, server functions) only translate.

use usher_core::config::ConfigError;
use usher_core::status::InvalidTransition;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    /// The CI file's rules make no pipeline of this request (a bad request to the API;
    /// nothing to do for a push).
    #[error("{0}")]
    NoPipeline(String),
    #[error("authentication required: missing, unknown or revoked credentials")]
    Unauthorized,
    #[error("your role ({role}) may not {action}; it needs {needed} or higher")]
    Forbidden {
        role: String,
        action: &'static str,
        needed: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("invalid CI configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("{0}")]
    Conflict(String),
    /// What a change was decided from no longer holds (see the store's `Change::Batch`):
    /// the caller decides again; a 409 if it gives up.
    #[error("{0}; try again")]
    Outdated(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    InvalidRef(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::BadRequest(_) | EngineError::NoPipeline(_) => "bad_request",
            EngineError::Unauthorized => "unauthorized",
            EngineError::Forbidden { .. } => "forbidden",
            EngineError::NotFound(_) => "not_found",
            EngineError::InvalidTransition(_) => "invalid_transition",
            EngineError::InvalidConfig(_) => "invalid_config",
            EngineError::Conflict(_) | EngineError::Outdated(_) => "conflict",
            EngineError::TooLarge(_) => "too_large",
            EngineError::TooManyRequests(_) => "too_many_requests",
            EngineError::InvalidRef(_) => "invalid_ref",
            EngineError::Internal(_) => "internal",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::BadRequest(_) | EngineError::NoPipeline(_) => 400,
            EngineError::Unauthorized => 401,
            EngineError::Forbidden { .. } => 403,
            EngineError::NotFound(_) => 404,
            EngineError::InvalidTransition(_) | EngineError::Conflict(_) | EngineError::Outdated(_) => 409,
            EngineError::InvalidConfig(_) | EngineError::InvalidRef(_) => 422,
            EngineError::TooLarge(_) => 413,
            EngineError::TooManyRequests(_) => 429,
            EngineError::Internal(_) => 500,
        }
    }
}

impl From<InvalidTransition> for EngineError {
    fn from(e: InvalidTransition) -> Self {
        EngineError::InvalidTransition(e.to_string())
    }
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!("database error: {e}");
        EngineError::Internal(format!("database error: {e}"))
    }
}

impl From<sqlx::migrate::MigrateError> for EngineError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        EngineError::Internal(format!("database migration failed: {e}"))
    }
}
