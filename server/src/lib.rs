//! The Usher server as a library: [`start`] opens the engine, builds the router
//! (Leptos pages, `/api/v1`, the event websocket, the runner protocol) and serves it,
//! with optional in-process runners. `main.rs` is the CLI around it; the integration
//! tests start it on a free port the same way.

pub mod api;
pub mod artifact_download;
pub mod assets;
pub mod caller;
pub mod client;
pub mod client_address;
pub mod data_dir;
pub mod demo;
pub mod error;
pub mod events;
pub mod extract;
pub mod listener;
pub mod openapi;
pub mod runner_files;
pub mod runner_hub;
pub mod runner_ws;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::watch;
use usher_engine::Engine;

/// What every handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub engine: Engine,
    pub leptos_options: LeptosOptions,
    /// Turns true when the server shuts down; long-lived websockets end then.
    pub shutdown: watch::Receiver<bool>,
    /// Mark the session cookie `Secure` (HTTPS here, or an `https://` public URL).
    pub secure_cookies: bool,
    /// Hands each runner session the changes of its own jobs.
    pub runner_hub: runner_hub::RunnerHub,
    /// `--trusted-proxies`: whose forwarding headers name the client.
    pub trusted_proxies: std::sync::Arc<client_address::TrustedProxies>,
}

pub struct ServeOptions {
    pub addr: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub local_runners: u32,
    pub demo: bool,
    pub admin_token: Option<String>,
    /// Where the built site (`pkg/`) lives.
    pub site_root: String,
    pub settings: usher_engine::Settings,
    /// `--job-user`: who local runners run jobs as (default when root: `usher-job`).
    pub job_user: Option<String>,
    /// `--trust-jobs`: a non-root server may run jobs as itself.
    pub trust_jobs: bool,
    /// Connection count and header timeout.
    pub limits: listener::ConnectionLimits,
    /// `--tls-cert` and `--tls-key`: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--public-url`: where users reach the server (behind a proxy, say); an
    /// `https://` one makes cookies `Secure`.
    pub public_url: Option<String>,
    /// `--executor`: how local runners run jobs.
    pub executor: usher_runner::docker::ExecutorKind,
    /// `--docker-host`: the engine of `--executor docker`.
    pub docker_host: Option<String>,
    /// `--docker-image`: the image of a job without `image:` under `--executor docker`.
    pub docker_image: Option<String>,
    /// `--trusted-proxies`: whose `Forwarded`/`X-Forwarded-For` name the client.
    pub trusted_proxies: client_address::TrustedProxies,
}

impl ServeOptions {
    /// The defaults of `usher serve` for a data dir (SQLite in it, loopback on a free
    /// port, no local runners, the site under `target/site`); set what differs.
    pub fn new(data_dir: &std::path::Path) -> ServeOptions {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: default_database_url(data_dir),
            data_dir: data_dir.to_path_buf(),
            local_runners: 0,
            demo: false,
            admin_token: None,
            site_root: "target/site".into(),
            settings: Default::default(),
            job_user: None,
            trust_jobs: false,
            limits: Default::default(),
            tls: None,
            public_url: None,
            executor: Default::default(),
            docker_host: None,
            docker_image: None,
            trusted_proxies: Default::default(),
        }
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    stop: watch::Sender<bool>,
    stop_runners: watch::Sender<usher_runner::Stop>,
    task: tokio::task::JoinHandle<()>,
    runners: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Lets the local runners finish: they take no new job, stop their running ones like
    /// a cancel (after_script runs), report them, and end. The server keeps serving.
    /// SIGQUIT: local runners take no new job and let their running jobs finish; after
    /// `timeout`, they stop them gracefully (as [`Server::drain_runners`]).
    pub async fn finish_runners(&mut self, timeout: std::time::Duration) {
        let _ = self.stop_runners.send(usher_runner::Stop::Finish);
        let running = futures::future::join_all(self.runners.iter_mut().filter(|r| !r.is_finished()));
        tokio::pin!(running);
        if tokio::time::timeout(timeout, &mut running).await.is_err() {
            tracing::info!("the drain timeout ran out: stopping the local runners' jobs");
            let _ = self.stop_runners.send(usher_runner::Stop::Drain);
            running.await;
        }
    }

    pub async fn drain_runners(&mut self) {
        let _ = self.stop_runners.send(usher_runner::Stop::Drain);
        futures::future::join_all(self.runners.iter_mut().filter(|r| !r.is_finished())).await;
    }

    /// Stop: local runners kill their jobs (and wait until they have), then websockets
    /// close and in-flight requests finish.
    pub async fn stop(self) {
        let _ = self.stop_runners.send(usher_runner::Stop::Now);
        for r in self.runners {
            if !r.is_finished() {
                let _ = r.await;
            }
        }
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.engine.close().await;
    }
}

/// The database URL for a data dir when none is given.
pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("usher.db").display())
}

/// Opens the engine (creating the data dir), bootstraps admin, prints first-start
/// credentials, and serves until [`Server::stop`].
pub async fn start(opts: ServeOptions) -> Result<Server, String> {
    // Decided before anything else: a server that may not run local runners safely
    // says so and does not start.
    let isolation = match opts.local_runners {
        0 => None,
        _ => Some(usher_runner::isolation::JobIsolation::decide(
            opts.job_user.as_deref(),
            opts.trust_jobs,
            opts.local_runners,
        )?),
    };
    let docker = match opts.local_runners {
        0 => None,
        _ => opts.executor.engine(opts.docker_host.as_deref(), opts.docker_image.clone()).await?,
    };
    data_dir::prepare(&opts.data_dir)?;
    let mut settings = opts.settings.clone();
    if settings.artifacts_dir.is_none() {
        settings.artifacts_dir = Some(std::path::absolute(opts.data_dir.join("artifacts")).map_err(|e| e.to_string())?);
    }
    if let Some(dir) = &settings.artifacts_dir {
        let removed = usher_engine::artifact_storage::remove_leftover_uploads(dir);
        if removed > 0 {
            tracing::info!(removed, "removed the temporary files of uploads cut short by an earlier stop");
        }
    }
    if let Some(bucket) = &settings.artifacts_bucket {
        bucket.check().await?;
    }
    if settings.repos_dir.is_none() {
        settings.repos_dir = Some(std::path::absolute(opts.data_dir.join("repos")).map_err(|e| e.to_string())?);
    }
    let engine = Engine::open_with(&opts.database_url, settings).await.map_err(|e| e.to_string())?;
    data_dir::make_private(&opts.data_dir);
    if let Some(creds) = engine
        .bootstrap_admin(opts.admin_token.as_deref())
        .await
        .map_err(|e| e.to_string())?
    {
        data_dir::hand_over_first_credentials(&opts.data_dir, &creds)?;
    }
    if opts.demo {
        demo::ensure_demo_project(&engine, &opts.data_dir)
            .await
            .map_err(|e| e.to_string())?;
    }
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Leptos reads the hashed names from `hash_file` joined to the binary's directory; an
    // absolute path (the one found) replaces that directory.
    let hash_file = assets::hash_file(&opts.site_root);
    let leptos_options = LeptosOptions::builder()
        .output_name("usher")
        .site_root(opts.site_root.as_str())
        .site_pkg_dir("pkg")
        .hash_files(hash_file.is_some())
        .hash_file(std::sync::Arc::<str>::from(
            hash_file
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "hash.txt".into()),
        ))
        .site_addr(addr)
        .build();
    let state = AppState {
        engine: engine.clone(),
        leptos_options,
        shutdown: stop_rx.clone(),
        secure_cookies: tls.is_some() || opts.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
        runner_hub: runner_hub::RunnerHub::start(engine.bus(), stop_rx.clone()),
        trusted_proxies: std::sync::Arc::new(opts.trusted_proxies.clone()),
    };
    let router = web::router(state);
    let reaper = engine.spawn_reaper(Duration::from_secs(1));
    let limits = opts.limits.clone();
    let shutdown_rx = stop_rx.clone();
    // With TLS, local runners reach the server on a plain listener of their own on
    // loopback (nothing else listens there; the public one speaks only HTTPS).
    let internal = match (&tls, opts.local_runners) {
        (Some(_), n) if n > 0 => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
            let internal_addr = l.local_addr().map_err(|e| e.to_string())?;
            let (router, shutdown_rx, limits) = (router.clone(), stop_rx.clone(), opts.limits.clone());
            tokio::spawn(listener::serve(l, router, shutdown_rx, limits, None));
            Some(internal_addr)
        }
        _ => None,
    };
    let runner_url = format!("http://{}", internal.unwrap_or(addr));
    let task = tokio::spawn(async move {
        listener::serve(listener, router, shutdown_rx, limits, tls).await;
        reaper.abort();
    });
    let mut runners = Vec::new();
    let (stop_runners, runners_stop_rx) = watch::channel(usher_runner::Stop::No);
    if opts.local_runners > 0 {
        let token = engine.create_runner_token().await.map_err(|e| e.to_string())?;
        for i in 0..opts.local_runners {
            let config = usher_runner::RunnerConfig {
                url: runner_url.clone(),
                token: token.clone(),
                name: format!("local-{}", i + 1),
                concurrency: 1,
                builds_dir: std::path::absolute(opts.data_dir.join("builds").join(format!("local-{}", i + 1)))
                    .map_err(|e| e.to_string())?,
                isolation: isolation.clone().expect("decided above for local runners"),
                tags: Vec::new(),
                tls: None,
                docker: docker.clone(),
                // The server's /metrics covers its own process; local runners count
                // for nobody (a separate `usher-runner` serves --metrics-addr).
                metrics: Default::default(),
            };
            runners.push(tokio::spawn(usher_runner::run(config, runners_stop_rx.clone())));
        }
    }
    Ok(Server {
        addr,
        engine,
        stop: stop_tx,
        stop_runners,
        task,
        runners,
    })
}
