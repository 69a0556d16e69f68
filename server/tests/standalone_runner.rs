//! A standalone `usher-runner` process against a real `usher` process: it takes jobs,
//! and when the server is killed and started again while it holds them, the jobs keep
//! running, their log arrives complete and in order (frames swallowed by the dead
//! connection are sent again), a report made while the server was away is delivered, a
//! cancel made before the runner is back is honoured when it reconnects, and a cancel
//! after that reaches the runner. Stopping a runner (SIGTERM) stops its jobs like a
//! cancel, runs their after_script and reports them before it exits; a second SIGTERM
//! kills everything at once. Neither leaves a process behind. The runner's
//! `--metrics-addr` counts what happened: the reconnect, the jobs by outcome, the two
//! cancels' handling times.
//!
//! The runner binary is built by `make test` (`cargo build -p usher-runner`) next to
//! the test binaries' directory.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

fn runner_token(data_dir: &Path) -> String {
    let out = run_usher_cli(USHER, data_dir, &["runner-token", "create"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    sigterm(child);
    wait_exit(child)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("process {} did not stop on SIGTERM", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runner's `/metrics` text, after checking its content type.
async fn runner_metrics(port: u16) -> String {
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    answer.text().await.unwrap()
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

const JOBS: &str = r#"
stages: [test]
ticker:
  stage: test
  script:
    - echo ready
    - for i in $(seq 1 40); do echo "tick-$i"; sleep 0.1; done
    - echo done-ticking
    - sleep 1000
  after_script:
    - echo "after_status=$CI_JOB_STATUS"
quick:
  stage: test
  script:
    - echo ready
    - sleep 1.5
    - echo quick-done
waiter:
  stage: test
  script:
    - echo ready
    - sleep 1000
  after_script:
    - echo "waiter_after=$CI_JOB_STATUS"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_runner_keeps_its_jobs_through_a_server_restart() {
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{port}"),
        0,
        &[("USHER_RUNNER_LOST_SECS", "600")],
    )
    .0;
    t.base = format!("http://127.0.0.1:{port}");
    let token = runner_token(data_dir.path());
    let builds = data_dir.path().join("standalone-builds");
    let metrics_port = free_port();
    let mut runner = OwnedChild::spawn(
        runner_command(&t.base, "standalone", &builds)
            .args(["--concurrency", "3"])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("USHER_RUNNER_TOKEN", &token),
    );

    let pipeline = t.pipeline(JOBS).await;
    let ticker = TestServer::job_id(&pipeline, "ticker");
    let quick = TestServer::job_id(&pipeline, "quick");
    t.wait_for_log(ticker, "tick-3").await;
    t.wait_for_log(quick, "ready").await;
    let waiter = TestServer::job_id(&pipeline, "waiter");
    t.wait_for_log(waiter, "ready").await;
    let runner_id = t.job(ticker).await["runner_id"].clone();

    // Freeze the server first: log frames the runner sends meanwhile sit unread in the
    // socket and die with the process, so they must be sent again. Then kill it while the
    // runner holds both jobs; `quick` ends while it is away.
    let pid = nix::unistd::Pid::from_raw(server.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut server = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{port}"),
        0,
        &[("USHER_RUNNER_LOST_SECS", "600")],
    )
    .0;
    // Cancel at once, while the runner most likely still waits out its reconnect
    // backoff: no session holds the job, so the runner must learn it from the server's
    // answer to its `hello`.
    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{waiter}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceling")), "{job}");

    let quick_job = t.wait_for_status(quick, "success").await;
    assert_eq!(
        quick_job["exit_code"], 0,
        "the report made while the server was away arrived: {quick_job}"
    );
    let (quick_log, complete) = t.log(quick).await;
    assert!(complete && quick_log.contains("quick-done"), "{quick_log}");

    let log = t.wait_for_log(ticker, "done-ticking").await;
    let ticks: Vec<&str> = log.lines().filter(|l| l.starts_with("tick-")).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("tick-{i}")).collect();
    assert_eq!(ticks, expected, "every line once and in order across the restart:\n{log}");
    assert_eq!(t.job(ticker).await["runner_id"], runner_id, "the runner kept its identity");

    t.wait_for_status(waiter, "canceled").await;
    let (log, _) = t.log(waiter).await;
    assert_eq!(
        log_value(&log, "waiter_after"),
        "canceled",
        "a cancel made while the runner was away is honoured"
    );

    let (status, job) = t.call("POST", &format!("/api/v1/jobs/{ticker}/cancel"), None).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("canceling")), "{job}");
    t.wait_for_status(ticker, "canceled").await;
    let (log, _) = t.log(ticker).await;
    assert_eq!(
        log_value(&log, "after_status"),
        "canceled",
        "the cancel reached the reconnected runner"
    );
    assert!(
        wait_until_gone(ticker, &t.run_marker).await.is_empty(),
        "no process of the job survives"
    );

    let metrics = runner_metrics(metrics_port).await;
    for (line, why) in [
        ("usher_runner_reconnects_total ", "the server restart made one reconnect"),
        ("usher_runner_connected 1", "connected again"),
        ("usher_runner_jobs_running 0", "every job ended"),
        ("usher_runner_jobs_finished_total{outcome=\"success\"} 1", "quick succeeded"),
        (
            "usher_runner_jobs_finished_total{outcome=\"canceled\"} 2",
            "waiter and ticker were cancelled",
        ),
        ("usher_runner_cancel_handling_seconds_count 2", "two cancels were handled"),
        ("process_resident_memory_bytes ", "the process's own numbers"),
    ] {
        assert!(metrics.contains(line), "{why}: no `{line}` in\n{metrics}");
    }
    let reconnects: f64 = metric_value(&metrics, "usher_runner_reconnects_total");
    assert!(reconnects >= 1.0, "{metrics}");
    let other = reqwest::get(format!("http://127.0.0.1:{metrics_port}/api/v1/jobs")).await.unwrap();
    assert_eq!(other.status(), 404, "the metrics listener serves nothing else");

    assert!(stop(&mut runner).success(), "the runner stops cleanly on SIGTERM");
    stop(&mut server);
    assert!(
        std::fs::read_dir(&builds).map(|d| d.count()).unwrap_or(0) == 0,
        "build directories are removed after each job"
    );
}

const STOPPED_JOB: &str = r#"
stages: [test]
late:
  stage: test
  script:
    - echo ready
    - setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - sleep 1000
  after_script:
    - echo "late_after=$CI_JOB_STATUS"
"#;

const STUCK_CLEANUP_JOB: &str = r#"
stages: [test]
stuck:
  stage: test
  after_script_timeout: 1h
  script:
    - setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - echo ready
    - sleep 1000
  after_script:
    - echo cleanup-started
    - sleep 1000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_runner_cleans_up_its_jobs_first() {
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]).0;
    t.base = format!("http://127.0.0.1:{port}");
    let token = runner_token(data_dir.path());
    let start_runner =
        || OwnedChild::spawn(runner_command(&t.base, "stopping", &data_dir.path().join("builds")).env("USHER_RUNNER_TOKEN", &token));

    // One SIGTERM: the job is stopped like a cancel, after_script runs, the server has
    // the report before the runner exits.
    let mut runner = start_runner();
    let pipeline = t.pipeline(STOPPED_JOB).await;
    let late = TestServer::job_id(&pipeline, "late");
    t.wait_for_log(late, "ready").await;
    assert!(stop(&mut runner).success(), "the runner exits 0 after finishing");
    let job = t.job(late).await;
    assert_eq!(job["status"], "failed", "reported before the runner exited: {job}");
    assert_eq!(job["failure_reason"], "runner_shutdown", "{job}");
    assert_eq!(job["after_script"]["exit_code"], 0, "{job}");
    let (log, complete) = t.log(late).await;
    assert!(complete);
    assert_eq!(log_value(&log, "late_after"), "failed", "{log}");
    assert!(log.contains("The runner is shutting down"), "{log}");
    assert_eq!(job_processes(late, &t.run_marker), Vec::<i32>::new(), "nothing of the job is left");

    // A second SIGTERM does not wait for a stuck after_script: everything is killed.
    let mut runner = start_runner();
    let pipeline = t.pipeline(STUCK_CLEANUP_JOB).await;
    let stuck = TestServer::job_id(&pipeline, "stuck");
    t.wait_for_log(stuck, "ready").await;
    sigterm(&runner);
    t.wait_for_log(stuck, "cleanup-started").await;
    assert!(stop(&mut runner).success(), "the second SIGTERM ends the runner");
    assert_eq!(
        job_processes(stuck, &t.run_marker),
        Vec::<i32>::new(),
        "the stuck after_script and the detached sleep were killed"
    );

    stop(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usher_serve_lets_its_local_runners_clean_up_before_it_stops() {
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut server, base) = spawn_usher(USHER, data_dir.path(), &addr, 1, &[]);
    t.base = base;
    let pipeline = t.pipeline(STOPPED_JOB).await;
    let late = TestServer::job_id(&pipeline, "late");
    t.wait_for_log(late, "ready").await;
    assert!(stop(&mut server).success(), "usher serve exits 0 on SIGTERM");
    assert_eq!(job_processes(late, &t.run_marker), Vec::<i32>::new(), "nothing of the job is left");

    // What the server recorded before it stopped.
    let (_server, base) = spawn_usher(USHER, data_dir.path(), &addr, 0, &[]);
    t.base = base;
    let job = t.job(late).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["failure_reason"], "runner_shutdown", "{job}");
    let (log, _) = t.log(late).await;
    assert_eq!(log_value(&log, "late_after"), "failed", "after_script ran:\n{log}");
}

/// The runner token is given in a file: no process's command line holds it, so a job
/// that reads every `/proc/*/cmdline` (and every environment it may) finds nothing.
/// `--token` still works, with a warning that says why not to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_token_is_in_no_command_line_a_job_can_read() {
    let runner_bin = runner_binary();
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]).0;
    t.base = format!("http://127.0.0.1:{port}");
    let token = runner_token(data_dir.path());
    let token_file = data_dir.path().join("runner-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut runner = OwnedChild::spawn(
        runner_command(&t.base, "from-file", &data_dir.path().join("builds"))
            .arg("--token-file")
            .arg(&token_file),
    );
    let config = format!(
        r#"
seeker:
  script:
    - if cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -q "{token}"; then echo found_token=yes; else echo found_token=no; fi
"#
    );
    let pipeline = t.pipeline(&config).await;
    let job = TestServer::job_id(&pipeline, "seeker");
    t.wait_for_status(job, "success").await;
    let (log, _) = t.log(job).await;
    assert_eq!(log_value(&log, "found_token"), "no", "{log}");
    assert!(stop(&mut runner).success());

    let mut on_cli = Command::new(&runner_bin)
        .args(["--url", "http://127.0.0.1:1", "--token", "usher_rt_not_real", "--concurrency", "0"])
        .output()
        .unwrap();
    on_cli.stderr.extend_from_slice(&on_cli.stdout);
    let said = String::from_utf8_lossy(&on_cli.stderr);
    assert!(said.contains("--token puts the runner token on the command line"), "{said}");
    stop(&mut server);
}

/// A runner killed with SIGKILL while its job had deferred a teardown command: the next
/// start of that runner runs the command (as the job's user, from the job's saved state)
/// before it takes new work, then removes the job's directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_with_sigkill_runs_its_jobs_deferred_commands_when_it_starts_again() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: deferred commands run as the job's user only under a root runner");
        return;
    }
    let shared = job_writable_dir();
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]).0;
    t.base = format!("http://127.0.0.1:{port}");
    let token = runner_token(data_dir.path());
    let builds = data_dir.path().join("builds");
    let start_runner = || OwnedChild::spawn(runner_command(&t.base, "crashing", &builds).env("USHER_RUNNER_TOKEN", &token));

    let mut runner = start_runner();
    let config = format!(
        "deferring:\n  script:\n    - export WHERE=recovered\n    - >-\n      usher-defer 'echo \"$WHERE by $(id -un)\" > {shared}/mark-$CI_JOB_ID'\n    - echo registered\n    - sleep 300\n",
        shared = shared.path().display()
    );
    let pipeline = t.pipeline(&config).await;
    let job = TestServer::job_id(&pipeline, "deferring");
    t.wait_for_log(job, "registered").await;
    // The runner tells the server of a registration within a moment (it looks every
    // 200 ms); after that, a kill cannot make the server forget it.
    for _ in 0..50 {
        if t.job(job).await["deferred"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.kill().unwrap(); // SIGKILL: no cleanup, no report
    let _ = runner.wait();
    let mark = shared.path().join(format!("mark-{job}"));
    assert!(!mark.exists());

    let mut runner = start_runner();
    let until = Instant::now() + Duration::from_secs(30);
    while !mark.exists() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&mark).expect("the deferred command ran when the runner started again");
    assert!(
        text.starts_with("recovered by usher-job-"),
        "with the job's variables, as its user: {text}"
    );
    assert!(!builds.join(format!("job-{job}.usher")).exists(), "then the job's directories went");
    // The server knew the command from when it was registered, and hears what it did:
    // the job ends (its runner is gone) with the receipt of the recovered command.
    let mut seen = serde_json::Value::Null;
    for _ in 0..300 {
        seen = t.job(job).await;
        if !seen["teardown"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (seen["status"].as_str(), seen["failure_reason"].as_str()),
        (Some("failed"), Some("runner_lost")),
        "{seen}"
    );
    let registered = seen["deferred"].as_array().expect("deferred");
    assert!(
        registered.len() == 1 && registered[0].as_str().unwrap().contains("mark-$CI_JOB_ID"),
        "{seen}"
    );
    let ran = &seen["teardown"]["deferred"];
    assert_eq!(
        (ran[0]["exit_code"].as_i64(), ran.as_array().map(Vec::len)),
        (Some(0), Some(1)),
        "{seen}"
    );
    stop(&mut runner);
    stop(&mut server);
}

/// SIGQUIT drains a runner: it takes no new job, lets the one it runs finish (its
/// report reaches the server), and exits 0; a job created meanwhile waits for another
/// runner. With a short `--drain-timeout`, a job that runs on is stopped gracefully
/// (after_script runs) once the timeout is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_lets_running_jobs_finish_and_takes_no_new_one() {
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]).0;
    t.base = format!("http://127.0.0.1:{port}");
    let token = runner_token(data_dir.path());
    let shared = job_writable_dir();
    let gate = shared.path().join("go");
    let start_runner = |timeout: &str| {
        OwnedChild::spawn(
            runner_command(&t.base, "draining", &data_dir.path().join("builds"))
                .env("USHER_RUNNER_TOKEN", &token)
                .env("USHER_RUNNER_DRAIN_TIMEOUT", timeout),
        )
    };
    let sigquit = |child: &Child| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGQUIT).unwrap();
    };

    let mut runner = start_runner("1h");
    let waiting = format!(
        "work:\n  script:\n    - echo ready\n    - while [ ! -e {} ]; do sleep 0.05; done\n    - echo finished-its-work\n",
        gate.display()
    );
    let pipeline = t.pipeline(&waiting).await;
    let work = TestServer::job_id(&pipeline, "work");
    t.wait_for_log(work, "ready").await;
    sigquit(&runner);
    // The admin's list says it drains.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, runners) = t.call("GET", "/api/v1/runners", None).await;
        if runners[0]["draining"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "not shown as draining: {runners}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = t.pipeline("later:\n  script: [\"echo should wait\"]\n").await;
    let later = TestServer::job_id(&later, "later");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.job(work).await["status"], "running", "the running job goes on");
    std::fs::write(&gate, "").unwrap();
    assert!(wait_exit(&mut runner).success(), "the drained runner exits 0");
    let job = t.job(work).await;
    assert_eq!(job["status"], "success", "finished and reported before the runner exited: {job}");
    assert!(t.log(work).await.0.contains("finished-its-work"));
    assert_eq!(t.job(later).await["status"], "pending", "a draining runner takes no new job");
    t.call("POST", &format!("/api/v1/jobs/{later}/cancel"), None).await;

    // Past the drain timeout, what still runs is stopped like a cancel.
    let mut runner = start_runner("1s");
    let pipeline = t.pipeline(STOPPED_JOB).await;
    let late = TestServer::job_id(&pipeline, "late");
    t.wait_for_log(late, "ready").await;
    sigquit(&runner);
    assert!(wait_exit(&mut runner).success(), "the runner exits 0 after the drain timeout");
    let job = t.job(late).await;
    assert_eq!(
        (job["status"].as_str(), job["failure_reason"].as_str()),
        (Some("failed"), Some("runner_shutdown")),
        "{job}"
    );
    assert_eq!(log_value(&t.log(late).await.0, "late_after"), "failed", "after_script ran");
    stop(&mut server);
}
