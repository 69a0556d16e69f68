//! Usher's pure domain, shared by the server, the runner and the browser UI.
//!
//! Nothing here does IO or needs tokio, so it compiles for wasm32 and the UI can ask
//! the very same rules the server enforces (which buttons to show, what a status means).
//! - [`status`]: job statuses and the one transition table every state change goes through.
//! - [`pipeline`]: pipeline status derived from its jobs; which waiting jobs may start.
//! - [`roles`]: who may do what.
//! - [`api`]: the JSON resources of the public API and the event websocket.
//! - [`protocol`]: the messages between server and runner.
//! - [`config`]: the CI YAML model (and, with the `parser` feature, its parser).
//! - [`artifacts`]: when artifacts are kept and which paths are acceptable.
//! - [`url`]: percent-encoding for the URLs Usher builds.
//! - [`variables`]: `$NAME` expansion in the keys GitLab expands.

pub mod api;
pub mod artifacts;
pub mod cache;
pub mod config;
pub mod dotenv;
pub mod masking;
pub mod names;
#[cfg(feature = "path-patterns")]
pub mod path_pattern;
pub mod pipeline;
#[cfg(feature = "process-metrics")]
pub mod process_metrics;
pub mod protocol;
#[cfg(feature = "parser")]
pub mod push;
pub mod repository;
pub mod roles;
pub mod status;
pub mod url;
pub mod variables;

pub use api::FailureReason;
pub use status::{JobEvent, Outcome, RunnerCommand, Status, StatusGroup};
