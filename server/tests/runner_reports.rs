//! What a runner may tell the server about a job's teardown, tried as an attacker with a
//! runner token of their own would: a `deferred` registration or a `recovered` receipt
//! for a job another runner holds is refused and changes nothing; the holder's
//! registrations are kept (at most 100), and a later run of the same runner (same token,
//! new id) may end its predecessor's job with the recovered receipt.

use serde_json::{Value, json};
use usher_testkit::runner_socket::{connect, next_of, send};
use usher_testkit::*;

fn receipt(command: &str) -> Value {
    json!({"processes_killed": 0, "docker_removed": {"containers": 0, "networks": 0, "volumes": 0},
        "after_script": "skipped", "deferred": [{"command": command, "exit_code": 0, "duration_ms": 5}], "leftovers": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holding_runner_registers_and_only_its_token_recovers() {
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let (holder_token, other_token) = (
        engine.create_runner_token().await.unwrap(),
        engine.create_runner_token().await.unwrap(),
    );
    let pipeline = t.pipeline("a:\n  script: [sleep 300]\n").await;
    let job = TestServer::job_id(&pipeline, "a");
    let mut holder = connect(&t, &holder_token, "holder").await;
    send(&mut holder, json!({"type": "request_job"})).await;
    assert_eq!(next_of(&mut holder, "job").await["job"]["job_id"], job);
    t.wait_for_status(job, "running").await;

    // Another runner, with a token of its own.
    let mut other = connect(&t, &other_token, "other").await;
    send(
        &mut other,
        json!({"type": "deferred", "job_id": job, "index": 0, "command": "planted"}),
    )
    .await;
    next_of(&mut other, "error").await;
    send(
        &mut other,
        json!({"type": "recovered", "job_id": job, "teardown": receipt("forged")}),
    )
    .await;
    let refused = next_of(&mut other, "error").await;
    assert!(
        refused["message"].as_str().unwrap().contains("not run by a runner with this token"),
        "{refused}"
    );
    let seen = t.job(job).await;
    assert_eq!(
        (seen["status"].as_str(), seen["deferred"].clone(), seen["teardown"].clone()),
        (Some("running"), json!([]), Value::Null),
        "{seen}"
    );

    // The holder's registrations are kept, in order, each once (a frame sent again after
    // a reconnect counts once), up to 100.
    for n in 0..101 {
        let frame = json!({"type": "deferred", "job_id": job, "index": n, "command": format!("cleanup {n}")});
        send(&mut holder, frame.clone()).await;
        if n == 1 {
            send(&mut holder, frame).await;
        }
    }
    next_of(&mut holder, "error").await; // the 101st
    send(
        &mut holder,
        json!({"type": "deferred", "job_id": job, "index": 150, "command": "a gap"}),
    )
    .await;
    next_of(&mut holder, "error").await;
    let seen = t.job(job).await;
    let kept = seen["deferred"].as_array().unwrap();
    assert_eq!(
        (kept.len(), kept[1].as_str(), kept[99].as_str()),
        (100, Some("cleanup 1"), Some("cleanup 99"))
    );

    // While the holder is connected, not even its own token may report the job recovered.
    let mut same_token = connect(&t, &holder_token, "holder").await;
    send(
        &mut same_token,
        json!({"type": "recovered", "job_id": job, "teardown": receipt("x")}),
    )
    .await;
    let refused = next_of(&mut same_token, "error").await;
    assert!(refused["message"].as_str().unwrap().contains("is connected"), "{refused}");
    drop(same_token);

    // A later run of the holder (same token, new id) ends the job with its receipt, the
    // commands masked by the server (the restarted runner no longer knows the values).
    let project = pipeline["project_id"].as_i64().unwrap();
    let variable = json!({"key": "DEPLOY_TOKEN", "value": "hunter2-is-not-a-password", "masked": true});
    assert_eq!(
        t.call("POST", &format!("/api/v1/projects/{project}/variables"), Some(variable))
            .await
            .0,
        201
    );
    drop(holder);
    let mut restarted = connect(&t, &holder_token, "holder").await;
    let recovered = json!({"type": "recovered", "job_id": job, "teardown": receipt("destroy --token hunter2-is-not-a-password")});
    let mut seen = Value::Null;
    // The server notices the closed connection in a moment.
    for _ in 0..100 {
        send(&mut restarted, recovered.clone()).await;
        seen = t.job(job).await;
        if !seen["teardown"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (seen["status"].as_str(), seen["failure_reason"].as_str()),
        (Some("failed"), Some("runner_lost")),
        "{seen}"
    );
    assert_eq!(seen["teardown"]["deferred"][0]["command"], "destroy --token [MASKED]", "{seen}");
    t.stop().await;
}
