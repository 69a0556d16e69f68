//! `usher`: the server and its administration commands (docs/cli.md).

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use usher_core::roles::Role;
use usher_engine::Engine;

#[derive(Parser)]
#[command(name = "usher", version, about = "A CI server whose cancel lets jobs clean up")]
struct Cli {
    /// Database URL: sqlite://… or postgres://… (default: SQLite in the data dir).
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Where the SQLite database and build directories live.
    #[arg(long, env = "USHER_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// How the server writes its own log (to standard error).
    #[arg(long, env = "USHER_LOG_FORMAT", value_enum, default_value_t, global = true)]
    log_format: usher_runner::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web UI, the API and the runner protocol.
    Serve {
        /// Where to listen (address and port).
        #[arg(long, env = "USHER_ADDR", default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// Runners to start inside the server process.
        #[arg(long, env = "USHER_LOCAL_RUNNERS", default_value_t = 0)]
        local_runners: u32,
        /// Create a demo project when there are no projects.
        #[arg(long, env = "USHER_DEMO", value_parser = BoolishValueParser::new())]
        demo: bool,
        /// The prefix of the unprivileged users local runners run jobs as, one per job slot: PREFIX-1, PREFIX-2, … (needs root; default: usher-job; created if missing).
        #[arg(long, env = "USHER_JOB_USER")]
        job_user: Option<String>,
        /// Let local runners run jobs as this server's own user when it is not root. Jobs can then read the data dir.
        #[arg(long, env = "USHER_TRUST_JOBS", value_parser = BoolishValueParser::new())]
        trust_jobs: bool,
        /// PEM certificate chain: serve HTTPS (with --tls-key).
        #[arg(long, env = "USHER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "USHER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The URL users reach this server at (behind a proxy, say); https:// makes cookies Secure.
        #[arg(long, env = "USHER_PUBLIC_URL")]
        public_url: Option<String>,
        /// How local runners run jobs: `shell` (bash here) or `docker` (in a container of the job's image).
        #[arg(long, env = "USHER_EXECUTOR", value_enum, default_value_t)]
        executor: usher_runner::docker::ExecutorKind,
        /// The Docker engine for `--executor docker` (default: $DOCKER_HOST, else unix:///var/run/docker.sock).
        #[arg(long, env = "USHER_DOCKER_HOST")]
        docker_host: Option<String>,
        /// The image of a job without `image:` under `--executor docker` (default: none, such a job fails).
        #[arg(long, env = "USHER_DOCKER_IMAGE")]
        docker_image: Option<String>,
        /// Reverse proxies (addresses or networks, comma-separated) whose `Forwarded` or
        /// `X-Forwarded-For` name the client (sign-in throttling); no one's by default.
        #[arg(long, env = "USHER_TRUSTED_PROXIES", value_delimiter = ',')]
        trusted_proxies: Vec<String>,
        /// On SIGQUIT the local runners take no new job and let their running jobs
        /// finish; after this long (`30m`, `2h`, seconds) they stop them gracefully.
        #[arg(long, env = "USHER_DRAIN_TIMEOUT", default_value = "1h", value_parser = drain_timeout)]
        drain_timeout: std::time::Duration,
        /// Keep artifacts in S3-compatible storage (`s3://BUCKET/PREFIX`) instead of the
        /// data dir, so every replica serves them; credentials and region from the
        /// standard `AWS_*` variables.
        #[arg(long, env = "USHER_ARTIFACTS_URL")]
        artifacts_url: Option<String>,
        /// The S3-compatible server of `--artifacts-url` (e.g. http://minio:9000; default AWS).
        #[arg(long, env = "USHER_S3_ENDPOINT", requires = "artifacts_url")]
        s3_endpoint: Option<String>,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the tokens runners connect with.
    RunnerToken {
        #[command(subcommand)]
        command: RunnerTokenCommand,
    },
    /// Keep a server's URL and an API token (read from standard input) for the client
    /// commands, in a file only you can read.
    Login {
        /// The server's URL, e.g. https://ci.example.com.
        url: String,
        /// PEM certificates of a private CA (or the server's own self-signed certificate).
        #[arg(long, env = "USHER_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Pipelines on any Usher server (see `usher login`).
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
        #[command(flatten)]
        client: usher_server::client::ClientArgs,
    },
    /// Jobs on any Usher server (see `usher login`).
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        client: usher_server::client::ClientArgs,
    },
    /// Print a shell completion script for usher (e.g. `usher completions bash > /etc/bash_completion.d/usher`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// A project's pipelines, newest first.
    List {
        #[arg(long)]
        project: i64,
        /// Only this branch or tag.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Only pipelines in this status.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        per_page: u32,
    },
    /// A pipeline and its jobs.
    Show { id: i64 },
    /// Start a pipeline of a project.
    Run {
        #[arg(long)]
        project: i64,
        #[arg(long = "ref", default_value = "main")]
        git_ref: String,
        /// A commit of that ref (default: its newest).
        #[arg(long)]
        sha: Option<String>,
    },
    /// Cancel gracefully: running jobs clean up first.
    Cancel {
        id: i64,
        /// Why (kept with the cancel, shown to everyone, at most 500 characters).
        #[arg(long)]
        message: Option<String>,
    },
    /// Kill every unfinished job at once.
    Abort {
        id: i64,
        #[arg(long)]
        message: Option<String>,
    },
    /// New attempts of the failed and canceled jobs.
    Retry { id: i64 },
}

#[derive(Subcommand)]
enum JobCommand {
    /// A job's status and facts.
    Show { id: i64 },
    /// Cancel gracefully: the script is stopped and after_script runs.
    Cancel {
        id: i64,
        #[arg(long)]
        message: Option<String>,
    },
    /// Kill the job at once (no after_script).
    Abort {
        id: i64,
        #[arg(long)]
        message: Option<String>,
    },
    /// A new attempt of a finished job.
    Retry { id: i64 },
    /// Start a manual job.
    Play { id: i64 },
    /// Print the job's log; with -f, follow it live and exit with the job's outcome
    /// (0 success, 1 failed, 3 canceled or skipped).
    Log {
        id: i64,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        name: String,
        /// What the user may do (each role may do what the ones before it may).
        #[arg(long, env = "USHER_USER_ROLE", value_enum)]
        role: RoleArg,
        /// Read the password from standard input (else the user can only use tokens).
        #[arg(long, env = "USHER_PASSWORD_STDIN", value_parser = BoolishValueParser::new())]
        password_stdin: bool,
    },
    /// Set a user's password, read from standard input (e.g. a lost admin password);
    /// their browser sessions end.
    Password { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new API token for a user.
    Create { name: String },
    /// Revoke an API token (read from standard input when not given).
    Revoke { token: Option<String> },
}

#[derive(Subcommand)]
enum RunnerTokenCommand {
    /// Print a new runner token.
    Create,
    /// Revoke a runner token (read from standard input when not given); runners using
    /// it are disconnected.
    Revoke { token: Option<String> },
}

/// The roles, as `--role` takes them.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Reads everything.
    Viewer,
    /// Also creates pipelines and cancels jobs.
    Developer,
    /// Also aborts jobs and manages projects.
    Maintainer,
    /// Also manages users and tokens.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Developer => Role::Developer,
            RoleArg::Maintainer => Role::Maintainer,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Overrides (for tests and unusual setups): USHER_CANCEL_MARGIN_SECS,
/// USHER_RUNNER_LOST_SECS, USHER_MAX_LOG_BYTES, USHER_MAX_ARTIFACT_BYTES, USHER_MAX_ARTIFACT_FILES, USHER_MAX_PIPELINE_JOBS, USHER_MAX_STORAGE_BYTES.
fn settings_from_env() -> usher_engine::Settings {
    let mut settings = usher_engine::Settings::default();
    let read = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().unwrap_or_else(|_| fail(format!("{name} must be a whole number"))))
    };
    if let Some(v) = read("USHER_CANCEL_MARGIN_SECS") {
        settings.cancel_margin_secs = v;
    }
    if let Some(v) = read("USHER_RUNNER_LOST_SECS") {
        settings.runner_lost_after_secs = v;
    }
    if let Some(v) = read("USHER_MAX_LOG_BYTES") {
        settings.max_log_bytes = v;
    }
    if let Some(v) = read("USHER_MAX_ARTIFACT_BYTES") {
        settings.max_artifact_bytes = v;
    }
    if let Some(v) = read("USHER_MAX_ARTIFACT_FILES") {
        settings.max_artifact_files = v;
    }
    if let Some(v) = read("USHER_MAX_PIPELINE_JOBS") {
        settings.max_pipeline_jobs = v as usize;
    }
    if let Some(v) = read("USHER_MAX_STORAGE_BYTES") {
        settings.max_storage_bytes = Some(v);
    }
    if let Ok(v) = std::env::var("USHER_REMOTE_INCLUDES_LOCAL_NETWORK") {
        settings.remote_includes_local_network = match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            _ => fail("USHER_REMOTE_INCLUDES_LOCAL_NETWORK must be 1/0, yes/no or true/false"),
        };
    }
    settings
}

/// A token from the command line, or from standard input (keeps it out of shell history).
fn token_arg(token: Option<String>) -> String {
    let token = token.unwrap_or_else(|| {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).unwrap_or_else(|e| fail(e));
        text
    });
    let token = token.trim().to_string();
    if token.is_empty() {
        fail("no token given");
    }
    token
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("usher: {message}");
    std::process::exit(1);
}

/// Long for a reason: one arm per command, each a few lines; splitting would scatter the CLI.
#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    usher_runner::logging::init(cli.log_format);
    let database_url = cli
        .database_url
        .clone()
        .unwrap_or_else(|| usher_server::default_database_url(&cli.data_dir));
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "usher",
            &mut std::io::stdout(),
        );
        return;
    }
    if matches!(cli.command, Command::Login { .. } | Command::Pipeline { .. } | Command::Job { .. }) {
        let code = match client_command(cli.command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("usher: {e}");
                e.exit_code()
            }
        };
        std::process::exit(code);
    }
    match cli.command {
        Command::Serve {
            addr,
            local_runners,
            demo,
            job_user,
            trust_jobs,
            tls_cert,
            tls_key,
            public_url,
            executor,
            docker_host,
            docker_image,
            drain_timeout,
            trusted_proxies,
            artifacts_url,
            s3_endpoint,
        } => {
            let trusted_proxies = usher_server::client_address::TrustedProxies::parse(&trusted_proxies).unwrap_or_else(|e| fail(e));
            // Everything the server creates (database, artifacts) is private to its user.
            // SAFETY: umask only changes this process's file-creation mask.
            unsafe { libc::umask(0o077) };
            let scheme = if tls_cert.is_some() { "https" } else { "http" };
            let mut settings = settings_from_env();
            if let Some(url) = artifacts_url {
                let aws = std::env::vars().chain(s3_endpoint.map(|e| ("AWS_ENDPOINT".to_string(), e)));
                settings.artifacts_bucket = Some(usher_engine::artifact_storage::Bucket::open(&url, aws).unwrap_or_else(|e| fail(e)));
            }
            let server = usher_server::start(usher_server::ServeOptions {
                addr,
                database_url,
                data_dir: cli.data_dir,
                local_runners,
                demo,
                admin_token: std::env::var("USHER_ADMIN_TOKEN").ok(),
                site_root: std::env::var("LEPTOS_SITE_ROOT").unwrap_or_else(|_| "target/site".into()),
                settings,
                job_user,
                trust_jobs,
                limits: Default::default(),
                tls: tls_cert.zip(tls_key),
                public_url,
                executor,
                docker_host,
                docker_image,
                trusted_proxies,
            })
            .await
            .unwrap_or_else(|e| fail(e));
            println!("Usher is serving {scheme}://{}", server.addr);
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            let mut quit = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit()).expect("signal handler");
            let mut server = server;
            let finish = tokio::select! {
                _ = tokio::signal::ctrl_c() => false,
                _ = term.recv() => false,
                _ = quit.recv() => true,
            };
            if finish {
                eprintln!("usher: SIGQUIT: local runners take no new job and finish the ones they run (signal again to stop them)");
                tokio::select! {
                    _ = server.finish_runners(drain_timeout) => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            eprintln!("usher: shutting down; local runners stop their jobs gracefully first (signal again to kill them)");
            tokio::select! {
                _ = server.drain_runners() => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            server.stop().await;
        }
        other => {
            std::fs::create_dir_all(&cli.data_dir).unwrap_or_else(|e| fail(e));
            let engine = Engine::open(&database_url).await.unwrap_or_else(|e| fail(e));
            match other {
                Command::User {
                    command:
                        UserCommand::Add {
                            name,
                            role,
                            password_stdin,
                        },
                } => {
                    let password = password_stdin.then(|| {
                        let mut text = String::new();
                        std::io::stdin().read_to_string(&mut text).unwrap_or_else(|e| fail(e));
                        text.trim_end_matches(['\n', '\r']).to_string()
                    });
                    if password.as_deref() == Some("") {
                        fail("the password on standard input is empty");
                    }
                    engine
                        .add_user(&name, role.into(), password.as_deref())
                        .await
                        .unwrap_or_else(|e| fail(e));
                    eprintln!("added user `{name}` ({})", Role::from(role));
                }
                Command::User {
                    command: UserCommand::Password { name },
                } => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text).unwrap_or_else(|e| fail(e));
                    let password = text.trim_end_matches(['\n', '\r']);
                    if password.is_empty() {
                        fail("give the new password on standard input");
                    }
                    engine.set_password(&name, password).await.unwrap_or_else(|e| fail(e));
                    eprintln!("set a new password for `{name}`; their browser sessions were signed out");
                }
                Command::Token {
                    command: TokenCommand::Create { name },
                } => {
                    println!("{}", engine.create_api_token(&name).await.unwrap_or_else(|e| fail(e)));
                }
                Command::Token {
                    command: TokenCommand::Revoke { token },
                } => {
                    engine.revoke_api_token(&token_arg(token)).await.unwrap_or_else(|e| fail(e));
                    eprintln!("revoked the API token");
                }
                Command::RunnerToken {
                    command: RunnerTokenCommand::Create,
                } => {
                    println!("{}", engine.create_runner_token().await.unwrap_or_else(|e| fail(e)));
                }
                Command::RunnerToken {
                    command: RunnerTokenCommand::Revoke { token },
                } => {
                    engine.revoke_runner_token(&token_arg(token)).await.unwrap_or_else(|e| fail(e));
                    eprintln!("revoked the runner token");
                }
                Command::Serve { .. }
                | Command::Completions { .. }
                | Command::Login { .. }
                | Command::Pipeline { .. }
                | Command::Job { .. } => unreachable!(),
            }
            engine.close().await;
        }
    }
}

/// The client commands: they talk to a server over HTTP(S), not to a database.
async fn client_command(command: Command) -> Result<i32, usher_server::client::ClientError> {
    use usher_server::client::{Act, Client, login, read_token};
    match command {
        Command::Login { url, ca_file } => {
            let token = read_token()?;
            let path = login(&url, &token, ca_file.as_deref()).await?;
            eprintln!("logged in to {url}; kept in {}", path.display());
        }
        Command::Pipeline { command, client } => {
            let client = Client::new(&client)?;
            match command {
                PipelineCommand::List {
                    project,
                    git_ref,
                    status,
                    per_page,
                } => {
                    client
                        .pipeline_list(project, git_ref.as_deref(), status.as_deref(), per_page)
                        .await?
                }
                PipelineCommand::Show { id } => client.pipeline_show(id).await?,
                PipelineCommand::Run { project, git_ref, sha } => client.pipeline_run(project, &git_ref, sha.as_deref()).await?,
                PipelineCommand::Cancel { id, message } => client.pipeline_act(id, Act::Cancel { message }).await?,
                PipelineCommand::Abort { id, message } => client.pipeline_act(id, Act::Abort { message }).await?,
                PipelineCommand::Retry { id } => client.pipeline_act(id, Act::Retry).await?,
            }
        }
        Command::Job { command, client } => {
            let client = Client::new(&client)?;
            match command {
                JobCommand::Show { id } => client.job_show(id).await?,
                JobCommand::Cancel { id, message } => client.job_act(id, Act::Cancel { message }).await?,
                JobCommand::Abort { id, message } => client.job_act(id, Act::Abort { message }).await?,
                JobCommand::Retry { id } => client.job_act(id, Act::Retry).await?,
                JobCommand::Play { id } => client.job_act(id, Act::Play).await?,
                JobCommand::Log { id, follow } => return client.job_log(id, follow).await,
            }
        }
        _ => unreachable!("not a client command"),
    }
    Ok(0)
}

/// `--drain-timeout`: a duration as the CI YAML writes them.
fn drain_timeout(text: &str) -> Result<std::time::Duration, String> {
    usher_core::config::parse_duration(text)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a duration (write 30m, 1h, or seconds)"))
}
