//! What a job prints last is in its log, in the order it was printed: the final lines of a
//! script that exits at once, the words a TERM trap says on cancel (before after_script's),
//! and after_script's own last line — on every job of a busy pipeline.

use usher_testkit::*;

/// Index of `needle` in `log`, or a panic showing the log.
fn position(log: &str, needle: &str) -> usize {
    log.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` is missing from the log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_lines_of_every_job_reach_its_log() {
    let t = TestServer::start(2).await;
    // Every job prints a burst (more than a pipe buffer) and exits right after its last
    // line; after_script does the same. 30 jobs on 2 runners keep the machine busy.
    let jobs: String = (0..30)
        .map(|i| {
            format!(
                "j{i}:\n  script:\n    - seq 1 20000\n    - echo \"script-end-$CI_JOB_ID\"\n  \
                 after_script:\n    - seq 1 5000\n    - echo \"after-end-$CI_JOB_ID\"\n"
            )
        })
        .collect();
    let pipeline = t.pipeline(&jobs).await;
    for job in pipeline["jobs"].as_array().unwrap() {
        let id = job["id"].as_i64().unwrap();
        t.wait_for_status(id, "success").await;
        let (log, complete) = t.log(id).await;
        assert!(complete);
        assert_eq!(log.matches("\n20000\n").count(), 1, "job {id}: the burst is whole");
        let script_end = position(&log, &format!("\nscript-end-{id}\n"));
        let after = position(&log, "Running after_script");
        let after_end = position(&log, &format!("\nafter-end-{id}\n"));
        assert!(script_end < after && after < after_end, "job {id}: out of order:\n{log}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_term_trap_says_on_cancel_comes_before_after_script() {
    let t = TestServer::start(2).await;
    let jobs: String = (0..6)
        .map(|i| {
            format!(
                "j{i}:\n  script:\n    - trap 'seq 1 3000; echo \"trap-said-bye-$CI_JOB_ID\"; exit 1' TERM\n    \
                 - echo ready\n    - sleep 1000 & wait\n  after_script:\n    - echo \"cleanup-$CI_JOB_ID\"\n"
            )
        })
        .collect();
    let pipeline = t.pipeline(&jobs).await;
    let ids: Vec<i64> = pipeline["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    for pair in ids.chunks(2) {
        for &id in pair {
            t.wait_for_log(id, "ready").await;
        }
        for &id in pair {
            let (status, job) = t.call("POST", &format!("/api/v1/jobs/{id}/cancel"), None).await;
            assert_eq!(status, 200, "{job}");
        }
        for &id in pair {
            t.wait_for_status(id, "canceled").await;
            let (log, _) = t.log(id).await;
            let bye = position(&log, &format!("\ntrap-said-bye-{id}\n"));
            let after = position(&log, "Running after_script");
            let cleanup = position(&log, &format!("\ncleanup-{id}\n"));
            assert!(bye < after && after < cleanup, "job {id}: out of order:\n{log}");
        }
    }
    t.stop().await;
}
