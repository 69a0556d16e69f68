//! [`Engine`]: one method per action. Every way in (REST handler, server function,
//! websocket, runner session, reaper) calls these, so a rule enforced here holds
//! everywhere. Methods check the actor's role, apply events through
//! [`Engine::commit`] (the one gate, in `transitions`), which publishes what committed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{Bus, EngineError, Store};

/// Timing rules of the engine; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Extra time past cancel_grace + after_script_timeout before the reaper gives up
    /// on a canceling job's report.
    pub cancel_margin_secs: u64,
    /// A runner not heard from for this long is lost; its jobs end `runner_lost`.
    pub runner_lost_after_secs: u64,
    /// A job's log stops growing here, with a line saying so.
    pub max_log_bytes: u64,
    /// Where artifact files are kept (`job-{id}/{path}` below it) unless there is an
    /// `artifacts_bucket`; with neither, uploads are refused.
    pub artifacts_dir: Option<PathBuf>,
    /// S3-compatible storage for artifacts, shared by every replica (`--artifacts-url`).
    pub artifacts_bucket: Option<crate::artifact_storage::Bucket>,
    /// The most bytes of artifacts one job may keep.
    pub max_artifact_bytes: u64,
    /// The most artifact files one job may keep (empty ones count too).
    pub max_artifact_files: u64,
    /// The most jobs one pipeline may have (a bigger configuration is refused).
    pub max_pipeline_jobs: usize,
    /// Where the projects' git mirrors are kept; None refuses projects with a repository.
    pub repos_dir: Option<PathBuf>,
    /// The most bytes of logs and artifacts kept in all; past it the oldest artifacts,
    /// then the oldest finished jobs' logs, are removed. None: no cap.
    pub max_storage_bytes: Option<u64>,
    /// Whether `include: remote` may fetch from loopback, private and link-local
    /// addresses (an in-house server); off, so a CI file cannot read the server's network.
    pub remote_includes_local_network: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cancel_margin_secs: 30,
            runner_lost_after_secs: 60,
            max_log_bytes: 4 * 1024 * 1024,
            artifacts_dir: None,
            artifacts_bucket: None,
            max_artifact_bytes: 100 * 1024 * 1024,
            max_artifact_files: 10_000,
            max_pipeline_jobs: 2000,
            repos_dir: None,
            max_storage_bytes: None,
            remote_includes_local_network: false,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    store: Store,
    bus: Bus,
    /// Held on SQLite from before a change's commit until it is published, so that
    /// subscribers see changes in commit order (see `Engine::commit` in `transitions`).
    pub(crate) publish_order: tokio::sync::Mutex<()>,
    /// Failed sign-ins, per user and per address.
    pub(crate) login_throttle: crate::throttle::LoginThrottle,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The projects' git mirrors.
    pub(crate) repos: crate::repos::Repos,
    /// Where argon2 password checks run (one thread per core).
    pub(crate) password_checks: crate::password_checks::PasswordChecks,
    /// Each job's graceful-cancel time, from definitions already read.
    pub(crate) cancel_windows: crate::cancel_windows::CancelWindows,
    /// The runners connected to this replica now (a runner may have several
    /// connections a moment apart: counted).
    pub(crate) connected_runners: std::sync::Mutex<std::collections::HashMap<i64, usize>>,
    /// The LISTEN task feeding the bus (PostgreSQL).
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Engine {
    pub async fn open(database_url: &str) -> Result<Engine, EngineError> {
        Engine::open_with(database_url, Settings::default()).await
    }

    pub async fn open_with(database_url: &str, settings: Settings) -> Result<Engine, EngineError> {
        let store = Store::connect(database_url).await?;
        let bus = Bus::new(4096);
        // Listening starts before the engine is used, so no committed change is missed.
        let listener = match store.notifies_replicas() {
            true => Some(crate::bus::spawn_postgres_listener(database_url, bus.clone(), store.clone()).await?),
            false => None,
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                repos: crate::repos::Repos::new(settings.repos_dir.clone()),
                settings,
                store,
                bus,
                publish_order: tokio::sync::Mutex::new(()),
                login_throttle: Default::default(),
                metrics: Default::default(),
                cancel_windows: Default::default(),
                connected_runners: Default::default(),
                password_checks: crate::password_checks::PasswordChecks::start(std::thread::available_parallelism().map_or(2, |n| n.get())),
                listener: std::sync::Mutex::new(listener),
            }),
        })
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Whether the database answers (`GET /healthz`).
    pub async fn healthy(&self) -> bool {
        self.store().ping().await.is_ok()
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let counts = self.store().job_counts().await?;
        Ok(self.inner.metrics.render(&counts))
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub async fn close(&self) {
        if let Some(listener) = self.inner.listener.lock().expect("not poisoned").take() {
            listener.abort();
        }
        self.store().close().await;
    }
}
