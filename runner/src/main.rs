//! `usher-runner`: a standalone runner process (docs/cli.md).

use clap::Parser;
use clap::builder::BoolishValueParser;
use std::path::PathBuf;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "usher-runner", version, about = "Runs Usher jobs with graceful cancellation")]
struct Args {
    /// The server, e.g. http://127.0.0.1:3000 or https://ci.example.com
    #[arg(long, env = "USHER_RUNNER_URL", required_unless_present = "completions")]
    url: Option<String>,
    /// A file holding the token from `usher runner-token create` (keep it private to root).
    #[arg(long, env = "USHER_RUNNER_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The token itself. Prefer --token-file or the environment variable: a command line
    /// can be read by every process on the machine, jobs included.
    #[arg(long, env = "USHER_RUNNER_TOKEN", hide_env_values = true, required_unless_present_any = ["completions", "token_file"])]
    token: Option<String>,
    /// Print a shell completion script for usher-runner and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    /// How many jobs to run at once.
    #[arg(long, env = "USHER_RUNNER_CONCURRENCY", default_value_t = 1)]
    concurrency: u32,
    /// Where each job gets its build directory.
    #[arg(long, env = "USHER_RUNNER_BUILDS_DIR", default_value = "./builds")]
    builds_dir: PathBuf,
    /// The name shown in the server's runner list.
    #[arg(long, env = "USHER_RUNNER_NAME")]
    name: Option<String>,
    /// The prefix of the unprivileged users jobs run as, one per job slot: PREFIX-1, PREFIX-2, …
    /// (needs root; default: usher-job; created if missing).
    #[arg(long, env = "USHER_JOB_USER")]
    job_user: Option<String>,
    /// Run jobs as this runner's own user when it is not root. Jobs can then read the runner's token.
    #[arg(long, env = "USHER_TRUST_JOBS", value_parser = BoolishValueParser::new())]
    trust_jobs: bool,
    /// Tags this runner has: jobs with `tags:` run only on runners having all of them.
    #[arg(long, env = "USHER_RUNNER_TAGS", value_delimiter = ',')]
    tags: Vec<String>,
    /// On SIGQUIT the runner takes no new job and lets its running jobs finish; after
    /// this long (`30m`, `2h`, seconds) it stops them gracefully, like SIGTERM.
    #[arg(long, env = "USHER_RUNNER_DRAIN_TIMEOUT", default_value = "1h", value_parser = drain_timeout)]
    drain_timeout: std::time::Duration,
    /// PEM certificates to trust for an https:// server, besides the system's: a private
    /// CA, or the server's own self-signed certificate (trusted as exactly itself).
    #[arg(long, env = "USHER_RUNNER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// How jobs run: `shell` (bash on this machine) or `docker` (in a container of the job's image).
    #[arg(long, env = "USHER_EXECUTOR", value_enum, default_value_t)]
    executor: usher_runner::docker::ExecutorKind,
    /// The Docker engine for `--executor docker` (default: $DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, env = "USHER_DOCKER_HOST")]
    docker_host: Option<String>,
    /// The image of a job without `image:` (`--executor docker`; default: none, such a job fails).
    #[arg(long, env = "USHER_DOCKER_IMAGE")]
    docker_image: Option<String>,
    /// Serve Prometheus metrics (jobs running and finished, cancel handling time,
    /// reconnects, process) at http://ADDR/metrics, e.g. 127.0.0.1:9252.
    #[arg(long, env = "USHER_RUNNER_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// How this runner writes its own log (to standard error).
    #[arg(long, env = "USHER_LOG_FORMAT", value_enum, default_value_t)]
    log_format: usher_runner::logging::LogFormat,
}

/// The runner token from --token-file, $USHER_RUNNER_TOKEN or --token (which warns).
fn token(args: &Args, matches: &clap::ArgMatches) -> Result<String, String> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("--token-file {} is empty", path.display()));
        }
        return Ok(token.to_string());
    }
    if matches.value_source("token") == Some(clap::parser::ValueSource::CommandLine) {
        eprintln!(
            "usher-runner: warning: --token puts the runner token on the command line, where every process on this \
             machine (jobs included) can read it in /proc; use --token-file FILE or USHER_RUNNER_TOKEN instead"
        );
    }
    Ok(args.token.clone().unwrap_or_default())
}

#[tokio::main]
async fn main() {
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let args = <Args as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut <Args as clap::CommandFactory>::command(),
            "usher-runner",
            &mut std::io::stdout(),
        );
        return;
    }
    let url = args.url.clone().unwrap_or_default();
    let token = token(&args, &matches).unwrap_or_else(|e| {
        eprintln!("usher-runner: {e}");
        std::process::exit(2);
    });
    usher_runner::logging::init(args.log_format);
    if args.concurrency == 0 {
        eprintln!("usher-runner: --concurrency must be at least 1");
        std::process::exit(2);
    }
    let builds_dir = match std::path::absolute(&args.builds_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("usher-runner: bad --builds-dir: {e}");
            std::process::exit(2);
        }
    };
    let name = args.name.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "runner".into())
    });
    let (stop_tx, stop_rx) = watch::channel(usher_runner::Stop::No);
    tokio::spawn(usher_runner::session::follow_signals(stop_tx, args.drain_timeout));
    let tls = if url.starts_with("https://") {
        Some(usher_runner::tls::client_config(args.ca_file.as_deref()).unwrap_or_else(|e| {
            eprintln!("usher-runner: {e}");
            std::process::exit(2);
        }))
    } else {
        None
    };
    let isolation = usher_runner::isolation::JobIsolation::decide(args.job_user.as_deref(), args.trust_jobs, args.concurrency)
        .unwrap_or_else(|e| {
            eprintln!("usher-runner: {e}");
            std::process::exit(2);
        });
    let docker = args
        .executor
        .engine(args.docker_host.as_deref(), args.docker_image.clone())
        .await
        .unwrap_or_else(|e| {
            eprintln!("usher-runner: {e}");
            std::process::exit(2);
        });
    let metrics = std::sync::Arc::new(usher_runner::metrics::RunnerMetrics::new());
    if let Some(addr) = args.metrics_addr {
        let listener = usher_runner::metrics::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("usher-runner: cannot serve metrics on --metrics-addr {addr}: {e}");
            std::process::exit(2);
        });
        tracing::info!(
            "metrics at http://{}/metrics",
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(usher_runner::metrics::serve(listener, metrics.clone()));
    }
    // The runner's own files (job scripts before they are handed over) are private.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    usher_runner::run(
        usher_runner::RunnerConfig {
            url,
            token,
            name,
            concurrency: args.concurrency,
            builds_dir,
            isolation,
            tags: args.tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            tls,
            docker,
            metrics,
        },
        stop_rx,
    )
    .await;
}

/// `--drain-timeout`: a duration as the CI YAML writes them.
fn drain_timeout(text: &str) -> Result<std::time::Duration, String> {
    usher_core::config::parse_duration(text)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a duration (write 30m, 1h, or seconds)"))
}
