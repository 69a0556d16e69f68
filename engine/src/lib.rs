//! The server-side service of Usher.
//!
//! [`Engine`] is the one place where actions happen: the REST handlers, the Leptos
//! server functions, the event and runner websockets and the reaper all call its
//! methods, which check roles ([`usher_core::roles`]), apply the transition table
//! ([`usher_core::status`]) through the [`store`], and publish what committed on the
//! [`bus`].

mod accounts;
mod artifacts;
pub mod auth;
pub mod bus;
pub mod error;
mod jobs;
mod logs;
mod pipelines;
mod projects;
mod reaper;
mod runners;
pub mod service;
pub mod store;
mod transitions;

pub use accounts::{BootstrapCredentials, SESSION_DAYS};
pub use auth::Actor;
pub use bus::{Bus, BusEvent};
pub use error::EngineError;
pub use pipelines::PipelineQuery;
pub use service::{Engine, Settings};
pub use store::Store;

/// Now as the RFC 3339 UTC text stored and served everywhere (millisecond precision,
/// fixed width, so text order is time order).
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
