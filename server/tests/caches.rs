//! `cache:` with a real runner: what a job of a project keeps under its key, the next
//! pipeline of that project finds at its start (the key expanded with the job's own
//! variables), from the server when the runner has no copy of its own; another project
//! with the same key finds nothing, and a runner cannot reach another project's caches.

use serde_json::json;
use usher_testkit::runner_socket::{connect, next_of, send};
use usher_testkit::*;

const FILLS_THE_CACHE: &str = r#"
fill:
  script:
    - echo "default-branch=$CI_DEFAULT_BRANCH"
    - if [ -f .deps/data ]; then echo "found=$(cat .deps/data)"; else echo found=none; fi
    - mkdir -p .deps && echo "from-$CI_PIPELINE_ID" > .deps/data
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [.deps/]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_pipeline_of_the_project_finds_the_cache_and_no_other_project_does() {
    let t = TestServer::start(1).await;
    let first = t.pipeline(FILLS_THE_CACHE).await;
    let job = TestServer::job_id(&first, "fill");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "Saved the cache").await;
    assert_eq!(log_value(&log, "found"), "none", "{log}");
    assert_eq!(log_value(&log, "default-branch"), "main", "{log}");
    assert!(log.contains("No cache for key deps-main yet."), "{log}");
    assert!(log.contains("Saved the cache deps-main: 1 file(s)"), "{log}");

    let second = t.next_pipeline(&first).await;
    let job = TestServer::job_id(&second, "fill");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "found=").await;
    assert_eq!(log_value(&log, "found"), format!("from-{}", first["id"]), "{log}");

    let other = t.pipeline(FILLS_THE_CACHE).await;
    let job = TestServer::job_id(&other, "fill");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "found=").await;
    assert_eq!(log_value(&log, "found"), "none", "another project's cache: {log}");
    t.stop().await;
}

/// `cache: untracked: true`: what the build made (files the commit does not have) is
/// kept; the commit's own files, even changed, are not (the next job's checkout is not
/// overwritten by a stale copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untracked_cache_keeps_what_the_build_made_and_not_the_commits_files() {
    let t = TestServer::start(1).await;
    let repo = usher_testkit::git::GitRepo::new();
    let ci = r#"build:
  script:
    - echo "found=$(cat out/bin 2>/dev/null || echo none) tracked=$(cat tracked.txt)"
    - mkdir -p out && echo "from-$CI_PIPELINE_ID" > out/bin
    - echo changed > tracked.txt
  cache:
    key: build
    untracked: true
"#;
    repo.commit(
        "main",
        &[(".gitlab-ci.yml", ci.as_bytes()), ("tracked.txt", b"from-the-commit\n")],
        "One",
    );
    let first = t.repository_pipeline("untracked-cache", &repo.path().display().to_string()).await;
    let job = TestServer::job_id(&first, "build");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "Saved the cache").await;
    assert!(log.contains("Saved the cache build: 1 file(s)"), "{log}");
    let second = t.next_pipeline(&first).await;
    let job = TestServer::job_id(&second, "build");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "found=").await;
    assert_eq!(log_value(&log, "found"), format!("from-{}", first["id"]), "{log}");
    assert_eq!(log_value(&log, "tracked"), "from-the-commit", "{log}");
    t.stop().await;
}

/// The server keeps a copy of every cache saved: a runner without its own copy (another
/// runner, or this one with its disk cleaned) gets it from there. A runner asking for
/// another project's cache is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_without_its_own_copy_gets_the_cache_from_the_server() {
    let t = TestServer::start(1).await;
    let first = t.pipeline(FILLS_THE_CACHE).await;
    let job = TestServer::job_id(&first, "fill");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "to the server").await;
    assert!(log.contains("Sent the cache deps-main to the server"), "{log}");
    let kept: Vec<_> = walk(&t.data_dir.path().join("artifacts/caches"));
    assert_eq!(kept.len(), 1, "one archive on the server: {kept:?}");
    assert!(kept[0].to_string_lossy().ends_with(".tar"), "{kept:?}");

    // The runner's own copy is gone: the server's is fetched.
    std::fs::remove_dir_all(usher_runner::cache::root_of(&t.builds_dir())).unwrap();
    let second = t.next_pipeline(&first).await;
    let job = TestServer::job_id(&second, "fill");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "found=").await;
    assert!(log.contains("Fetched the cache deps-main from the server: 1 file(s)"), "{log}");
    assert_eq!(log_value(&log, "found"), format!("from-{}", first["id"]), "{log}");

    // Nobody saves it again for two weeks: the server lets it go.
    let engine = &t.server.as_ref().unwrap().engine;
    let soon = engine
        .apply_retention_at(std::time::SystemTime::now() + std::time::Duration::from_secs(13 * 86_400))
        .await
        .unwrap();
    assert_eq!(soon.caches, 0);
    let later = engine
        .apply_retention_at(std::time::SystemTime::now() + std::time::Duration::from_secs(15 * 86_400))
        .await
        .unwrap();
    assert_eq!(later.caches, 1);
    assert!(
        walk(&t.data_dir.path().join("artifacts/caches")).is_empty(),
        "the archive is deleted"
    );
    t.stop().await;
}

/// A runner reaches only the caches of the project of a job it holds, while it holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_reaches_only_its_jobs_project_caches() {
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let (token, other_token) = (
        engine.create_runner_token().await.unwrap(),
        engine.create_runner_token().await.unwrap(),
    );
    let mine = t.pipeline("hold:\n  script: [x]\n").await;
    let theirs = t.pipeline("other:\n  script: [x]\n").await;
    let mut runner = connect(&t, &token, "holder").await;
    send(&mut runner, json!({"type": "request_job"})).await;
    let job = next_of(&mut runner, "job").await["job"]["job_id"].as_i64().unwrap();
    let project = if job == TestServer::job_id(&mine, "hold") {
        mine["project_id"].clone()
    } else {
        theirs["project_id"].clone()
    };
    let other_project = if project == mine["project_id"] {
        theirs["project_id"].clone()
    } else {
        mine["project_id"].clone()
    };
    let client = reqwest::Client::new();
    let url = |project: &serde_json::Value| format!("{}/api/runner/v1/jobs/{job}/caches/{project}/deps-main", t.base);
    let put = |url: String, token: String| client.put(url).bearer_auth(token).body("not a tar, but bytes").send();
    let get = |url: String, token: String| client.get(url).bearer_auth(token).send();
    assert_eq!(get(url(&project), token.clone()).await.unwrap().status(), 404, "none yet");
    assert_eq!(put(url(&project), token.clone()).await.unwrap().status(), 204);
    let back = get(url(&project), token.clone()).await.unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(back.text().await.unwrap(), "not a tar, but bytes");
    for (url, token, status, why) in [
        (url(&other_project), token.clone(), 400, "another project's key"),
        (url(&project), other_token.clone(), 409, "a runner that does not hold the job"),
    ] {
        assert_eq!(get(url.clone(), token.clone()).await.unwrap().status(), status, "GET: {why}");
        assert_eq!(put(url, token).await.unwrap().status(), status, "PUT: {why}");
    }
    t.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            found.extend(walk(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}
