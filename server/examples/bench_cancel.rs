//! Benchmark: cancelling a pipeline of 1,000 jobs with 500 of them running — how long
//! the API takes to answer and how long until every runner holding a job has been told —
//! and runner log appends per second. SQLite always; PostgreSQL too when
//! TEST_DATABASE_URL is set (scripts/with-postgres does that).
//!
//!   cargo run --release -p usher --example bench_cancel
//!   scripts/with-postgres cargo run --release -p usher --example bench_cancel
//!
//! The 500 "runners" here speak runner protocol v1 over real websockets but run
//! nothing: this measures the server, not bash.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use usher_core::protocol::{PROTOCOL_VERSION, RunnerMessage, ServerMessage};

const JOBS: usize = 1000;
const RUNNING: usize = 500;
const TOKEN: &str = "bench-admin-token";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_runner(addr: &str, token: &str, name: String) -> Socket {
    let mut request = format!("ws://{addr}/api/runner/v1/connect").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("runner connects");
    let hello = RunnerMessage::Hello {
        version: PROTOCOL_VERSION,
        name,
        concurrency: 1,
        held_jobs: vec![],
        runner_id: None,
        tags: vec![],
        executor: None,
    };
    ws.send(Message::Text(serde_json::to_string(&hello).unwrap().into())).await.unwrap();
    ws
}

async fn next_message(ws: &mut Socket) -> ServerMessage {
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

async fn send(ws: &mut Socket, msg: &RunnerMessage) {
    ws.send(Message::Text(serde_json::to_string(msg).unwrap().into())).await.unwrap();
}

/// Long for a reason: a benchmark reads best as one script from setup to printed numbers.
async fn bench(label: &str, database_url: String) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        database_url,
        admin_token: Some(TOKEN.into()),
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let addr = server.addr.to_string();
    let http = reqwest::Client::new();
    let api = |path: &str| format!("http://{addr}{path}");

    let config: String = (0..JOBS).map(|i| format!("job{i}:\n  script: [x]\n")).collect();
    let project: serde_json::Value = http
        .post(api("/api/v1/projects"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "bench", "ci_config": config}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = Instant::now();
    let pipeline: serde_json::Value = http
        .post(api(&format!("/api/v1/projects/{}/pipelines", project["id"])))
        .bearer_auth(TOKEN)
        .json(&json!({"ref": "main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;

    // 500 runners each take one job, then wait for its cancel.
    let runner_token = server.engine.create_runner_token().await.unwrap();
    let (assigned_tx, mut assigned_rx) = mpsc::unbounded_channel::<i64>();
    let (told_tx, mut told_rx) = mpsc::unbounded_channel::<Instant>();
    let (go_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut log_socket = None;
    for i in 0..RUNNING {
        let mut ws = connect_runner(&addr, &runner_token, format!("bench-{i}")).await;
        let ServerMessage::Welcome { .. } = next_message(&mut ws).await else {
            panic!("no welcome")
        };
        send(&mut ws, &RunnerMessage::RequestJob).await;
        let job_id = loop {
            if let ServerMessage::Job { job } = next_message(&mut ws).await {
                break job.job_id;
            }
        };
        assigned_tx.send(job_id).unwrap();
        if i == 0 {
            log_socket = Some((ws, job_id));
            continue;
        }
        let told_tx = told_tx.clone();
        let mut go = go_tx.subscribe();
        tokio::spawn(async move {
            let _ = go.recv().await;
            loop {
                if let ServerMessage::Cancel { job_id: j, .. } = next_message(&mut ws).await {
                    assert_eq!(j, job_id);
                    told_tx.send(Instant::now()).unwrap();
                    break;
                }
            }
            // Keep the connection open until the process ends.
            while ws.next().await.is_some() {}
        });
    }
    let mut running = 0;
    while running < RUNNING {
        assigned_rx.recv().await.unwrap();
        running += 1;
    }
    let (mut log_ws, log_job) = log_socket.unwrap();
    let _ = go_tx.send(());

    let t0 = Instant::now();
    let resp = http
        .post(api(&format!("/api/v1/pipelines/{}/cancel", pipeline["id"])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let api_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(resp.status(), 200);
    let mut told_ms = Vec::new();
    // The log runner's own cancel arrives on its socket; count the other 499 here.
    while told_ms.len() < RUNNING - 1 {
        let at = tokio::time::timeout(Duration::from_secs(120), told_rx.recv())
            .await
            .expect("every runner is told")
            .unwrap();
        told_ms.push((at - t0).as_secs_f64() * 1000.0);
    }
    told_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Log appends on a job that is still active (canceling), one at a time and pipelined.
    let line = "x".repeat(99) + "\n";
    let mut offset = 0u64;
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        send(
            &mut log_ws,
            &RunnerMessage::Log {
                job_id: log_job,
                offset,
                data: line.clone(),
            },
        )
        .await;
        offset += line.len() as u64;
        loop {
            if let ServerMessage::LogAck { .. } = next_message(&mut log_ws).await {
                break;
            }
        }
    }
    let sequential = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        send(
            &mut log_ws,
            &RunnerMessage::Log {
                job_id: log_job,
                offset,
                data: line.clone(),
            },
        )
        .await;
        offset += line.len() as u64;
    }
    let mut acked = 0;
    while acked < n {
        if let ServerMessage::LogAck { .. } = next_message(&mut log_ws).await {
            acked += 1;
        }
    }
    let pipelined = n as f64 / t.elapsed().as_secs_f64();

    println!("{label}:");
    println!("  create a pipeline of {JOBS} jobs (API round trip): {create_ms:.0} ms");
    println!("  cancel it with {RUNNING} running (API round trip): {api_ms:.0} ms");
    println!(
        "  runners told (after the API call started): first {:.0} ms, median {:.0} ms, p99 {:.0} ms, last {:.0} ms",
        told_ms[0],
        usher_testkit::bench::quantile(&told_ms, 0.5),
        usher_testkit::bench::quantile(&told_ms, 0.99),
        told_ms[told_ms.len() - 1]
    );
    println!("  log appends of 100 bytes: {sequential:.0}/s one at a time, {pipelined:.0}/s pipelined");
    let last_told = told_ms[told_ms.len() - 1];
    usher_testkit::bench::record(
        "P4",
        label,
        json!({ "api_ms": api_ms, "last_told_ms": last_told, "jobs": JOBS, "running": RUNNING }),
    );
    usher_testkit::bench::record(
        "P5",
        label,
        json!({ "per_s": pipelined, "one_at_a_time_per_s": sequential, "n": n }),
    );
    server.stop().await;
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in usher_testkit::db::databases(dir.path()).await {
        bench(name, url).await;
    }
}
