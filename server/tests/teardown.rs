//! A pipeline's teardown, end to end with a real server, a real local runner and real
//! bash: `provision` makes something, `test` uses it, and a graceful cancel during
//! `test` runs `destroy` (`when: on_cancel`) once `test` has ended — the pipeline
//! `canceling` on the event socket all the while, `canceled` at the end — while an
//! abort runs nothing of it.

use futures::StreamExt;
use serde_json::Value;
use usher_testkit::*;

fn config(shared: &str) -> String {
    format!(
        r#"
stages: [provision, test, cleanup]
provision:
  stage: provision
  script:
    - echo provisioned > {shared}/environment-$CI_PIPELINE_ID
test:
  stage: test
  cancel_grace: 5s
  script:
    - echo testing
    - sleep 300
destroy:
  stage: cleanup
  when: on_cancel
  script:
    - echo "destroying after $CI_PIPELINE_STATUS"
    - rm {shared}/environment-$CI_PIPELINE_ID
    - sleep 2
    - echo destroyed
report:
  stage: cleanup
  when: on_failure
  script: [echo never]
"#
    )
}

/// The next frame of the socket, as JSON.
async fn next_frame(events: &mut EventSocket) -> Value {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .expect("a frame within 30 s")
        .unwrap()
        .unwrap();
    serde_json::from_str(frame.to_text().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_test_runs_destroy_and_the_pipeline_stays_canceling_until_it_ends() {
    let shared = job_writable_dir();
    let t = TestServer::start(1).await;
    let pipeline = t.pipeline(&config(&shared.path().display().to_string())).await;
    let id = pipeline["id"].as_i64().unwrap();
    let (test, destroy, report) = (
        TestServer::job_id(&pipeline, "test"),
        TestServer::job_id(&pipeline, "destroy"),
        TestServer::job_id(&pipeline, "report"),
    );
    assert_eq!(t.job(destroy).await["when"], "on_cancel");
    t.wait_for_log(test, "testing").await;
    let environment = shared.path().join(format!("environment-{id}"));
    assert!(environment.exists(), "provision made its environment");
    let mut events = t.events(&format!("pipeline_id={id}")).await;

    let (status, answer) = t.call("POST", &format!("/api/v1/pipelines/{id}/cancel"), None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("canceling")), "{answer}");

    // Every frame until the pipeline's last: the pipeline is canceling whenever destroy
    // runs, and a second cancel while it runs is refused.
    let mut pipeline_status = String::new();
    let mut destroy_ran_while = Vec::new();
    let mut refused = None;
    while pipeline_status != "canceled" {
        let v = next_frame(&mut events).await;
        match v["type"].as_str() {
            Some("pipeline") => pipeline_status = v["pipeline"]["status"].as_str().unwrap().to_string(),
            Some("job") if v["job"]["id"] == destroy => {
                let s = v["job"]["status"].as_str().unwrap().to_string();
                destroy_ran_while.push((s.clone(), pipeline_status.clone()));
                if s == "running" {
                    refused = Some(t.call("POST", &format!("/api/v1/pipelines/{id}/cancel"), None).await);
                    let own = t.call("POST", &format!("/api/v1/jobs/{destroy}/cancel"), None).await;
                    assert_eq!(own.0, 409, "{}", own.1);
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        destroy_ran_while,
        [
            ("pending".into(), "canceling".into()),
            ("running".into(), "canceling".into()),
            ("success".into(), "canceling".into())
        ],
        "destroy's moves, each with the pipeline's status then"
    );
    let (status, body) = refused.expect("destroy ran");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition")),
        "{body}"
    );

    let (log, _) = t.log(destroy).await;
    assert!(log.contains("destroying after canceled") && log.contains("destroyed"), "{log}");
    assert!(!environment.exists(), "destroy removed what provision made");
    assert_eq!(t.job(test).await["status"], "canceled");
    assert_eq!(t.job(report).await["status"], "skipped");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_runs_no_teardown() {
    let shared = job_writable_dir();
    let t = TestServer::start(1).await;
    let pipeline = t.pipeline(&config(&shared.path().display().to_string())).await;
    let id = pipeline["id"].as_i64().unwrap();
    let (test, destroy) = (TestServer::job_id(&pipeline, "test"), TestServer::job_id(&pipeline, "destroy"));
    t.wait_for_log(test, "testing").await;
    let (status, answer) = t.call("POST", &format!("/api/v1/pipelines/{id}/abort"), None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("canceled")), "{answer}");
    assert_eq!(t.job(destroy).await["status"], "canceled");
    assert!(shared.path().join(format!("environment-{id}")).exists(), "nothing tore it down");
    t.stop().await;
}

/// A cancel during `provision`, half-way through writing its dotenv file: what it wrote
/// is handed over, and `destroy` (`when: on_cancel`) gets it. The log names the variable,
/// never its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_cancelled_half_way_hands_over_what_it_wrote() {
    let t = TestServer::start(1).await;
    let config = r#"
stages: [provision, test, cleanup]
provision:
  stage: provision
  script:
    - echo "ENV_ID=env-$CI_PIPELINE_ID-$(echo c2VjcmV0aXNo | base64 -d)" > provision.env
    - echo "not a line" >> provision.env
    - echo written
    - sleep 300
    - echo "LATER=never" >> provision.env
  artifacts:
    reports:
      dotenv: provision.env
test:
  stage: test
  script: [echo never]
destroy:
  stage: cleanup
  when: on_cancel
  script:
    - echo "destroying [$ENV_ID] later=[${LATER:-}]"
"#;
    let pipeline = t.pipeline(config).await;
    let id = pipeline["id"].as_i64().unwrap();
    let (provision, destroy) = (TestServer::job_id(&pipeline, "provision"), TestServer::job_id(&pipeline, "destroy"));
    t.wait_for_log(provision, "written").await;
    let (status, _) = t.call("POST", &format!("/api/v1/pipelines/{id}/cancel"), None).await;
    assert_eq!(status, 200);
    t.wait_for_status(destroy, "success").await;
    let (log, _) = t.log(destroy).await;
    assert!(log.contains(&format!("destroying [env-{id}-secretish] later=[]")), "{log}");
    let (provision_log, _) = t.log(provision).await;
    assert!(
        provision_log.contains("provision.env hands over 1 variable(s) to later jobs: ENV_ID"),
        "{provision_log}"
    );
    assert!(provision_log.contains("line 2: not `NAME=value`"), "{provision_log}");
    assert!(
        !provision_log.contains("secretish"),
        "the runner does not print the value: {provision_log}"
    );
    assert_eq!(t.job(provision).await["status"], "canceled");
    t.stop().await;
}

/// A dotenv "file" that is a link to root's secrets, or a FIFO, hands over nothing and
/// blocks nothing: it is read as artifacts are, with the job's rights, never through a
/// link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_report_cannot_read_through_a_link_or_hang_on_a_fifo() {
    let t = TestServer::start(1).await;
    let config = r#"
stages: [provision, test]
provision:
  stage: provision
  script:
    - ln -s /etc/shadow shadow.env
    - mkfifo fifo.env
  artifacts:
    reports:
      dotenv: [shadow.env, fifo.env]
test:
  stage: test
  script:
    - echo "shadow_lines=$(env | grep -c '^root:' || true)"
"#;
    let pipeline = t.pipeline(config).await;
    let (provision, test) = (TestServer::job_id(&pipeline, "provision"), TestServer::job_id(&pipeline, "test"));
    t.wait_for_status(test, "success").await;
    let (log, _) = t.log(provision).await;
    assert!(
        log.contains("dotenv: shadow.env is not read") && log.contains("dotenv: fifo.env is not read"),
        "{log}"
    );
    let (test_log, _) = t.log(test).await;
    assert_eq!(log_value(&test_log, "shadow_lines"), "0", "{test_log}");
    t.stop().await;
}

/// The receipt: null while the job runs; when it has ended, what ending it stopped (the
/// background process it left), after_script's outcome, and nothing left over. A job
/// cancelled before any runner took it gets the receipt of nothing having run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finished_job_has_a_teardown_receipt() {
    let t = TestServer::start(1).await;
    let config = r#"
stages: [work, later]
work:
  stage: work
  script:
    - setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - echo started
    - sleep 1
  after_script:
    - echo cleaning
later:
  stage: later
  script: [echo never]
"#;
    let pipeline = t.pipeline(config).await;
    let (work, later) = (TestServer::job_id(&pipeline, "work"), TestServer::job_id(&pipeline, "later"));
    t.wait_for_log(work, "started").await;
    assert!(t.job(work).await["teardown"].is_null(), "no receipt while it runs");
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{later}/cancel"), None).await;
    assert_eq!(status, 200);
    let never = t.job(later).await;
    assert_eq!(never["status"], "canceled");
    assert_eq!(never["teardown"]["after_script"], "skipped", "{never}");
    assert_eq!(never["teardown"]["processes_killed"], 0);

    t.wait_for_status(work, "success").await;
    let done = t.job(work).await;
    let receipt = &done["teardown"];
    assert!(
        receipt["processes_killed"].as_u64().unwrap() >= 1,
        "the background sleep: {receipt}"
    );
    assert_eq!(receipt["after_script"], "success", "{receipt}");
    assert_eq!(receipt["leftovers"], 0, "{receipt}");
    assert_eq!(receipt["docker_removed"]["containers"], 0, "{receipt}");
    let metrics = t
        .client
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("usher_teardown_leftovers_total 0"), "{metrics}");
    t.stop().await;
}

/// `usher-defer`: commands registered while the job runs run when it ends — here by a
/// graceful cancel — after after_script, last registered first, in the script's last
/// directory with its exported variables; the receipt lists each with its exit code. An
/// aborted job runs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_commands_run_last_first_after_after_script_and_not_on_abort() {
    let shared = job_writable_dir();
    let t = TestServer::start(1).await;
    let config = format!(
        r#"
deferring:
  script:
    - export ENV_NAME=env-$CI_JOB_ID
    - >-
      usher-defer 'echo "deferred first: $ENV_NAME in $(basename $PWD)"; touch {shared}/first-$CI_JOB_ID'
    - mkdir -p deep && cd deep
    - usher-defer echo deferred second
    - usher-defer false
    - echo registered
    - sleep 300
  after_script:
    - echo after_script ran
"#,
        shared = shared.path().display()
    );
    let pipeline = t.pipeline(&config).await;
    let job = TestServer::job_id(&pipeline, "deferring");
    t.wait_for_log(job, "registered").await;
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    assert_eq!(status, 200);
    let done = t.wait_for_status(job, "canceled").await;
    let (log, _) = t.log(job).await;
    let at = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"));
    assert!(at("after_script ran") < at("Running the deferred `false`"), "{log}");
    assert!(
        at("Running the deferred `false`") < at("\ndeferred second\n"),
        "last registered first:\n{log}"
    );
    assert!(
        at("\ndeferred second\n") < at(&format!("\ndeferred first: env-{job} in deep\n")),
        "{log}"
    );
    assert!(shared.path().join(format!("first-{job}")).exists());
    let deferred = done["teardown"]["deferred"].as_array().unwrap().clone();
    let codes: Vec<(String, i64)> = deferred
        .iter()
        .map(|d| (d["command"].as_str().unwrap().to_string(), d["exit_code"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(codes.len(), 3, "{done}");
    assert_eq!((codes[0].0.as_str(), codes[0].1), ("false", 1), "{codes:?}");
    assert_eq!((codes[1].0.as_str(), codes[1].1), ("echo deferred second", 0), "{codes:?}");
    assert_eq!(codes[2].1, 0, "{codes:?}");

    // Aborted: nothing deferred runs.
    let pipeline = t.pipeline(&config).await;
    let job = TestServer::job_id(&pipeline, "deferring");
    t.wait_for_log(job, "registered").await;
    t.call("POST", &format!("/api/v1/jobs/{job}/abort"), None).await;
    // The receipt of the kill comes after the job is canceled: what was stopped, and
    // that no after_script or deferred command ran.
    let mut receipt = Value::Null;
    for _ in 0..100 {
        receipt = t.job(job).await["teardown"].clone();
        if !receipt.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(receipt["after_script"], "skipped", "{receipt}");
    assert_eq!(receipt["deferred"], serde_json::json!([]), "{receipt}");
    assert_eq!(receipt["leftovers"], 0, "{receipt}");
    assert!(
        !shared.path().join(format!("first-{job}")).exists(),
        "an abort ran a deferred command"
    );
    t.stop().await;
}

/// Each command registered with `usher-defer` reaches the server at once — on the job
/// while it still runs, so it is known even if the runner's machine never comes back —
/// masked as the log is, and the receipt shows it masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_commands_are_on_the_job_as_they_are_registered_and_masked() {
    const SECRET: &str = "hunter2-is-not-a-password";
    let t = TestServer::start(1).await;
    let config = r#"
deferring:
  script:
    - 'if [ -z "$DEPLOY_TOKEN" ]; then exit 0; fi'
    - usher-defer echo one
    - usher-defer "echo token=$DEPLOY_TOKEN"
    - echo registered
    - sleep 300
"#;
    let first = t.pipeline(config).await;
    t.wait_for_status(TestServer::job_id(&first, "deferring"), "success").await;
    let project = first["project_id"].as_i64().unwrap();
    let variable = serde_json::json!({"key": "DEPLOY_TOKEN", "value": SECRET, "masked": true});
    let (status, _) = t
        .call("POST", &format!("/api/v1/projects/{project}/variables"), Some(variable))
        .await;
    assert_eq!(status, 201);
    let (status, pipeline) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{project}/pipelines"),
            Some(serde_json::json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    let job = TestServer::job_id(&pipeline, "deferring");
    t.wait_for_log(job, "registered").await;
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = t.job(job).await;
        if seen["deferred"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen["status"], "running", "{seen}");
    assert_eq!(seen["deferred"], serde_json::json!(["echo one", "echo token=[MASKED]"]), "{seen}");

    t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    let done = t.wait_for_status(job, "canceled").await;
    let commands: Vec<&str> = done["teardown"]["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["echo token=[MASKED]", "echo one"], "{done}");
    let (log, _) = t.log(job).await;
    for (what, text) in [("the job", done.to_string()), ("the log", log)] {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    }
    assert!(t.log(job).await.0.contains("\ntoken=[MASKED]\n"), "the command ran with the value");
}
