//! The docker executor on a real (private) Docker engine: a job runs in its image with
//! its services; a cancel stops the script and runs after_script in the same container
//! with the script's variables and directory; cancel, abort, failure and success all
//! leave no container, network or volume of the job — also what the job made itself
//! through the Docker API it was given (whose confinement docker_api.rs tests); a
//! missing image fails the job as `image_pull_failed`; a job without `image:` runs in
//! the runner's `--docker-image`; a runner killed with SIGKILL
//! removes what its jobs left when it starts again; in containers too, a job finds the
//! artifacts of the jobs before it and the project's cache.
//!
//! Runs under scripts/with-docker (make test does); without an engine the tests are
//! reported ignored (usher-testkit's harness), unless USHER_REQUIRE_DOCKER=1 fails them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use usher_server::ServeOptions;
use usher_testkit::docker::{BUSYBOX, DOCKER_CLI, SERVICE, engine, objects_of};
use usher_testkit::harness::Needs;
use usher_testkit::*;

fn main() -> std::process::ExitCode {
    usher_testkit::harness::run(usher_testkit::tests![
        Needs::Docker, 2 => [
            a_cancelled_job_runs_after_script_in_its_container_and_leaves_nothing,
            an_aborted_job_leaves_nothing_and_runs_no_after_script,
            jobs_that_end_on_their_own_leave_nothing_and_a_missing_image_is_image_pull_failed,
            a_job_without_image_runs_in_the_runners_default_image,
            an_images_variables_are_the_jobs_and_one_nothing_sets_fails_the_job_naming_it,
            a_service_gets_its_entrypoint_command_and_the_files_variables_and_its_own,
            random_cancels_leave_no_docker_objects,
            a_runner_killed_with_sigkill_removes_what_its_jobs_left_when_it_starts_again,
            a_containers_root_cannot_plant_a_link_where_the_runner_writes,
            in_a_container_a_cancelled_job_hands_over_its_dotenv_and_runs_what_it_deferred,
            in_containers_later_jobs_get_earlier_artifacts_and_the_cache,
        ];
    ])
}

/// The engine holds nothing of `job_id` (teardown runs before the report, so this
/// holds as soon as the job is terminal).
async fn assert_nothing_left(host: &str, runners: &[PathBuf], job_id: i64) {
    let left = objects_of(host, runners, Some(job_id));
    assert!(left.is_empty(), "job {job_id} left {left:?}");
}

/// Waits (up to 30 s) until the engine holds nothing of `job_id`, for ends the runner
/// learns of after the job is terminal (an abort) or only when it starts again.
async fn wait_until_nothing_left(host: &str, runners: &[PathBuf], job_id: i64) {
    let until = Instant::now() + Duration::from_secs(30);
    while !objects_of(host, runners, Some(job_id)).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_nothing_left(host, runners, job_id).await;
}

/// The builds directories of a test server's `n` local runners.
fn local_runners(t: &TestServer, n: u32) -> Vec<PathBuf> {
    (1..=n)
        .map(|i| t.data_dir.path().join("builds").join(format!("local-{i}")))
        .collect()
}

async fn a_cancelled_job_runs_after_script_in_its_container_and_leaves_nothing() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runners(&t, 1);
    let pipeline = t
        .pipeline(&format!(
            r#"
job:
  image: {BUSYBOX}
  services:
    - name: {SERVICE}
      alias: web
  cancel_grace: 5s
  script:
    - mkdir -p "deep/it's here" && cd "deep/it's here"
    - export LEFT_BY_SCRIPT="the script's value"
    - echo "service says $(wget -qO- http://web/)"
    - sleep 600 &
    - echo "in-container=$(hostname)"
    - echo ready; sleep 600
  after_script:
    - echo "after_script saw LEFT_BY_SCRIPT=[$LEFT_BY_SCRIPT] pwd=[$PWD] status=[$CI_JOB_STATUS] host=[$(hostname)]"
"#
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    let log = t.wait_for_log(job_id, "ready").await;
    assert!(log.contains("service says hello from the service"), "{log}");
    let container_host = log_value(&log, "in-container");
    let labelled = objects_of(&host, &runners, Some(job_id));
    assert_eq!(
        labelled.iter().filter(|o| o.starts_with("container:")).count(),
        2,
        "the job and its service: {labelled:?}"
    );
    assert!(labelled.iter().any(|o| o.starts_with("network:")), "{labelled:?}");

    let cancelled_at = Instant::now();
    let (status, answer) = t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "canceling", "{answer}");
    let job = t.wait_for_status(job_id, "canceled").await;
    let took = cancelled_at.elapsed();
    let (log, _) = t.log(job_id).await;
    let build = t.builds_dir().join(format!("job-{job_id}"));
    assert!(
        log.contains(&format!(
            "after_script saw LEFT_BY_SCRIPT=[the script's value] pwd=[{}/deep/it's here] status=[canceled] host=[{container_host}]",
            build.display()
        )),
        "after_script ran in the same container with the script's state:\n{log}"
    );
    assert_eq!(job["after_script"]["exit_code"], 0, "{job}");
    assert!(
        log.contains("Removed the job's Docker objects: 2 container(s), 1 network(s)"),
        "{log}"
    );
    // The receipt says the same.
    let receipt = &job["teardown"];
    assert_eq!(receipt["docker_removed"]["containers"], 2, "{job}");
    assert_eq!(receipt["docker_removed"]["networks"], 1, "{job}");
    assert_eq!(
        (receipt["after_script"].as_str(), receipt["leftovers"].as_u64()),
        (Some("success"), Some(0)),
        "{job}"
    );
    assert_nothing_left(&host, &runners, job_id).await;
    eprintln!("cancel → canceled with everything removed: {} ms", took.as_millis());
    t.stop().await;
}

async fn an_aborted_job_leaves_nothing_and_runs_no_after_script() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runners(&t, 1);
    let pipeline = t
        .pipeline(&format!(
            "job:\n  image: {BUSYBOX}\n  services: [{SERVICE}]\n  script:\n    - sleep 600 &\n    - echo ready; sleep 600\n  after_script:\n    - echo after-ran\n"
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    t.wait_for_log(job_id, "ready").await;
    assert!(!objects_of(&host, &runners, Some(job_id)).is_empty());
    let (status, answer) = t.call("POST", &format!("/api/v1/jobs/{job_id}/abort"), None).await;
    assert_eq!(status, 200, "{answer}");
    t.wait_for_status(job_id, "canceled").await;
    // The job is canceled at once; the runner removes the objects when it hears of it.
    wait_until_nothing_left(&host, &runners, job_id).await;
    let (log, _) = t.log(job_id).await;
    assert!(!log.contains("after-ran"), "{log}");
    t.stop().await;
}

async fn jobs_that_end_on_their_own_leave_nothing_and_a_missing_image_is_image_pull_failed() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runners(&t, 1);
    let pipeline = t
        .pipeline(&format!(
            "stages: [a, b, c]\nok:\n  stage: a\n  image: {BUSYBOX}\n  variables: {{GREETING: \"it's fine\"}}\n  script: [\"echo \\\"greeting=$GREETING dir=$CI_PROJECT_DIR\\\"\"]\nbad:\n  stage: b\n  needs: []\n  image: {BUSYBOX}\n  script: [\"echo before; false\", echo never]\nmissing:\n  stage: c\n  needs: []\n  image: usher-test/not-there:1\n  script: [echo never]\n"
        ))
        .await;
    let ok = TestServer::job_id(&pipeline, "ok");
    let job = t.wait_for_status(ok, "success").await;
    let (log, _) = t.log(ok).await;
    assert!(
        log.contains(&format!(
            "greeting=it's fine dir={}",
            t.builds_dir().join(format!("job-{ok}")).display()
        )),
        "{log}"
    );
    assert_eq!(job["exit_code"], 0);
    let bad = TestServer::job_id(&pipeline, "bad");
    let job = t.wait_for_status(bad, "failed").await;
    assert_eq!(
        (job["exit_code"].clone(), job["failure_reason"].clone()),
        (json!(1), json!("script_failure")),
        "{job}"
    );
    let missing = TestServer::job_id(&pipeline, "missing");
    let job = t.wait_for_status(missing, "failed").await;
    assert_eq!(job["failure_reason"], "image_pull_failed", "{job}");
    let (log, _) = t.log(missing).await;
    assert!(log.contains("usher-test/not-there:1 is not available"), "{log}");
    for id in [ok, bad, missing] {
        assert_nothing_left(&host, &runners, id).await;
    }
    t.stop().await;
}

async fn a_job_without_image_runs_in_the_runners_default_image() {
    let host = engine();
    let t = TestServer::start_opts(|defaults| ServeOptions {
        local_runners: 1,
        executor: usher_runner::docker::ExecutorKind::Docker,
        docker_host: Some(host.clone()),
        docker_image: Some(BUSYBOX.into()),
        ..defaults
    })
    .await;
    let runners = local_runners(&t, 1);
    let pipeline = t
        .pipeline(
            "plain:\n  script: [\"echo container-host=$(hostname)\"]\nown:\n  image: usher-test/not-there:1\n  script: [echo never]\n",
        )
        .await;
    let plain = TestServer::job_id(&pipeline, "plain");
    t.wait_for_status(plain, "success").await;
    let (log, _) = t.log(plain).await;
    assert!(log.contains(&format!("Using image {BUSYBOX}")), "{log}");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(log_value(&log, "container-host"), host_name.trim(), "ran in a container: {log}");
    // A job's own image wins over the default.
    let own = TestServer::job_id(&pipeline, "own");
    let job = t.wait_for_status(own, "failed").await;
    assert_eq!(job["failure_reason"], "image_pull_failed", "{job}");
    for id in [plain, own] {
        assert_nothing_left(&host, &runners, id).await;
    }
    t.stop().await;
}

/// GitLab files name their registry by `$CI_REGISTRY`, which Usher does not set: a
/// project variable does, when the job is assigned; a name nothing sets fails the job
/// naming it, and no value makes the name reach docker as a flag.
async fn an_images_variables_are_the_jobs_and_one_nothing_sets_fails_the_job_naming_it() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runners(&t, 1);
    let (registry, path) = BUSYBOX.split_once('/').unwrap();
    let config = format!(
        "stages: [a, b, c]\nvariables: {{IMAGE_PATH: \"{path}\"}}\nset:\n  stage: a\n  image: $CI_REGISTRY/$IMAGE_PATH\n  script: [\"echo ran-in=$CI_REGISTRY\"]\nunset:\n  stage: b\n  needs: []\n  image: ${{CI_REGISTRY_IMAGE}}/tool:1\n  script: [echo never]\nflag:\n  stage: c\n  needs: []\n  image: $LOOKS_LIKE_A_FLAG\n  script: [echo never]\n"
    );
    let body = json!({"name": format!("images-{}", rand_suffix()), "ci_config": config});
    let (status, project) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    let variables = format!("/api/v1/projects/{}/variables", project["id"]);
    for (key, value) in [("CI_REGISTRY", registry), ("LOOKS_LIKE_A_FLAG", "--privileged")] {
        let (status, answer) = t.call("POST", &variables, Some(json!({"key": key, "value": value}))).await;
        assert_eq!(status, 201, "{key}: {answer}");
    }
    let pipeline = t.pipeline_of_main(&project).await;
    let set = TestServer::job_id(&pipeline, "set");
    t.wait_for_status(set, "success").await;
    let (log, _) = t.log(set).await;
    assert!(
        log.contains(&format!("Using image {BUSYBOX}")) && log.contains(&format!("ran-in={registry}")),
        "{log}"
    );
    for (name, why) in [
        (
            "unset",
            "image ${CI_REGISTRY_IMAGE}/tool:1 names `$CI_REGISTRY_IMAGE`, which nothing sets",
        ),
        ("flag", "--privileged is not an image name"),
    ] {
        let id = TestServer::job_id(&pipeline, name);
        let job = t.wait_for_status(id, "failed").await;
        assert_eq!(job["failure_reason"], "image_pull_failed", "{job}");
        let (log, _) = t.log(id).await;
        assert!(log.contains(why), "{name}: {log}");
        assert_nothing_left(&host, &runners, id).await;
    }
    t.stop().await;
}

/// GitLab's service keys: `entrypoint` and `command` replace the image's; the container
/// gets the file's variables and its own (which may hand a project variable on), never
/// the project's otherwise. Its variables reach only the container: ones that would
/// change what the runner's docker command does (`DOCKER_HOST`, `LD_PRELOAD`) do not.
async fn a_service_gets_its_entrypoint_command_and_the_files_variables_and_its_own() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let runners = local_runners(&t, 1);
    let config = format!(
        r#"variables:
  FROM_FILE: file-value
job:
  image: {BUSYBOX}
  services:
    - name: {BUSYBOX}
      alias: envsvc
      entrypoint: ["sh", "-c", "mkdir -p /www; env > /www/env; echo \"args=$0,$1\" > /www/args; exec httpd -f -p 80 -h /www"]
      command: [first, second]
      variables:
        OWN: own-value
        HANDED: "for-the-db-$DB_PASSWORD"
        DOCKER_HOST: tcp://127.0.0.1:9
        LD_PRELOAD: /nonexistent/evil.so
        TWO_LINES: "a\nb"
    - $PROJECT_SERVICE
  script:
    - for i in $(seq 100); do wget -qO- http://envsvc/env > env.txt && break; sleep 0.2; done
    - sed 's/^/service-env /' env.txt
    - wget -qO- http://envsvc/args
    - for i in $(seq 100); do wget -qO- http://service/ && break; sleep 0.2; done
"#
    );
    let body = json!({"name": format!("services-{}", rand_suffix()), "ci_config": config});
    let (status, project) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    let variables = format!("/api/v1/projects/{}/variables", project["id"]);
    for (key, value) in [
        ("DB_PASSWORD", "s3cret-value"),
        ("PROJECT_ONLY", "not-for-services"),
        ("PROJECT_SERVICE", SERVICE),
    ] {
        let (status, answer) = t.call("POST", &variables, Some(json!({"key": key, "value": value}))).await;
        assert_eq!(status, 201, "{key}: {answer}");
    }
    let pipeline = t.pipeline_of_main(&project).await;
    let job = TestServer::job_id(&pipeline, "job");
    t.wait_for_status(job, "success").await;
    let (log, _) = t.log(job).await;
    for line in [
        "service-env FROM_FILE=file-value",
        "service-env OWN=own-value",
        "service-env HANDED=for-the-db-s3cret-value",
        "service-env DOCKER_HOST=tcp://127.0.0.1:9",
        "service-env LD_PRELOAD=/nonexistent/evil.so",
        "args=first,second",
        // The service a project variable names, reached by its default alias.
        "hello from the service",
        "The service does not get `TWO_LINES`",
    ] {
        assert!(log.contains(line), "{line} missing:\n{log}");
    }
    assert!(!log.contains("PROJECT_ONLY"), "a project variable reached the service:\n{log}");
    assert_nothing_left(&host, &runners, job).await;
    t.stop().await;
}

/// The issue's measure: a job that starts three containers and a network through its
/// Docker API and whose after_script removes nothing, cancelled at a random moment.
async fn random_cancels_leave_no_docker_objects() {
    let host = engine();
    let rounds: usize = std::env::var("USHER_DOCKER_CANCELS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let t = TestServer::start_docker(&host, 2).await;
    let runners = local_runners(&t, 2);
    let config = format!(
        r#"
job:
  image: {DOCKER_CLI}
  cancel_grace: 1s
  script:
    - docker network create net-$CI_JOB_ID
    - for i in 1 2 3; do docker run -d --network net-$CI_JOB_ID {BUSYBOX} sleep 600; done
    - echo all-started
    - sleep 600
  after_script:
    - echo "after_script removes nothing"
"#
    );
    let mut rng_state = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut random_ms = |below: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % below
    };
    let mut teardown_ms = Vec::new();
    let mut pending = Vec::new();
    for round in 0..rounds {
        let pipeline = t.pipeline(&config).await;
        let job_id = TestServer::job_id(&pipeline, "job");
        t.wait_for_status(job_id, "running").await;
        // Anywhere from before the first container to after the last one.
        tokio::time::sleep(Duration::from_millis(random_ms(2500))).await;
        let at = Instant::now();
        t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
        pending.push((round, job_id, at));
        // Two runners: keep two jobs in flight.
        if pending.len() == 2 {
            let (round, job_id, at) = pending.remove(0);
            let job = t.wait_for_status(job_id, "canceled").await;
            teardown_ms.push(at.elapsed().as_millis() as u64);
            assert_nothing_left(&host, &runners, job_id).await;
            assert_eq!(job["after_script"]["exit_code"], 0, "round {round}: {job}");
        }
    }
    for (_, job_id, at) in pending {
        t.wait_for_status(job_id, "canceled").await;
        teardown_ms.push(at.elapsed().as_millis() as u64);
        assert_nothing_left(&host, &runners, job_id).await;
    }
    let all = objects_of(&host, &runners, None);
    teardown_ms.sort_unstable();
    eprintln!(
        "{rounds} random cancels: 0 objects left; cancel → canceled (everything removed) p50 {} ms, p95 {} ms, max {} ms",
        teardown_ms[teardown_ms.len() / 2],
        teardown_ms[teardown_ms.len() * 95 / 100],
        teardown_ms.last().unwrap()
    );
    assert!(all.is_empty(), "labelled objects left: {all:?}");
    t.stop().await;
}

async fn a_runner_killed_with_sigkill_removes_what_its_jobs_left_when_it_starts_again() {
    let host = engine();
    let t = TestServer::start(0).await;
    let token = t.server.as_ref().unwrap().engine.create_runner_token().await.unwrap();
    let builds = t.data_dir.path().join("docker-builds");
    let runners = vec![builds.clone()];
    let start_runner = || {
        OwnedChild::spawn(
            runner_command(&t.base, "docker-runner", &builds)
                .args(["--executor", "docker", "--docker-host", &host])
                .env("USHER_RUNNER_TOKEN", &token),
        )
    };
    let mut runner = start_runner();
    let pipeline = t
        .pipeline(&format!(
            "job:\n  image: {DOCKER_CLI}\n  services: [{SERVICE}]\n  script:\n    - docker volume create kept-$CI_JOB_ID\n    - docker run -d {BUSYBOX} sleep 600\n    - echo ready; sleep 600\n"
        ))
        .await;
    let job_id = TestServer::job_id(&pipeline, "job");
    t.wait_for_log(job_id, "ready").await;
    runner.kill().unwrap();
    runner.wait().unwrap();
    let left = objects_of(&host, &runners, Some(job_id));
    assert_eq!(
        left.len(),
        5,
        "the job, its service, its container, its network, its volume: {left:?}"
    );

    let mut runner = start_runner();
    wait_until_nothing_left(&host, &runners, job_id).await;
    runner.kill().unwrap();
    runner.wait().unwrap();
    t.stop().await;
}

/// In a container the job is root, and the runner's scripts directory is mounted into
/// it: the job plants a link where the runner will write after_script, towards a file
/// only root may touch on the host. The directory is read-only in the container, so
/// the link cannot be made and root writes nothing through it.
async fn a_containers_root_cannot_plant_a_link_where_the_runner_writes() {
    let host = engine();
    let secret = tempfile::tempdir().unwrap();
    let target = secret.path().join("authorized_keys");
    let t = TestServer::start_docker(&host, 1).await;
    let pipeline = t
        .pipeline(&format!(
            r#"
planter:
  image: {BUSYBOX}
  script:
    - beside="$CI_PROJECT_DIR/../job-$CI_JOB_ID.usher"; ls "$beside" >/dev/null && echo beside_mounted=yes
    - if ln -s "{target}" "$CI_PROJECT_DIR/../job-$CI_JOB_ID.usher/after_script.sh" 2>/dev/null; then echo planted=yes; else echo planted=no; fi
    - if echo x > "$CI_PROJECT_DIR/../job-$CI_JOB_ID.usher/planted" 2>/dev/null; then echo wrote_beside=yes; else echo wrote_beside=no; fi
    - export LEFT_BY_SCRIPT=still-here
  after_script:
    - echo "ssh-ed25519 AAAA attacker"
    - echo "after_script_sees=$LEFT_BY_SCRIPT"
"#,
            target = target.display()
        ))
        .await;
    let job = TestServer::job_id(&pipeline, "planter");
    t.wait_for_status(job, "success").await;
    let (log, _) = t.log(job).await;
    assert_eq!(
        log_value(&log, "beside_mounted"),
        "yes",
        "the attack aims where the runner writes:\n{log}"
    );
    assert_eq!(log_value(&log, "planted"), "no", "{log}");
    assert_eq!(log_value(&log, "wrote_beside"), "no", "{log}");
    assert_eq!(log_value(&log, "after_script_sees"), "still-here", "{log}");
    assert!(!target.exists(), "root wrote the job's after_script into {}", target.display());
    t.stop().await;
}

/// The teardown pieces in a container (busybox's sh): a job cancelled in its container
/// hands over what its dotenv file held, and what it deferred with `usher-defer` runs in
/// the container after after_script, last registered first; the receipt lists them.
async fn in_a_container_a_cancelled_job_hands_over_its_dotenv_and_runs_what_it_deferred() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let config = format!(
        "stages: [provision, cleanup]\nprovision:\n  stage: provision\n  image: {BUSYBOX}\n  script:\n    - echo ENV_ID=env-$CI_JOB_ID > provision.env\n    - usher-defer echo deferred-first\n    - usher-defer echo deferred-second\n    - echo ready\n    - sleep 300\n  after_script: [echo after-ran]\n  artifacts:\n    reports:\n      dotenv: provision.env\ndestroy:\n  stage: cleanup\n  image: {BUSYBOX}\n  when: on_cancel\n  script: [\"echo destroying=$ENV_ID\"]\n"
    );
    let pipeline = t.pipeline(&config).await;
    let (provision, destroy) = (TestServer::job_id(&pipeline, "provision"), TestServer::job_id(&pipeline, "destroy"));
    t.wait_for_log(provision, "ready").await;
    let (status, _) = t.call("POST", &format!("/api/v1/pipelines/{}/cancel", pipeline["id"]), None).await;
    assert_eq!(status, 200);
    let done = t.wait_for_status(provision, "canceled").await;
    let (log, _) = t.log(provision).await;
    let at = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"));
    assert!(
        at("\nafter-ran") < at("\ndeferred-second\n") && at("\ndeferred-second\n") < at("\ndeferred-first\n"),
        "{log}"
    );
    let deferred: Vec<&str> = done["teardown"]["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["command"].as_str().unwrap())
        .collect();
    assert_eq!(deferred, ["echo deferred-second", "echo deferred-first"], "{done}");
    t.wait_for_status(destroy, "success").await;
    let (destroy_log, _) = t.log(destroy).await;
    assert_eq!(log_value(&destroy_log, "destroying"), format!("env-{provision}"), "{destroy_log}");
    t.stop().await;
}

/// Artifacts and caches with the docker executor (busybox's sh): `use` finds `build`'s
/// artifact in its container, and the next pipeline's `build` finds the cache the first
/// one pushed.
async fn in_containers_later_jobs_get_earlier_artifacts_and_the_cache() {
    let host = engine();
    let t = TestServer::start_docker(&host, 1).await;
    let config = format!(
        "workflow:\n  auto_cancel:\n    on_new_commit: none\nstages: [build, test]\nbuild:\n  stage: build\n  image: {BUSYBOX}\n  script:\n    - echo \"cached=$(cat deps/stamp 2>/dev/null || echo none)\"\n    - mkdir -p deps out && echo from-$CI_PIPELINE_ID > deps/stamp && echo built-$CI_JOB_ID > out/app\n  cache:\n    key: deps\n    paths: [deps/]\n  artifacts:\n    paths: [out/]\nuse:\n  stage: test\n  image: {BUSYBOX}\n  script: [\"echo got=$(cat out/app)\"]\n"
    );
    let first = t.pipeline(&config).await;
    let (build, user) = (TestServer::job_id(&first, "build"), TestServer::job_id(&first, "use"));
    t.wait_for_status(user, "success").await;
    let (log, _) = t.log(user).await;
    assert_eq!(log_value(&log, "got"), format!("built-{build}"), "{log}");
    let (log, _) = t.log(build).await;
    assert_eq!(log_value(&log, "cached"), "none", "{log}");
    let second = t.next_pipeline(&first).await;
    let build = TestServer::job_id(&second, "build");
    t.wait_for_status(build, "success").await;
    let (log, _) = t.log(build).await;
    assert_eq!(log_value(&log, "cached"), format!("from-{}", first["id"]), "{log}");
    t.stop().await;
}
