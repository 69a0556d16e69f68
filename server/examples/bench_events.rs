//! Benchmark P6: 10,000 open event websockets on one server — the server's memory, and
//! how long one event takes to reach every one of them.
//!
//! The server is the real `usher` binary (next to this example in the target dir, or
//! `USHER_BIN`), started as its own process so its RSS (`/proc/<pid>/status`) is its
//! alone. This process opens `USHER_BENCH_SOCKETS` (10,000) websockets to
//! `/api/v1/events` with small buffers, then 10 times: notes the time, creates a pipeline
//! through the API, and notes when each socket receives its first frame of that round.
//! Latency = that frame's arrival − the moment before the API call, on this process's
//! monotonic clock; p50/p99/max over every socket of every round. The clients share the
//! 2 cores with the server, so the figure includes their own reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const TOKEN: &str = "usher_bench_admin_token";
const ROUNDS: u32 = 10;

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// CPU time (user + system) a process has used so far, in ms (`/proc/<pid>/stat`, in
/// clock ticks of 10 ms).
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks * 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn usher_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("USHER_BIN") {
        return bin.into();
    }
    // target/release/examples/bench_events → target/release/usher
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("usher")
}

/// Raises this process's open-file limit to its hard limit (the server, started by us,
/// inherits it).
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn bench(label: &str, database_url: String, sockets: usize) {
    let data_dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("USHER_ADMIN_TOKEN", TOKEN),
        ("RUST_LOG", "warn"),
    ];
    let (mut server, base) = usher_testkit::spawn_usher(usher_binary(), data_dir.path(), "127.0.0.1:0", 0, &env);
    let http = reqwest::Client::new();
    let project: serde_json::Value = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "bench", "ci_config": "job:\n  script: [echo hi]\n"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project_id = project["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_mb(server.id());

    let round = Arc::new(AtomicU32::new(0));
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<(u32, usize, Instant)>();
    let opened = Instant::now();
    let url = format!("ws://{}/api/v1/events", base.trim_start_matches("http://"));
    let mut tasks = Vec::new();
    // Frames received during the rounds, by every socket together.
    let frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..sockets {
        let (url, round, arrived_tx, connecting, frames) =
            (url.clone(), round.clone(), arrived_tx.clone(), connecting.clone(), frames.clone());
        tasks.push(tokio::spawn(async move {
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
            let permit = connecting.acquire().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .expect("event websocket");
            drop(permit);
            let mut seen_round = 0;
            while let Some(Ok(_frame)) = ws.next().await {
                let now = Instant::now();
                let r = round.load(Ordering::SeqCst);
                frames.fetch_add(1, Ordering::Relaxed);
                if r != seen_round {
                    seen_round = r;
                    let _ = arrived_tx.send((r, i, now));
                }
            }
        }));
    }
    drop(arrived_tx);
    // Every socket is open once the server counts them (its /metrics gauge).
    loop {
        let metrics = http
            .get(format!("{base}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open = metrics
            .lines()
            .find(|l| l.starts_with("usher_event_subscribers "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if open as usize >= sockets {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(300),
            "only {open} of {sockets} sockets opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mb(server.id());

    let mut latencies = Vec::new();
    // Where the rounds' CPU goes: the server's sends, and these clients' reads (which a
    // real deployment's browsers would do on machines of their own).
    let server_pid = server.id().to_string();
    let (server_cpu_before, clients_cpu_before) = (cpu_ms(&server_pid), cpu_ms("self"));
    let rounds_started = Instant::now();
    let frames_before = frames.load(Ordering::Relaxed);
    for r in 1..=ROUNDS {
        round.store(r, Ordering::SeqCst);
        let t0 = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/projects/{project_id}/pipelines"))
            .bearer_auth(TOKEN)
            // A ref of its own each round: on one ref each new pipeline would supersede
            // (auto-cancel) the one before, a second fan-out to every socket inside the
            // one being timed.
            .json(&json!({"ref": format!("bench-{r}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let mut got = 0;
        while got < sockets {
            let (frame_round, _socket, at) = tokio::time::timeout(Duration::from_secs(60), arrived_rx.recv())
                .await
                .expect("every socket hears of the event")
                .unwrap();
            if frame_round == r {
                latencies.push((at - t0).as_secs_f64() * 1000.0);
                got += 1;
            }
        }
        // Let the round's remaining frames (job, pipeline updates) drain.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each round ends with 500 ms of quiet, which uses next to no CPU.
    let rounds_ms = rounds_started.elapsed().as_secs_f64() * 1000.0 - 500.0 * ROUNDS as f64;
    let server_cpu = (cpu_ms(&server_pid) - server_cpu_before) / ROUNDS as f64;
    let clients_cpu = (cpu_ms("self") - clients_cpu_before) / ROUNDS as f64;
    let frames_per_socket = (frames.load(Ordering::Relaxed) - frames_before) as f64 / (ROUNDS as f64 * sockets as f64);
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99, max) = (
        usher_testkit::bench::quantile(&latencies, 0.5),
        usher_testkit::bench::quantile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!("{label}:");
    println!("  {sockets} event websockets opened in {open_secs:.1} s");
    println!("  server RSS: {baseline:.0} MB before, {rss:.0} MB with them open");
    println!("  one event → every socket ({ROUNDS} events): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    println!(
        "  CPU per event: server {server_cpu:.0} ms, these clients {clients_cpu:.0} ms, in {:.0} ms of wall clock on {} cores; {frames_per_socket:.2} frames per socket",
        rounds_ms / ROUNDS as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    usher_testkit::bench::record(
        "P6",
        label,
        json!({ "sockets": sockets, "rss_mb": rss, "rss_baseline_mb": baseline, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "events": ROUNDS,
                "server_cpu_ms_per_event": server_cpu, "clients_cpu_ms_per_event": clients_cpu, "frames_per_socket_per_event": frames_per_socket }),
    );
    for task in tasks {
        task.abort();
    }
    server.terminate();
}

#[tokio::main]
async fn main() {
    raise_fd_limit();
    let sockets = std::env::var("USHER_BENCH_SOCKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in usher_testkit::db::databases(dir.path()).await {
        bench(name, url, sockets).await;
    }
}
