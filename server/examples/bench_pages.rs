//! Benchmark P8: the two list pages — `/` (every project's pipelines) and
//! `/projects/{id}` — rendered by the server with 100,000 pipelines in the database.
//!
//! An in-process server (no runners: the jobs stay pending) gets `USHER_BENCH_PIPELINES`
//! (100,000) one-job pipelines in one project, created through the engine as the API
//! would (four at a time), plus a second, small project. Then a signed-in client (a
//! session cookie, as a browser has) GETs each page 200 times, one after the other;
//! time = request sent → whole body received, on loopback. p50/p99/max per page.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

const TOKEN: &str = "usher_bench_admin_token";
const SAMPLES: usize = 200;

async fn bench(label: &str, database_url: String, pipelines: usize) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        database_url,
        admin_token: Some(TOKEN.into()),
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let mut project_ids = Vec::new();
    for name in ["big", "small"] {
        let project: serde_json::Value = http
            .post(format!("{base}/api/v1/projects"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name, "ci_config": "build:\n  script: [make]\n"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        project_ids.push(project["id"].as_i64().unwrap());
    }
    let engine = server.engine.clone();
    let actor = engine.authenticate_token(TOKEN).await.unwrap();
    let seeding = Instant::now();
    let request: usher_core::api::CreatePipeline = serde_json::from_value(json!({"ref": "main"})).unwrap();
    let created = futures::stream::iter(0..pipelines + 20)
        .map(|i| {
            let (engine, actor, request) = (engine.clone(), actor.clone(), request.clone());
            let project = if i < pipelines { project_ids[0] } else { project_ids[1] };
            async move { engine.create_pipeline(&actor, project, request).await.is_ok() }
        })
        .buffer_unordered(4)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(created, pipelines + 20);
    let seed_secs = seeding.elapsed().as_secs_f64();

    engine
        .add_user("bench", usher_core::roles::Role::Viewer, Some("bench-password-1"))
        .await
        .unwrap();
    let session = engine.login("bench", "bench-password-1", None).await.unwrap();
    let cookie = format!("{}={session}", usher_server::caller::SESSION_COOKIE);
    let mut figures = serde_json::Map::new();
    let mut worst_p99: f64 = 0.0;
    println!("{label}: {pipelines} pipelines created in {seed_secs:.0} s");
    for (name, path) in [("home", "/".to_string()), ("project", format!("/projects/{}", project_ids[0]))] {
        let mut ms = Vec::new();
        for i in 0..SAMPLES + 10 {
            let t = Instant::now();
            let resp = http.get(format!("{base}{path}")).header("cookie", &cookie).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let body = resp.text().await.unwrap();
            let took = t.elapsed().as_secs_f64() * 1000.0;
            assert!(body.contains("href=\"/pipelines/"), "{path} lists pipelines: {body}");
            if i >= 10 {
                ms.push(took); // the first ten warm caches and connections
            }
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (p50, p99, max) = (
            usher_testkit::bench::quantile(&ms, 0.5),
            usher_testkit::bench::quantile(&ms, 0.99),
            ms[ms.len() - 1],
        );
        println!("  GET {path:<14} n={SAMPLES} p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
        figures.insert(format!("{name}_p50_ms"), json!(p50));
        figures.insert(format!("{name}_p99_ms"), json!(p99));
        worst_p99 = worst_p99.max(p99);
    }
    figures.insert("p99_ms".into(), json!(worst_p99));
    figures.insert("pipelines".into(), json!(pipelines));
    figures.insert("seed_secs".into(), json!(seed_secs));
    usher_testkit::bench::record("P8", label, serde_json::Value::Object(figures));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::main]
async fn main() {
    let pipelines = std::env::var("USHER_BENCH_PIPELINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in usher_testkit::db::databases(dir.path()).await {
        bench(name, url, pipelines).await;
    }
}
