//! The `usher` client commands (`usher login`, `usher pipeline …`, `usher job …`): the
//! JSON API of any Usher server, over HTTP or HTTPS with an API token, from any machine.
//! Where the server and token come from: `--url`/`--token`, else `USHER_URL`/
//! `USHER_TOKEN`, else the file `usher login` wrote (`$XDG_CONFIG_HOME/usher/credentials`
//! or `~/.config/usher/credentials`, mode 0600). Tables for people, `--json` for
//! scripts (the API's own JSON). The token is never printed.
//!
//! Exit codes: 0 done (for `job log -f`: the job succeeded); 1 the server refused (its
//! message is printed) or the followed job failed; 2 a usage error or no server to
//! reach; 3 the followed job was canceled or skipped.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use usher_app::components::{cancel_words, short_time};
use usher_core::api::{Job, Pipeline};
use usher_core::status::Status;

/// Where to reach the server, as given on the command line (or in the environment).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientArgs {
    /// The server's URL, e.g. https://ci.example.com (default: from `usher login`).
    #[arg(long, env = "USHER_URL", global = true)]
    pub url: Option<String>,
    /// An API token (default: from `usher login`). Prefer the environment or the login
    /// file: a token on the command line is visible to other users of the machine.
    #[arg(long, env = "USHER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM certificates of a private CA (or the server's own self-signed certificate).
    #[arg(long, env = "USHER_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a client command failed, and its exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error (exit 1).
    Refused(String),
    /// Wrong use, or no server to reach (exit 2).
    Usage(String),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused(_) => 1,
            ClientError::Usage(_) => 2,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Refused(m) | ClientError::Usage(m) => f.write_str(m),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// What `usher login` keeps.
#[derive(Serialize, Deserialize)]
struct Credentials {
    url: String,
    token: String,
}

/// The file `usher login` writes.
pub fn credentials_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("usher").join("credentials"))
}

/// A server and a token to call it with.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub json: bool,
}

impl Client {
    /// From the arguments, the environment, or the login file, in that order.
    pub fn new(args: &ClientArgs) -> Result<Client> {
        let saved = || -> Option<Credentials> {
            let text = std::fs::read_to_string(credentials_path()?).ok()?;
            serde_json::from_str(&text).ok()
        };
        let (url, token) = match (&args.url, &args.token) {
            (Some(url), Some(token)) => (url.clone(), token.clone()),
            (url, token) => {
                let saved = saved();
                let url = url.clone().or_else(|| saved.as_ref().map(|s| s.url.clone()));
                let token = token.clone().or_else(|| saved.as_ref().map(|s| s.token.clone()));
                match (url, token) {
                    (Some(url), Some(token)) => (url, token),
                    _ => {
                        return Err(ClientError::Usage(
                            "no server: run `usher login URL`, or give --url and --token (USHER_URL, USHER_TOKEN)".into(),
                        ));
                    }
                }
            }
        };
        Client::connect(&url, &token, args.ca_file.as_deref(), args.json)
    }

    fn connect(url: &str, token: &str, ca_file: Option<&Path>, json: bool) -> Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!("{url} is not an http:// or https:// URL")));
        }
        let tls = if base.starts_with("https://") {
            Some(usher_runner::tls::client_config(ca_file).map_err(ClientError::Usage)?)
        } else {
            None
        };
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(15));
        let http = match &tls {
            Some(config) => builder.use_preconfigured_tls((**config).clone()),
            None => builder,
        }
        .build()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        Ok(Client {
            base,
            token: token.to_string(),
            http,
            tls,
            json,
        })
    }

    /// One API call; the answer's JSON, or the server's refusal in its own words.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            let why = usher_runner::tls::with_causes(&e);
            ClientError::Usage(usher_runner::tls::explain(&format!("cannot reach {}: {why}", self.base)))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ClientError::Usage(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_str(&text).or(Ok(Value::String(text)));
        }
        let message = serde_json::from_str::<usher_core::api::ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        Err(ClientError::Refused(format!("{status}: {message}")))
    }

    /// A job's log from byte `offset` on, and whether it is complete.
    async fn log_since(&self, job: i64, offset: u64) -> Result<(Vec<u8>, bool)> {
        let response = self
            .http
            .get(format!("{}/api/v1/jobs/{job}/log?offset={offset}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Usage(format!("cannot reach {}: {}", self.base, usher_runner::tls::with_causes(&e))))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(ClientError::Refused(format!(
                "{status}: {}",
                response.text().await.unwrap_or_default()
            )));
        }
        let complete = response.headers().get("x-log-complete").is_some_and(|v| v == "true");
        let bytes = response.bytes().await.map_err(|e| ClientError::Usage(e.to_string()))?;
        Ok((bytes.to_vec(), complete))
    }
}

/// `usher login URL`: checks the token against the server, then keeps both (0600).
pub async fn login(url: &str, token: &str, ca_file: Option<&Path>) -> Result<PathBuf> {
    let client = Client::connect(url, token, ca_file, false)?;
    client.call(reqwest::Method::GET, "/api/v1/projects", None).await?;
    let path = credentials_path().ok_or_else(|| ClientError::Usage("no HOME or XDG_CONFIG_HOME to keep the login in".into()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |e: std::io::Error| ClientError::Usage(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let saved = serde_json::to_string(&Credentials {
        url: client.base.clone(),
        token: token.to_string(),
    })
    .map_err(|e| ClientError::Usage(e.to_string()))?;
    // Written beside and renamed over, so the file is never readable by others.
    let fresh = dir.join(".credentials.new");
    let _ = std::fs::remove_file(&fresh);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .map_err(io)?;
    file.write_all(saved.as_bytes()).map_err(io)?;
    std::fs::rename(&fresh, &path).map_err(io)?;
    Ok(path)
}

/// What to do with a pipeline or a job.
pub enum Act {
    Cancel { message: Option<String> },
    Abort { message: Option<String> },
    Retry,
    Play,
}

impl Client {
    pub async fn pipeline_list(&self, project: i64, git_ref: Option<&str>, status: Option<&str>, per_page: u32) -> Result<()> {
        let mut query = format!("per_page={per_page}");
        if let Some(r) = git_ref {
            query.push_str(&format!("&ref={}", encode(r)));
        }
        if let Some(s) = status {
            query.push_str(&format!("&status={}", encode(s)));
        }
        let list = self
            .call(reqwest::Method::GET, &format!("/api/v1/projects/{project}/pipelines?{query}"), None)
            .await?;
        if self.json {
            return print_json(&list);
        }
        let pipelines: Vec<Pipeline> = decode(list)?;
        let rows: Vec<Vec<String>> = pipelines
            .iter()
            .map(|p| {
                vec![
                    p.id.to_string(),
                    p.status.to_string(),
                    p.git_ref.clone(),
                    p.sha.as_deref().map(|s| s.chars().take(8).collect()).unwrap_or_default(),
                    short_time(&p.created_at),
                    p.triggered_by.clone(),
                ]
            })
            .collect();
        print_table(&["ID", "STATUS", "REF", "COMMIT", "CREATED", "BY"], &rows);
        Ok(())
    }

    pub async fn pipeline_show(&self, id: i64) -> Result<()> {
        let answer = self.call(reqwest::Method::GET, &format!("/api/v1/pipelines/{id}"), None).await?;
        self.show_pipeline(answer)
    }

    pub async fn pipeline_run(&self, project: i64, git_ref: &str, sha: Option<&str>) -> Result<()> {
        let mut body = json!({ "ref": git_ref });
        if let Some(sha) = sha {
            body["sha"] = json!(sha);
        }
        let answer = self
            .call(reqwest::Method::POST, &format!("/api/v1/projects/{project}/pipelines"), Some(body))
            .await?;
        self.show_pipeline(answer)
    }

    pub async fn pipeline_act(&self, id: i64, act: Act) -> Result<()> {
        let (verb, body) = verb_and_body(&act)?;
        let answer = self
            .call(reqwest::Method::POST, &format!("/api/v1/pipelines/{id}/{verb}"), body)
            .await?;
        self.show_pipeline(answer)
    }

    fn show_pipeline(&self, answer: Value) -> Result<()> {
        if self.json {
            return print_json(&answer);
        }
        let p: Pipeline = decode(answer)?;
        println!("pipeline #{} on {}: {}", p.id, p.git_ref, p.status);
        if let Some(c) = &p.cancel {
            println!("{}", cancel_words(c));
        }
        let rows: Vec<Vec<String>> = p
            .jobs
            .unwrap_or_default()
            .iter()
            .filter(|j| !j.retried)
            .map(|j| {
                vec![
                    j.id.to_string(),
                    j.stage.clone(),
                    j.name.clone(),
                    j.status.to_string(),
                    j.waiting_for.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            print_table(&["ID", "STAGE", "JOB", "STATUS", "WAITING FOR"], &rows);
        }
        Ok(())
    }

    pub async fn job_show(&self, id: i64) -> Result<()> {
        let answer = self.call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None).await?;
        self.show_job(answer)
    }

    pub async fn job_act(&self, id: i64, act: Act) -> Result<()> {
        let (verb, body) = verb_and_body(&act)?;
        let answer = self.call(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/{verb}"), body).await?;
        self.show_job(answer)
    }

    fn show_job(&self, answer: Value) -> Result<()> {
        if self.json {
            return print_json(&answer);
        }
        let j: Job = decode(answer)?;
        let mut rows = vec![
            (
                "job",
                format!("#{} {} (stage {}, pipeline #{})", j.id, j.name, j.stage, j.pipeline_id),
            ),
            ("status", j.status.to_string()),
        ];
        if let Some(w) = &j.waiting_for {
            rows.push(("waiting for", w.clone()));
        }
        if let Some(r) = &j.failure_reason {
            rows.push(("failure", r.to_string()));
        }
        if let Some(c) = j.exit_code {
            rows.push(("exit code", c.to_string()));
        }
        if let Some(c) = &j.cancel {
            rows.push(("cancel", cancel_words(c)));
        }
        if let Some(t) = &j.started_at {
            rows.push(("started", short_time(t)));
        }
        if let Some(t) = &j.finished_at {
            rows.push(("finished", short_time(t)));
        }
        for (key, value) in rows {
            println!("{key:<12} {value}");
        }
        Ok(())
    }

    /// Prints a job's log; with `follow`, keeps printing as it grows (told by the event
    /// websocket) until it is complete, and answers the exit code of the job's outcome.
    pub async fn job_log(&self, id: i64, follow: bool) -> Result<i32> {
        let mut offset = 0u64;
        let mut out = std::io::stdout();
        let mut print = |bytes: &[u8]| {
            let _ = out.write_all(bytes);
            let _ = out.flush();
        };
        let (bytes, complete) = self.log_since(id, offset).await?;
        offset += bytes.len() as u64;
        print(&bytes);
        if !follow {
            return Ok(0);
        }
        if !complete {
            loop {
                // Until the socket says something changed, or a while passed (a missed
                // frame costs at most that long): then read what is new.
                let mut socket = self.events(id).await.ok();
                let mut done = false;
                while !done {
                    match socket.as_mut() {
                        Some(ws) => match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                            Ok(Some(Ok(_))) | Err(_) => {}
                            Ok(_) => socket = None,
                        },
                        None => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                    let (bytes, complete) = self.log_since(id, offset).await?;
                    offset += bytes.len() as u64;
                    print(&bytes);
                    done = complete;
                    if socket.is_none() && !done {
                        break;
                    }
                }
                if done {
                    break;
                }
            }
        }
        let job: Job = decode(self.call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None).await?)?;
        Ok(match job.status {
            Status::Success => 0,
            Status::Failed => 1,
            _ => 3,
        })
    }

    /// The event websocket of job `id`.
    async fn events(&self, id: i64) -> std::result::Result<EventSocket, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws_base = self.base.replacen("http", "ws", 1);
        let mut request = format!("{ws_base}/api/v1/events?job_id={id}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| "a token that is no header value".to_string())?;
        request.headers_mut().insert("authorization", bearer);
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }
}

type EventSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The API path's verb and body of an action on a pipeline or job.
fn verb_and_body(act: &Act) -> Result<(&'static str, Option<Value>)> {
    Ok(match act {
        Act::Cancel { message } => ("cancel", message.as_ref().map(|m| json!({ "message": m }))),
        Act::Abort { message } => ("abort", message.as_ref().map(|m| json!({ "message": m }))),
        Act::Retry => ("retry", None),
        Act::Play => ("play", None),
    })
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| ClientError::Refused(format!("an answer this client does not understand: {e}")))
}

fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    Ok(())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Columns padded to their widest cell, two spaces apart.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A token from standard input (its first line), not echoed when it is a terminal.
pub fn read_token() -> Result<String> {
    let stdin = std::io::stdin();
    let terminal = unsafe { libc::isatty(0) } == 1;
    let mut saved: Option<libc::termios> = None;
    if terminal {
        eprint!("API token: ");
        // SAFETY: plain termios calls on standard input, restored below.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                saved = Some(t);
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores what tcgetattr gave.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    read.map_err(|e| ClientError::Usage(format!("cannot read the token: {e}")))?;
    let token = line.trim().to_string();
    if token.is_empty() {
        return Err(ClientError::Usage("no token on standard input".into()));
    }
    Ok(token)
}
