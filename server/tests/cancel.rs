//! The walking skeleton's promise, end to end with a real server, a real local runner
//! and real bash: a cancelled job's after_script runs where the script stopped, with the
//! script's variables, and cleans up; an abort kills everything and runs nothing.

use serde_json::Value;
use usher_testkit::*;

/// A job that starts a detached "service" and a temp dir, `cd`s into a subdirectory,
/// and sleeps; after_script reports what it sees and tears both down.
const RESOURCEFUL_JOB: &str = r#"
stages: [test]
sleeper:
  stage: test
  cancel_grace: 5s
  script:
    - mkdir -p work/sub
    - export RES_DIR=$(mktemp -d)
    - setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - export BG_PID=$!
    - echo "bg=$BG_PID res=$RES_DIR"
    - cd work/sub
    - echo ready
    - sleep 1000
  after_script:
    - echo "after_cwd=$(pwd)"
    - echo "after_status=$CI_JOB_STATUS"
    - kill "$BG_PID" && echo "after_killed=$BG_PID"
    - rm -rf "$RES_DIR" && echo "after_removed=$RES_DIR"
    - touch "$MARKER"
"#;

fn with_marker(config: &str, marker: &std::path::Path) -> String {
    config.replace(
        "  stage: test\n",
        &format!("  stage: test\n  variables:\n    MARKER: \"{}\"\n", marker.display()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_cancel_runs_after_script_in_the_scripts_state() {
    let t = TestServer::start(1).await;
    let shared = job_writable_dir();
    let marker = shared.path().join("after-script-ran");
    let pipeline = t.pipeline(&with_marker(RESOURCEFUL_JOB, &marker)).await;
    let job_id = TestServer::job_id(&pipeline, "sleeper");

    // Watch the event websocket as an API client would.
    let mut events = t.events(&format!("job_id={job_id}")).await;

    let log = t.wait_for_log(job_id, "ready").await;
    let bg_pid: i32 = log_value(&log, "bg").parse().unwrap();
    let res_dir = log_value(&log, "res");
    assert!(is_alive(bg_pid), "the script's detached process runs");
    assert!(path_exists(&res_dir), "the script's temp dir exists");

    let (status, answer) = t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "canceling", "the API answers canceling at once: {answer}");
    assert_eq!(answer["cancel"]["mode"], "graceful");
    assert_eq!(answer["cancel"]["requested_by"], "admin");

    let job = t.wait_for_status(job_id, "canceled").await;
    let (log, complete) = t.log(job_id).await;
    assert!(complete, "a canceled job's log is complete");
    let expected_cwd = t.builds_dir().join(format!("job-{job_id}")).join("work/sub");
    assert_eq!(
        log_value(&log, "after_cwd"),
        expected_cwd.display().to_string(),
        "after_script starts where the script was:\n{log}"
    );
    assert_eq!(log_value(&log, "after_status"), "canceled");
    assert_eq!(
        log_value(&log, "after_killed"),
        bg_pid.to_string(),
        "after_script saw BG_PID and killed a live process"
    );
    assert_eq!(log_value(&log, "after_removed"), res_dir);
    assert!(marker.exists(), "after_script ran to its end");
    assert!(
        dies_within(bg_pid, std::time::Duration::from_secs(10)).await,
        "the detached process is gone"
    );
    assert!(!path_exists(&res_dir), "the temp dir is gone");
    assert_eq!(
        wait_until_gone(job_id, &t.run_marker).await,
        Vec::<i32>::new(),
        "no process of the job survives"
    );

    assert_eq!(job["cancel"]["reason"], "user");
    assert_eq!(job["failure_reason"], Value::Null, "a canceled job did not fail: {job}");
    assert_eq!(job["after_script"]["exit_code"], 0, "{job}");
    assert_eq!(job["after_script"]["timed_out"], false);
    assert!(job["finished_at"].is_string());

    let (_, timeline) = t.call("GET", &format!("/api/v1/jobs/{job_id}/events"), None).await;
    let moves: Vec<String> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(moves, ["created", "pending", "running", "canceling", "canceled"], "{timeline}");
    assert_eq!(timeline[3]["actor"], "admin");
    assert_eq!(timeline[3]["mode"], "graceful");

    // The websocket saw canceling, then canceled, for this job.
    let seen = job_statuses_until(&mut events, job_id, "canceled").await;
    let from_canceling: Vec<&str> = seen.iter().map(String::as_str).skip_while(|s| *s != "canceling").collect();
    assert_eq!(from_canceling, ["canceling", "canceled"], "frames: {seen:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_kills_everything_and_runs_no_after_script() {
    let t = TestServer::start(1).await;
    let shared = job_writable_dir();
    let marker = shared.path().join("after-script-ran");
    let pipeline = t.pipeline(&with_marker(RESOURCEFUL_JOB, &marker)).await;
    let job_id = TestServer::job_id(&pipeline, "sleeper");
    let log = t.wait_for_log(job_id, "ready").await;
    let bg_pid: i32 = log_value(&log, "bg").parse().unwrap();
    assert!(is_alive(bg_pid));

    let (status, answer) = t.call("POST", &format!("/api/v1/jobs/{job_id}/abort"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "canceled", "abort is immediate: {answer}");
    assert_eq!(answer["cancel"]["mode"], "abort");

    assert_eq!(
        wait_until_gone(job_id, &t.run_marker).await,
        Vec::<i32>::new(),
        "every process of the job is killed"
    );
    assert!(
        dies_within(bg_pid, std::time::Duration::from_secs(10)).await,
        "even the one that left the process group"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!marker.exists(), "after_script did not run");
    assert!(!t.log(job_id).await.0.contains("after_cwd="));
    let job = t.job(job_id).await;
    assert_eq!(job["after_script"], Value::Null);

    // Repeating it changes nothing.
    let (status, again) = t.call("POST", &format!("/api/v1/jobs/{job_id}/abort"), None).await;
    assert_eq!((status, &again["status"]), (200, &Value::from("canceled")));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_jobs_cancel_at_once_and_finished_ones_refuse() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline(
            r#"
stages: [test, deploy]
busy:
  stage: test
  script: [echo started, sleep 1000]
queued:
  stage: test
  script: [echo never]
later:
  stage: deploy
  script: [echo never]
"#,
        )
        .await;
    let busy = TestServer::job_id(&pipeline, "busy");
    let queued = TestServer::job_id(&pipeline, "queued");
    let later = TestServer::job_id(&pipeline, "later");
    t.wait_for_log(busy, "started").await;
    // One runner, busy: `queued` waits as pending, `later` as created.
    assert_eq!(t.job(queued).await["status"], "pending");
    assert_eq!(t.job(later).await["status"], "created");

    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{queued}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceled")), "{job}");
    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{later}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceled")), "{job}");

    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{busy}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceling")));
    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{busy}/cancel"), None).await;
    assert_eq!(status, 200, "a repeated cancel is not an error: {job}");
    assert!(matches!(job["status"].as_str(), Some("canceling" | "canceled")));
    t.wait_for_status(busy, "canceled").await;
    let (_, p) = t.call("GET", &format!("/api/v1/pipelines/{}", pipeline["id"]), None).await;
    assert_eq!(p["status"], "canceled", "{p}");

    // A finished job refuses both, naming its status.
    let quick = t.pipeline("quick:\n  script: [\"true\"]\n").await;
    let quick_id = TestServer::job_id(&quick, "quick");
    t.wait_for_status(quick_id, "success").await;
    for action in ["cancel", "abort"] {
        let (status, body) = t.call("POST", &format!("/api/v1/jobs/{quick_id}/{action}"), None).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "invalid_transition");
        assert!(body["error"]["message"].as_str().unwrap().contains("success"), "{body}");
    }
    let (status, body) = t.call("POST", &format!("/api/v1/pipelines/{}/cancel", quick["id"]), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("invalid_transition")));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_errors_have_the_contract_shape() {
    let t = TestServer::start(0).await;
    let (status, body) = t.call_as("wrong-token", "GET", "/api/v1/projects", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = t.call("GET", "/api/v1/jobs/999999", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    // Found by the API fuzzer: cancelling a job that does not exist was a 500.
    for verb in ["cancel", "abort"] {
        let (status, body) = t.call("POST", &format!("/api/v1/jobs/999999/{verb}"), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{verb}: {body}");
    }
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(serde_json::json!({"name": "x", "ci_config": "job:\n  script: [a]\n  scirpt: [b]\n"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 3"), "{body}");
    let resp = t
        .client
        .post(format!("{}/api/v1/projects", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let huge = "x".repeat(2 * 1024 * 1024);
    let resp = t
        .client
        .post(format!("{}/api/v1/projects", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "big", "ci_config": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_job_fails_but_still_cleans_up() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline(
            "slow:\n  timeout: 2s\n  cancel_grace: 1s\n  script: [\"trap 'echo ignoring TERM' TERM\", \"cd /tmp\", \"echo ready\", \"while true; do sleep 0.2; done\"]\n  after_script: [\"echo after_status=$CI_JOB_STATUS after_cwd=$(pwd)\"]\n",
        )
        .await;
    let job_id = TestServer::job_id(&pipeline, "slow");
    let job = t.wait_for_status(job_id, "failed").await;
    assert_eq!(job["failure_reason"], "timeout", "{job}");
    assert_eq!(job["after_script"]["exit_code"], 0, "{job}");
    let (log, _) = t.log(job_id).await;
    assert!(log.contains("ignoring TERM"), "the script got SIGTERM first:\n{log}");
    assert_eq!(log_value(&log, "after_status"), "failed");
    assert_eq!(log_value(&log, "after_cwd"), "/tmp", "after_script starts where the script was");
    assert_eq!(
        wait_until_gone(job_id, &t.run_marker).await,
        Vec::<i32>::new(),
        "the TERM-ignoring script was killed"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_during_after_script_kills_the_cleanup_too() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("stuck_cleanup:\n  script: [echo ready, sleep 1000]\n  after_script: [echo cleaning, sleep 1000]\n")
        .await;
    let job_id = TestServer::job_id(&pipeline, "stuck_cleanup");
    t.wait_for_log(job_id, "ready").await;
    t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    t.wait_for_log(job_id, "\ncleaning").await;
    assert_eq!(t.job(job_id).await["status"], "canceling");
    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{job_id}/abort"), None).await;
    assert_eq!(
        (status, job["status"].as_str(), job["cancel"]["mode"].as_str()),
        (200, Some("canceled"), Some("abort")),
        "{job}"
    );
    assert_eq!(
        wait_until_gone(job_id, &t.run_marker).await,
        Vec::<i32>::new(),
        "after_script's processes are killed too"
    );
    assert_eq!(
        t.job(job_id).await["after_script"],
        Value::Null,
        "an aborted cleanup reports nothing"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_after_script_past_its_timeout_is_killed_and_reported() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("slow_cleanup:\n  after_script_timeout: 1s\n  script: [echo ready, sleep 1000]\n  after_script: [sleep 1000]\n")
        .await;
    let job_id = TestServer::job_id(&pipeline, "slow_cleanup");
    t.wait_for_log(job_id, "ready").await;
    t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    let job = t.wait_for_status(job_id, "canceled").await;
    assert_eq!(job["after_script"]["timed_out"], true, "{job}");
    assert!(job["after_script"]["duration_ms"].as_u64().unwrap() >= 1000, "{job}");
    assert!(t.log(job_id).await.0.contains("after_script timed out"));
    assert_eq!(wait_until_gone(job_id, &t.run_marker).await, Vec::<i32>::new());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_removes_stale_build_directories() {
    // What a crashed run leaves behind: a job directory and its state directory.
    let data_dir = tempfile::tempdir().unwrap();
    let builds = data_dir.path().join("builds").join("local-1");
    std::fs::create_dir_all(builds.join("job-999/work")).unwrap();
    std::fs::create_dir_all(builds.join("job-999.usher")).unwrap();
    std::fs::write(builds.join("keep.txt"), "not ours").unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        local_runners: 1,
        admin_token: Some(ADMIN_TOKEN.into()),
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while builds.join("job-999").exists() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !builds.join("job-999").exists() && !builds.join("job-999.usher").exists(),
        "stale job directories removed"
    );
    assert!(builds.join("keep.txt").exists(), "nothing else touched");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_log_is_cut_at_its_limit_with_a_note() {
    let settings = usher_engine::Settings {
        max_log_bytes: 2000,
        ..Default::default()
    };
    let t = TestServer::start_with(None, 1, settings).await;
    let pipeline = t
        .pipeline("flood:\n  script: [\"for i in $(seq 1 2000); do echo line-$i-ñ; done\", \"echo finished\"]\n")
        .await;
    let job_id = TestServer::job_id(&pipeline, "flood");
    let job = t.wait_for_status(job_id, "success").await;
    assert_eq!(job["exit_code"], 0, "the job itself is not harmed: {job}");
    let (log, complete) = t.log(job_id).await;
    assert!(complete);
    assert!(log.len() < 2200, "kept {} bytes", log.len());
    assert!(log.contains("The log reached its limit of 2000 bytes"), "{log}");
    assert!(!log.contains("line-2000-"), "nothing after the cut is kept");
    t.stop().await;
}

/// A cancel may say why: the words are kept with the pipeline's cancel and each job's,
/// and end the jobs' timeline entries; words too long, with control characters, or a
/// body of another shape are refused with 400 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_keeps_the_words_it_was_given() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("busy:\n  script: [echo started, sleep 1000]\nqueued:\n  script: [echo never]\n")
        .await;
    let path = format!("/api/v1/pipelines/{}/cancel", pipeline["id"]);
    let (busy, queued) = (TestServer::job_id(&pipeline, "busy"), TestServer::job_id(&pipeline, "queued"));
    t.wait_for_log(busy, "started").await;
    let refused = [
        serde_json::json!({"message": "x".repeat(501)}),
        serde_json::json!({"message": "line one\nline two"}),
        serde_json::json!({"message": "\u{1b}[31mred"}),
        serde_json::json!({"reason": "not a field"}),
    ];
    for body in refused {
        let (status, answer) = t.call("POST", &path, Some(body.clone())).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{body}: {answer}"
        );
    }
    assert_eq!(t.job(queued).await["status"], "pending", "a refused cancel changes nothing");

    let words = "the deploy window closed — “retry tomorrow”";
    let (status, p) = t.call("POST", &path, Some(serde_json::json!({"message": words}))).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["cancel"]["message"], words, "{p}");
    for job in [busy, queued] {
        let j = t.job(job).await;
        assert_eq!(j["cancel"]["message"], words, "{j}");
        let (_, events) = t.call("GET", &format!("/api/v1/jobs/{job}/events"), None).await;
        let last = events.as_array().unwrap().last().cloned().unwrap();
        assert!(last["detail"].as_str().unwrap_or_default().ends_with(words), "{events}");
    }
    t.wait_for_status(busy, "canceled").await;
    assert_eq!(t.job(busy).await["cancel"]["message"], words, "the runner's report keeps the words");
    let log = t.wait_for_log(busy, "Cancel requested by").await;
    assert!(
        log.contains(&format!("Cancel requested by admin (pipeline): “{words}”")),
        "the cancel line says who and why: {log}"
    );
    t.stop().await;
}
