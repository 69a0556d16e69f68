//! Two `usher serve` replicas on one PostgreSQL database: a cancel made through replica
//! A reaches a websocket subscriber and the runner connected to replica B.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_on_one_replica_reaches_the_other() {
    let Some(url) = fresh_postgres().await else { return };
    let a = TestServer::start_on(Some(url.clone()), 0).await;
    let b = TestServer::start_on(Some(url), 1).await;

    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/api/v1/events",
        b.base.trim_start_matches("http://")
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    let (mut events_on_b, _) = tokio_tungstenite::connect_async(request).await.expect("websocket on B");

    // Created through A; run by B's runner, which learns of the job through B.
    let pipeline = a
        .pipeline(&format!(
            "job:\n  variables:\n    USHER_TEST_RUN: \"{}\"\n  script: [echo ready, sleep 1000]\n  after_script: [echo cleaned up on B]\n",
            b.run_marker
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    a.wait_for_log(job_id, "ready").await;
    let (status, job) = a.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceling")), "{job}");

    let job = a.wait_for_status(job_id, "canceled").await;
    assert_eq!(job["after_script"]["exit_code"], 0, "B's runner ran after_script: {job}");
    assert!(a.log(job_id).await.0.contains("cleaned up on B"));

    let mut seen = Vec::new();
    while !seen.contains(&"canceled".to_string()) {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), events_on_b.next())
            .await
            .expect("a frame on B")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if v["type"] == "job" && v["job"]["id"] == job_id {
            seen.push(v["job"]["status"].as_str().unwrap().to_string());
        }
    }
    let tail: Vec<&str> = seen.iter().map(String::as_str).skip_while(|s| *s != "canceling").collect();
    assert_eq!(tail, ["canceling", "canceled"], "frames on B: {seen:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_never_hand_one_job_to_two_runners() {
    let Some(url) = fresh_postgres().await else { return };
    let a = TestServer::start_on(Some(url.clone()), 2).await;
    let b = TestServer::start_on(Some(url), 2).await;
    let jobs: String = (0..12).map(|i| format!("j{i}:\n  script: [\"echo run-$CI_JOB_ID\"]\n")).collect();
    let pipeline = a.pipeline(&jobs).await;
    for job in pipeline["jobs"].as_array().unwrap() {
        let id = job["id"].as_i64().unwrap();
        a.wait_for_status(id, "success").await;
        let (_, timeline) = a.call("GET", &format!("/api/v1/jobs/{id}/events"), None).await;
        let starts = timeline.as_array().unwrap().iter().filter(|e| e["to"] == "running").count();
        assert_eq!(starts, 1, "job {id} started once: {timeline}");
        let (log, _) = a.log(id).await;
        assert_eq!(log.matches(&format!("\nrun-{id}")).count(), 1, "ran once:\n{log}");
    }
    a.stop().await;
    b.stop().await;
}
