//! Pipelines from real git repositories made by the tests: the CI file is read at the
//! pipeline's commit, the runner checks that commit out (over a path and over `git://`
//! on loopback), jobs see the CI_COMMIT_* variables, push webhooks in GitLab and GitHub
//! form start pipelines and supersede older ones, a cancel during a (deliberately slow)
//! checkout ends the job quickly without after_script and leaves the runner's cache
//! usable, an unreachable repository fails the checkout with git's words, and
//! credentials never show.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use usher_testkit::git::{GitDaemon, GitRepo, Trickle};
use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

const V1: &str = "stages: [test]\nfirst:\n  script:\n    - cat hello.txt\n    - echo \"sha=$CI_COMMIT_SHA short=$CI_COMMIT_SHORT_SHA branch=${CI_COMMIT_BRANCH:-none} tag=${CI_COMMIT_TAG:-none}\"\n    - echo \"dir_ok=$([ \"$PWD\" = \"$CI_PROJECT_DIR\" ] && echo yes)\"\n    - echo \"title=$CI_COMMIT_TITLE\"\n    - echo \"repo=$CI_REPOSITORY_URL\"\n";
const V2: &str = "second:\n  script:\n    - cat hello.txt\n";

async fn git_project(t: &TestServer, url: &str, extra: Value) -> i64 {
    let mut body = json!({"name": format!("git-{}", rand_suffix()), "repository_url": url});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, project) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    project["id"].as_i64().unwrap()
}

async fn run(t: &TestServer, project: i64, body: Value) -> (u16, Value) {
    t.call("POST", &format!("/api/v1/projects/{project}/pipelines"), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_run_the_ci_file_at_their_commit() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    let first = repo.commit(
        "main",
        &[(".usher-ci.yml", V1.as_bytes()), ("hello.txt", b"hello v1\n")],
        "First commit\n\nbody",
    );
    let url = repo.path().display().to_string();
    let project = git_project(&t, &url, json!({})).await;
    let (status, p1) = run(&t, project, json!({"ref": "main"})).await;
    assert_eq!(status, 201, "{p1}");
    assert_eq!(
        (p1["sha"].as_str(), p1["commit_title"].as_str()),
        (Some(first.as_str()), Some("First commit"))
    );
    let job = TestServer::job_id(&p1, "first");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "repo=").await;
    assert!(log.contains("hello v1"), "{log}");
    assert!(log.contains(&format!("Checking out {}", &first[..8])), "{log}");
    assert_eq!(log_value(&log, "sha"), first);
    assert_eq!(log_value(&log, "short"), &first[..8]);
    assert_eq!(
        (log_value(&log, "branch").as_str(), log_value(&log, "tag").as_str()),
        ("main", "none")
    );
    assert_eq!(log_value(&log, "dir_ok"), "yes");
    assert_eq!(log_value(&log, "title"), "First");
    assert_eq!(log_value(&log, "repo"), url);

    // A second commit changes the configuration: the new pipeline runs the new file, and
    // a pipeline at the first commit still runs the old one.
    let second = repo.commit("main", &[(".usher-ci.yml", V2.as_bytes()), ("hello.txt", b"hello v2\n")], "Second");
    let (_, p2) = run(&t, project, json!({"ref": "main"})).await;
    assert_eq!(p2["sha"], second);
    let job2 = TestServer::job_id(&p2, "second");
    t.wait_for_status(job2, "success").await;
    assert!(t.wait_for_log(job2, "hello v2").await.contains("hello v2"));
    let (_, p3) = run(&t, project, json!({"ref": "main", "sha": first})).await;
    assert_eq!(p3["sha"], first);
    TestServer::job_id(&p3, "first");

    // Tags; unknown refs and commits; a commit without a CI file.
    repo.tag("v1.0");
    let (status, p4) = run(&t, project, json!({"ref": "v1.0"})).await;
    assert_eq!(status, 201, "{p4}");
    let job4 = TestServer::job_id(&p4, "second");
    t.wait_for_status(job4, "success").await;
    for (body, code) in [
        (json!({"ref": "no-such-branch"}), "invalid_ref"),
        (
            json!({"ref": "main", "sha": "0123456789abcdef0123456789abcdef01234567"}),
            "invalid_ref",
        ),
        (json!({"ref": "main", "sha": "not hex"}), "invalid_ref"),
    ] {
        let (status, err) = run(&t, project, body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (422, Some(code)), "{body}: {err}");
    }
    let bare = repo.remove("empty", ".usher-ci.yml", "No CI");
    let (status, err) = run(&t, project, json!({"ref": "empty"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_config")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains(&bare[..8]), "{err}");
    // Inline YAML still works, and overrides the file.
    let (status, p5) = run(
        &t,
        project,
        json!({"ref": "main", "ci_config": "inline:\n  script: [cat hello.txt]\n"}),
    )
    .await;
    assert_eq!(status, 201, "{p5}");
    let job5 = TestServer::job_id(&p5, "inline");
    t.wait_for_status(job5, "success").await;
    assert!(t.log(job5).await.0.contains("hello v2"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_over_git_protocol_on_loopback() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    repo.commit(
        "main",
        &[(".usher-ci.yml", V2.as_bytes()), ("hello.txt", b"over the network\n")],
        "Net",
    );
    let daemon = GitDaemon::serve(repo.dir.path());
    let project = git_project(&t, &daemon.url("origin.git"), json!({})).await;
    let (status, p) = run(&t, project, json!({"ref": "main"})).await;
    assert_eq!(status, 201, "{p}");
    let job = TestServer::job_id(&p, "second");
    t.wait_for_status(job, "success").await;
    assert!(t.log(job).await.0.contains("over the network"));
    t.stop().await;
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn push(t: &TestServer, project: i64, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut req = t
        .client
        .post(format!("{}/api/v1/projects/{project}/hooks/push", t.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_hooks_start_pipelines_and_supersede_older_ones() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    let slow =
        "default:\n  interruptible: true\nwork:\n  script: [\"echo started\", \"sleep 300\"]\n  after_script: [\"echo cleaned up\"]\n";
    let one = repo.commit("main", &[(".usher-ci.yml", slow.as_bytes())], "One");
    let secret = "hook-secret-1";
    let project = git_project(&t, &repo.path().display().to_string(), json!({"webhook_secret": secret})).await;
    let (_, shown) = t.call("GET", &format!("/api/v1/projects/{project}"), None).await;
    assert!(!shown.to_string().contains(secret), "the webhook secret is write-only: {shown}");

    // GitLab form.
    let gitlab =
        format!(r#"{{"object_kind":"push","ref":"refs/heads/main","after":"{one}","checkout_sha":"{one}","user_username":"alice"}}"#);
    let (status, _) = push(&t, project, &[("x-gitlab-token", "wrong".into())], &gitlab).await;
    assert_eq!(status, 401);
    let (status, _) = push(&t, project, &[], &gitlab).await;
    assert_eq!(status, 401);
    let (status, p1) = push(&t, project, &[("x-gitlab-token", secret.into())], &gitlab).await;
    assert_eq!((status, p1["sha"].as_str()), (201, Some(one.as_str())), "{p1}");
    assert_eq!(p1["triggered_by"], "push:alice");
    let job1 = TestServer::job_id(&p1, "work");
    t.wait_for_log(job1, "started").await;

    // GitHub form, a second push on the same branch: the first pipeline is superseded.
    let two = repo.commit("main", &[("more.txt", b"x")], "Two");
    let github = format!(r#"{{"ref":"refs/heads/main","before":"{one}","after":"{two}","deleted":false,"pusher":{{"name":"bob"}}}}"#);
    let (status, _) = push(
        &t,
        project,
        &[("x-hub-signature-256", github_signature("not the secret", github.as_bytes()))],
        &github,
    )
    .await;
    assert_eq!(status, 401);
    let (status, p2) = push(
        &t,
        project,
        &[("x-hub-signature-256", github_signature(secret, github.as_bytes()))],
        &github,
    )
    .await;
    assert_eq!((status, p2["sha"].as_str()), (201, Some(two.as_str())), "{p2}");
    let first = t.wait_for_status(job1, "canceled").await;
    assert_eq!(first["cancel"]["reason"], "superseded", "{first}");
    assert!(
        t.log(job1).await.0.contains("cleaned up"),
        "superseded gracefully: after_script ran"
    );

    // A deletion starts nothing; a malformed event is a 400.
    let deletion = r#"{"ref":"refs/heads/gone","after":"0000000000000000000000000000000000000000","deleted":true}"#;
    let (status, _) = push(
        &t,
        project,
        &[("x-hub-signature-256", github_signature(secret, deletion.as_bytes()))],
        deletion,
    )
    .await;
    assert_eq!(status, 204);
    let (status, err) = push(&t, project, &[("x-gitlab-token", secret.into())], "{not json").await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("bad_request")), "{err}");
    let unknown = r#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    let (status, err) = push(&t, project, &[("x-gitlab-token", secret.into())], unknown).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_ref")), "{err}");
    t.call("POST", &format!("/api/v1/pipelines/{}/abort", p2["id"]), None).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_slow_checkout_stops_git_and_keeps_the_cache_usable() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    // 3 MB that does not compress: at the trickle's ~5 KB/s a fetch would take minutes.
    let noise: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let yaml = "build:\n  cancel_grace: 2s\n  script: [\"cat hello.txt\"]\n  after_script: [\"echo after_script ran\"]\n";
    repo.commit(
        "main",
        &[
            (".usher-ci.yml", yaml.as_bytes()),
            ("hello.txt", b"fetched whole\n"),
            ("noise.bin", &noise),
        ],
        "Big",
    );
    let daemon = GitDaemon::serve(repo.dir.path());
    let trickle = Trickle::start(daemon.port).await;
    let url = format!("git://127.0.0.1:{}/origin.git", trickle.port);
    let project = git_project(&t, &url, json!({})).await;

    // Keep the runner busy while the pipeline is created (the server's own fetch is fast),
    // then make the transport trickle before the runner fetches.
    let blocker = t.pipeline("block:\n  script: [sleep 2]\n").await;
    let blocker_job = TestServer::job_id(&blocker, "block");
    t.wait_for_status(blocker_job, "running").await;
    let (status, p) = run(&t, project, json!({"ref": "main"})).await;
    assert_eq!(status, 201, "{p}");
    trickle.slow.store(true, Ordering::Relaxed);
    let job = TestServer::job_id(&p, "build");
    t.wait_for_log(job, "Fetching").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let asked = Instant::now();
    let (status, body) = t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceling")), "{body}");
    let done = t.wait_for_status(job, "canceled").await;
    let took = asked.elapsed();
    println!("cancel during checkout: canceled after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(done["after_script"], Value::Null, "{done}");
    assert_eq!(done["failure_reason"], Value::Null, "{done}");
    let (log, _) = t.log(job).await;
    assert!(!log.contains("after_script ran"), "{log}");
    let (_, events) = t.call("GET", &format!("/api/v1/jobs/{job}/events"), None).await;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert!(last["detail"].as_str().unwrap_or("").contains("checkout"), "{events}");
    // Nothing of the job's workspace is left.
    assert!(!t.builds_dir().join(format!("job-{job}")).exists());

    // The transport is fast again: the next job of the same repository fetches into the
    // same cache and succeeds (no stale lock files).
    trickle.slow.store(false, Ordering::Relaxed);
    let (_, p2) = run(&t, project, json!({"ref": "main"})).await;
    let job2 = TestServer::job_id(&p2, "build");
    t.wait_for_status(job2, "success").await;
    assert!(t.log(job2).await.0.contains("fetched whole"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repository_fails_the_checkout_with_gits_words() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    let yaml = "stages: [one, two]\nfirst:\n  stage: one\n  script: [sleep 2]\nsecond:\n  stage: two\n  script: [cat hello.txt]\n";
    repo.commit("main", &[(".usher-ci.yml", yaml.as_bytes()), ("hello.txt", b"hi\n")], "Two stages");
    let project = git_project(&t, &repo.path().display().to_string(), json!({})).await;
    let (_, p) = run(&t, project, json!({"ref": "main"})).await;
    let first = TestServer::job_id(&p, "first");
    t.wait_for_log(first, "$ sleep 2").await;
    // The repository goes away before the second stage checks out.
    std::fs::rename(repo.path(), repo.dir.path().join("moved.git")).unwrap();
    let second = TestServer::job_id(&p, "second");
    let job = t.wait_for_status(second, "failed").await;
    assert_eq!(job["failure_reason"], "checkout_failed", "{job}");
    let (log, _) = t.log(second).await;
    assert!(
        log.contains("fatal:") && log.contains("origin.git"),
        "git's own message is in the log:\n{log}"
    );
    t.stop().await;
}

/// A token in the repository URL is used (a real authenticated fetch over HTTP, by the
/// server and by the runner) but kept server-side: the API, the pages, error messages,
/// the job's log and environment, and the server's log show the URL without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_credentials_work_and_never_show() {
    let repo = GitRepo::new();
    let yaml = "show:\n  script:\n    - cat hello.txt\n    - env | sort\n    - git remote -v\n    - echo \"repo=$CI_REPOSITORY_URL\"\n";
    repo.commit(
        "main",
        &[(".usher-ci.yml", yaml.as_bytes()), ("hello.txt", b"private code\n")],
        "Private",
    );
    let secret = "glpat-s3cret-Token-42";
    let http = usher_testkit::git::GitHttp::serve(repo.dir.path(), "ci-bot", secret);
    let data_dir = tempfile::tempdir().unwrap();
    let (_server, base) = serve_with_log_file(USHER, data_dir.path());
    let credentials = std::fs::read_to_string(data_dir.path().join("initial-admin-credentials")).unwrap();
    let token = credentials.lines().find_map(|l| l.strip_prefix("api token: ")).unwrap().to_string();
    let mut t = TestServer::detached();
    t.base = base;
    let clean = format!("http://127.0.0.1:{}/origin.git", http.port);
    let with_token = format!("http://ci-bot:{secret}@127.0.0.1:{}/origin.git", http.port);
    let (status, project) = t
        .call_as(
            &token,
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "private", "repository_url": with_token})),
        )
        .await;
    assert_eq!(
        (status, project["repository_url"].as_str()),
        (201, Some(clean.as_str())),
        "{project}"
    );
    let id = project["id"].as_i64().unwrap();
    let (status, pipeline) = t
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/projects/{id}/pipelines"),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    let job = TestServer::job_id(&pipeline, "show");
    let log = t.wait_for_log_as(&token, job, "repo=").await;
    assert!(log.contains("private code"), "the runner fetched with the token:\n{log}");
    assert_eq!(log_value(&log, "repo"), clean);

    // A wrong token: the server's fetch is refused, and its message has no secret.
    let wrong = format!("http://ci-bot:wrong-{secret}@127.0.0.1:{}/origin.git", http.port);
    let (_, other) = t
        .call_as(
            &token,
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "wrong", "repository_url": wrong})),
        )
        .await;
    let (status, err) = t
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/projects/{}/pipelines", other["id"]),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_ref")), "{err}");

    let mut outputs = vec![("job log", log.clone()), ("error", err.to_string())];
    outputs.push((
        "project list",
        t.call_as(&token, "GET", "/api/v1/projects", None).await.1.to_string(),
    ));
    outputs.push((
        "pipeline",
        t.call_as(&token, "GET", &format!("/api/v1/pipelines/{}", pipeline["id"]), None)
            .await
            .1
            .to_string(),
    ));
    outputs.push(("server log", std::fs::read_to_string(data_dir.path().join("usher.log")).unwrap()));
    let password = credentials.lines().find_map(|l| l.strip_prefix("password: ")).unwrap();
    let cookie = {
        let resp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/auth/login", t.base))
            .header("origin", &t.base)
            .form(&[("name", "admin"), ("password", password)])
            .send()
            .await
            .unwrap();
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    for page in ["/".to_string(), format!("/projects/{id}"), format!("/jobs/{job}")] {
        let html = t
            .client
            .get(format!("{}{page}", t.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        outputs.push(("page", html));
    }
    for (what, out) in &outputs {
        assert!(!out.contains(secret), "the token shows in the {what}:\n{out}");
    }
}

/// `usher serve --demo`: the demo project's pipeline checks its code out of a local
/// bare repository, and its long job can be cancelled with its cleanup running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pipeline_checks_out_code_and_cancels_cleanly() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        local_runners: 1,
        demo: true,
        admin_token: Some(ADMIN_TOKEN.into()),
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let mut t = TestServer::detached();
    t.base = format!("http://{}", server.addr);
    let (_, pipelines) = t.call("GET", "/api/v1/projects/1/pipelines", None).await;
    let pipeline = &pipelines[0];
    assert_eq!(pipeline["commit_title"], "Usher demo: a pipeline to cancel", "{pipeline}");
    let (_, full) = t.call("GET", &format!("/api/v1/pipelines/{}", pipeline["id"]), None).await;
    let build = TestServer::job_id(&full, "build");
    let integration = TestServer::job_id(&full, "integration");
    t.wait_for_status(build, "success").await;
    let log = t.log(build).await.0;
    assert!(log.contains("Checking out") && log.contains("run-tests.sh"), "{log}");
    t.wait_for_log(integration, "step 2 of 600").await;
    t.call("POST", &format!("/api/v1/jobs/{integration}/cancel"), None).await;
    t.wait_for_status(integration, "canceled").await;
    let log = t.log(integration).await.0;
    assert!(
        log.contains("stopped the pretend database") && log.contains("removed /tmp/usher-demo."),
        "{log}"
    );
    t.call("POST", &format!("/api/v1/pipelines/{}/abort", pipeline["id"]), None).await;
    server.stop().await;
}

/// `scripts/post-receive` in a bare repository: a `git push` to it starts a pipeline at
/// the pushed commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_repositorys_post_receive_hook_starts_pipelines() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    repo.commit(
        "main",
        &[(".usher-ci.yml", V2.as_bytes()), ("hello.txt", b"pushed\n")],
        "Before the hook",
    );
    let project = git_project(&t, &repo.path().display().to_string(), json!({"webhook_secret": "bare-secret"})).await;
    let hook = repo.path().join("hooks/post-receive");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/post-receive"), &hook).unwrap();
    let origin = repo.path();
    usher_testkit::git::git(&origin, &["config", "usher.url", &t.base]);
    usher_testkit::git::git(&origin, &["config", "usher.project", &project.to_string()]);
    usher_testkit::git::git(&origin, &["config", "usher.secret", "bare-secret"]);
    let sha = repo.commit("main", &[("hello.txt", b"pushed by git push\n")], "Through the hook");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pipeline = loop {
        let (_, list) = t.call("GET", &format!("/api/v1/projects/{project}/pipelines"), None).await;
        if let Some(p) = list.as_array().unwrap().iter().find(|p| p["sha"] == sha.as_str()) {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no pipeline for {sha}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(pipeline["triggered_by"].as_str().unwrap().starts_with("push:"), "{pipeline}");
    let (_, full) = t.call("GET", &format!("/api/v1/pipelines/{}", pipeline["id"]), None).await;
    let job = TestServer::job_id(&full, "second");
    t.wait_for_status(job, "success").await;
    assert!(t.log(job).await.0.contains("pushed by git push"));
    t.stop().await;
}
