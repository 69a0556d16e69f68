//! Artifacts with a real runner and real bash: uploaded after after_script according to
//! `when`, stored under the data dir, listed and downloaded through the API; paths that
//! would leave the build directory are never taken, and a job's bytes are limited.

use serde_json::{Value, json};
use usher_testkit::*;

const BUILDER: &str = r#"
stages: [test]
builder:
  stage: test
  cancel_grace: 5s
  artifacts:
    paths: [out/, report.txt, ../escape.txt, /etc/passwd, link-out, missing.txt]
    when: always
  script:
    - mkdir -p out/nested && echo first > out/a.txt && printf 'ñ-bytes' > out/nested/b.bin
    - echo outside > ../escape.txt || true  # the job user may not write there (isolation)
    - ln -s /etc/passwd link-out && ln -s /etc/passwd out/link-in-dir
    - echo ready
    - sleep 1000
  after_script:
    - echo "written by after_script" > report.txt
"#;

async fn download(t: &TestServer, token: &str, job_id: i64, path: &str) -> reqwest::Response {
    t.client
        .get(format!("{}/api/v1/jobs/{job_id}/artifacts/{path}", t.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_jobs_artifacts_include_what_after_script_wrote() {
    let t = TestServer::start(1).await;
    let pipeline = t.pipeline(BUILDER).await;
    let job_id = TestServer::job_id(&pipeline, "builder");
    t.wait_for_log(job_id, "ready").await;
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!(status, 200);
    t.wait_for_status(job_id, "canceled").await;

    let (status, list) = t.call("GET", &format!("/api/v1/jobs/{job_id}/artifacts"), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!([
            {"path": "out/a.txt", "size": 6, "expires_at": null, "expired": false},
            {"path": "out/nested/b.bin", "size": "ñ-bytes".len(), "expires_at": null, "expired": false},
            {"path": "report.txt", "size": 24, "expires_at": null, "expired": false},
        ]),
        "files of out/ and what after_script wrote; nothing outside the build dir"
    );
    let (log, _) = t.log(job_id).await;
    assert!(log.contains("\"../escape.txt\" is skipped"), "{log}");
    assert!(log.contains("\"/etc/passwd\" is skipped"), "{log}");
    assert!(log.contains("link-out is skipped: it is a symbolic link"), "{log}");
    assert!(log.contains("missing.txt does not exist"), "{log}");
    assert!(log.contains("Uploaded 3 artifact file(s)"), "{log}");

    let resp = download(&t, ADMIN_TOKEN, job_id, "report.txt").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert_eq!(resp.text().await.unwrap(), "written by after_script\n");
    // A range of it (resuming a download, say).
    let part = t
        .client
        .get(format!("{}/api/v1/jobs/{job_id}/artifacts/report.txt", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("range", "bytes=8-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"report.txt\""
    );
    assert_eq!(part.text().await.unwrap(), "by");
    let resp = download(&t, ADMIN_TOKEN, job_id, "out/nested/b.bin").await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), "ñ-bytes".as_bytes());
    let stored = t.data_dir.path().join("artifacts").join(format!("job-{job_id}")).join("out/a.txt");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), "first\n", "kept under the data dir");

    for missing in ["nope.txt", "..%2Fusher.db", "out"] {
        let resp = download(&t, ADMIN_TOKEN, job_id, missing).await;
        assert_eq!(resp.status(), 404, "{missing}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(download(&t, "not-a-token", job_id, "report.txt").await.status(), 401);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_success_artifacts_are_not_kept_for_a_cancelled_or_failed_job() {
    let t = TestServer::start(1).await;
    let config = "stages: [test]\n\
        canceled:\n  stage: test\n  artifacts:\n    paths: [a.txt]\n  script: [\"echo x > a.txt\", \"echo ready\", \"sleep 1000\"]\n\
        failing:\n  stage: test\n  artifacts:\n    paths: [a.txt]\n    when: on_failure\n  script: [\"echo x > a.txt\", \"false\"]\n";
    let pipeline = t.pipeline(config).await;
    let canceled = TestServer::job_id(&pipeline, "canceled");
    let failing = TestServer::job_id(&pipeline, "failing");
    t.wait_for_log(canceled, "ready").await;
    t.call("POST", &format!("/api/v1/jobs/{canceled}/cancel"), None).await;
    t.wait_for_status(canceled, "canceled").await;
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{canceled}/artifacts"), None).await;
    assert_eq!(list, json!([]));
    let (log, _) = t.log(canceled).await;
    assert!(log.contains("the job is canceled and `when` is on_success"), "{log}");

    t.wait_for_status(failing, "failed").await;
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{failing}/artifacts"), None).await;
    assert_eq!(
        list,
        json!([{"path": "a.txt", "size": 2, "expires_at": null, "expired": false}]),
        "on_failure keeps a failed job's files"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_limited_and_only_the_holding_runner_may_upload() {
    let settings = usher_engine::Settings {
        max_artifact_bytes: 1000,
        ..Default::default()
    };
    let t = TestServer::start_with(None, 1, settings).await;
    let config = "stages: [test]\nbig:\n  stage: test\n  artifacts:\n    paths: [a.bin, b.bin]\n  \
        script: [\"head -c 600 /dev/zero > a.bin\", \"head -c 600 /dev/zero > b.bin\"]\n";
    let pipeline = t.pipeline(config).await;
    let job_id = TestServer::job_id(&pipeline, "big");
    t.wait_for_status(job_id, "success").await;
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{job_id}/artifacts"), None).await;
    assert_eq!(
        list,
        json!([{"path": "a.bin", "size": 600, "expires_at": null, "expired": false}]),
        "the second file would pass 1000 bytes"
    );
    let (log, _) = t.log(job_id).await;
    assert!(
        log.contains("Artifact b.bin was not uploaded: with its 600 bytes, the job's artifacts would exceed the limit of 1000 bytes"),
        "the runner, told the limit, does not send a file the server would refuse:\n{log}"
    );

    // Straight at the upload endpoint with another runner's token.
    let engine = &t.server.as_ref().unwrap().engine;
    let other = engine.create_runner_token().await.unwrap();
    let put = |token: &str, path: &str| {
        t.client
            .put(format!("{}/api/runner/v1/jobs/{job_id}/artifacts/{path}", t.base))
            .bearer_auth(token)
            .body("data")
            .send()
    };
    let resp = put(&other, "x.txt").await.unwrap();
    assert_eq!(resp.status(), 409, "not held by this runner");
    let resp = put(&other, "..%2F..%2Fescape.txt").await.unwrap();
    assert_eq!(resp.status(), 400, "a path leaving the job's directory");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert_eq!(put("no-such-token", "x.txt").await.unwrap().status(), 401);
    assert_eq!(
        put(ADMIN_TOKEN, "x.txt").await.unwrap().status(),
        401,
        "an API token is no runner token"
    );
    assert!(!t.data_dir.path().join("artifacts").join("escape.txt").exists() && !t.data_dir.path().join("escape.txt").exists());
    t.stop().await;
}

/// `artifacts.expire_in`: the file is deleted once the time has passed — also when the
/// server was down meanwhile (the expiry is in the database) — and the list says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_artifacts_are_deleted_even_across_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let start = |runners: u32| {
        let dir = data_dir.path().to_path_buf();
        async move {
            usher_server::start(usher_server::ServeOptions {
                local_runners: runners,
                admin_token: Some(ADMIN_TOKEN.into()),
                ..usher_server::ServeOptions::new(&dir)
            })
            .await
            .unwrap()
        }
    };
    let server = start(1).await;
    let mut t = TestServer::detached();
    t.base = format!("http://{}", server.addr);
    let pipeline = t
        .pipeline("keep:\n  artifacts:\n    paths: [out.txt]\n    expire_in: 2s\n  script: [\"echo data > out.txt\"]\n")
        .await;
    let job = TestServer::job_id(&pipeline, "keep");
    t.wait_for_status(job, "success").await;
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{job}/artifacts"), None).await;
    assert_eq!(list[0]["expired"], false, "{list}");
    assert!(list[0]["expires_at"].is_string(), "{list}");
    let file = data_dir.path().join(format!("artifacts/job-{job}/out.txt"));
    assert!(file.exists());
    server.stop().await;

    // Down past the expiry; the next start removes it.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let server = start(0).await;
    t.base = format!("http://{}", server.addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, list) = t.call("GET", &format!("/api/v1/jobs/{job}/artifacts"), None).await;
        if list[0]["expired"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not expired: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!file.exists(), "the expired file is deleted");
    assert_eq!(download(&t, ADMIN_TOKEN, job, "out.txt").await.status(), 404);
    server.stop().await;
}

/// With a storage cap, the oldest artifacts and then the oldest logs make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_cap_removes_the_oldest_first() {
    let settings = usher_engine::Settings {
        max_storage_bytes: Some(200_000),
        ..Default::default()
    };
    let t = TestServer::start_with(None, 1, settings).await;
    let yaml = "big:\n  artifacts:\n    paths: [blob]\n  script: [\"head -c 60000 /dev/zero > blob\", \"head -c 30000 /dev/zero | tr '\\\\0' x | fold -w 99\"]\n";
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let pipeline = t.pipeline(yaml).await;
        let job = TestServer::job_id(&pipeline, "big");
        t.wait_for_status(job, "success").await;
        jobs.push(job);
    }
    let engine = &t.server.as_ref().unwrap().engine;
    // (The reaper's own pass may have come first; either way this is the end state.)
    engine.apply_retention().await.unwrap();
    let (_, oldest) = t.call("GET", &format!("/api/v1/jobs/{}/artifacts", jobs[0]), None).await;
    let (_, newest) = t.call("GET", &format!("/api/v1/jobs/{}/artifacts", jobs[2]), None).await;
    assert_eq!(
        (oldest[0]["expired"].clone(), newest[0]["expired"].clone()),
        (json!(true), json!(false))
    );
    t.stop().await;
}

const PATTERNS: &str = r#"
stages: [test]
patterns:
  stage: test
  artifacts:
    paths: ["build/*.log", "build-*/meson-logs", "*.tgz", "keep/", "reports/**/TEST-*.xml", "none-*.txt", "[broken"]
    exclude: ["keep/**/*.o"]
  script:
    - mkdir -p build/sub build-x86/meson-logs build-x86/other keep/deep reports/a/b
    - echo a > build/a.log && echo b > build/sub/b.log && echo c > build/c.txt
    - echo t > build-x86/meson-logs/testlog.txt && echo o > build-x86/other/no.txt
    - echo z > dist.tgz && echo k > keep/y.c && echo o > keep/x.o && echo o > keep/deep/z.o
    - echo x > reports/a/b/TEST-one.xml && echo x > reports/a/other.xml
    # What a pattern must not reach: links, to a file outside and to a directory outside.
    - ln -s /etc/passwd build/passwd.log && ln -s /etc build-etc
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn glob_patterns_and_exclude_pick_the_files_gitlab_would() {
    let t = TestServer::start(1).await;
    let pipeline = t.pipeline(PATTERNS).await;
    let job_id = TestServer::job_id(&pipeline, "patterns");
    t.wait_for_status(job_id, "success").await;
    let (status, list) = t.call("GET", &format!("/api/v1/jobs/{job_id}/artifacts"), None).await;
    assert_eq!(status, 200, "{list}");
    let paths: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "build-x86/meson-logs/testlog.txt",
            "build/a.log",
            "dist.tgz",
            "keep/y.c",
            "reports/a/b/TEST-one.xml",
        ],
        "`*` within one level, `**` across, a matched directory whole, `exclude` applied, links never followed"
    );
    let (log, _) = t.log(job_id).await;
    assert!(log.contains("none-*.txt matches no file"), "{log}");
    assert!(log.contains("\"[broken\" is skipped: it is not a valid pattern"), "{log}");
    assert!(log.contains("2 file(s) left out by `exclude`"), "{log}");
}

/// `artifacts: untracked`: every file of the build directory the commit does not have,
/// ignored ones included (GitLab's meaning), never `.git`; a tracked file the job changed
/// is not taken, and `exclude` still applies. The commit's files come from the runner's
/// own cache, so a job that rewrites `.git` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_artifacts_are_the_files_the_commit_does_not_have() {
    let t = TestServer::start(1).await;
    let repo = usher_testkit::git::GitRepo::new();
    let ci = "build:\n  script:\n    - mkdir -p out\n    - echo new > out/new.txt\n    - echo log > build.log\n    - echo scratch > x.tmp\n    - echo changed >> tracked.txt\n    - rm -f .git/index\n  artifacts:\n    untracked: true\n    exclude: ['*.tmp']\n";
    repo.commit(
        "main",
        &[
            (".gitlab-ci.yml", ci.as_bytes()),
            (".gitignore", b"*.log\n"),
            ("tracked.txt", b"from the commit\n"),
            ("src/lib.rs", b"// tracked\n"),
        ],
        "One",
    );
    let pipeline = t.repository_pipeline("untracked", &repo.path().display().to_string()).await;
    let job_id = TestServer::job_id(&pipeline, "build");
    t.wait_for_status(job_id, "success").await;
    let (status, list) = t.call("GET", &format!("/api/v1/jobs/{job_id}/artifacts"), None).await;
    assert_eq!(status, 200, "{list}");
    let paths: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["build.log", "out/new.txt"],
        "ignored files count, tracked ones and .git do not"
    );
    let (log, _) = t.log(job_id).await;
    assert!(log.contains("`untracked`: 3 file(s) the commit does not have"), "{log}");
    t.stop().await;
}
