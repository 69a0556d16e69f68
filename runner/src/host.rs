//! The machine as this runner's jobs find it ([`JobHost`]): the builds directory (with
//! the first jobs' directories made in it, see `rooms`), the runner's cgroup directory
//! and the Docker engine, made ready before the first job — which includes removing
//! what a previous life of this runner left behind.

use std::collections::BTreeMap;

use usher_core::api::Teardown;

use crate::config::RunnerConfig;
use crate::executor::JobHost;
use crate::isolation;
use crate::rooms::ReadyRooms;

/// Before the first job: what a previous life of this runner left (after a crash or a
/// `kill -9`) goes — its processes (found in its job cgroups), then, once its jobs'
/// deferred commands have run (`recovery`), its build directories and Docker objects —
/// and the builds dir is made reachable for the job user.
pub(crate) async fn prepare_host(config: &RunnerConfig) -> JobHost {
    let _ = std::fs::create_dir_all(&config.builds_dir);
    if !config.isolation.users().is_empty() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.builds_dir, std::fs::Permissions::from_mode(0o711));
    }
    // One cgroup directory per runner, named after its builds dir, so the next life of
    // this runner finds the previous one's.
    let tag: String = config
        .builds_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tag = tag.trim_matches('-');
    let cgroups = isolation::cgroup_root(&tag[tag.len().saturating_sub(180)..]);
    match &cgroups {
        Some(root) => {
            let killed = isolation::kill_leftovers(root);
            if killed > 0 {
                tracing::warn!(runner = %config.name, "killed {killed} process(es) that a previous run of this runner left behind");
            }
            tracing::info!(runner = %config.name, "{}; each job in its own cgroup under {}", config.isolation.describe(), root.display());
        }
        None => tracing::info!(
            runner = %config.name,
            "{}; no cgroup v2 to use here, so a job's processes are found by their marks",
            config.isolation.describe()
        ),
    }
    // Its jobs' processes are gone now; what those jobs deferred runs, from their
    // directories, before the directories and their Docker objects go.
    let recovered = crate::recovery::run_pending_deferred(&config.builds_dir).await;
    let ran: usize = recovered.iter().map(|(_, results)| results.len()).sum();
    if ran > 0 {
        tracing::warn!(runner = %config.name, "ran {ran} deferred command(s) of jobs a previous run of this runner left");
    }
    // A receipt for each job the previous run left, for the server.
    let stale_jobs = remove_stale_build_dirs(&config.builds_dir);
    let mut receipts: BTreeMap<i64, Teardown> = stale_jobs.iter().map(|&job_id| (job_id, Teardown::nothing_ran())).collect();
    for (job_id, results) in recovered {
        receipts.entry(job_id).or_insert_with(Teardown::nothing_ran).deferred = results;
    }
    let docker = config.docker.clone().map(|d| d.for_runner(&config.builds_dir));
    if let Some(docker) = &docker {
        for job_id in stale_jobs {
            let removed = docker.remove_everything_of(job_id).await;
            if removed.total() > 0 {
                tracing::warn!(runner = %config.name, job_id, ?removed, "removed Docker objects that a previous run of this runner left behind");
            }
            if let Some(receipt) = receipts.get_mut(&job_id) {
                receipt.docker_removed = removed.as_receipt();
            }
        }
    }
    let rooms = ReadyRooms::new(&config.builds_dir, config.concurrency as usize);
    rooms.refill();
    JobHost {
        rooms: std::sync::Arc::new(rooms),
        builds_dir: config.builds_dir.clone(),
        isolation: config.isolation.clone(),
        cgroups,
        executor: docker.map_or(crate::executor::Executor::Shell, crate::executor::Executor::Docker),
        recovered: receipts.into_iter().collect(),
    }
}

/// Job directories left by an earlier run of this runner (a crash, a kill -9), ready
/// sets included (`job-ready-<n>`): nothing is running in them any more, so they go
/// before the first job. Returns the ids of those jobs, whose Docker objects go too.
fn remove_stale_build_dirs(builds_dir: &std::path::Path) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir(builds_dir) else {
        return Vec::new();
    };
    let mut jobs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("job-") {
            tracing::info!("removing stale build directory {}", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
            jobs.extend(rest.trim_end_matches(".usher").parse::<i64>().ok());
        }
    }
    jobs.sort_unstable();
    jobs.dedup();
    jobs
}
