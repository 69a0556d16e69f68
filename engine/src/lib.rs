//! The server-side service of Usher.
//!
//! [`Engine`] is the one place where actions happen: the REST handlers, the Leptos
//! server functions, the event and runner websockets and the reaper all call its
//! methods, which check roles ([`usher_core::roles`]), apply the transition table
//! ([`usher_core::status`]) through the [`store`], and publish what committed on the
//! [`bus`].

mod accounts;
pub mod artifact_storage;
mod artifacts;
mod assignment;
pub mod auth;
pub mod bus;
mod caches;
mod cancel_windows;
pub mod error;
pub mod hooks;
mod includes;
mod jobs;
mod logs;
pub mod metrics;
mod password_checks;
mod pipeline_source;
mod pipeline_stop;
mod pipelines;
pub mod plan;
mod projects;
mod reaper;
mod remote_includes;
mod repos;
pub mod retention;
mod runners;
pub mod service;
pub mod store;
pub mod throttle;
mod transitions;
mod variables;

pub use accounts::{BootstrapCredentials, SESSION_DAYS};
pub use auth::Actor;
pub use bus::{Bus, BusEvent};
pub use error::EngineError;
pub use logs::LogStretch;
pub use pipeline_source::Origin;
pub use pipelines::PipelineQuery;
pub use service::{Engine, Settings};
pub use store::Store;

/// Runs `work` on a task of its own and waits for it. An accepted state change must
/// complete even when the caller's future is dropped (an HTTP client that disconnects
/// drops its handler): the work goes on without it.
pub(crate) async fn detached<T, F>(work: F) -> Result<T, EngineError>
where
    F: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| EngineError::Internal(format!("the work was interrupted: {e}")))?
}

/// Now as the RFC 3339 UTC text stored and served everywhere (millisecond precision,
/// fixed width, so text order is time order).
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
