//! The Docker API a docker-executor job is given, on a real (private) engine: what the
//! job creates carries its labels and joins its network; other jobs' objects and the
//! host are out of its reach. For each way a developer's token once got root on the
//! host through it — volume driver options, JSON keys in another case or given twice,
//! percent-encoded paths, privileged execs, query-string targets — the engine is shown
//! to read the request the dangerous way (sent to it directly), and the job's proxy is
//! shown to refuse it, with nothing of it reaching the engine.
//!
//! Runs under scripts/with-docker (make test does); without an engine the tests are
//! reported ignored (usher-testkit's harness), unless USHER_REQUIRE_DOCKER=1 fails them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use usher_testkit::docker::{BUSYBOX, DOCKER_CLI, SERVICE, docker, engine, objects_of};
use usher_testkit::harness::Needs;
use usher_testkit::*;

fn main() -> std::process::ExitCode {
    usher_testkit::harness::run(usher_testkit::tests![
        Needs::Docker, 2 => [
            the_docker_api_a_job_is_given_labels_what_it_makes_and_keeps_it_in,
            what_the_engine_would_read_as_reaching_the_host_is_refused,
        ];
    ])
}

/// The builds directory of a test server's only local runner.
fn local_runner(t: &TestServer) -> Vec<PathBuf> {
    vec![t.data_dir.path().join("builds").join("local-1")]
}

/// One HTTP/1.1 request on a unix socket, as raw as a job could send it: the request
/// target is written as given (no normalising). (status, body).
async fn raw(socket: &Path, method: &str, target: &str, body: &str) -> (u16, String) {
    let (socket, request) = (
        socket.to_path_buf(),
        format!(
            "{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, mut rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = String::new();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            while let Some((size, more)) = rest.split_once("\r\n") {
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if size == 0 || more.len() < size {
                    break;
                }
                body.push_str(&more[..size]);
                rest = more[size..].trim_start_matches("\r\n");
            }
        } else {
            body = rest.to_string();
        }
        (status, body)
    })
    .await
    .unwrap()
}

/// A job given the Docker API: what it creates carries its label and joins its
/// network; the host and other jobs' objects are out of its reach.
async fn the_docker_api_a_job_is_given_labels_what_it_makes_and_keeps_it_in() {
    let host = engine();
    let outsider = format!("usher-test-outsider-{}", rand_suffix());
    docker(&host, &["run", "--detach", "--name", &outsider, BUSYBOX, "sleep", "600"]);
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runner(&t);
    let pipeline = t
        .pipeline(&format!(
            r#"
job:
  image: {DOCKER_CLI}
  script:
    - docker network create made-net-$CI_JOB_ID
    - docker volume create made-vol-$CI_JOB_ID
    - docker run -d --name made-$CI_JOB_ID -v made-vol-$CI_JOB_ID:/data -v implicit-$CI_JOB_ID:/more {BUSYBOX} sleep 600
    - docker run --rm --name echo-$CI_JOB_ID {BUSYBOX} echo "attached output reaches the log"
    - docker run -d --name web-$CI_JOB_ID {SERVICE} && sleep 1 && echo "by name $(wget -qO- http://web-$CI_JOB_ID/)"
    - if docker run --rm -v /:/host {BUSYBOX} true; then echo HOST-MOUNTED; fi
    - if docker run --rm --privileged {BUSYBOX} true; then echo PRIVILEGED; fi
    - if docker stop -t 0 {outsider}; then echo OUTSIDER-STOPPED; fi
    - docker rm -f {outsider}
    - if docker exec {outsider} true; then echo OUTSIDER-ENTERED; fi
    - echo "listed=$(docker ps --all --format '{{{{.Names}}}}' | sort | tr '\n' ',')"
    - echo ready; sleep 600
"#
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    let log = t.wait_for_log(job_id, "ready").await;
    assert!(log.contains("attached output reaches the log"), "{log}");
    assert!(log.contains("by name hello from the service"), "{log}");
    for refused in ["HOST-MOUNTED", "PRIVILEGED", "OUTSIDER-STOPPED", "OUTSIDER-ENTERED"] {
        assert!(!log.lines().any(|line| line == refused), "{refused}:\n{log}");
    }
    assert!(
        log.contains("usher: jobs may not create containers with bind mounts of host paths"),
        "{log}"
    );
    assert!(log.contains("No such container"), "{log}");
    // `docker ps` lists the job's own containers only.
    let listed = log_value(&log, "listed");
    assert!(
        listed.contains(&format!("made-{job_id}")) && !listed.contains(&outsider),
        "{listed}"
    );
    let labelled = objects_of(&host, &runners, Some(job_id));
    // Its own container, the two it started, its network and the one it made, two volumes.
    let count = |kind: &str| labelled.iter().filter(|o| o.starts_with(kind)).count();
    assert_eq!(
        (count("container:"), count("network:"), count("volume:")),
        (3, 2, 2),
        "{labelled:?}"
    );

    t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    t.wait_for_status(job_id, "canceled").await;
    assert!(objects_of(&host, &runners, Some(job_id)).is_empty());
    let outsider_running = docker(&host, &["ps", "--quiet", "--filter", &format!("name={outsider}")]);
    assert!(
        !outsider_running.trim().is_empty(),
        "the container that is not the job's still runs"
    );
    docker(&host, &["rm", "--force", &outsider]);
    t.stop().await;
}

/// Each finding: the engine reads the request the dangerous way; the proxy refuses it,
/// whether the job's docker command line or a raw request sends it.
async fn what_the_engine_would_read_as_reaching_the_host_is_refused() {
    let host = engine();
    let engine_socket = PathBuf::from(host.trim_start_matches("unix://"));
    let suffix = rand_suffix();
    let outsider = format!("usher-test-outsider-{suffix}");
    docker(
        &host,
        &[
            "run",
            "--detach",
            "--name",
            &outsider,
            "--env",
            "SECRET=outsider-secret",
            BUSYBOX,
            "sleep",
            "600",
        ],
    );

    // The engine agrees with the attacker's reading of each request.
    let create = |name: &str| format!("/v1.41/containers/create?name={name}");
    let lower = json!({"Image": BUSYBOX, "Cmd": ["true"], "HostConfig": {"privileged": true, "binds": ["/:/host"], "pidmode": "host"}});
    let twice = format!(r#"{{"Image":"{BUSYBOX}","Cmd":["true"],"HostConfig":{{}},"hostConfig":{{"Privileged":true}}}}"#);
    for (name, body) in [
        (format!("agree-lower-{suffix}"), lower.to_string()),
        (format!("agree-twice-{suffix}"), twice.clone()),
    ] {
        let (status, answer) = raw(&engine_socket, "POST", &create(&name), &body).await;
        assert_eq!(status, 201, "{answer}");
        let inspected: Value = serde_json::from_str(&docker(&host, &["inspect", &name])).unwrap();
        assert_eq!(inspected[0]["HostConfig"]["Privileged"], true, "{name}: the engine took it");
        docker(&host, &["rm", "--force", &name]);
    }
    let encoded = format!("/containers%2Fcreate?name=agree-encoded-{suffix}");
    let (status, answer) = raw(
        &engine_socket,
        "POST",
        &encoded,
        &json!({"Image": BUSYBOX, "Cmd": ["true"]}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "the engine routes /containers%2Fcreate as a create: {answer}");
    docker(&host, &["rm", "--force", &format!("agree-encoded-{suffix}")]);
    let (status, answer) = raw(&engine_socket, "GET", &format!("/containers%2F{outsider}%2Fjson"), "").await;
    assert!(status == 200 && answer.contains("outsider-secret"), "{status} {answer}");

    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runner(&t);
    let pipeline = t
        .pipeline(&format!(
            r#"
job:
  image: {DOCKER_CLI}
  script:
    - if docker volume create -o type=none -o o=bind -o device=/ hostroot-{suffix}; then echo HOSTROOT-VOLUME; fi
    - if docker run --rm --mount type=volume,src=hv-{suffix},dst=/h,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/ {BUSYBOX} ls /h; then echo VOLUME-OPT-MOUNTED; fi
    - docker run -d --name mine-{suffix} {BUSYBOX} sleep 600
    - if docker exec --privileged mine-{suffix} true; then echo PRIVILEGED-EXEC; fi
    - docker exec mine-{suffix} echo "plain exec works"
    - if docker commit {outsider} stolen-{suffix}; then echo OUTSIDER-COMMITTED; fi
    - mkdir -p ctx && printf 'FROM {BUSYBOX}\nRUN echo built > /built\n' > ctx/Dockerfile
    - if docker build --network host -t hostnet-{suffix} ctx; then echo HOSTNET-BUILT; fi
    - docker build -t built-{suffix} ctx && echo "classic build works"
    - echo ready; sleep 600
"#
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    let log = t.wait_for_log(job_id, "ready").await;
    for done in [
        "HOSTROOT-VOLUME",
        "VOLUME-OPT-MOUNTED",
        "PRIVILEGED-EXEC",
        "OUTSIDER-COMMITTED",
        "HOSTNET-BUILT",
    ] {
        assert!(!log.lines().any(|line| line == done), "{done}:\n{log}");
    }
    for message in [
        "usher: jobs may not create volumes with driver options (DriverOpts)",
        "usher: jobs may not create volumes with driver options (HostConfig.Mounts[0].VolumeOptions.DriverConfig)",
        "usher: jobs may not run privileged execs (Privileged)",
        &format!("No such container: {outsider}"),
        "usher: jobs may not build on the host's network (networkmode host)",
        "plain exec works",
        "classic build works",
    ] {
        assert!(log.contains(message), "{message}:\n{log}");
    }

    // The same and the rest as raw requests to the job's socket.
    let job_container = format!("usher-{}-job-{job_id}", usher_runner::docker::instance_id(&runners[0]));
    let format = "{{range .Mounts}}{{if eq .Destination \"/var/run/usher/docker.sock\"}}{{.Source}}{{end}}{{end}}";
    let proxy = PathBuf::from(docker(&host, &["inspect", "--format", format, &job_container]).trim());
    let sneaky = format!("sneaky-{suffix}");
    let exec = format!("/v1.41/containers/mine-{suffix}/exec");
    let refusals: Vec<(&str, String, String, u16)> = vec![
        ("POST", create(&sneaky), lower.to_string(), 403),
        (
            "POST",
            create(&sneaky),
            json!({"Image": BUSYBOX, "HostConfig": {"networkmode": "host"}}).to_string(),
            403,
        ),
        (
            "POST",
            create(&sneaky),
            json!({"Image": BUSYBOX, "HostConfig": {"capadd": ["SYS_ADMIN"]}}).to_string(),
            403,
        ),
        ("POST", create(&sneaky), twice.clone(), 400),
        (
            "POST",
            format!("/containers%2Fcreate?name={sneaky}"),
            json!({"Image": BUSYBOX, "HostConfig": {"Binds": ["/:/host"]}}).to_string(),
            400,
        ),
        ("GET", format!("/containers%2F{outsider}%2Fjson"), String::new(), 400),
        ("GET", format!("/containers/{outsider}/json"), String::new(), 404),
        ("POST", exec, json!({"Cmd": ["true"], "privileged": true}).to_string(), 403),
        (
            "POST",
            format!("/commit?container={outsider}&repo=stolen-{suffix}"),
            String::new(),
            404,
        ),
        ("POST", "/build?networkmode=host".into(), String::new(), 403),
        (
            "POST",
            "/volumes/create".into(),
            json!({"Name": format!("hostroot-{suffix}"), "driveropts": {"device": "/"}}).to_string(),
            403,
        ),
    ];
    for (method, target, body, want) in refusals {
        let (status, answer) = raw(&proxy, method, &target, &body).await;
        assert_eq!(status, want, "{method} {target}: {answer}");
        let message: Value = serde_json::from_str(&answer).unwrap_or_default();
        let message = message["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("usher:") || message.starts_with("No such"),
            "{target}: {answer}"
        );
        assert!(!answer.contains("outsider-secret"), "{answer}");
    }
    // Lists hold the job's objects only.
    let (status, listed) = raw(&proxy, "GET", "/containers/json?all=1", "").await;
    assert!(
        status == 200 && listed.contains(&format!("mine-{suffix}")) && !listed.contains(&outsider),
        "{listed}"
    );

    // Nothing of it reached the engine.
    for name in [&sneaky, &format!("stolen-{suffix}")] {
        let found = docker(&host, &["ps", "--all", "--quiet", "--filter", &format!("name={name}")]);
        assert!(found.trim().is_empty(), "{name} exists");
    }
    let images = docker(&host, &["images", "--format", "{{.Repository}}"]);
    assert!(
        !images.contains(&format!("stolen-{suffix}")) && !images.contains(&format!("hostnet-{suffix}")),
        "{images}"
    );
    let volumes = docker(&host, &["volume", "ls", "--quiet"]);
    assert!(
        !volumes.contains(&format!("hostroot-{suffix}")) && !volumes.contains(&format!("hv-{suffix}")),
        "{volumes}"
    );
    for object in objects_of(&host, &runners, Some(job_id)) {
        let Some(id) = object.strip_prefix("container:") else { continue };
        let inspected: Value = serde_json::from_str(&docker(&host, &["inspect", id])).unwrap();
        let hc = &inspected[0]["HostConfig"];
        if inspected[0]["Name"] == format!("/{job_container}") {
            continue; // the runner's own container for the job, with the build directory
        }
        assert_eq!(hc["Privileged"], false, "{inspected}");
        assert!(hc["Binds"].as_array().is_none_or(|b| b.is_empty()), "{inspected}");
        assert_eq!(hc["PidMode"], "", "{inspected}");
    }

    t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    t.wait_for_status(job_id, "canceled").await;
    assert!(objects_of(&host, &runners, Some(job_id)).is_empty());
    docker(&host, &["rm", "--force", &outsider]);
    let _ = std::process::Command::new("docker")
        .env("DOCKER_HOST", &host)
        .args(["image", "rm", &format!("built-{suffix}")])
        .output();
    t.stop().await;
}
