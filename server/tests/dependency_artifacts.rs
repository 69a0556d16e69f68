//! Artifacts flow to later jobs, with GitLab's meaning and a real runner: a job finds the
//! files of the jobs before it in its build directory (of earlier stages, or of `needs`,
//! limited by `dependencies` and `needs: artifacts: false`), owned by its own user. And
//! the boundary, tried as an attacker would: a checkout that plants a link where an
//! artifact goes gets nothing written through it (the job fails instead), and a runner
//! token may fetch only the artifacts of the jobs its held job depends on, only while it
//! holds that job.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use usher_testkit::git::GitRepo;
use usher_testkit::runner_socket::{connect, next_of, send};
use usher_testkit::*;

const PIPELINE: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script:
    - mkdir -p dist/sub
    - echo "built-by-$CI_JOB_ID" > dist/sub/app.txt
  artifacts:
    paths: [dist/]
report:
  stage: build
  script: [echo report-body > report.txt]
  artifacts:
    paths: [report.txt]
test:
  stage: test
  script:
    - cat dist/sub/app.txt
    - echo "owner=$(stat -c %U dist/sub/app.txt) me=$(id -un)"
    - echo "report=$(cat report.txt)"
lint:
  stage: test
  dependencies: [report]
  script:
    - echo "lint_dist=$(test -e dist && echo yes || echo no)"
    - echo "lint_report=$(cat report.txt)"
package:
  stage: deploy
  needs: [{job: build}, {job: report, artifacts: false}]
  script:
    - echo "package_dist=$(cat dist/sub/app.txt)"
    - echo "package_report=$(test -e report.txt && echo yes || echo no)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_jobs_start_with_the_artifacts_of_the_jobs_they_depend_on() {
    let t = TestServer::start(2).await;
    let pipeline = t.pipeline(PIPELINE).await;
    let id = |name| TestServer::job_id(&pipeline, name);
    let (build, test, lint, package) = (id("build"), id("test"), id("lint"), id("package"));
    for job in [test, lint, package] {
        t.wait_for_status(job, "success").await;
    }
    let log = t.wait_for_log(test, "report=").await;
    assert!(log.contains(&format!("built-by-{build}")), "{log}");
    assert!(
        log.contains(&format!("Downloading the artifacts of build (job #{build}): 1 file(s)")),
        "{log}"
    );
    assert_eq!(log_value(&log, "report"), "report-body");
    let (owner, me) = (log_value(&log, "owner"), log_value(&log, "me"));
    assert_eq!(owner, me, "the files are the job user's: {log}");

    let log = t.wait_for_log(lint, "lint_report=").await;
    assert_eq!(
        (log_value(&log, "lint_dist").as_str(), log_value(&log, "lint_report").as_str()),
        ("no", "report-body"),
        "`dependencies: [report]` takes report's only: {log}"
    );
    let log = t.wait_for_log(package, "package_report=").await;
    assert_eq!(log_value(&log, "package_dist"), format!("built-by-{build}"));
    assert_eq!(log_value(&log, "package_report"), "no", "`artifacts: false` takes nothing: {log}");
    t.stop().await;
}

/// The checkout plants `out` → a directory only root may write; the earlier job uploaded
/// `out/authorized_keys`. Root must not write it through the link: the job fails
/// before its scripts run, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_the_checkout_gets_no_artifact_written_through_it() {
    let secret = tempfile::tempdir().unwrap();
    std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let repo = GitRepo::new();
    let config = r#"
stages: [build, test]
build:
  stage: build
  script: ["rm out", "mkdir out", "echo ssh-ed25519 AAAA attacker > out/authorized_keys"]
  artifacts:
    paths: [out/]
use:
  stage: test
  script: ["echo the script ran"]
"#;
    repo.commit("main", &[(".usher-ci.yml", config.as_bytes())], "ci");
    repo.link("main", "out", secret.path(), "plant a link");
    let t = TestServer::start(1).await;
    let pipeline = t.repository_pipeline("links", &repo.path().display().to_string()).await;
    let (build, user) = (TestServer::job_id(&pipeline, "build"), TestServer::job_id(&pipeline, "use"));
    t.wait_for_status(build, "success").await;
    let job = t.wait_for_status(user, "failed").await;
    assert_eq!(job["failure_reason"], "missing_dependency_failure", "{job}");
    let log = t.wait_for_log(user, "could not be put in place").await;
    assert!(log.contains("symbolic link"), "{log}");
    assert!(!log.contains("the script ran"), "{log}");
    assert!(
        !secret.path().join("authorized_keys").exists(),
        "root wrote through the planted link"
    );
    t.stop().await;
}

/// A runner token of one's own: only the holder of a job gets its dependencies'
/// artifacts, only those, and only while it holds the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_fetches_and_only_what_its_job_depends_on() {
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let (token, other_token) = (
        engine.create_runner_token().await.unwrap(),
        engine.create_runner_token().await.unwrap(),
    );
    let yaml = "stages: [build, test]\nbuild:\n  stage: build\n  script: [x]\n  artifacts: {paths: [a.txt]}\nprivate:\n  stage: build\n  script: [x]\n  artifacts: {paths: [secret.txt]}\nuse:\n  stage: test\n  dependencies: [build]\n  script: [y]\n";
    let pipeline = t.pipeline(yaml).await;
    let id = |name| TestServer::job_id(&pipeline, name);
    let (build, private, user) = (id("build"), id("private"), id("use"));
    let mut runner = connect(&t, &token, "holder").await;
    let client = reqwest::Client::new();
    let put = |job: i64, path: &str, body: &'static str| {
        client
            .put(format!("{}/api/runner/v1/jobs/{job}/artifacts/{path}", t.base))
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    for _ in 0..2 {
        send(&mut runner, json!({"type": "request_job"})).await;
        let job = next_of(&mut runner, "job").await["job"]["job_id"].as_i64().unwrap();
        let (path, body) = if job == build {
            ("a.txt", "for use")
        } else {
            ("secret.txt", "not for use")
        };
        assert_eq!(put(job, path, body).await.unwrap().status(), 201);
        let report = json!({"exit_code": 0, "failure_reason": null, "duration_ms": 1, "after_script": null});
        send(&mut runner, json!({"type": "finished", "job_id": job, "report": report})).await;
        next_of(&mut runner, "finished_ack").await;
    }
    send(&mut runner, json!({"type": "request_job"})).await;
    let assigned = next_of(&mut runner, "job").await["job"].clone();
    assert_eq!(assigned["job_id"], user);
    assert_eq!(
        assigned["dependencies"],
        json!([{"job_id": build, "job_name": "build", "files": [{"path": "a.txt", "size": 7}]}]),
        "only the job `dependencies` names"
    );
    let get = |token: &str, dependency: i64, path: &str| {
        client
            .get(format!(
                "{}/api/runner/v1/jobs/{user}/dependencies/{dependency}/artifacts/{path}",
                t.base
            ))
            .bearer_auth(token)
            .send()
    };
    let ok = get(&token, build, "a.txt").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "for use");
    for (dependency, path) in [
        (private, "secret.txt"),
        (build, "..%2Fjob-{private}%2Fsecret.txt"),
        (build, "missing.txt"),
    ] {
        let path = path.replace("{private}", &private.to_string());
        let status = get(&token, dependency, &path).await.unwrap().status();
        assert_eq!(status, 404, "{dependency} {path}");
    }
    let status = get(&other_token, build, "a.txt").await.unwrap().status();
    assert_eq!(status, 409, "another runner's token");
    let status = get("not-a-token", build, "a.txt").await.unwrap().status();
    assert_eq!(status, 401);
    let report = json!({"exit_code": 0, "failure_reason": null, "duration_ms": 1, "after_script": null});
    send(&mut runner, json!({"type": "finished", "job_id": user, "report": report})).await;
    next_of(&mut runner, "finished_ack").await;
    let status = get(&token, build, "a.txt").await.unwrap().status();
    assert_eq!(status, 409, "the job has ended");
    t.stop().await;
}
