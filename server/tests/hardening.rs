//! Hostile input and hostile clients over real HTTP (the login flood is in
//! login_flood.rs, alone in its process so its memory can be measured): deeply nested YAML,
//! a client that disconnects right after asking for a cancel, bad form arguments, wrong
//! methods and undecodable paths, `CI_*` overrides, renames onto taken names and
//! oversized names. Each answer is the contract's JSON error, and nothing stalls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use usher_core::roles::Role;
use usher_testkit::*;

/// `x: [[[[…]]]]` 100,000 deep (200 KB): refused at once with the line, and a request
/// made meanwhile is not held up. Before: 21 s, with every other request stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_yaml_is_refused_fast() {
    let t = TestServer::start(0).await;
    let yaml = format!("x: {}{}\njob:\n  script: [true]\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = Instant::now();
    let create = t.call("POST", "/api/v1/projects", Some(json!({"name": "deep", "ci_config": yaml})));
    let (meanwhile, (status, body)) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let asked = Instant::now();
            t.call("GET", "/api/v1/projects", None).await;
            asked.elapsed()
        },
        create
    );
    let took = started.elapsed();
    println!("nested YAML refused in {took:?}; a request meanwhile took {meanwhile:?}");
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 1"), "{body}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(meanwhile < Duration::from_secs(2), "{meanwhile:?}");
    t.stop().await;
}

/// A client that sends a pipeline cancel and hangs up before the answer: the cancel still
/// happens, whole (before: the handler was dropped with its transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_cancel_completes_when_the_client_disconnects() {
    let t = TestServer::start(0).await;
    let yaml: String = (0..1000).map(|i| format!("j{i}:\n  script: [x]\n")).collect();
    let pipeline = t.pipeline(&yaml).await;
    let id = pipeline["id"].as_i64().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(t.base.trim_start_matches("http://")).await.unwrap();
    let request = format!(
        "POST /api/v1/pipelines/{id}/cancel HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.flush().await.unwrap();
    // Hang up while the server works on it (a FIN that arrives with the request itself
    // may stop hyper from ever dispatching it: then it was never accepted).
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(tcp);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = t.call("GET", &format!("/api/v1/pipelines/{id}"), None).await;
        if p["status"] == "canceled" {
            let jobs = p["jobs"].as_array().unwrap();
            assert!(jobs.iter().all(|j| j["status"] == "canceled"), "some jobs were left");
            assert_eq!(p["cancel"]["reason"], "pipeline", "{}", p["cancel"]);
            break;
        }
        assert!(Instant::now() < deadline, "the cancel was lost: {}", p["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.stop().await;
}

/// The browser's form endpoints answer bad arguments with 400 (not 500); a wrong method
/// gets 405 `method_not_allowed` and a path that is not UTF-8 gets 400, both as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_contract_errors() {
    let t = TestServer::start(0).await;
    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("dev", Role::Developer, Some("dev-password")).await.unwrap();
    let pipeline = t.pipeline("waiting:\n  script: [sleep 1]\n").await;
    let cookie = sign_in(&t, "dev", "dev-password").await;
    let html = t
        .client
        .get(format!("{}/pipelines/{}", t.base, pipeline["id"]))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let action = html
        .split("action=\"/ui/cancel_job")
        .nth(1)
        .map(|rest| format!("/ui/cancel_job{}", rest.split('"').next().unwrap()))
        .expect("a Cancel form");
    for form in ["job_id=abc", "", "job_id=1&job_id=2", "job_id=99999999999999999999"] {
        let resp = t
            .client
            .post(format!("{}{action}", t.base))
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{form:?}: {body}"
        );
    }
    // Wrong methods, on the API and elsewhere.
    for (method, path) in [
        ("GET", "/api/v1/jobs/1/cancel"),
        ("DELETE", "/api/v1/projects"),
        ("PUT", "/auth/login"),
    ] {
        let resp = t
            .client
            .request(method.parse().unwrap(), format!("{}{path}", t.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}: {body}"
        );
    }
    let (status, body) = t.call("GET", "/api/v1/jobs/%FF%FE", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    t.stop().await;
}

/// `CI_*` cannot be set by a configuration; names and refs have limits; a rename onto a
/// taken name is a conflict and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_refs_and_ci_variables_are_checked() {
    let t = TestServer::start(1).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "evil", "ci_config": "job:\n  variables:\n    CI_JOB_ID: evil\n  script: [env]\n"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 3"), "{body}");

    let (status, body) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "x".repeat(500_000), "ci_config": "j:\n  script: [x]\n"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "a\u{0}b", "ci_config": "j:\n  script: [x]\n"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (_, first) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "first", "ci_config": "j:\n  script: [echo $CI_JOB_ID]\n"})),
        )
        .await;
    let (_, second) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "second", "ci_config": "j:\n  script: [x]\n"})),
        )
        .await;
    let second_path = format!("/api/v1/projects/{}", second["id"]);
    let (status, body) = t.call("PUT", &second_path, Some(json!({"name": "first"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (_, unchanged) = t.call("GET", &second_path, None).await;
    assert_eq!(unchanged["name"], "second");
    let (status, renamed) = t.call("PUT", &second_path, Some(json!({"name": "third"}))).await;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("third")), "{renamed}");
    assert_eq!(renamed["ci_config"], second["ci_config"], "a rename keeps the configuration");

    let pipelines = format!("/api/v1/projects/{}/pipelines", first["id"]);
    for bad_ref in ["a\u{0}b", "a..b", "x y", &"r".repeat(300)] {
        let (status, body) = t.call("POST", &pipelines, Some(json!({"ref": bad_ref}))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad_ref:?}: {body}"
        );
    }
    // A pipeline overriding CI_* with its own configuration is refused too; a good one
    // sees Usher's value.
    let (status, _) = t
        .call(
            "POST",
            &pipelines,
            Some(json!({"ref": "main", "ci_config": "variables: {CI_JOB_ID: x}\nj:\n  script: [x]\n"})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, p) = t.call("POST", &pipelines, Some(json!({"ref": "feature/ok-1"}))).await;
    assert_eq!(status, 201, "{p}");
    let job = TestServer::job_id(&p, "j");
    t.wait_for_status(job, "success").await;
    let log = t.wait_for_log(job, "$ echo").await;
    assert!(log.contains(&format!("\n{job}\n")), "{log}");
    t.stop().await;
}

/// A pipeline over the configured job cap is refused with 422, naming the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_s_job_count_is_capped() {
    let settings = usher_engine::Settings {
        max_pipeline_jobs: 50,
        ..Default::default()
    };
    let t = TestServer::start_with(None, 0, settings).await;
    let yaml: String = (0..51).map(|i| format!("j{i}:\n  script: [x]\n")).collect();
    let (status, project) = t
        .call("POST", "/api/v1/projects", Some(json!({"name": "big", "ci_config": yaml})))
        .await;
    assert_eq!(status, 201, "{project}");
    let (status, body) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", project["id"]),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 50"), "{body}");
    t.stop().await;
}

/// A connection that never finishes its headers is dropped after the header timeout;
/// connections over the cap wait (in the kernel's backlog) instead of being served, so
/// idle sockets cannot pile up without bound. Before: kept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_bounded() {
    use tokio::io::AsyncReadExt;
    let data_dir = tempfile::tempdir().unwrap();
    let server = usher_server::start(usher_server::ServeOptions {
        admin_token: Some(ADMIN_TOKEN.into()),
        limits: usher_server::listener::ConnectionLimits {
            max_connections: 5,
            header_timeout: Duration::from_secs(1),
        },
        ..usher_server::ServeOptions::new(data_dir.path())
    })
    .await
    .unwrap();
    let addr = server.addr;
    // Five connections that send half a request and stop: every slot is taken.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuth").await.unwrap();
        slow.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A real request waits for a slot, which the header timeout frees.
    let started = Instant::now();
    let status = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(500),
        "served at once although every slot was taken ({waited:?})"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // And the half-sent connections were closed by the server.
    for mut tcp in slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) => assert!(
                n == 0 || buf.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Ok(Err(_)) => {}
            Err(_) => panic!("a connection without complete headers was kept open"),
        }
    }
    server.stop().await;
}

/// One project's big pipeline does not starve another project: with one runner, the
/// other project's job runs next, not after all of the big pipeline's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_are_shared_fairly_between_projects() {
    let t = TestServer::start(1).await;
    let big: String = (0..40).map(|i| format!("big{i}:\n  script: [sleep 0.2]\n")).collect();
    let big = t.pipeline(&big).await;
    let first = TestServer::job_id(&big, "big0");
    t.wait_for_status(first, "running").await;
    let small = t.pipeline("small:\n  script: [echo small]\n").await;
    let small_job = TestServer::job_id(&small, "small");
    t.wait_for_status(small_job, "success").await;
    let (_, p) = t.call("GET", &format!("/api/v1/pipelines/{}", big["id"]), None).await;
    let done = p["jobs"].as_array().unwrap().iter().filter(|j| j["status"] == "success").count();
    assert!(done <= 3, "the small project waited for {done} jobs of the big one");
    t.call("POST", &format!("/api/v1/pipelines/{}/cancel", big["id"]), None).await;
    t.stop().await;
}
