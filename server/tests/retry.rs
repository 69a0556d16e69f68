//! Retry: a finished job gets a new attempt that runs (the old one is kept, marked
//! retried, and no longer decides the pipeline's status); a pipeline's failed and
//! canceled jobs, and the ones skipped because of them, get new attempts; what is not
//! finished, or was retried already, is refused with 409; viewers may not retry.

use serde_json::Value;
use usher_core::roles::Role;
use usher_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_is_retried_and_its_new_attempt_runs() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("work:\n  script: [\"echo attempt of $CI_JOB_ID\", \"sleep 300\"]\n")
        .await;
    let first = TestServer::job_id(&pipeline, "work");
    let pipeline_path = format!("/api/v1/pipelines/{}", pipeline["id"]);

    // Not finished yet: 409.
    t.wait_for_log(first, "attempt of").await;
    let (status, body) = t.call("POST", &format!("/api/v1/jobs/{first}/retry"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition")),
        "{body}"
    );
    t.call("POST", &format!("/api/v1/jobs/{first}/cancel"), None).await;
    t.wait_for_status(first, "canceled").await;
    assert_eq!(t.call("GET", &pipeline_path, None).await.1["status"], "canceled");

    let (status, attempt) = t.call("POST", &format!("/api/v1/jobs/{first}/retry"), None).await;
    assert_eq!(status, 201, "{attempt}");
    let second = attempt["id"].as_i64().unwrap();
    assert_eq!(attempt["retry_of"], first);
    assert_eq!(attempt["name"], "work");
    let old = t.job(first).await;
    assert_eq!(
        (old["status"].as_str(), old["retried"].as_bool()),
        (Some("canceled"), Some(true)),
        "{old}"
    );
    t.wait_for_log(second, &format!("attempt of {second}")).await;
    // The pipeline follows the newest attempt.
    assert_eq!(t.call("GET", &pipeline_path, None).await.1["status"], "running");
    let (_, events) = t.call("GET", &format!("/api/v1/jobs/{second}/events"), None).await;
    assert_eq!(events[0]["detail"], format!("retry of job #{first}"), "{events}");

    // Retried already: 409.
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{first}/retry"), None).await;
    assert_eq!(status, 409);
    // Viewers may not retry.
    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("viewer", Role::Viewer, None).await.unwrap();
    let viewer = engine.create_api_token("viewer").await.unwrap();
    t.call("POST", &format!("/api/v1/jobs/{second}/abort"), None).await;
    let (status, _) = t.call_as(&viewer, "POST", &format!("/api/v1/jobs/{second}/retry"), None).await;
    assert_eq!(status, 403);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_retry_runs_the_failed_job_and_what_it_held_up() {
    let t = TestServer::start(1).await;
    let shared = job_writable_dir();
    let flag = shared.path().join("second-time");
    // `build` fails the first time only; `deploy` (next stage) is skipped then.
    let yaml = format!(
        "stages: [build, deploy]\nbuild:\n  stage: build\n  script: [\"if [ -e {0} ]; then echo fixed; else touch {0}; exit 3; fi\"]\nlint:\n  stage: build\n  script: [\"true\"]\ndeploy:\n  stage: deploy\n  script: [\"echo deployed\"]\n",
        flag.display()
    );
    let pipeline = t.pipeline(&yaml).await;
    let path = format!("/api/v1/pipelines/{}", pipeline["id"]);
    let build = TestServer::job_id(&pipeline, "build");
    t.wait_for_status(build, "failed").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.call("GET", &path, None).await.1["status"] != "failed" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (status, retried) = t.call("POST", &format!("{path}/retry"), None).await;
    assert_eq!(status, 200, "{retried}");
    let jobs = retried["jobs"].as_array().unwrap();
    let newest = |name: &str| -> Value { jobs.iter().rfind(|j| j["name"] == name && j["retried"] == false).cloned().unwrap() };
    assert_eq!(jobs.len(), 5, "two new attempts (build, deploy) beside three first ones: {retried}");
    assert_eq!(newest("lint")["retry_of"], Value::Null, "a successful job is not retried");
    let new_deploy = newest("deploy")["id"].as_i64().unwrap();
    t.wait_for_status(new_deploy, "success").await;
    assert!(t.log(new_deploy).await.0.contains("deployed"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.call("GET", &path, None).await.1["status"] != "success" {
        assert!(std::time::Instant::now() < deadline, "the pipeline follows its newest attempts");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing failed any more: 409.
    let (status, body) = t.call("POST", &format!("{path}/retry"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition")),
        "{body}"
    );
    t.stop().await;
}
