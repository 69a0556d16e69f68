//! The event websocket: filters as docs/api.md says, credentials required, and a subscriber
//! that stops reading is closed with a reason instead of being buffered without bound.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use usher_testkit::*;

/// Text frames until `quiet` passes without one.
async fn frames_until_quiet(ws: &mut EventSocket, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_the_frames_a_client_asked_for() {
    let t = TestServer::start(0).await;
    let first = t.pipeline("a:\n  script: [x]\nb:\n  script: [x]\n").await;
    let second = t.pipeline("c:\n  script: [x]\n").await;
    let (a, b) = (TestServer::job_id(&first, "a"), TestServer::job_id(&first, "b"));
    let c = TestServer::job_id(&second, "c");
    let mut by_job = t.events(&format!("job_id={a}")).await;
    let mut by_pipeline = t.events(&format!("pipeline_id={}", first["id"])).await;
    let mut by_project = t.events(&format!("project_id={}", second["project_id"])).await;
    let mut everything = t.events("").await;
    for job in [a, b, c] {
        let (status, _) = t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
        assert_eq!(status, 200);
    }
    let quiet = Duration::from_millis(500);
    let jobs_of = |frames: &[Value]| -> Vec<i64> {
        let mut ids: Vec<i64> = frames
            .iter()
            .filter(|f| f["type"] == "job")
            .map(|f| f["job"]["id"].as_i64().unwrap())
            .collect();
        ids.dedup();
        ids
    };
    let pipelines_of = |frames: &[Value]| -> Vec<i64> {
        let mut ids: Vec<i64> = frames
            .iter()
            .filter(|f| f["type"] == "pipeline")
            .map(|f| f["pipeline"]["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let f = frames_until_quiet(&mut by_job, quiet).await;
    assert_eq!(jobs_of(&f), [a], "job_id: only that job's frames");
    assert!(pipelines_of(&f).is_empty(), "job_id: no pipeline frames");
    assert_eq!(f.last().unwrap()["job"]["status"], "canceled");
    let f = frames_until_quiet(&mut by_pipeline, quiet).await;
    assert_eq!(jobs_of(&f), [a, b]);
    assert_eq!(pipelines_of(&f), [first["id"].as_i64().unwrap()]);
    let f = frames_until_quiet(&mut by_project, quiet).await;
    assert_eq!(jobs_of(&f), [c]);
    assert_eq!(pipelines_of(&f), [second["id"].as_i64().unwrap()]);
    let f = frames_until_quiet(&mut everything, quiet).await;
    assert_eq!(jobs_of(&f), [a, b, c]);

    // Without credentials there is no socket, and the refusal has the API's shape.
    let resp = t.client.get(format!("{}/api/v1/events", t.base)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_with_a_reason() {
    let t = TestServer::start(0).await;
    let pipeline = t.pipeline("a:\n  script: [x]\n").await;
    let job: usher_core::api::Job = serde_json::from_value(t.job(TestServer::job_id(&pipeline, "a")).await).unwrap();
    let mut slow = t.events("").await;
    // Far more events than the bus keeps (4,096) while the client reads nothing.
    let bus = t.server.as_ref().unwrap().engine.bus().clone();
    const SENT: usize = 30_000;
    for _ in 0..SENT {
        bus.publish(usher_engine::BusEvent::Job(job.clone()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = 0;
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("a frame or the close")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert!(reason.starts_with("too slow: missed"), "close reason: {reason}");
    assert!(
        received < SENT,
        "the server did not keep everything for the slow client ({received} frames)"
    );
    // A fresh subscriber is served as usual.
    let mut fresh = t.events("").await;
    bus.publish(usher_engine::BusEvent::Job(job.clone()));
    let f = frames_until_quiet(&mut fresh, Duration::from_millis(300)).await;
    assert_eq!(f.len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_watching_a_job_gets_its_output_in_order_and_others_do_not() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("talk:\n  script:\n    - sleep 1\n    - 'for i in $(seq 1 300); do echo \"line $i\"; [ $((i % 50)) = 0 ] && sleep 0.05; done'\n    - head -c 100000 /dev/zero | tr '\\0' x\n")
        .await;
    let job = TestServer::job_id(&pipeline, "talk");
    let mut by_job = t.events(&format!("job_id={job}")).await;
    let mut by_project = t.events(&format!("project_id={}", pipeline["project_id"])).await;
    let pieces = log_frames_until_done(&mut by_job, job, "success").await;
    let (log, complete) = t.log(job).await;
    assert!(complete && log.contains("line 300"));
    let with_text = assert_pieces_tile(&pieces, &log);
    assert!(with_text > 0, "pieces carry their text: {pieces:?}");
    let others = frames_until_quiet(&mut by_project, Duration::from_millis(300)).await;
    assert!(
        others.iter().all(|f| f["type"] != "log"),
        "log frames only go to sockets watching the job"
    );
    t.stop().await;
}
