//! Benchmark: the two latencies a user feels, each over RUNS runs with a real local
//! runner and real bash, and the machine's floor under the first. SQLite always;
//! PostgreSQL too when TEST_DATABASE_URL is set.
//!
//! - cancel latency: from just before `POST /api/v1/jobs/{id}/cancel` until the job's
//!   TERM trap runs, measured inside the trap with bash's `$EPOCHREALTIME`;
//! - the request floor: `GET /healthz` after the same 20 ms of quiet a cancel has, and
//!   right after another request (what waking the machine costs, printed beside P1);
//! - pickup latency: from just before `POST /api/v1/projects/{id}/pipelines` until the
//!   first line of the script runs on an idle runner (`$EPOCHREALTIME` again).
//!
//!   cargo run --release -p usher --example bench_latency
//!   scripts/with-postgres cargo run --release -p usher --example bench_latency

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const TOKEN: &str = "bench-admin-token";
/// Samples per figure (`USHER_BENCH_RUNS` to change).
fn runs() -> usize {
    std::env::var("USHER_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
}

const CONFIG: &str = r#"
timed:
  script:
    - echo "t_start=$EPOCHREALTIME"
    - trap 'echo "t_trap=$EPOCHREALTIME"; exit 0' TERM
    - echo ready
    - sleep 1000 & wait
"#;

/// How long after the measured call the bench first reads the job's log.
const FIRST_LOOK: Duration = Duration::from_millis(25);

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// The body of a GET.
    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn log(&self, job: i64) -> String {
        self.text(&format!("/api/v1/jobs/{job}/log")).await
    }

    /// The value of `key=` in the job's output once it appears. The first look is
    /// [`FIRST_LOOK`] after the measured moment: each look is a request and four queries,
    /// and on two cores an earlier one would compete with the path being measured (the
    /// value is bash's own clock, so when it is read does not change it).
    async fn wait_value(&self, job: i64, key: &str) -> f64 {
        let needle = format!("\n{key}=");
        tokio::time::sleep(FIRST_LOOK).await;
        loop {
            let log = self.log(job).await;
            if let Some(rest) = log.split(&needle).nth(1)
                && let Some(v) = rest.lines().next().and_then(|v| v.trim().parse().ok())
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_log(&self, job: i64, needle: &str) {
        while !self.log(job).await.contains(needle) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_status(&self, job: i64, status: &str) {
        loop {
            if self.call(reqwest::Method::GET, &format!("/api/v1/jobs/{job}"), None).await["status"] == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The machine's own part of P1: a `GET /healthz` (one `SELECT 1`, no other work) timed
/// with the same pause before it that each cancel has (the system idle for 20 ms, as
/// when a user clicks Cancel on a job that is sleeping), and back to back. On a VM the
/// first is dominated by waking idle vCPUs and cold caches, which P1 pays as well.
async fn request_floor(api: &Api) -> (Vec<f64>, Vec<f64>) {
    let (mut idle, mut hot) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for sample in [&mut idle, &mut hot] {
            let at = now_secs();
            let _ = api.text("/healthz").await;
            sample.push((now_secs() - at) * 1000.0);
        }
    }
    (idle, hot)
}

/// Prints the figure and returns its median and p99.
fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| usher_testkit::bench::quantile(&ms, q);
    println!(
        "  {name:<16} n={} min {:.2} ms, median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms.len(),
        ms[0],
        at(0.5),
        at(0.9),
        at(0.99),
        ms[ms.len() - 1]
    );
    (at(0.5), at(0.99))
}

async fn bench(name: &str, database_url: String) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        database_url,
        local_runners: 1,
        admin_token: Some(TOKEN.into()),
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    let project = api
        .call(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(json!({"name": "bench", "ci_config": CONFIG})),
        )
        .await;
    let project_id = project["id"].as_i64().unwrap();
    let (mut pickup, mut cancel) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        // The runner is idle here: the previous job has ended.
        let created_at = now_secs();
        let pipeline = api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/projects/{project_id}/pipelines"),
                Some(json!({"ref": "main"})),
            )
            .await;
        let job = pipeline["jobs"][0]["id"].as_i64().unwrap();
        let started = api.wait_value(job, "t_start").await;
        pickup.push((started - created_at) * 1000.0);
        api.wait_log(job, "\nready\n").await;
        // Let bash settle into `wait` so the trap runs as soon as TERM arrives.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cancel_at = now_secs();
        api.call(reqwest::Method::POST, &format!("/api/v1/jobs/{job}/cancel"), None).await;
        let trapped = api.wait_value(job, "t_trap").await;
        cancel.push((trapped - cancel_at) * 1000.0);
        api.wait_status(job, "canceled").await;
    }
    let (idle, hot) = request_floor(&api).await;
    println!("{name}:");
    let (median, p99) = summary("cancel → trap", cancel);
    let (idle_median, _) = summary("idle → /healthz", idle);
    let (hot_median, _) = summary("busy → /healthz", hot);
    usher_testkit::bench::record(
        "P1",
        name,
        json!({ "median_ms": median, "p99_ms": p99, "n": runs(),
                "idle_healthz_ms": idle_median, "busy_healthz_ms": hot_median }),
    );
    let (median, p99) = summary("create → start", pickup);
    usher_testkit::bench::record("P3", name, json!({ "median_ms": median, "p99_ms": p99, "n": runs() }));
    // The server's own view of the middle of P1: the cancel's timestamp (taken before its
    // transaction, to the millisecond) → its frame written to the runner's connection.
    let metrics = api.text("/metrics").await;
    let value = |key: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (sum, count) = (
        value("usher_cancel_to_runner_seconds_sum "),
        value("usher_cancel_to_runner_seconds_count "),
    );
    println!(
        "  cancel stamped → frame to the runner: mean {:.3} ms over {count} (ms-resolution stamps: +0.5 ms on average)",
        sum / count * 1000.0
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
