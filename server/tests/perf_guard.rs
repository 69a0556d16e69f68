//! Regression guards for the performance figures (`make bench` measures them for real,
//! release build; these run in `make test`, debug build, in a few seconds): the same
//! measures as server/examples/bench_latency.rs and bench_cancel.rs, few samples, and
//! bounds ten times the goals of docs/benchmarks.md — loose enough for a loaded CI
//! machine, tight enough that cancel becoming 100× slower fails.
//!
//! - P1: cancel API call → the script's TERM trap; goal median ≤ 1 ms, p99 ≤ 2 ms.
//!   Guard over 20 samples: median ≤ 10 ms, p90 ≤ 20 ms (p90, not p99: one scheduler
//!   hiccup in a loaded debug run must not fail CI).
//! - P3: pipeline created → first script line on an idle runner; goal p99 ≤ 5 ms.
//!   Guard: p90 ≤ 50 ms.
//! - P4 (scaled down): cancelling a pipeline of 200 pending jobs answers within 2.5 s
//!   (goal: 250 ms for 1,000 jobs with 500 running, release build); with 100 runners
//!   holding its jobs, each is told about its own job within 5 s (goal: 500 ms).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_tungstenite::tungstenite::Message;
use usher_core::protocol::{PROTOCOL_VERSION, RunnerMessage, ServerMessage};
use usher_testkit::*;

const TIMED: &str = r#"
timed:
  script:
    - echo "t_start=$EPOCHREALTIME"
    - trap 'echo "t_trap=$EPOCHREALTIME"; exit 0' TERM
    - echo ready
    - sleep 1000 & wait
"#;

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn quantile(values: &mut [f64], at: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() as f64 - 1.0) * at).round() as usize]
}

/// The number the job printed as `key=…` (its output, not the echoed command line).
async fn wait_value(t: &TestServer, job: i64, key: &str) -> f64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (log, _) = t.log(job).await;
        let printed = log
            .lines()
            .any(|l| !l.starts_with("\u{1b}[32;1m$ ") && l.contains(&format!("{key}=")));
        if printed {
            return log_value(&log, key).parse().unwrap();
        }
        assert!(Instant::now() < until, "job {job} never printed {key}=:\n{log}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_pickup_stay_within_ten_times_their_goals() {
    let t = TestServer::start(1).await;
    let (mut cancel_ms, mut pickup_ms) = (Vec::new(), Vec::new());
    let config = format!("variables:\n  USHER_TEST_RUN: \"{}\"\n{TIMED}", t.run_marker);
    let (status, project) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(serde_json::json!({"name": "guard", "ci_config": config})),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    for _ in 0..20 {
        let created = now_secs();
        let (status, pipeline) = t
            .call(
                "POST",
                &format!("/api/v1/projects/{}/pipelines", project["id"]),
                Some(serde_json::json!({"ref": "main"})),
            )
            .await;
        assert_eq!(status, 201, "{pipeline}");
        let job = TestServer::job_id(&pipeline, "timed");
        pickup_ms.push((wait_value(&t, job, "t_start").await - created) * 1000.0);
        t.wait_for_log(job, "\nready\n").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cancelled = now_secs();
        t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
        cancel_ms.push((wait_value(&t, job, "t_trap").await - cancelled) * 1000.0);
        t.wait_for_status(job, "canceled").await;
    }
    let (cancel_median, cancel_p90) = (quantile(&mut cancel_ms, 0.5), quantile(&mut cancel_ms, 0.9));
    let pickup_p90 = quantile(&mut pickup_ms, 0.9);
    eprintln!("P1 guard: cancel → trap median {cancel_median:.2} ms, p90 {cancel_p90:.2} ms; P3 guard: pickup p90 {pickup_p90:.2} ms");
    assert!(
        cancel_median <= 10.0,
        "cancel → TERM trap median {cancel_median:.2} ms (goal 1 ms): {cancel_ms:?}"
    );
    assert!(
        cancel_p90 <= 20.0,
        "cancel → TERM trap p90 {cancel_p90:.2} ms (goal p99 2 ms): {cancel_ms:?}"
    );
    assert!(
        pickup_p90 <= 50.0,
        "pipeline → first line p90 {pickup_p90:.2} ms (goal p99 5 ms): {pickup_ms:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_large_pipeline_stays_within_ten_times_its_goal() {
    let t = TestServer::start(0).await;
    let jobs: String = (0..200).map(|i| format!("job{i}:\n  script: [sleep 1000]\n")).collect();
    let pipeline = t.pipeline(&jobs).await;
    let started = Instant::now();
    let (status, answer) = t.call("POST", &format!("/api/v1/pipelines/{}/cancel", pipeline["id"]), None).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "canceled", "{answer}");
    eprintln!("P4 guard: cancelling 200 pending jobs took {} ms", took.as_millis());
    assert!(took <= Duration::from_millis(2500), "cancelling 200 pending jobs took {took:?}");
    t.stop().await;
}

/// A runner protocol v1 connection that has said hello and been welcomed.
async fn protocol_runner(base: &str, token: &str, name: String) -> RunnerSocket {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/api/runner/v1/connect", base.trim_start_matches("http://"))
        .into_client_request()
        .unwrap();
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
    assert!(matches!(next_server_message(&mut ws).await, ServerMessage::Welcome { .. }));
    ws
}

type RunnerSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_server_message(ws: &mut RunnerSocket) -> ServerMessage {
    use futures::StreamExt;
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

/// P4 with running jobs, scaled down: 100 runners each hold one job of a 200-job
/// pipeline; cancelling it tells every runner, about its own job, within 5 s (ten times
/// the goal for 500 runners). It also checks the runner hub's routing: no runner hears
/// of a job it does not hold, and none is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pipeline_held_by_many_runners_tells_each_its_own_job() {
    use futures::SinkExt;
    const RUNNERS: usize = 100;
    let t = TestServer::start(0).await;
    let jobs: String = (0..2 * RUNNERS).map(|i| format!("job{i}:\n  script: [sleep 1000]\n")).collect();
    let pipeline = t.pipeline(&jobs).await;
    let token = t.server.as_ref().unwrap().engine.create_runner_token().await.unwrap();
    let mut runners = Vec::new();
    for i in 0..RUNNERS {
        let mut ws = protocol_runner(&t.base, &token, format!("guard-{i}")).await;
        ws.send(Message::Text(serde_json::to_string(&RunnerMessage::RequestJob).unwrap().into()))
            .await
            .unwrap();
        let job_id = loop {
            if let ServerMessage::Job { job } = next_server_message(&mut ws).await {
                break job.job_id;
            }
        };
        runners.push((ws, job_id));
    }
    let started = Instant::now();
    let (status, answer) = t.call("POST", &format!("/api/v1/pipelines/{}/cancel", pipeline["id"]), None).await;
    assert_eq!(status, 200, "{answer}");
    let mut last = Duration::ZERO;
    for (ws, job_id) in &mut runners {
        let told = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match next_server_message(ws).await {
                    ServerMessage::Cancel { job_id: j, .. } => return j,
                    ServerMessage::Abort { job_id: j } => panic!("abort of job {j} on a graceful cancel"),
                    _ => continue,
                }
            }
        })
        .await
        .expect("every runner is told");
        assert_eq!(told, *job_id, "a runner was told about a job it does not hold");
        last = last.max(started.elapsed());
    }
    eprintln!("P4 guard: {RUNNERS} runners told within {} ms", last.as_millis());
    assert!(
        last <= Duration::from_secs(5),
        "the last of {RUNNERS} runners was told after {last:?}"
    );
    t.stop().await;
}
