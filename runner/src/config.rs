//! What a runner is told when it starts (the `usher-runner` flags, or a server's local
//! runners): the one value the session and the host preparation both read.

use std::path::PathBuf;

use crate::isolation::JobIsolation;

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// `http://host:port` of the server.
    pub url: String,
    pub token: String,
    pub name: String,
    pub concurrency: u32,
    pub builds_dir: PathBuf,
    /// Who jobs run as (see `isolation`).
    pub isolation: JobIsolation,
    /// `--tags`: jobs with tags are given only to runners that have every one of them.
    pub tags: Vec<String>,
    /// TLS for an `https://` server (`crate::tls::client_config`); None for `http://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// `--executor docker`: the engine jobs run on. None: the shell executor.
    pub docker: Option<crate::docker::Docker>,
    /// What `--metrics-addr` serves; counted whether or not anyone reads it.
    pub metrics: std::sync::Arc<crate::metrics::RunnerMetrics>,
}
