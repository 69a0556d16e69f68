//! Benchmark: what one status change costs the engine and its database, without HTTP,
//! runners or bash around it — the instrument for changes to the store, whose effect on
//! P1 is smaller than P1's spread on this machine.
//!
//! Each of RUNS one-job pipelines (no runner, so the job waits `pending`) is cancelled
//! through `Engine::cancel_job`: the job's read, its move with its timeline entry, and
//! the pipeline's re-derivation and update, in one transaction. Timed around the call,
//! once with 20 ms of quiet before each (as P1 has) and once back to back. The
//! pipelines' creation (`Engine::create_pipeline`, back to back) is timed as well.
//!
//!   cargo run --release -p usher --example bench_change
//!   scripts/with-postgres cargo run --release -p usher --example bench_change

use std::time::{Duration, Instant};

use usher_core::api::{CreatePipeline, CreateProject};
use usher_engine::Engine;

fn runs() -> usize {
    std::env::var("USHER_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
}

fn print(name: &str, mut us: Vec<f64>) {
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q| usher_testkit::bench::quantile(&us, q);
    println!(
        "  {name:<22} n={} median {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
        us.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

async fn bench(name: &str, url: String) {
    let engine = Engine::open(&url).await.unwrap();
    engine.bootstrap_admin(Some("bench-token")).await.unwrap();
    let admin = engine.authenticate_token("bench-token").await.unwrap();
    let project = engine
        .create_project(
            &admin,
            CreateProject {
                name: "bench".into(),
                ci_config: Some("job:\n  script: [sleep 1]\n".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    println!("{name}:");
    for quiet in [Duration::from_millis(20), Duration::ZERO] {
        // Each pipeline on a ref of its own, so creating one cancels no other.
        let (mut jobs, mut creates) = (Vec::new(), Vec::new());
        for n in 0..runs() {
            let at = Instant::now();
            let pipeline = engine
                .create_pipeline(
                    &admin,
                    project.id,
                    CreatePipeline {
                        git_ref: format!("bench-{}-{n}", quiet.as_millis()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            creates.push(at.elapsed().as_secs_f64() * 1e6);
            jobs.push(pipeline.jobs.unwrap()[0].id);
        }
        if quiet.is_zero() {
            print("create, back to back", creates);
        }
        let mut us = Vec::new();
        for job in jobs {
            tokio::time::sleep(quiet).await;
            let at = Instant::now();
            engine.cancel_job(&admin, job, Default::default()).await.unwrap();
            us.push(at.elapsed().as_secs_f64() * 1e6);
        }
        let label = if quiet.is_zero() {
            "cancel, back to back"
        } else {
            "cancel, after 20 ms quiet"
        };
        print(label, us);
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in usher_testkit::db::databases(dir.path()).await {
        bench(name, url).await;
    }
}
