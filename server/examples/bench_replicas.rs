//! Scale under a fault: three `usher serve` replicas on one PostgreSQL database, 150
//! runners spread over them and 5,000 jobs. 4,000 jobs run to the end (throughput: jobs
//! claimed and finished per second); the last pipeline's 1,000 jobs are then cancelled
//! through replica A while 150 of them run, and replica B is killed with `kill -9` in
//! the middle of that cancel and started again. It checks what an operator needs to be
//! true — no cancel lost (every running job ends `canceled` by its runner's report, none
//! by the reaper's `cancel_timeout` or `runner_lost`), no job left unfinished, every
//! runner connected again to a live replica — and prints how long the cancel took to
//! reach every runner (P4 across replicas), and the throughput.
//!
//!   cargo build --release -p usher --bin usher --example bench_replicas
//!   scripts/with-postgres target/release/examples/bench_replicas
//!
//! (`make bench-replicas` does both.) The runners speak the runner protocol over real
//! websockets as `usher-runner` does — reconnecting to the next replica when theirs goes,
//! saying which jobs they hold, re-sending reports not acknowledged — but run nothing:
//! this measures the servers and the database, not bash.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use usher_core::protocol::{JobReport, PROTOCOL_VERSION, RunnerMessage, ServerMessage};
use usher_core::status::Status;

const REPLICAS: usize = 3;
const PIPELINES: usize = 5;
const TOKEN: &str = "bench-replicas-admin-token";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A size the environment may lower for a quick try (`BENCH_RUNNERS`, `BENCH_JOBS`).
fn size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn usher_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("USHER_BIN") {
        return bin.into();
    }
    // target/release/examples/bench_replicas → target/release/usher
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("usher")
}

/// What the runners share with the bench: where the replicas are, whether jobs are held
/// until cancelled, and what happened.
struct Shared {
    addrs: Vec<String>,
    token: String,
    hold: AtomicBool,
    stop: AtomicBool,
    claimed: AtomicUsize,
    finished: AtomicUsize,
    reconnects: AtomicUsize,
    connected: AtomicUsize,
    /// When each runner holding a job learnt of its cancel (a `cancel` frame, or a
    /// `job_status` of `canceling` after reconnecting).
    told: Mutex<Vec<Instant>>,
}

/// One runner's state across connections, as `usher-runner` keeps it.
#[derive(Default)]
struct RunnerState {
    runner_id: Option<i64>,
    held: Option<i64>,
    unacked: Option<(i64, JobReport)>,
}

fn report(exit_code: Option<i32>) -> JobReport {
    serde_json::from_value(json!({"exit_code": exit_code, "failure_reason": null, "duration_ms": 1, "after_script": null}))
        .expect("a report")
}

async fn send(ws: &mut Socket, msg: &RunnerMessage) -> Result<(), String> {
    ws.send(Message::Text(serde_json::to_string(msg).unwrap().into()))
        .await
        .map_err(|e| e.to_string())
}

async fn connect(shared: &Shared, replica: usize, name: &str, state: &RunnerState) -> Result<Socket, String> {
    let mut request = format!("ws://{}/api/runner/v1/connect", shared.addrs[replica])
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", shared.token).parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let held: Vec<i64> = state.held.iter().chain(state.unacked.iter().map(|(id, _)| id)).copied().collect();
    let hello = RunnerMessage::Hello {
        version: PROTOCOL_VERSION,
        name: name.to_string(),
        concurrency: 1,
        held_jobs: held,
        runner_id: state.runner_id,
        tags: vec![],
        executor: None,
    };
    send(&mut ws, &hello).await?;
    Ok(ws)
}

/// A runner: connects to its replica, takes jobs one at a time, finishes each at once
/// (or, while `hold` is set, when its cancel comes), and on a broken connection moves
/// to the next replica.
async fn runner(index: usize, shared: Arc<Shared>) {
    let name = format!("bench-{index}");
    let mut state = RunnerState::default();
    let mut replica = index % REPLICAS;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut ws = match connect(&shared, replica, &name, &state).await {
            Ok(ws) => ws,
            Err(_) => {
                replica = (replica + 1) % REPLICAS;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let _ = serve(&mut ws, &mut state, &shared).await;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        replica = (replica + 1) % REPLICAS;
        // A little apart, as the real runner's jitter spreads them.
        tokio::time::sleep(Duration::from_millis(50 + (index as u64 * 7) % 200)).await;
    }
}

async fn finish(ws: &mut Socket, state: &mut RunnerState, job_id: i64, exit_code: Option<i32>) -> Result<(), String> {
    state.held = None;
    let report = report(exit_code);
    state.unacked = Some((job_id, report.clone()));
    send(ws, &RunnerMessage::Finished { job_id, report }).await?;
    send(ws, &RunnerMessage::RequestJob).await
}

async fn serve(ws: &mut Socket, state: &mut RunnerState, shared: &Shared) -> Result<(), String> {
    let mut asked = false;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    let mut stop_check = tokio::time::interval(Duration::from_millis(200));
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = heartbeat.tick() => {
                send(ws, &RunnerMessage::Heartbeat).await?;
                continue;
            }
            _ = stop_check.tick() => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => return Err("the connection broke".into()),
        };
        let Ok(message) = serde_json::from_str::<ServerMessage>(&text) else {
            continue;
        };
        match message {
            ServerMessage::Welcome { runner_id, .. } => {
                state.runner_id = Some(runner_id);
                // Reports the broken connection may have swallowed go again.
                if let Some((job_id, report)) = state.unacked.clone() {
                    send(ws, &RunnerMessage::Finished { job_id, report }).await?;
                }
                if state.held.is_none() && !asked {
                    asked = true;
                    send(ws, &RunnerMessage::RequestJob).await?;
                }
            }
            ServerMessage::Job { job } => {
                shared.claimed.fetch_add(1, Ordering::Relaxed);
                state.held = Some(job.job_id);
                if !shared.hold.load(Ordering::Relaxed) {
                    finish(ws, state, job.job_id, Some(0)).await?;
                }
            }
            ServerMessage::Cancel { job_id, .. } if state.held == Some(job_id) => {
                shared.told.lock().unwrap().push(Instant::now());
                finish(ws, state, job_id, None).await?;
            }
            ServerMessage::JobStatus { job_id, status } if state.held == Some(job_id) => {
                if status == Status::Canceling {
                    shared.told.lock().unwrap().push(Instant::now());
                    finish(ws, state, job_id, None).await?;
                } else if status.is_terminal() {
                    state.held = None;
                    send(ws, &RunnerMessage::RequestJob).await?;
                }
            }
            ServerMessage::JobStatus { job_id, status }
                if status.is_terminal() && state.unacked.as_ref().is_some_and(|(id, _)| *id == job_id) =>
            {
                state.unacked = None;
            }
            ServerMessage::FinishedAck { job_id, .. } if state.unacked.as_ref().is_some_and(|(id, _)| *id == job_id) => {
                state.unacked = None;
                shared.finished.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// A replica: `usher serve` on `port` with its own data dir, on the shared database.
fn start_replica(url: &str, port: u16, data: &std::path::Path) -> usher_testkit::process::OwnedChild {
    let env = [("DATABASE_URL", url), ("USHER_ADMIN_TOKEN", TOKEN), ("RUST_LOG", "warn")];
    let (child, _) = usher_testkit::spawn_usher(usher_binary(), data, &format!("127.0.0.1:{port}"), 0, &env);
    child
}

async fn api(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut request = http.request(method, &url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// The jobs of a pipeline (each job's newest attempt).
async fn jobs_of(http: &reqwest::Client, base: &str, pipeline: i64) -> Vec<Value> {
    let p = api(http, reqwest::Method::GET, format!("{base}/api/v1/pipelines/{pipeline}"), None).await;
    p["jobs"].as_array().cloned().unwrap_or_default()
}

/// Waits until `done` holds, polling; false after `within`.
async fn wait_until(within: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    let mut said = Instant::now();
    while Instant::now() < deadline {
        if std::env::var_os("BENCH_VERBOSE").is_some() && said.elapsed() > Duration::from_secs(5) {
            said = Instant::now();
            eprintln!("waiting… {}s left", (deadline - Instant::now()).as_secs());
        }
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::main]
async fn main() {
    let (runners_n, jobs_per_pipeline) = (size("BENCH_RUNNERS", 150), size("BENCH_JOBS", 1000));
    let url = usher_testkit::db::fresh_postgres().await;
    let dirs: Vec<tempfile::TempDir> = (0..REPLICAS).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..REPLICAS).map(|_| usher_testkit::free_port()).collect();
    // One at a time: the first one migrates the database.
    let mut replicas: Vec<_> = (0..REPLICAS).map(|i| Some(start_replica(&url, ports[i], dirs[i].path()))).collect();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let token = std::process::Command::new(usher_binary())
        .args(["runner-token", "create"])
        .env("DATABASE_URL", &url)
        .env("USHER_DATA_DIR", dirs[0].path())
        .output()
        .expect("usher runner-token create");
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let shared = Arc::new(Shared {
        addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        token: String::from_utf8(token.stdout).unwrap().trim().to_string(),
        hold: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        claimed: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        reconnects: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        told: Mutex::new(Vec::new()),
    });
    let runners: Vec<_> = (0..runners_n).map(|i| tokio::spawn(runner(i, shared.clone()))).collect();
    assert!(
        wait_until(Duration::from_secs(60), async || shared.connected.load(Ordering::Relaxed)
            == runners_n)
        .await,
        "every runner connects"
    );

    let http = reqwest::Client::new();
    let config: String = (0..jobs_per_pipeline).map(|i| format!("job{i}:\n  script: [x]\n")).collect();
    let project = api(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/projects", bases[0]),
        Some(json!({"name": "scale", "ci_config": config})),
    )
    .await;
    // Each on a ref of its own: a newer pipeline on the same ref would supersede it.
    let create = async |replica: usize, git_ref: String| -> i64 {
        let p = api(
            &http,
            reqwest::Method::POST,
            format!("{}/api/v1/projects/{}/pipelines", bases[replica], project["id"]),
            Some(json!({"ref": git_ref})),
        )
        .await;
        p["id"].as_i64().unwrap()
    };

    // Throughput: 4,000 jobs, made through all three replicas, run by 150 runners.
    let started = Instant::now();
    let mut pipelines = Vec::new();
    for i in 0..PIPELINES - 1 {
        pipelines.push(create(i % REPLICAS, format!("branch-{i}")).await);
    }
    let total = (PIPELINES - 1) * jobs_per_pipeline;
    assert!(
        wait_until(Duration::from_secs(600), async || {
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!(
                    "claimed {} finished {} connected {}",
                    shared.claimed.load(Ordering::Relaxed),
                    shared.finished.load(Ordering::Relaxed),
                    shared.connected.load(Ordering::Relaxed)
                );
            }
            shared.finished.load(Ordering::Relaxed) >= total
        })
        .await,
        "{total} jobs finish ({} did)",
        shared.finished.load(Ordering::Relaxed)
    );
    let seconds = started.elapsed().as_secs_f64();
    let per_s = total as f64 / seconds;

    // The cancel: 150 of the last pipeline's 1,000 jobs running, cancelled through A
    // while B is killed.
    shared.hold.store(true, Ordering::Relaxed);
    let last = create(0, "last".into()).await;
    assert!(
        wait_until(Duration::from_secs(120), async || shared.claimed.load(Ordering::Relaxed)
            >= total + runners_n)
        .await,
        "every runner takes a job of the last pipeline"
    );
    let cancel_url = format!("{}/api/v1/pipelines/{last}/cancel", bases[0]);
    let t0 = Instant::now();
    let cancel = tokio::spawn({
        let http = http.clone();
        async move { api(&http, reqwest::Method::POST, cancel_url, None).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut b = replicas[1].take().unwrap();
    b.kill().expect("kill -9 replica B");
    let _ = b.wait();
    let killed_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let cancelled = cancel.await.unwrap();
    let api_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(cancelled["status"], "canceling", "{}", cancelled["status"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[1] = Some(start_replica(&url, ports[1], dirs[1].path()));

    let all_told = wait_until(Duration::from_secs(120), async || shared.told.lock().unwrap().len() >= runners_n).await;
    let mut told_ms: Vec<f64> = shared
        .told
        .lock()
        .unwrap()
        .iter()
        .map(|at| (*at - t0).as_secs_f64() * 1000.0)
        .collect();
    told_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(
        all_told,
        "every runner holding a job is told of the cancel ({} of {runners_n})",
        told_ms.len()
    );

    // Every job of every pipeline ends; the running ones canceled by their runners.
    let settled = wait_until(Duration::from_secs(120), async || {
        jobs_of(&http, &bases[2], last)
            .await
            .iter()
            .all(|j| Status::parse(j["status"].as_str().unwrap_or("")).is_some_and(|s| s.is_terminal()))
    })
    .await;
    let jobs = jobs_of(&http, &bases[2], last).await;
    let unfinished: Vec<&Value> = jobs.iter().filter(|j| j["finished_at"].is_null()).collect();
    assert!(settled && unfinished.is_empty(), "{} jobs never finished", unfinished.len());
    let reasons: HashSet<String> = jobs
        .iter()
        .filter_map(|j| j["cancel"]["reason"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        reasons,
        HashSet::from(["pipeline".to_string()]),
        "every cancel by the pipeline's, none by the reaper (cancel_timeout, runner_lost)"
    );
    let ran = jobs.iter().filter(|j| !j["started_at"].is_null()).count();
    assert_eq!(ran, runners_n, "the running ones");
    for p in &pipelines {
        let ok = jobs_of(&http, &bases[1], *p).await.iter().all(|j| j["status"] == "success");
        assert!(ok, "pipeline {p} succeeded");
    }
    assert!(
        wait_until(Duration::from_secs(60), async || shared.connected.load(Ordering::Relaxed)
            == runners_n)
        .await,
        "every runner is connected again ({} of {runners_n})",
        shared.connected.load(Ordering::Relaxed)
    );
    let final_status = api(&http, reqwest::Method::GET, format!("{}/api/v1/pipelines/{last}", bases[1]), None).await;
    assert_eq!(final_status["status"], "canceled");

    println!("three replicas on one PostgreSQL, {runners_n} protocol-level runners:");
    println!("  {total} jobs claimed and finished in {seconds:.1} s: {per_s:.0} jobs/s");
    println!(
        "  cancel of a pipeline of {jobs_per_pipeline} jobs with {runners_n} running, through A: API {api_ms:.0} ms; B killed (-9) after {killed_ms:.0} ms"
    );
    println!(
        "  runners told: first {:.0} ms, median {:.0} ms, p99 {:.0} ms, last {:.0} ms; {} reconnections",
        told_ms[0],
        usher_testkit::bench::quantile(&told_ms, 0.5),
        usher_testkit::bench::quantile(&told_ms, 0.99),
        told_ms[told_ms.len() - 1],
        shared.reconnects.load(Ordering::Relaxed)
    );
    println!("  every job ended; every running job canceled by its runner's report; every runner connected again");
    usher_testkit::bench::record(
        "S1",
        "postgres",
        json!({"replicas": REPLICAS, "runners": runners_n, "jobs": total + jobs_per_pipeline, "jobs_per_s": per_s,
               "cancel_api_ms": api_ms, "last_told_ms": told_ms[told_ms.len() - 1],
               "reconnects": shared.reconnects.load(Ordering::Relaxed)}),
    );
    shared.stop.store(true, Ordering::Relaxed);
    for r in runners {
        let _ = r.await;
    }
    drop(replicas);
}
