//! Runs one job with the shell executor: `before_script` + `script` in one bash, then
//! `after_script` in a second bash that starts where the first one stopped.
//!
//! Graceful cancel (and job timeout): SIGTERM to the script's process group, wait
//! `cancel_grace`, SIGKILL the group; then after_script runs in the script's last working
//! directory with every variable the script exported plus `CI_JOB_STATUS`. The state is
//! saved by the generated script after every line and in its TERM/EXIT traps, and the
//! working directory is read from /proc at the moment of the stop. Finally every process
//! that is still the job's (see `procs::JobMarks`) is killed, and artifacts are uploaded
//! (when their `when` matches). Abort kills everything at once and uploads nothing.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::mpsc;
use usher_core::api::{AfterScriptResult, FailureReason};
use usher_core::protocol::{JobAssignment, JobReport, RunnerMessage};

use crate::artifacts::{UploadOutcome, Uploader};
use crate::control::Control;
use crate::logsink::{self, LogHandle};
use crate::output::OutputPump;
use crate::procs::{self, COOKIE_VAR, JobMarks};
use crate::script::{PASSED_THROUGH, after_script_text, script_text};

/// How the job ended on the runner.
#[derive(Debug, PartialEq)]
pub enum JobOutcome {
    /// Report this to the server.
    Report(JobReport),
    /// Aborted: everything killed, nothing to report.
    Aborted,
}

/// How the script's bash stopped running.
enum ScriptEnd {
    Exited(Option<i32>),
    Cancel,
    Timeout,
    Shutdown,
    Abort,
}

/// Starts `bash file` in its own process group with output into the job log.
fn spawn_bash(
    file: &Path,
    cwd: &Path,
    job: &JobAssignment,
    marks: &JobMarks,
    log: &LogHandle,
) -> std::io::Result<(tokio::process::Child, OutputPump)> {
    let (reader, writer) = std::io::pipe()?;
    marks.add_pipe(reader.as_fd());
    let mut cmd = Command::new("bash");
    cmd.arg("--noprofile")
        .arg("--norc")
        .arg(file)
        .current_dir(cwd)
        // Only a few variables of the runner's own environment reach a job: a local
        // runner lives in the server process, whose environment holds secrets.
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| PASSED_THROUGH.contains(&k.as_str())))
        .envs(job.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(COOKIE_VAR, &marks.cookie)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipe's write end
    let pump = OutputPump::start(reader, log.clone())?;
    Ok((child, pump))
}

/// Waits for the script, a control message or the timeout.
async fn wait_script(child: &mut tokio::process::Child, control: &mut mpsc::UnboundedReceiver<Control>, timeout: Duration) -> ScriptEnd {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            status = child.wait() => return ScriptEnd::Exited(status.ok().and_then(|s| s.code())),
            c = control.recv() => match c {
                Some(Control::Cancel) => return ScriptEnd::Cancel,
                Some(Control::Shutdown) => return ScriptEnd::Shutdown,
                Some(Control::Abort) => return ScriptEnd::Abort,
                None => std::future::pending::<()>().await,
            },
            _ = &mut deadline => return ScriptEnd::Timeout,
        }
    }
}

/// SIGTERM, grace, SIGKILL. Returns true if an abort came in meanwhile.
async fn stop_gracefully(
    child: &mut tokio::process::Child,
    pgid: u32,
    grace: Duration,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> bool {
    procs::signal_group(pgid, Signal::SIGTERM);
    let grace_over = tokio::time::sleep(grace);
    tokio::pin!(grace_over);
    let aborted = loop {
        tokio::select! {
            _ = child.wait() => break false,
            _ = &mut grace_over => {
                procs::signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
                break false;
            }
            c = control.recv() => match c {
                Some(Control::Abort) => break true,
                Some(Control::Cancel | Control::Shutdown) => continue,
                None => { let _ = child.wait().await; break false; }
            },
        }
    };
    // Whatever is left of the group (background jobs that ignored TERM) goes now.
    procs::signal_group(pgid, Signal::SIGKILL);
    aborted
}

/// Runs a job to its end. Log output goes through `out`, all of it before this returns;
/// the returned outcome says what to report.
pub async fn run_job(
    job: JobAssignment,
    builds_dir: &Path,
    uploader: Option<&Uploader>,
    mut control: mpsc::UnboundedReceiver<Control>,
    out: impl Fn(RunnerMessage) + Send + 'static,
) -> JobOutcome {
    let started = Instant::now();
    let log = logsink::spawn(job.job_id, out);
    let cookie = format!("{}-{}-{}", std::process::id(), job.job_id, hex::encode(rand::random::<[u8; 8]>()));
    let build_dir = builds_dir.join(format!("job-{}", job.job_id));
    let meta_dir = builds_dir.join(format!("job-{}.usher", job.job_id));
    let marks = JobMarks::new(cookie, &[&build_dir, &meta_dir]);
    let outcome = run_in_dirs(&job, &build_dir, &meta_dir, &marks, &log, uploader, &mut control, started).await;
    let killed = procs::kill_all(&marks).await;
    if killed > 0 && !matches!(outcome, JobOutcome::Aborted) {
        log.note(&format!("Killed {killed} leftover process(es) of the job."));
    }
    log.flush().await;
    let _ = std::fs::remove_dir_all(&build_dir);
    let _ = std::fs::remove_dir_all(&meta_dir);
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn run_in_dirs(
    job: &JobAssignment,
    build_dir: &Path,
    meta_dir: &Path,
    marks: &JobMarks,
    log: &LogHandle,
    uploader: Option<&Uploader>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    started: Instant,
) -> JobOutcome {
    let report_error = |message: String| {
        log.note(&message);
        JobOutcome::Report(JobReport {
            exit_code: None,
            failure_reason: Some(FailureReason::RunnerSystemFailure),
            duration_ms: started.elapsed().as_millis() as u64,
            after_script: None,
        })
    };
    let _ = std::fs::remove_dir_all(build_dir);
    if let Err(e) = std::fs::create_dir_all(build_dir).and_then(|_| std::fs::create_dir_all(meta_dir)) {
        return report_error(format!("Could not create the build directory {}: {e}", build_dir.display()));
    }
    let state_file = meta_dir.join("state.sh");
    let script_file = meta_dir.join("script.sh");
    if let Err(e) = std::fs::write(&script_file, script_text(job, &state_file)) {
        return report_error(format!("Could not write the job script: {e}"));
    }
    log.note(&format!("Running job {} ({}) in {}", job.job_id, job.name, build_dir.display()));
    let (mut child, output) = match spawn_bash(&script_file, build_dir, job, marks, log) {
        Ok(c) => c,
        Err(e) => return report_error(format!("Could not start bash: {e}")),
    };
    let pgid = child.id().unwrap_or(0);
    let stop = wait_script(&mut child, control, Duration::from_secs(job.timeout_secs)).await;

    let mut cwd_at_stop: Option<PathBuf> = None;
    let (exit_code, failure_reason, status) = match stop {
        ScriptEnd::Exited(code) => {
            procs::signal_group(pgid, Signal::SIGKILL);
            output.drain().await;
            let ok = code == Some(0);
            (
                code,
                (!ok).then_some(FailureReason::ScriptFailure),
                if ok { "success" } else { "failed" },
            )
        }
        ScriptEnd::Abort => {
            procs::signal_group(pgid, Signal::SIGKILL);
            output.drain().await;
            return kill_everything(marks, log, ABORTED).await;
        }
        ScriptEnd::Cancel | ScriptEnd::Timeout | ScriptEnd::Shutdown => {
            cwd_at_stop = procs::cwd_of(pgid);
            let grace = Duration::from_secs(job.cancel_grace_secs);
            let why = match stop {
                ScriptEnd::Timeout => format!("Job timed out after {} s", job.timeout_secs),
                ScriptEnd::Shutdown => "The runner is shutting down".to_string(),
                _ => "Cancel requested".to_string(),
            };
            log.note(&format!(
                "{why}: stopping the script (SIGTERM, SIGKILL after {} s).",
                job.cancel_grace_secs
            ));
            let aborted = stop_gracefully(&mut child, pgid, grace, control).await;
            output.drain().await;
            if aborted {
                return kill_everything(marks, log, ABORTED).await;
            }
            match stop {
                ScriptEnd::Timeout => (None, Some(FailureReason::Timeout), "failed"),
                ScriptEnd::Shutdown => (None, Some(FailureReason::RunnerShutdown), "failed"),
                _ => (None, None, "canceled"),
            }
        }
    };

    let after_script = if job.after_script.is_empty() {
        None
    } else {
        match run_after_script(
            job,
            build_dir,
            meta_dir,
            &state_file,
            cwd_at_stop.as_deref(),
            status,
            marks,
            log,
            control,
        )
        .await
        {
            Some(result) => Some(result),
            None => return kill_everything(marks, log, ABORTED).await,
        }
    };
    if let (Some(spec), Some(uploader)) = (&job.artifacts, uploader) {
        if spec.when.applies(status == "success") {
            // Nothing of the job may still be writing while its files are read.
            let killed = procs::kill_all(marks).await;
            if killed > 0 {
                log.note(&format!("Killed {killed} leftover process(es) of the job."));
            }
            if uploader.upload(job.job_id, spec, build_dir, log, control).await == UploadOutcome::Aborted {
                return kill_everything(marks, log, "Aborted during the artifact upload.").await;
            }
        } else {
            log.note(&format!(
                "Artifacts are not uploaded: the job is {status} and `when` is {}.",
                spec.when.as_str()
            ));
        }
    }
    JobOutcome::Report(JobReport {
        exit_code,
        failure_reason,
        duration_ms: started.elapsed().as_millis() as u64,
        after_script,
    })
}

const ABORTED: &str = "Aborted: every process of the job was killed.";

/// The end of an abort: every process of the job killed, `note` in the log.
async fn kill_everything(marks: &JobMarks, log: &LogHandle, note: &str) -> JobOutcome {
    procs::kill_all(marks).await;
    log.note(note);
    JobOutcome::Aborted
}

/// Runs after_script; None if an abort arrived meanwhile.
#[allow(clippy::too_many_arguments)]
async fn run_after_script(
    job: &JobAssignment,
    build_dir: &Path,
    meta_dir: &Path,
    state_file: &Path,
    cwd: Option<&Path>,
    status: &str,
    marks: &JobMarks,
    log: &LogHandle,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<AfterScriptResult> {
    let file = meta_dir.join("after_script.sh");
    let started = Instant::now();
    log.note("Running after_script");
    let failed = |log: &LogHandle, e: std::io::Error| {
        log.note(&format!("Could not start after_script: {e}"));
        Some(AfterScriptResult {
            exit_code: None,
            duration_ms: 0,
            timed_out: false,
        })
    };
    if let Err(e) = std::fs::write(&file, after_script_text(job, state_file, cwd, status)) {
        return failed(log, e);
    }
    let (mut child, output) = match spawn_bash(&file, build_dir, job, marks, log) {
        Ok(c) => c,
        Err(e) => return failed(log, e),
    };
    let pgid = child.id().unwrap_or(0);
    let timeout = tokio::time::sleep(Duration::from_secs(job.after_script_timeout_secs));
    tokio::pin!(timeout);
    let (exit_code, timed_out) = loop {
        tokio::select! {
            s = child.wait() => break (s.ok().and_then(|s| s.code()), false),
            _ = &mut timeout => {
                procs::signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
                log.note(&format!("after_script timed out after {} s and was killed.", job.after_script_timeout_secs));
                break (None, true);
            }
            c = control.recv() => match c {
                Some(Control::Abort) => {
                    procs::signal_group(pgid, Signal::SIGKILL);
                    output.drain().await;
                    return None;
                }
                Some(Control::Cancel | Control::Shutdown) => continue,
                None => { let s = child.wait().await; break (s.ok().and_then(|s| s.code()), false); }
            },
        }
    };
    procs::signal_group(pgid, Signal::SIGKILL);
    output.drain().await;
    Some(AfterScriptResult {
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        timed_out,
    })
}
