//! Runners for an admin: `GET /api/v1/runners` lists them (executor, tags, connected,
//! paused, draining); pausing one keeps it from taking new jobs (the waiting job says
//! so) until it is resumed, when it takes them by itself; only admins may.

use std::time::{Duration, Instant};

use usher_core::roles::Role;
use usher_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_runner_takes_no_job_until_it_is_resumed() {
    let t = TestServer::start(1).await;
    // Listed from its first frame on; what it said in it, a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let runner = loop {
        let (status, runners) = t.call("GET", "/api/v1/runners", None).await;
        assert_eq!(status, 200, "{runners}");
        if !runners[0]["executor"].is_null() || Instant::now() > deadline {
            break runners[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            runner["executor"].as_str(),
            runner["connected"].as_bool(),
            runner["paused"].as_bool(),
            runner["draining"].as_bool()
        ),
        (Some("shell"), Some(true), Some(false), Some(false)),
        "{runner}"
    );
    let id = runner["id"].as_i64().unwrap();

    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("dev", Role::Developer, None).await.unwrap();
    let dev = engine.create_api_token("dev").await.unwrap();
    let (status, _) = t.call_as(&dev, "POST", &format!("/api/v1/runners/{id}/pause"), None).await;
    assert_eq!(status, 403, "only admins pause runners");
    let (status, _) = t.call("POST", "/api/v1/runners/999999/pause", None).await;
    assert_eq!(status, 404);

    let (status, paused) = t.call("POST", &format!("/api/v1/runners/{id}/pause"), None).await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)), "{paused}");
    let pipeline = t.pipeline("waits:\n  script: [\"echo ran after the resume\"]\n").await;
    let job = TestServer::job_id(&pipeline, "waits");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let waiting = t.job(job).await;
    assert_eq!(waiting["status"], "pending", "a paused runner takes no job: {waiting}");
    assert_eq!(
        waiting["waiting_for"], "a runner (none is connected, or all are paused)",
        "{waiting}"
    );

    let (status, resumed) = t.call("POST", &format!("/api/v1/runners/{id}/resume"), None).await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)), "{resumed}");
    // Within a heartbeat (10 s), without a new job to wake it.
    let deadline = Instant::now() + Duration::from_secs(25);
    while t.job(job).await["status"] != "success" {
        assert!(Instant::now() < deadline, "the resumed runner did not take the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.stop().await;
}
