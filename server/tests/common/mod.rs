//! Test harness: a real server (SQLite in a temp dir, real local runners running bash)
//! on a free loopback port, an API client, and process checks read from /proc.

#![allow(dead_code)]

pub mod docker;
pub mod git;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use usher_server::{ServeOptions, Server, start};

pub const ADMIN_TOKEN: &str = "usher_test_admin_token";

pub type EventSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Statuses of `job_id` seen in job frames, until it reaches `until`.
pub async fn job_statuses_until(events: &mut EventSocket, job_id: i64, until: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == until) {
        let frame = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert!(["job", "pipeline", "log"].contains(&v["type"].as_str().unwrap()), "{v}");
        if v["type"] == "job" && v["job"]["id"] == job_id {
            seen.push(v["job"]["status"].as_str().unwrap().to_string());
        }
    }
    seen
}

/// The `log` frames a socket watching `job_id` receives until the job has `finished` and
/// a second passes without a frame; checks each frame's own arithmetic on the way.
pub async fn log_frames_until_done(events: &mut EventSocket, job_id: i64, finished: &str) -> Vec<Value> {
    use futures::StreamExt;
    let mut pieces = Vec::new();
    let mut done = false;
    loop {
        let wait = if done { Duration::from_secs(1) } else { Duration::from_secs(30) };
        let Ok(frame) = tokio::time::timeout(wait, events.next()).await else {
            assert!(done, "job {job_id} never reached {finished}");
            return pieces;
        };
        let v: Value = serde_json::from_str(frame.unwrap().unwrap().to_text().unwrap()).unwrap();
        match v["type"].as_str().unwrap() {
            "log" => {
                assert_eq!(v["job_id"], job_id, "{v}");
                if let Some(text) = v["text"].as_str() {
                    assert_eq!(
                        v["offset"].as_u64().unwrap() + text.len() as u64,
                        v["length"].as_u64().unwrap(),
                        "{v}"
                    );
                }
                pieces.push(v);
            }
            "job" if v["job"]["status"] == finished => done = true,
            _ => {}
        }
    }
}

/// Checks that `pieces` (log frames in arrival order) tile the end of `log` without a
/// gap from the first one on, and returns how many carried their text.
pub fn assert_pieces_tile(pieces: &[Value], log: &str) -> usize {
    assert!(!pieces.is_empty(), "no log frames at all");
    let mut at = pieces[0]["offset"].as_u64().unwrap();
    let mut with_text = 0;
    for p in pieces {
        assert_eq!(p["offset"].as_u64().unwrap(), at, "a gap before {p}");
        let end = p["length"].as_u64().unwrap();
        if let Some(text) = p["text"].as_str() {
            assert_eq!(text, &log[at as usize..end as usize]);
            with_text += 1;
        }
        at = end;
    }
    assert_eq!(at, log.len() as u64, "the frames reach the end of the log");
    with_text
}

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// Every job of this test carries USHER_TEST_RUN=<this> in its environment.
    pub run_marker: String,
}

impl TestServer {
    pub async fn start(local_runners: u32) -> TestServer {
        TestServer::start_on(None, local_runners).await
    }

    /// A server on `database_url` (default: SQLite in its own temp dir).
    pub async fn start_on(database_url: Option<String>, local_runners: u32) -> TestServer {
        TestServer::start_with(database_url, local_runners, Default::default()).await
    }

    pub async fn start_with(database_url: Option<String>, local_runners: u32, settings: usher_engine::Settings) -> TestServer {
        TestServer::start_opts(|defaults| ServeOptions {
            database_url: database_url.unwrap_or(defaults.database_url.clone()),
            settings,
            local_runners,
            ..defaults
        })
        .await
    }

    /// A server whose local runners use the docker executor on the engine `docker_host`.
    pub async fn start_docker(docker_host: &str, local_runners: u32) -> TestServer {
        TestServer::start_opts(|defaults| ServeOptions {
            local_runners,
            executor: usher_runner::docker::ExecutorKind::Docker,
            docker_host: Some(docker_host.to_string()),
            ..defaults
        })
        .await
    }

    /// A server with the options `opts` makes of the defaults (SQLite in a temp dir).
    pub async fn start_opts(opts: impl FnOnce(ServeOptions) -> ServeOptions) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let defaults = ServeOptions::new(data_dir.path());
        let server = start(ServeOptions {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..opts(defaults)
        })
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr);
        let run_marker = format!("{}-{}", std::process::id(), rand_suffix());
        TestServer {
            server: Some(server),
            base,
            data_dir,
            client: reqwest::Client::new(),
            run_marker,
        }
    }

    /// The harness (client, marker, cleanup) for a server started elsewhere, such as a
    /// real `usher` process; set `base` once it listens.
    pub fn detached() -> TestServer {
        TestServer {
            server: None,
            base: String::new(),
            data_dir: tempfile::tempdir().unwrap(),
            client: reqwest::Client::new(),
            run_marker: format!("{}-{}", std::process::id(), rand_suffix()),
        }
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.data_dir.path().join("builds").join("local-1")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(ADMIN_TOKEN, method, path, body).await
    }

    pub async fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            other => panic!("method {other}"),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a project and a pipeline; the config gets USHER_TEST_RUN added.
    pub async fn pipeline(&self, ci_config: &str) -> Value {
        let config = format!("variables:\n  USHER_TEST_RUN: \"{}\"\n{ci_config}", self.run_marker);
        let name = format!("p-{}", rand_suffix());
        let (status, project) = self
            .call("POST", "/api/v1/projects", Some(json!({"name": name, "ci_config": config})))
            .await;
        assert_eq!(status, 201, "{project}");
        let (status, pipeline) = self
            .call(
                "POST",
                &format!("/api/v1/projects/{}/pipelines", project["id"]),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(status, 201, "{pipeline}");
        pipeline
    }

    /// The event websocket with `query`, authenticated as admin.
    pub async fn events(&self, query: &str) -> EventSocket {
        let url = format!("ws://{}/api/v1/events?{query}", self.base.trim_start_matches("http://"));
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("event websocket").0
    }

    pub fn job_id(pipeline: &Value, name: &str) -> i64 {
        pipeline["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .expect("job")["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn job(&self, id: i64) -> Value {
        let (status, job) = self.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, 200, "{job}");
        job
    }

    pub async fn log(&self, id: i64) -> (String, bool) {
        let resp = self
            .client
            .get(format!("{}/api/v1/jobs/{id}/log", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let complete = resp.headers().get("x-log-complete").map(|v| v == "true").unwrap_or(false);
        (resp.text().await.unwrap(), complete)
    }

    pub async fn wait_for_log(&self, id: i64, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (log, _) = self.log(id).await;
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < until, "job {id}: `{needle}` never appeared in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The job log as the owner of `token` sees it, once it contains `needle`.
    pub async fn wait_for_log_as(&self, token: &str, job: i64, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = self
                .client
                .get(format!("{}/api/v1/jobs/{job}/log", self.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let log = resp.text().await.unwrap();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for_status(&self, id: i64, status: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(Instant::now() < until, "job {id} never became {status}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    /// Whatever happened in the test, no process of its jobs outlives it.
    fn drop(&mut self) {
        for pid in pids_with_env(&format!("USHER_TEST_RUN={}", self.run_marker)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A temporary directory jobs may write into (they run as an unprivileged user, and a
/// test's own temporary directories are private to root).
pub fn job_writable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Live (not zombie) processes whose environment contains `var` (`NAME=value`).
pub fn pids_with_env(var: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == var.as_bytes()) && is_alive(pid) {
            out.push(pid);
        }
    }
    out
}

pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The processes of one job (every one carries CI_JOB_ID in its environment).
pub fn job_processes(job_id: i64, run_marker: &str) -> Vec<i32> {
    let marked = pids_with_env(&format!("USHER_TEST_RUN={run_marker}"));
    let of_job = pids_with_env(&format!("CI_JOB_ID={job_id}"));
    marked.into_iter().filter(|p| of_job.contains(p)).collect()
}

/// Whether `pid` died within `within`. A killed process passes through a moment where it
/// has let go of its memory (its environment no longer reads, so `job_processes` no
/// longer lists it) but is not yet a zombie; checking once right after that races.
pub async fn dies_within(pid: i32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while is_alive(pid) {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub async fn wait_until_gone(job_id: i64, run_marker: &str) -> Vec<i32> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = job_processes(job_id, run_marker);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `key=value` from the job output line that contains `key=` (not the echoed command,
/// which starts with `$ ` in the runner's colour).
pub fn log_value(log: &str, key: &str) -> String {
    let needle = format!("{key}=");
    let line = log
        .lines()
        .filter(|l| !l.starts_with("\u{1b}[32;1m$ "))
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` in log:\n{log}"));
    line.split(&needle)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches("\u{1b}[0m")
        .to_string()
}

pub fn path_exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// A fresh PostgreSQL database on TEST_DATABASE_URL's server, or None (with a note)
/// when it is not set; `USHER_REQUIRE_POSTGRES` makes that a failure.
pub async fn fresh_postgres() -> Option<String> {
    use sqlx::Connection;
    let base = match std::env::var("TEST_DATABASE_URL") {
        Ok(b) if !b.is_empty() => b,
        _ if std::env::var("USHER_REQUIRE_POSTGRES").is_ok() => panic!("USHER_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not"),
        _ => {
            eprintln!("note: TEST_DATABASE_URL is not set; skipping the PostgreSQL-only test (make test runs it)");
            return None;
        }
    };
    sqlx::any::install_default_drivers();
    let name = format!("r_{}_{}", std::process::id(), rand_suffix());
    let mut conn = sqlx::AnyConnection::connect(&base).await.expect("connect to TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

/// A process the test started (a real `usher` or `usher-runner`), killed and reaped when
/// dropped, so a failing test leaves nothing running.
pub struct OwnedChild(pub std::process::Child);

impl std::ops::Deref for OwnedChild {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for OwnedChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs a one-shot `usher` command (token create, revoke…) against `data_dir` with
/// `stdin` as its input; fails the test instead of hanging if it does not exit within
/// 60 s (and kills it).
pub fn run_usher_cli(data_dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = OwnedChild(
        Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(args)
            .env("USHER_DATA_DIR", data_dir)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("usher starts"),
    );
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "`usher {}` did not exit within 60 s", args.join(" "));
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Signs in through the login form as a browser would; returns the `name=value` of the
/// session cookie, which must be HttpOnly and SameSite=Lax.
pub async fn sign_in(t: &TestServer, name: &str, password: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/auth/login", t.base))
        .header("origin", &t.base)
        .form(&[("name", name), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

/// A real `usher serve` process on `addr` over `data_dir` (SQLite) with the test admin
/// token and `env` on top; returns it once it listens, with its base URL.
pub fn spawn_usher(data_dir: &Path, addr: &str, local_runners: u32, env: &[(&str, &str)]) -> (OwnedChild, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--addr", addr, "--local-runners", &local_runners.to_string()])
        .env("USHER_DATA_DIR", data_dir)
        .env("USHER_ADMIN_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("usher starts");
    let mut child = OwnedChild(child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("usher printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("Usher is serving ") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `usher-runner` binary next to the test binaries (built by `make test` first).
pub fn runner_binary() -> PathBuf {
    // target/debug/deps/<test> → target/debug/usher-runner
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("usher-runner");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p usher-runner` (make test does)",
        bin.display()
    );
    bin
}

/// `usher serve --local-runners 1`, as an operator starts it, with its output going to
/// `<data>/usher.log` (mode 0600) as a service manager's log would; its base URL.
pub fn serve_with_log_file(data_dir: &Path) -> (OwnedChild, String) {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data_dir.join("usher.log"))
        .unwrap();
    let port = free_port();
    let child = OwnedChild(
        std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--local-runners", "1"])
            .env("USHER_DATA_DIR", data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("USHER_ADMIN_TOKEN")
            .env_remove("USHER_JOB_USER")
            .env_remove("USHER_TRUST_JOBS")
            .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .expect("usher starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(data_dir.join("usher.log"))
        .unwrap_or_default()
        .contains("Usher is serving")
    {
        assert!(Instant::now() < deadline, "usher did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}
