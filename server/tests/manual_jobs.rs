//! `when: manual` over HTTP with a real runner: the job waits as `manual` (its pipeline
//! succeeds without it when it is optional), `POST /api/v1/jobs/{id}/play` starts it and
//! the runner runs it with the pipeline's variables; playing anything else is a 409, and
//! viewers may not play.

use usher_core::roles::Role;
use usher_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_job_waits_until_played_then_runs() {
    let t = TestServer::start(1).await;
    let yaml = "variables:\n  TARGET: staging\nbuild:\n  stage: build\n  script: [\"echo built\"]\ndeploy:\n  stage: deploy\n  when: manual\n  script: [\"echo deploying to $TARGET\"]\n";
    let pipeline = t.pipeline(yaml).await;
    let path = format!("/api/v1/pipelines/{}", pipeline["id"]);
    let (build, deploy) = (TestServer::job_id(&pipeline, "build"), TestServer::job_id(&pipeline, "deploy"));
    t.wait_for_status(build, "success").await;
    t.wait_for_status(deploy, "manual").await;
    let job = t.job(deploy).await;
    assert_eq!(
        (job["when"].as_str(), job["allow_failure"].as_bool()),
        (Some("manual"), Some(true)),
        "{job}"
    );
    // Nobody played it: an optional manual job leaves its pipeline a success.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.call("GET", &path, None).await.1["status"] != "success" {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline should succeed without the manual job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (status, body) = t.call("POST", &format!("/api/v1/jobs/{build}/play"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition")),
        "{body}"
    );
    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("viewer", Role::Viewer, None).await.unwrap();
    let viewer = engine.create_api_token("viewer").await.unwrap();
    let (status, _) = t.call_as(&viewer, "POST", &format!("/api/v1/jobs/{deploy}/play"), None).await;
    assert_eq!(status, 403);
    assert_eq!(t.job(deploy).await["status"], "manual", "a refused play changes nothing");

    let (status, played) = t.call("POST", &format!("/api/v1/jobs/{deploy}/play"), None).await;
    assert_eq!(status, 200, "{played}");
    assert!(
        ["pending", "running", "success"].contains(&played["status"].as_str().unwrap()),
        "{played}"
    );
    t.wait_for_status(deploy, "success").await;
    t.wait_for_log(deploy, "deploying to staging").await;
    assert_eq!(t.call("GET", &path, None).await.1["status"], "success");
    let (_, events) = t.call("GET", &format!("/api/v1/jobs/{deploy}/events"), None).await;
    let play = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "manual")
        .expect("the play is in the timeline");
    assert_eq!(
        (play["to"].as_str(), play["actor"].as_str()),
        (Some("pending"), Some("admin")),
        "{events}"
    );
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{deploy}/play"), None).await;
    assert_eq!(status, 409, "played once already");
    t.stop().await;
}
