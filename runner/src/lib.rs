//! The Usher runner as a library: [`session::run`] keeps a websocket to the server,
//! takes jobs and runs each with [`executor::run_job`]. The `usher-runner` binary and the
//! server's `--local-runners` both use it, so local and remote runners speak one protocol.
//! [`artifacts`] uploads a job's files over HTTP after its after_script.

pub mod after_script;
pub mod artifacts;
pub mod beneath;
pub mod cache;
pub mod checkout;
pub mod clone3;
pub mod config;
pub mod container;
pub mod control;
pub mod defer_watch;
pub mod dependencies;
pub mod docker;
pub mod docker_policy;
pub mod docker_proxy;
pub mod executor;
pub mod handover;
pub mod host;
pub mod isolation;
pub mod job_run;
pub mod logging;
pub mod logsink;
pub mod metrics;
pub mod output;
pub mod procs;
pub mod programs;
pub mod recovery;
pub mod rooms;
pub mod script;
pub mod session;
pub mod shared_cache;
pub mod spawn;
pub mod supervise;
pub mod tls;

pub use session::{RunnerConfig, Stop, run};
