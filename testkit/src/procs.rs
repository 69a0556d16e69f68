//! Processes of jobs, read from /proc: which ones are alive, which belong to a job (by
//! the CI_JOB_ID and USHER_TEST_RUN in their environment), and waiting for them to go.
//! A test uses these to show that nothing a job started outlives it.

use std::time::{Duration, Instant};

/// Live (not zombie) processes whose environment contains `var` (`NAME=value`).
pub fn pids_with_env(var: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == var.as_bytes()) && is_alive(pid) {
            out.push(pid);
        }
    }
    out
}

pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The processes of one job (every one carries CI_JOB_ID in its environment).
pub fn job_processes(job_id: i64, run_marker: &str) -> Vec<i32> {
    let marked = pids_with_env(&format!("USHER_TEST_RUN={run_marker}"));
    let of_job = pids_with_env(&format!("CI_JOB_ID={job_id}"));
    marked.into_iter().filter(|p| of_job.contains(p)).collect()
}

/// Whether `pid` died within `within`. A killed process passes through a moment where it
/// has let go of its memory (its environment no longer reads, so `job_processes` no
/// longer lists it) but is not yet a zombie; checking once right after that races.
pub async fn dies_within(pid: i32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while is_alive(pid) {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub async fn wait_until_gone(job_id: i64, run_marker: &str) -> Vec<i32> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = job_processes(job_id, run_marker);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
