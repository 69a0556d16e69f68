//! Runs one job: `before_script` + `script` in one bash (or the image's shell), then
//! `after_script` in a second bash that starts where the first one stopped.
//!
//! Graceful cancel (and job timeout): SIGTERM to the script's process group, wait
//! `cancel_grace`, SIGKILL the group; then after_script runs in the script's last working
//! directory with every variable the script exported plus `CI_JOB_STATUS`. The state is
//! saved by the generated script after every line and in its TERM/EXIT traps, and the
//! working directory is read from /proc at the moment of the stop. Finally every process
//! that is still the job's (see `procs::JobMarks`) is killed, and artifacts are uploaded
//! (when their `when` matches). Abort kills everything at once and uploads nothing.
//!
//! Where the shells run is the job's executor's business ([`JobExecutor`]), the one
//! interface with two implementations beneath this module: [`shell`] (bash on this
//! machine) and [`docker`] (`docker exec`s into the job's container, whose Docker API
//! is closed and whose objects are removed at the end). The steps above are the same
//! for both and know nothing of either.

mod docker;
pub(crate) mod interface;
mod script_run;
mod shell;

pub(crate) use interface::JobExecutor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use usher_core::api::{FailureReason, Teardown};
use usher_core::protocol::{JobAssignment, JobReport};

use crate::after_script::{run_after_script, run_deferred};
use crate::artifacts::{UploadOutcome, Uploader};
use crate::cache;
use crate::checkout::{self, CheckoutEnd};
use crate::control::Control;
use crate::defer_watch::DeferWatch;
use crate::dependencies::{self, DownloadEnd};
use crate::docker::Docker;
use crate::handover;
use crate::isolation::{Confinement, JobCgroup, JobIsolation, SlotUser};
use crate::job_run::JobRun;
use crate::logsink::LogHandle;
use crate::procs::{self, JobMarks};
use crate::rooms::ReadyRooms;
use crate::script::script_text;
use script_run::run_script;

/// How the job ended on the runner.
#[derive(Debug, PartialEq)]
pub enum JobOutcome {
    /// Report this to the server.
    Report(JobReport),
    /// Aborted: everything killed; the job is over on the server already. Only the
    /// receipt of what the kill stopped and removed is left to send.
    Aborted(Option<Teardown>),
}

/// Where and how this runner runs jobs, decided when it starts.
#[derive(Clone, Debug)]
pub struct JobHost {
    /// Each job gets `job-<id>` (its build directory) and `job-<id>.usher` (its script,
    /// saved state and home) below this.
    pub builds_dir: PathBuf,
    pub isolation: JobIsolation,
    /// This runner's directory of job cgroups, when it may create them.
    pub cgroups: Option<PathBuf>,
    /// How this runner's jobs run.
    pub executor: Executor,
    /// Job directories made before their jobs arrive.
    pub rooms: Arc<ReadyRooms>,
    /// The receipts of jobs a previous run of this runner left (their deferred commands
    /// run at start): sent to the server once connected.
    pub recovered: Vec<(i64, Teardown)>,
}

/// The executor a runner was started with (`--executor`).
#[derive(Clone, Debug)]
pub enum Executor {
    Shell,
    Docker(Docker),
}

impl Executor {
    /// The executor of one job.
    fn for_job(&self) -> Box<dyn JobExecutor> {
        match self {
            Executor::Shell => Box::new(shell::ShellJob),
            Executor::Docker(engine) => Box::new(docker::DockerJob::new(engine)),
        }
    }
}

/// Runs a job to its end. Log output goes through `out`, all of it before this returns;
/// the returned outcome says what to report.
pub async fn run_job(
    job: JobAssignment,
    host: &JobHost,
    uploader: Option<&Uploader>,
    mut control: mpsc::UnboundedReceiver<Control>,
    log: LogHandle,
) -> JobOutcome {
    let started = Instant::now();
    let cookie = format!("{}-{}-{}", std::process::id(), job.job_id, hex::encode(rand::random::<[u8; 8]>()));
    let build_dir = host.builds_dir.join(format!("job-{}", job.job_id));
    let meta_dir = host.builds_dir.join(format!("job-{}.usher", job.job_id));
    // The job's own user: no other job running now has it (see `isolation`).
    let slot = match host.isolation.take_user() {
        Ok(slot) => slot,
        Err(e) => {
            log.note(&format!("The job cannot start: {e}"));
            log.flush().await;
            return JobOutcome::Report(system_failure());
        }
    };
    let user = slot.as_ref().map(|s| &s.user);
    let cgroup = host.cgroups.as_deref().and_then(|root| JobCgroup::create(root, job.job_id));
    let confinement = Confinement::new(user, cgroup.as_ref());
    let executor = host.executor.for_job();
    let mut run = JobRun {
        job: &job,
        home_dir: meta_dir.join(crate::rooms::HOME),
        state_file: meta_dir.join(crate::rooms::STATE).join("state.sh"),
        marks: JobMarks::new(cookie, &[&build_dir, &meta_dir]).with_cgroup(cgroup),
        caches: crate::checkout::caches_of(&host.builds_dir, user),
        build_dir,
        meta_dir,
        confinement,
        log,
    };
    let outcome = match host.rooms.take(&run.build_dir, &run.meta_dir, user) {
        Ok(()) => run_in_dirs(&run, &*executor, uploader, &mut control).await,
        Err(e) => {
            let dir = run.build_dir.display();
            run.log.note(&format!("Could not create the build directory {dir}: {e}"));
            JobOutcome::Report(system_failure())
        }
    };
    let mut outcome = match outcome {
        JobOutcome::Report(report) => JobOutcome::Report(JobReport {
            duration_ms: started.elapsed().as_millis() as u64,
            ..report
        }),
        aborted => aborted,
    };
    let killed = procs::kill_all(&run.marks).await;
    if killed > 0 && !matches!(outcome, JobOutcome::Aborted(_)) {
        run.log.note(&format!("Killed {killed} leftover process(es) of the job."));
    }
    let (docker_removed, docker_leftovers) = executor.finish(&run).await;
    run.marks.remove_cgroup().await;
    // Whatever still runs as the job's user is the job's: its user serves the next job
    // only once nothing does. What this sweep finds, the usual teardown missed.
    let mut left = 0;
    let mut swept = 0;
    if let Some(slot) = &slot {
        (swept, left) = procs::kill_user(slot.user.uid).await;
        if swept > 0 && !matches!(outcome, JobOutcome::Aborted(_)) {
            run.log
                .note(&format!("Killed {swept} more process(es) running as {}.", slot.user.name));
        }
        if left > 0 {
            run.log.note(&format!(
                "{left} process(es) of the job outlived SIGKILL; its user runs no other job until they are gone."
            ));
        }
    }
    let leftovers = (swept + left) as u32 + docker_leftovers;
    match &mut outcome {
        JobOutcome::Report(report) => {
            let deferred = report.teardown.take().map(|t| t.deferred).unwrap_or_default();
            report.teardown = Some(Teardown {
                processes_killed: killed as u32,
                docker_removed,
                after_script: Teardown::after_script_outcome(report.after_script.as_ref()).into(),
                deferred,
                leftovers,
            });
        }
        // What the abort itself killed, and what this sweep killed after it.
        JobOutcome::Aborted(receipt) => {
            let by_the_abort = receipt.take().map_or(0, |t| t.processes_killed);
            *receipt = Some(Teardown {
                processes_killed: by_the_abort + killed as u32,
                docker_removed,
                after_script: "skipped".into(),
                deferred: Vec::new(),
                leftovers,
            })
        }
    }
    run.log.flush().await;
    let _ = std::fs::remove_dir_all(&run.build_dir);
    let _ = std::fs::remove_dir_all(&run.meta_dir);
    if let Some(slot) = slot {
        give_back_when_clear(slot, left);
    }
    // The next job's directories, while this one's report goes out.
    let rooms = host.rooms.clone();
    tokio::task::spawn_blocking(move || rooms.refill());
    outcome
}

/// Gives a job's user back to the pool once nothing runs as it any more: now when the
/// job's processes are all gone (`left` is 0), else (one outlived SIGKILL, stuck in the
/// kernel) when they have gone, tried every second, so that the next job of this user
/// can never see or signal them. Meanwhile the pool has one user fewer.
fn give_back_when_clear(slot: SlotUser, left: usize) {
    if left == 0 {
        return drop(slot);
    }
    tokio::spawn(async move {
        while procs::kill_user(slot.user.uid).await.1 > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        drop(slot);
    });
}

/// The report of a job stopped (cancel or shutdown) before its scripts started, `when`
/// ("during the checkout"): nothing of the job ran, so after_script has nothing to clean.
fn stopped_before_start(log: &LogHandle, stop: Control, when: &str) -> JobReport {
    let shutdown = stop == Control::Shutdown;
    log.note(&format!("Stopped {when}; after_script does not run (nothing of the job started)."));
    JobReport {
        exit_code: None,
        failure_reason: shutdown.then_some(FailureReason::RunnerShutdown),
        duration_ms: 0,
        after_script: None,
        dotenv: None,
        teardown: None,
        detail: Some(format!("{} {when}", if shutdown { "stopped" } else { "canceled" })),
    }
}

/// The report of a job whose earlier jobs' artifacts could not be put in place (`why`).
fn missing_dependency(log: &LogHandle, why: String) -> JobReport {
    log.note(&format!("The artifacts of an earlier job could not be put in place: {why}"));
    JobReport {
        exit_code: None,
        failure_reason: Some(FailureReason::MissingDependency),
        duration_ms: 0,
        after_script: None,
        detail: Some(format!("missing dependency: {why}")),
        dotenv: None,
        teardown: None,
    }
}

/// A report for a job the runner could not run (its duration is filled in later).
fn system_failure() -> JobReport {
    JobReport {
        exit_code: None,
        failure_reason: Some(FailureReason::RunnerSystemFailure),
        duration_ms: 0,
        after_script: None,
        detail: None,
        dotenv: None,
        teardown: None,
    }
}

async fn run_in_dirs(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    uploader: Option<&Uploader>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> JobOutcome {
    let (job, log) = (run.job, &run.log);
    let script_file = run.meta_dir.join("script.sh");
    if let Err(e) = run.write_for_job("script.sh", &(exec.exports(run) + &script_text(job, &run.state_file, exec.shell()))) {
        log.note(&format!("Could not write the job script: {e}"));
        return JobOutcome::Report(system_failure());
    }
    log.note(&format!("Running job {} ({}) in {}", job.job_id, job.name, run.build_dir.display()));
    // The commit's files, for `untracked` artifacts and caches (without a checkout, every file is
    // untracked; if they cannot be listed, `untracked` takes nothing).
    let mut tracked = Some(std::collections::HashSet::new());
    if let Some(spec) = &job.checkout {
        match checkout::check_out(run, spec, control).await {
            CheckoutEnd::Done if job.artifacts.as_ref().is_some_and(|a| a.untracked) || job.cache.iter().any(|c| c.untracked) => {
                match checkout::tracked_files(run, spec).await {
                    Some(files) => tracked = Some(files),
                    None => {
                        tracked = None;
                        log.note("The commit's files cannot be listed: `untracked` takes no file.");
                    }
                }
            }
            CheckoutEnd::Done => {}
            CheckoutEnd::Failed(why) => {
                log.note(&format!("The checkout failed: {why}"));
                return JobOutcome::Report(JobReport {
                    exit_code: None,
                    failure_reason: Some(FailureReason::CheckoutFailed),
                    duration_ms: 0,
                    after_script: None,
                    detail: Some(format!("checkout failed: {why}")),
                    dotenv: None,
                    teardown: None,
                });
            }
            CheckoutEnd::Stopped(Control::Abort) => return kill_everything(&run.marks, log, ABORTED).await,
            CheckoutEnd::Stopped(stop) => return JobOutcome::Report(stopped_before_start(log, stop, "during the checkout")),
        }
    }
    let reader = exec
        .reads_artifacts_as_job_user()
        .then(|| run.confinement.user().cloned())
        .flatten();
    if !job.dependencies.is_empty() || job.dependencies_left_out > 0 {
        let Some(server) = uploader else {
            return JobOutcome::Report(missing_dependency(log, "this runner has no server to fetch them from".into()));
        };
        match dependencies::download(server, job, &run.build_dir, reader.clone(), log, control).await {
            DownloadEnd::Done => {}
            DownloadEnd::Failed(why) => return JobOutcome::Report(missing_dependency(log, why)),
            DownloadEnd::Stopped(Control::Abort) => return kill_everything(&run.marks, log, ABORTED).await,
            DownloadEnd::Stopped(stop) => {
                return JobOutcome::Report(stopped_before_start(log, stop, "while fetching the artifacts of earlier jobs"));
            }
        }
    }
    let caches = cache::root_of(run.build_dir.parent().unwrap_or(&run.build_dir));
    for pulled in cache::pulled(&job.cache) {
        if let Some(uploader) = uploader {
            crate::shared_cache::fetch(uploader, job.job_id, &caches, pulled, log).await;
        }
        let (root, pulled, build_dir, owner, log) = (caches.clone(), pulled.clone(), run.build_dir.clone(), reader.clone(), log.clone());
        let _ = tokio::task::spawn_blocking(move || cache::pull(&root, &pulled, &build_dir, owner, &log)).await;
    }
    if let Err(report) = exec.start(run).await {
        return JobOutcome::Report(report);
    }
    // Until the deferred commands run, each one registered goes to the server at once.
    let state_dir = run.state_file.parent().unwrap_or(&run.meta_dir).to_path_buf();
    let watch = DeferWatch::start(job.job_id, state_dir, reader.clone(), log.clone());
    let script = match run_script(run, exec, &script_file, control).await {
        Ok(Some(result)) => result,
        Ok(None) => return kill_everything(&run.marks, log, ABORTED).await,
        Err(e) => {
            log.note(&format!("Could not start bash: {e}"));
            return JobOutcome::Report(system_failure());
        }
    };
    let after_script = if job.after_script.is_empty() {
        None
    } else {
        match run_after_script(run, exec, script.cwd_at_stop.as_deref(), script.status, control).await {
            Some(result) => Some(result),
            None => return kill_everything(&run.marks, log, ABORTED).await,
        }
    };
    watch.stop().await;
    let deferred = match run_deferred(run, exec, script.cwd_at_stop.as_deref(), script.status, reader.clone(), control).await {
        Some(results) => results,
        None => return kill_everything(&run.marks, log, ABORTED).await,
    };
    let dotenv_files = job.artifacts.as_ref().map(|a| a.dotenv.as_slice()).unwrap_or_default();
    if !dotenv_files.is_empty() {
        // Nothing of the job may still be writing while its files are read.
        exec.quiesce().await;
        procs::kill_all(&run.marks).await;
    }
    let dotenv = handover::read(dotenv_files, &run.build_dir, reader.clone(), log);
    if let (Some(spec), Some(uploader)) = (&job.artifacts, uploader)
        && (!spec.paths.is_empty() || spec.untracked)
    {
        if spec.when.applies(script.status == "success") {
            // Nothing of the job may still be writing while its files are read.
            exec.quiesce().await;
            let killed = procs::kill_all(&run.marks).await;
            if killed > 0 {
                log.note(&format!("Killed {killed} leftover process(es) of the job."));
            }
            if uploader
                .upload(job.job_id, spec, &run.build_dir, reader.clone(), tracked.as_ref(), log, control)
                .await
                == UploadOutcome::Aborted
            {
                return kill_everything(&run.marks, log, "Aborted during the artifact upload.").await;
            }
        } else {
            log.note(&format!(
                "Artifacts are not uploaded: the job is {} and `when` is {}.",
                script.status,
                spec.when.as_str()
            ));
        }
    }
    let pushed: Vec<_> = cache::pushed(&job.cache, script.status == "success").cloned().collect();
    if !pushed.is_empty() {
        // Nothing of the job may still be writing while its files are read.
        exec.quiesce().await;
        procs::kill_all(&run.marks).await;
        for cache in pushed {
            let (root, build_dir, reader, log_now) = (caches.clone(), run.build_dir.clone(), reader.clone(), log.clone());
            let (tracked, saving) = (tracked.clone(), cache.clone());
            let saved =
                tokio::task::spawn_blocking(move || crate::cache::push(&root, &saving, &build_dir, reader, tracked.as_ref(), &log_now))
                    .await;
            // Saved here, it goes to the server too, for the project's other runners.
            if let (Ok(true), Some(uploader)) = (saved, uploader) {
                crate::shared_cache::send(uploader, job.job_id, &caches, &cache, log).await;
            }
        }
    }
    JobOutcome::Report(JobReport {
        exit_code: script.exit_code,
        failure_reason: script.failure_reason,
        duration_ms: 0,
        after_script,
        detail: None,
        dotenv,
        // The rest of the receipt is filled in once the job's processes are gone.
        teardown: Some(Teardown {
            deferred,
            ..Teardown::default()
        }),
    })
}

const ABORTED: &str = "Aborted: every process of the job was killed.";

/// The end of an abort: every process of the job killed, `note` in the log.
async fn kill_everything(marks: &JobMarks, log: &LogHandle, note: &str) -> JobOutcome {
    let killed = procs::kill_all(marks).await;
    log.note(note);
    JobOutcome::Aborted(Some(Teardown {
        processes_killed: killed as u32,
        ..Teardown::nothing_ran()
    }))
}
