//! `cache:` with a real runner: what a job of a project keeps under its key, the next
//! pipeline of that project finds at its start (the key expanded with the job's own
//! variables); another project with the same key finds nothing.

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

    let (status, second) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", first["project_id"]),
            Some(serde_json::json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
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
    let (status, second) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", first["project_id"]),
            Some(serde_json::json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let job = TestServer::job_id(&second, "build");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "found=").await;
    assert_eq!(log_value(&log, "found"), format!("from-{}", first["id"]), "{log}");
    assert_eq!(log_value(&log, "tracked"), "from-the-commit", "{log}");
    t.stop().await;
}
