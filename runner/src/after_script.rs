//! after_script: a second shell that starts where the script stopped (its saved state
//! and directory, `CI_JOB_STATUS`), in a process group of its own with its own timeout;
//! only an abort interrupts it.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use usher_core::api::AfterScriptResult;

use crate::control::Control;
use crate::executor::interface::JobExecutor;
use crate::job_run::JobRun;
use crate::logsink::LogHandle;
use crate::procs;
use crate::script::after_script_text;
use crate::supervise::{Heed, Waited, supervise};

/// Runs after_script; None if an abort arrived meanwhile.
pub(crate) async fn run_after_script(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    cwd: Option<&Path>,
    status: &str,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<AfterScriptResult> {
    let (job, log) = (run.job, &run.log);
    let file = run.meta_dir.join("after_script.sh");
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
    let text = exec.exports(run) + &after_script_text(job, &run.state_file, cwd, status, exec.shell());
    if let Err(e) = run.write_for_job("after_script.sh", &text) {
        return failed(log, e);
    }
    let (mut child, output) = match exec.spawn_shell(run, &file) {
        Ok(c) => c,
        Err(e) => return failed(log, e),
    };
    let pgid = child.id().unwrap_or(0);
    let timeout = Duration::from_secs(job.after_script_timeout_secs);
    let (exit_code, timed_out) = match supervise(&mut child, control, Some(timeout), Heed::AbortOnly).await {
        Waited::Exited(code) => (code, false),
        Waited::TimedOut => {
            exec.signal(pgid, Signal::SIGKILL).await;
            let _ = child.wait().await;
            log.note(&format!(
                "after_script timed out after {} s and was killed.",
                job.after_script_timeout_secs
            ));
            (None, true)
        }
        Waited::Stopped(_) => {
            procs::signal_group(pgid, Signal::SIGKILL);
            output.drain().await;
            return None;
        }
    };
    exec.signal(pgid, Signal::SIGKILL).await;
    output.drain().await;
    Some(AfterScriptResult {
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        timed_out,
    })
}
