//! Deadlines live in the database: a server killed with SIGKILL while a job is
//! `canceling` and started again still ends the job `canceled` at its deadline.

use std::time::{Duration, Instant};

use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// A 2 s cancel margin (deadline = grace + after_script timeout + margin); no runner-lost.
const SETTINGS: &[(&str, &str)] = &[("USHER_CANCEL_MARGIN_SECS", "2"), ("USHER_RUNNER_LOST_SECS", "600")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceling_job_ends_at_its_deadline_after_a_crash() {
    // Real `usher` processes on one data dir; the harness kills leftover job processes.
    let mut t = TestServer::detached();
    let data_dir = tempfile::tempdir().unwrap();
    let (mut first, base) = spawn_usher(USHER, data_dir.path(), "127.0.0.1:0", 1, SETTINGS);
    t.base = base;
    let pipeline = t
        .pipeline(
            "slow_cleanup:\n  cancel_grace: 1s\n  after_script_timeout: 3s\n  script: [echo ready, sleep 1000]\n  after_script: [sleep 1000]\n",
        )
        .await;
    let job_id = TestServer::job_id(&pipeline, "slow_cleanup");
    t.wait_for_log(job_id, "ready").await;
    let (_, job) = t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!(job["status"], "canceling", "{job}");
    let cancelled_at = Instant::now();
    first.kill().unwrap(); // SIGKILL: no shutdown, no report from the runner
    first.wait().unwrap();

    let (mut second, base) = spawn_usher(USHER, data_dir.path(), "127.0.0.1:0", 1, SETTINGS);
    t.base = base;
    assert_eq!(t.job(job_id).await["status"], "canceling", "still canceling after the restart");
    let job = t.wait_for_status(job_id, "canceled").await;
    assert!(
        cancelled_at.elapsed() >= Duration::from_secs(5),
        "not before its deadline (grace 1 s + after_script 3 s + margin 2 s)"
    );
    assert_eq!(job["cancel"]["reason"], "cancel_timeout", "{job}");
    let (_, timeline) = t.call("GET", &format!("/api/v1/jobs/{job_id}/events"), None).await;
    assert_eq!(timeline.as_array().unwrap().last().unwrap()["actor"], "system");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    second.wait().unwrap();
    // The first server's orphaned job processes are killed by the harness (by marker).
}
