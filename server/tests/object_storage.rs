//! Artifacts in S3-compatible storage (`--artifacts-url`), against a real S3 server
//! (moto's, started by scripts/with-s3) and two replicas on one PostgreSQL: a file
//! uploaded through one replica is downloaded (whole and by range) through the other and
//! handed to a later job by it; nothing lands on either replica's disk; an upload over
//! the limit leaves nothing in the bucket; expiry and the storage cap delete from the
//! bucket; a cache saved by one replica's runner is found by another's; and a bucket the
//! server cannot write stops it from starting. What is in the
//! bucket is read behind Usher's back, with a client of our own.

use serde_json::json;
use sha2::Digest;
use usher_testkit::harness::Needs;
use usher_testkit::runner_socket::{connect, next_of, send};
use usher_testkit::*;

fn main() -> std::process::ExitCode {
    usher_testkit::harness::run(usher_testkit::tests![
        Needs::ObjectStorage, 4 => [
            two_replicas_serve_each_others_artifacts_from_the_bucket,
            an_upload_over_the_limit_leaves_nothing_in_the_bucket,
            expiry_and_the_storage_cap_delete_from_the_bucket,
            a_bucket_the_server_cannot_use_stops_the_start,
            the_usher_command_takes_its_bucket_from_flags_and_aws_variables,
            a_cache_saved_through_one_replica_is_found_through_another,
        ];
    ])
}

fn settings(url: &str) -> usher_engine::Settings {
    usher_engine::Settings {
        artifacts_bucket: Some(s3::bucket(url)),
        ..Default::default()
    }
}

/// The files below a server's data dir's `artifacts/` (there should be none).
fn files_on_disk(t: &TestServer) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&t.data_dir.path().join("artifacts"), &mut out);
    out
}

async fn download(t: &TestServer, job: i64, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = t
        .client
        .get(format!("{}/api/v1/jobs/{job}/artifacts/{path}", t.base))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

const HANDED_OVER: &str = r#"
stages: [build, test]
build:
  stage: build
  variables:
    USHER_TEST_RUN: "MARKER"
  artifacts:
    paths: [out/, big.bin]
  script:
    - mkdir -p out && echo hello > out/a.txt && touch out/empty
    # 12 MiB: more than one part of a multipart upload.
    - head -c 12582912 /dev/urandom > big.bin
    - echo "built=$(sha256sum big.bin | cut -c1-64)"
use:
  stage: test
  variables:
    USHER_TEST_RUN: "MARKER"
  needs: [build]
  script:
    - echo "got=$(cat out/a.txt)"
    - echo "used=$(sha256sum big.bin | cut -c1-64)"
"#;

async fn two_replicas_serve_each_others_artifacts_from_the_bucket() {
    let database = fresh_postgres().await;
    let url = s3::fresh_url();
    // A has the runner, so every upload and every dependency download goes through A;
    // B has never seen a file.
    let a = TestServer::start_with(Some(database.clone()), 1, settings(&url)).await;
    let b = TestServer::start_with(Some(database), 0, settings(&url)).await;
    let pipeline = b.pipeline(&HANDED_OVER.replace("MARKER", &a.run_marker)).await;
    let (build, used) = (TestServer::job_id(&pipeline, "build"), TestServer::job_id(&pipeline, "use"));
    b.wait_for_status(used, "success").await;
    let (build_log, _) = b.log(build).await;
    let (use_log, _) = b.log(used).await;
    let built = log_value(&build_log, "built");
    assert_eq!(log_value(&use_log, "got"), "hello", "{use_log}");
    assert_eq!(log_value(&use_log, "used"), built, "the later job got the 12 MiB file whole");

    let (_, list) = b.call("GET", &format!("/api/v1/jobs/{build}/artifacts"), None).await;
    assert_eq!(
        list,
        json!([
            {"path": "big.bin", "size": 12582912, "expires_at": null, "expired": false},
            {"path": "out/a.txt", "size": 6, "expires_at": null, "expired": false},
            {"path": "out/empty", "size": 0, "expires_at": null, "expired": false},
        ])
    );
    let prefix = s3::prefix_of(&url);
    let mut keys = s3::keys_under(&prefix).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            (format!("{prefix}/job-{build}/big.bin"), 12582912),
            (format!("{prefix}/job-{build}/out/a.txt"), 6),
            (format!("{prefix}/job-{build}/out/empty"), 0),
        ],
        "the bucket holds exactly the artifacts"
    );
    assert_eq!(files_on_disk(&a), Vec::<std::path::PathBuf>::new(), "nothing on A's disk");
    assert_eq!(files_on_disk(&b), Vec::<std::path::PathBuf>::new(), "nothing on B's disk");

    // Downloads through B, which received none of it.
    let whole = download(&b, build, "out/a.txt", None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "application/octet-stream");
    assert_eq!(whole.headers()["content-disposition"], "attachment; filename=\"a.txt\"");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.text().await.unwrap(), "hello\n");
    let part = download(&b, build, "out/a.txt", Some("bytes=1-3")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1-3/6");
    assert_eq!(part.text().await.unwrap(), "ell");
    let tail = download(&b, build, "out/a.txt", Some("bytes=-2")).await;
    assert_eq!((tail.status().as_u16(), tail.text().await.unwrap()), (206, "o\n".to_string()));
    let outside = download(&b, build, "out/a.txt", Some("bytes=10-20")).await;
    assert_eq!(outside.status(), 416);
    assert_eq!(outside.headers()["content-range"], "bytes */6");
    for (range, why) in [
        ("bytes=0-1,3-4", "several ranges"),
        ("lines=1-2", "not a byte range"),
        ("bytes=x", "not understood"),
    ] {
        let whole = download(&b, build, "out/a.txt", Some(range)).await;
        assert_eq!(
            (whole.status().as_u16(), whole.text().await.unwrap()),
            (200, "hello\n".to_string()),
            "{why}"
        );
    }
    let empty = download(&b, build, "out/empty", Some("bytes=0-")).await;
    assert_eq!(
        (empty.status().as_u16(), empty.text().await.unwrap()),
        (200, String::new()),
        "an empty file, whole"
    );
    let big = download(&b, build, "big.bin", None).await;
    assert_eq!(big.status(), 200);
    assert_eq!(big.headers()["content-length"], "12582912");
    let bytes = big.bytes().await.unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), built, "the big file comes back whole");
    assert_eq!(download(&b, build, "out/missing.txt", None).await.status(), 404);
    a.stop().await;
    b.stop().await;
}

async fn an_upload_over_the_limit_leaves_nothing_in_the_bucket() {
    let url = s3::fresh_url();
    let prefix = s3::prefix_of(&url);
    let t = TestServer::start_with(
        None,
        0,
        usher_engine::Settings {
            max_artifact_bytes: 10 * 1024 * 1024,
            ..settings(&url)
        },
    )
    .await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let token = engine.create_runner_token().await.unwrap();
    let pipeline = t
        .pipeline("big:\n  artifacts:\n    paths: [small.txt, big.bin]\n  script: [x]\n")
        .await;
    let job = TestServer::job_id(&pipeline, "big");
    // A runner of our own holds the job, and sends what a runner that ignored the
    // assignment's `max_bytes` would.
    let mut runner = connect(&t, &token, "holder").await;
    send(&mut runner, json!({"type": "request_job"})).await;
    let assigned = next_of(&mut runner, "job").await["job"].clone();
    assert_eq!(assigned["job_id"], job);
    assert_eq!(assigned["artifacts"]["max_bytes"], 10 * 1024 * 1024, "the runner is told the limit");
    let put = |path: &str, body: reqwest::Body| {
        t.client
            .put(format!("{}/api/runner/v1/jobs/{job}/artifacts/{path}", t.base))
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    assert_eq!(put("small.txt", "s\n".into()).await.unwrap().status(), 201);
    // 12 MiB in 1 MiB pieces, without a length: the upload has sent its first part to
    // the bucket when it passes the 10 MiB limit.
    let pieces = futures::stream::iter((0..12).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1024 * 1024])));
    match put("big.bin", reqwest::Body::wrap_stream(pieces)).await {
        Ok(refused) => assert_eq!(refused.status(), 413),
        // The server may answer while the client still sends, and close the connection.
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(
        s3::keys_under(&prefix).await,
        [(format!("{prefix}/job-{job}/small.txt"), 2)],
        "nothing of the refused file is in the bucket"
    );
    assert_eq!(s3::unfinished_uploads(&prefix).await, 0, "the refused multipart upload was aborted");
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{job}/artifacts"), None).await;
    assert_eq!(
        list,
        json!([{"path": "small.txt", "size": 2, "expires_at": null, "expired": false}])
    );
    let report = json!({"exit_code": 0, "failure_reason": null, "duration_ms": 1, "after_script": null});
    send(&mut runner, json!({"type": "finished", "job_id": job, "report": report})).await;
    next_of(&mut runner, "finished_ack").await;
    t.stop().await;
}

async fn expiry_and_the_storage_cap_delete_from_the_bucket() {
    let url = s3::fresh_url();
    let prefix = s3::prefix_of(&url);
    let t = TestServer::start_with(
        None,
        1,
        usher_engine::Settings {
            max_storage_bytes: Some(100_000),
            ..settings(&url)
        },
    )
    .await;
    let engine = &t.server.as_ref().unwrap().engine;
    let pipeline = t
        .pipeline("keep:\n  artifacts:\n    paths: [out.txt]\n    expire_in: 1s\n  script: [\"echo data > out.txt\"]\n")
        .await;
    let expiring = TestServer::job_id(&pipeline, "keep");
    t.wait_for_status(expiring, "success").await;
    assert_eq!(s3::keys_under(&prefix).await.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    engine.apply_retention().await.unwrap();
    assert_eq!(s3::keys_under(&prefix).await, [], "the expired file is deleted from the bucket");
    let (_, list) = t.call("GET", &format!("/api/v1/jobs/{expiring}/artifacts"), None).await;
    assert_eq!(list[0]["expired"], true, "{list}");
    assert_eq!(download(&t, expiring, "out.txt", None).await.status(), 404);

    // Two 60 kB files under a 100 kB cap: the older goes.
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let pipeline = t
            .pipeline("blob:\n  artifacts:\n    paths: [blob]\n  script: [\"head -c 60000 /dev/zero > blob\"]\n")
            .await;
        let job = TestServer::job_id(&pipeline, "blob");
        t.wait_for_status(job, "success").await;
        jobs.push(job);
    }
    engine.apply_retention().await.unwrap();
    assert_eq!(
        s3::keys_under(&prefix).await,
        [(format!("{prefix}/job-{}/blob", jobs[1]), 60000)],
        "the cap removed the older file from the bucket"
    );
    t.stop().await;
}

async fn a_bucket_the_server_cannot_use_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = |bucket: usher_engine::artifact_storage::Bucket| {
        usher_server::start(usher_server::ServeOptions {
            settings: usher_engine::Settings {
                artifacts_bucket: Some(bucket),
                ..Default::default()
            },
            ..usher_server::ServeOptions::new(dir.path())
        })
    };
    let missing = s3::bucket("s3://no-such-bucket/x");
    let Err(message) = start(missing).await else {
        panic!("started with a bucket that does not exist")
    };
    assert!(
        message.contains("s3://no-such-bucket/x") && message.contains("cannot write"),
        "{message}"
    );

    let unreachable = usher_engine::artifact_storage::Bucket::open(
        "s3://usher-test/x",
        [("AWS_ENDPOINT".to_string(), format!("http://127.0.0.1:{}", free_port()))]
            .into_iter()
            .chain(s3::settings().into_iter().filter(|(k, _)| k != "AWS_ENDPOINT")),
    )
    .unwrap();
    let Err(message) = start(unreachable).await else {
        panic!("started with storage nobody answers for")
    };
    assert!(message.contains("cannot write"), "{message}");

    for bad in ["https://bucket/x", "s3://", "s3:///prefix"] {
        let error = usher_engine::artifact_storage::Bucket::open(bad, s3::settings()).unwrap_err();
        assert!(error.contains(bad) && error.contains("s3://BUCKET"), "{bad}: {error}");
    }
}

/// `usher serve` as an operator runs it: the bucket from `USHER_ARTIFACTS_URL` and
/// `USHER_S3_ENDPOINT` (then from the flags), the credentials from the `AWS_*`
/// variables — which jobs never see.
async fn the_usher_command_takes_its_bucket_from_flags_and_aws_variables() {
    let url = s3::fresh_url();
    let prefix = s3::prefix_of(&url);
    let endpoint = s3::endpoint().unwrap();
    let aws: Vec<(String, String)> = s3::settings().into_iter().filter(|(k, _)| k != "AWS_ENDPOINT").collect();
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("USHER_ARTIFACTS_URL", &url));
    let dir = tempfile::tempdir().unwrap();
    let usher = env!("CARGO_BIN_EXE_usher");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut t = TestServer::detached();
    env.push(("USHER_S3_ENDPOINT", &endpoint));
    let (server, base) = spawn_usher(usher, dir.path(), &addr, 1, &env);
    t.base = base;
    let pipeline = t
        .pipeline(&format!(
            "keep:\n  variables:\n    USHER_TEST_RUN: \"{}\"\n  artifacts:\n    paths: [out.txt]\n  script:\n    - echo kept > out.txt\n    - echo \"aws_vars=$(env | grep -c '^AWS_' || true)\"\n",
            t.run_marker
        ))
        .await;
    let job = TestServer::job_id(&pipeline, "keep");
    t.wait_for_status(job, "success").await;
    let (log, _) = t.log(job).await;
    assert_eq!(
        log_value(&log, "aws_vars"),
        "0",
        "a job sees none of the server's AWS_* variables:\n{log}"
    );
    assert!(!log.contains("usher-test-secret"), "{log}");
    assert_eq!(s3::keys_under(&prefix).await, [(format!("{prefix}/job-{job}/out.txt"), 5)]);
    let body = download(&t, job, "out.txt", None).await.text().await.unwrap();
    assert_eq!(body, "kept\n");
    drop(server);

    // A bucket that is not there: the command says why and exits 1.
    let mut refused = OwnedChild::spawn(
        std::process::Command::new(usher)
            .args(["serve", "--addr", &format!("127.0.0.1:{}", free_port()), "--local-runners", "0"])
            .args(["--artifacts-url", "s3://no-such-bucket/usher", "--s3-endpoint", &endpoint])
            .env("USHER_DATA_DIR", dir.path().join("other"))
            .env_remove("USHER_ARTIFACTS_URL")
            .envs(aws.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "usher started with a missing bucket");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(refused.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket/usher") && stderr.contains("cannot write"),
        "{stderr}"
    );
    assert!(!stderr.contains("usher-test-secret"), "{stderr}");
}

/// A cache a job saved on replica A's runner is in the bucket; with A gone, replica B's
/// runner, which never had a copy, finds it there.
async fn a_cache_saved_through_one_replica_is_found_through_another() {
    let database = fresh_postgres().await;
    let url = s3::fresh_url();
    let config = |marker: &str| {
        format!(
            "fill:\n  variables:\n    USHER_TEST_RUN: \"{marker}\"\n  script:\n    - echo \"found=$(cat deps/data 2>/dev/null || echo none)\"\n    - mkdir -p deps && echo from-$CI_PIPELINE_ID > deps/data\n  cache:\n    key: deps\n    paths: [deps/]\n"
        )
    };
    let a = TestServer::start_with(Some(database.clone()), 1, settings(&url)).await;
    let body = json!({"name": format!("cached-{}", rand_suffix()), "ci_config": config(&a.run_marker)});
    let (status, project) = a.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    let first = a.pipeline_of_main(&project).await;
    let job = TestServer::job_id(&first, "fill");
    a.wait_for_status(job, "success").await;
    let log = a.wait_for_log(job, "to the server").await;
    assert!(log.contains("Sent the cache deps to the server"), "{log}");
    let prefix = s3::prefix_of(&url);
    let keys = s3::keys_under(&format!("{prefix}/caches")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].0.starts_with(&format!("{prefix}/caches/project-{}/", project["id"])) && keys[0].0.ends_with(".tar"),
        "{keys:?}"
    );
    a.stop().await;

    let b = TestServer::start_with(Some(database), 1, settings(&url)).await;
    let (status, second) = b
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", project["id"]),
            Some(json!({"ref": "main", "ci_config": config(&b.run_marker)})),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let job = TestServer::job_id(&second, "fill");
    b.wait_for_status(job, "success").await;
    let log = b.wait_for_log(job, "found=").await;
    assert!(log.contains("Fetched the cache deps from the server"), "{log}");
    assert_eq!(log_value(&log, "found"), format!("from-{}", first["id"]), "{log}");
    assert_eq!(files_on_disk(&b), Vec::<std::path::PathBuf>::new(), "nothing on B's disk");
    b.stop().await;
}
