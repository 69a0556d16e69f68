//! Two `usher serve` replicas on one PostgreSQL database: a cancel made through replica
//! A reaches a websocket subscriber and the runner connected to replica B.

use usher_testkit::harness::Needs;
use usher_testkit::*;

fn main() -> std::process::ExitCode {
    usher_testkit::harness::run(usher_testkit::tests![
        Needs::Postgres, 4 => [
            a_cancel_on_one_replica_reaches_the_other,
            replicas_never_hand_one_job_to_two_runners,
            output_written_through_one_replica_streams_from_the_other,
        ];
    ])
}

async fn a_cancel_on_one_replica_reaches_the_other() {
    let url = fresh_postgres().await;
    let a = TestServer::start_on(Some(url.clone()), 0).await;
    let b = TestServer::start_on(Some(url), 1).await;

    let mut events_on_b = b.events("").await;

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

    let seen = job_statuses_until(&mut events_on_b, job_id, "canceled").await;
    let tail: Vec<&str> = seen.iter().map(String::as_str).skip_while(|s| *s != "canceling").collect();
    assert_eq!(tail, ["canceling", "canceled"], "frames on B: {seen:?}");
    a.stop().await;
    b.stop().await;
}

async fn replicas_never_hand_one_job_to_two_runners() {
    let url = fresh_postgres().await;
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

async fn output_written_through_one_replica_streams_from_the_other() {
    let url = fresh_postgres().await;
    let a = TestServer::start_on(Some(url.clone()), 0).await;
    let b = TestServer::start_on(Some(url), 1).await;
    let pipeline = a
        .pipeline(&format!(
            "talk:\n  variables:\n    USHER_TEST_RUN: \"{}\"\n  script:\n    - sleep 1\n    - 'for i in $(seq 1 200); do echo \"line $i\"; done'\n    - head -c 20000 /dev/zero | tr '\\0' y\n",
            b.run_marker
        ))
        .await;
    let job = TestServer::job_id(&pipeline, "talk");
    // B's runner writes the log through B; the socket is on A.
    let mut on_a = a.events(&format!("job_id={job}")).await;
    let pieces = log_frames_until_done(&mut on_a, job, "success").await;
    let (log, _) = a.log(job).await;
    assert!(log.contains("line 200"));
    assert!(
        assert_pieces_tile(&pieces, &log) > 0,
        "small pieces carry their text through NOTIFY"
    );
    a.stop().await;
    b.stop().await;
}
