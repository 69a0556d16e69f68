//! What an operator runs Usher with: `/healthz` for a load balancer, `/metrics` for
//! Prometheus (filled by real cancels, with no names of users or projects), and a log of
//! requests and job moves that a collector can read as JSON.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use usher_testkit::harness::Needs;
use usher_testkit::*;

fn main() -> std::process::ExitCode {
    usher_testkit::harness::run(usher_testkit::tests![
        Needs::Nothing, 2 => [
            healthz_and_metrics_answer_without_credentials,
            the_log_is_json_lines_with_requests_and_job_moves,
            tagged_jobs_wait_for_a_runner_with_their_tags,
        ];
        Needs::Postgres, 2 => [
            healthz_is_503_once_postgresql_is_gone,
        ];
    ])
}

const USHER: &str = env!("CARGO_BIN_EXE_usher");

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn healthz_and_metrics_answer_without_credentials() {
    let t = TestServer::start(1).await;
    let plain = reqwest::Client::new();
    let health = plain.get(format!("{}/healthz", t.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    // A real graceful cancel, with an event subscriber watching.
    let _events = t.events("").await;
    let pipeline = t
        .pipeline("secret-job-name:\n  script: [\"echo go\", \"sleep 300\"]\n  after_script: [\"echo bye\"]\n")
        .await;
    let job = TestServer::job_id(&pipeline, "secret-job-name");
    t.wait_for_log(job, "go").await;
    t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    t.wait_for_status(job, "canceled").await;

    let resp = plain.get(format!("{}/metrics", t.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is OpenMetrics text (it ends with `# EOF`), and says so.
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert_eq!(metric(&text, "usher_jobs_finished_total{status=\"canceled\"}"), 1.0, "{text}");
    assert_eq!(
        metric(&text, "usher_cancels_total{mode=\"graceful\",reason=\"user\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "usher_job_queue_seconds_count"), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_job_duration_seconds_count"), 1.0, "{text}");
    assert_eq!(
        metric(&text, &format!("usher_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "usher_jobs{status=\"canceled\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_jobs{status=\"running\"}"), 0.0);
    assert_eq!(metric(&text, "usher_runners_connected"), 1.0);
    assert_eq!(metric(&text, "usher_event_subscribers"), 1.0);
    assert_eq!(metric(&text, "usher_cancel_to_runner_seconds_count"), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_cancel_to_terminal_seconds_count"), 1.0);
    assert!(
        metric(&text, "process_resident_memory_bytes") > 1e6,
        "the server's process metrics: {text}"
    );
    assert!(metric(&text, "process_open_fds") >= 3.0, "{text}");
    assert!(
        metric(&text, "usher_cancel_to_runner_seconds_sum") < 1.0,
        "the runner heard of the cancel within a second"
    );
    assert!(
        !text.contains("secret-job-name") && !text.contains("admin") && !text.contains(" p-"),
        "{text}"
    );
    t.stop().await;
}

/// `--log-format json`: one JSON object per line, with a line per request (method, path,
/// status) and per job move.
async fn the_log_is_json_lines_with_requests_and_job_moves() {
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("usher.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let _server = OwnedChild(
        Command::new(USHER)
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--local-runners",
                "1",
                "--log-format",
                "json",
            ])
            .env("USHER_DATA_DIR", data_dir.path())
            .env("USHER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let mut t = TestServer::detached();
    t.base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/healthz", t.base)).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pipeline = t.pipeline("quick:\n  script: [\"true\"]\n").await;
    t.wait_for_status(TestServer::job_id(&pipeline, "quick"), "success").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["status"] == 201 || l["status"] == "201"),
        "no request line with its status:\n{text}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "job success" && l["job"].is_number()),
        "no job line:\n{text}"
    );
    assert!(lines.iter().any(|l| l["message"] == "runner connected"), "{text}");
    assert!(!text.contains(ADMIN_TOKEN), "the token is in the log");
}

/// A job with `tags` goes only to a runner having all of them; while none is
/// connected it stays pending and says what it waits for.
async fn tagged_jobs_wait_for_a_runner_with_their_tags() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, base) = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]);
    let token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["runner-token", "create"], "").stdout).unwrap();
    let mut t = TestServer::detached();
    t.base = base.clone();
    let builds = tempfile::tempdir().unwrap();
    let start_runner = |name: &str, tags: &str| {
        OwnedChild::spawn(
            runner_command(&base, name, &builds.path().join(name))
                .args(["--tags", tags])
                .env("USHER_RUNNER_TOKEN", token.trim()),
        )
    };
    let _plain = start_runner("plain", "linux");
    let pipeline = t
        .pipeline("gpu:\n  tags: [linux, gpu]\n  script: [\"true\"]\nany:\n  script: [\"true\"]\n")
        .await;
    let gpu = TestServer::job_id(&pipeline, "gpu");
    let any = TestServer::job_id(&pipeline, "any");
    t.wait_for_status(any, "success").await;
    let waiting = t.job(gpu).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["tags"], serde_json::json!(["linux", "gpu"]));
    assert_eq!(waiting["waiting_for"], "a runner with tags linux, gpu", "{waiting}");
    let _gpu_runner = start_runner("big", "linux,gpu,cuda");
    let done = t.wait_for_status(gpu, "success").await;
    assert_eq!(done["waiting_for"], serde_json::Value::Null);
}

/// A load balancer must see a replica whose database is gone: `/healthz` turns 503 (and
/// says why) when PostgreSQL stops answering, here because its database was dropped
/// with every connection to it.
async fn healthz_is_503_once_postgresql_is_gone() {
    use sqlx::Connection;
    let url = fresh_postgres().await;
    let t = TestServer::start_on(Some(url.clone()), 0).await;
    let health = || async { reqwest::get(format!("{}/healthz", t.base)).await.unwrap() };
    assert_eq!(health().await.status(), 200);

    let (server, name) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = health().await;
        if answer.status() != 200 {
            break answer;
        }
        assert!(Instant::now() < deadline, "/healthz still says ok with the database gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.text().await.unwrap(), "the database does not answer");
    t.stop().await;
}
