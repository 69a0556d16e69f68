//! The job's script (before_script + script): one shell, run until it exits, times out,
//! or is stopped — a cancel, timeout or shutdown stops it gracefully (SIGTERM, the
//! job's grace, SIGKILL) and notes where it stopped, for after_script; an abort kills it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use usher_core::api::FailureReason;

use super::interface::JobExecutor;
use crate::control::Control;
use crate::job_run::JobRun;
use crate::procs;
use crate::spawn::JobProcess;
use crate::supervise::{Heed, Waited, supervise};

/// How the script's bash stopped running.
enum ScriptEnd {
    Exited(Option<i32>),
    Cancel,
    Timeout,
    Shutdown,
    Abort,
}

/// How the script ended, as after_script and the report need it.
pub(super) struct ScriptResult {
    pub(super) exit_code: Option<i32>,
    pub(super) failure_reason: Option<FailureReason>,
    /// `CI_JOB_STATUS`: success, failed or canceled.
    pub(super) status: &'static str,
    /// The script's working directory when it was stopped (read from /proc).
    pub(super) cwd_at_stop: Option<PathBuf>,
}

/// Waits for the script, a stop or the timeout.
async fn wait_script(child: &mut JobProcess, control: &mut mpsc::UnboundedReceiver<Control>, timeout: Duration) -> ScriptEnd {
    match supervise(child, control, Some(timeout), Heed::EveryStop).await {
        Waited::Exited(code) => ScriptEnd::Exited(code),
        Waited::TimedOut => ScriptEnd::Timeout,
        Waited::Stopped(Control::Cancel) => ScriptEnd::Cancel,
        Waited::Stopped(Control::Shutdown) => ScriptEnd::Shutdown,
        Waited::Stopped(Control::Abort) => ScriptEnd::Abort,
    }
}

/// SIGTERM, grace, SIGKILL. Returns true if an abort came in meanwhile.
async fn stop_gracefully(
    exec: &dyn JobExecutor,
    child: &mut JobProcess,
    pgid: u32,
    grace: Duration,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> bool {
    exec.signal(pgid, Signal::SIGTERM).await;
    let aborted = match supervise(child, control, Some(grace), Heed::AbortOnly).await {
        Waited::Exited(_) => false,
        Waited::Stopped(_) => true,
        Waited::TimedOut => {
            exec.signal(pgid, Signal::SIGKILL).await;
            let _ = child.wait().await;
            false
        }
    };
    // Whatever is left of the group (background jobs that ignored TERM) goes now.
    exec.signal(pgid, Signal::SIGKILL).await;
    aborted
}

/// Runs before_script + script until it exits, times out, or is stopped. Ok(None): an
/// abort came (the script's group is killed already).
pub(super) async fn run_script(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    script_file: &Path,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> std::io::Result<Option<ScriptResult>> {
    let job = run.job;
    let (mut child, output) = exec.spawn_shell(run, script_file)?;
    let pgid = child.id().unwrap_or(0);
    let stop = wait_script(&mut child, control, Duration::from_secs(job.timeout_secs)).await;
    let result = match stop {
        ScriptEnd::Exited(code) => {
            exec.signal(pgid, Signal::SIGKILL).await;
            output.drain().await;
            let ok = code == Some(0);
            ScriptResult {
                exit_code: code,
                failure_reason: (!ok).then_some(FailureReason::ScriptFailure),
                status: if ok { "success" } else { "failed" },
                cwd_at_stop: None,
            }
        }
        ScriptEnd::Abort => {
            procs::signal_group(pgid, Signal::SIGKILL);
            output.drain().await;
            return Ok(None);
        }
        ScriptEnd::Cancel | ScriptEnd::Timeout | ScriptEnd::Shutdown => {
            let cwd_at_stop = exec.cwd_at_stop(pgid);
            let why = match stop {
                ScriptEnd::Timeout => format!("Job timed out after {} s", job.timeout_secs),
                ScriptEnd::Shutdown => "The runner is shutting down".to_string(),
                _ => "Cancel requested".to_string(),
            };
            run.log.note(&format!(
                "{why}: stopping the script (SIGTERM, SIGKILL after {} s).",
                job.cancel_grace_secs
            ));
            let aborted = stop_gracefully(exec, &mut child, pgid, Duration::from_secs(job.cancel_grace_secs), control).await;
            output.drain().await;
            if aborted {
                return Ok(None);
            }
            let (failure_reason, status) = match stop {
                ScriptEnd::Timeout => (Some(FailureReason::Timeout), "failed"),
                ScriptEnd::Shutdown => (Some(FailureReason::RunnerShutdown), "failed"),
                _ => (None, "canceled"),
            };
            ScriptResult {
                exit_code: None,
                failure_reason,
                status,
                cwd_at_stop,
            }
        }
    };
    Ok(Some(result))
}
