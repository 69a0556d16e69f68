//! after_script, and the commands the job deferred (`usher-defer`): each a shell that
//! starts where the script stopped (its saved state and directory, `CI_JOB_STATUS`), in
//! a process group of its own with its own timeout; only an abort interrupts them.
//!
//! `usher-defer CMD…` (on the job's PATH: `<job>.usher/bin/usher-defer`, a `sh` script)
//! appends CMD to `state/defer` (one base64 line each); once after_script has ended the
//! runner reads that file — beneath the directory, no link followed, with the job's
//! rights — and runs the commands last registered first.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use usher_core::api::{AfterScriptResult, DeferredResult};

use crate::control::Control;
use crate::executor::interface::JobExecutor;
use crate::job_run::JobRun;
use crate::logsink::LogHandle;
use crate::procs;
use crate::script::{after_script_text, cleanup_text};
use crate::supervise::{Heed, Waited, supervise};

/// Runs after_script; None if an abort arrived meanwhile.
pub(crate) async fn run_after_script(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    cwd: Option<&Path>,
    status: &str,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<AfterScriptResult> {
    run.log.note("Running after_script");
    let text = exec.exports(run) + &after_script_text(run.job, &run.state_file, cwd, status, exec.shell());
    run_in_saved_state(run, exec, "after_script", "after_script.sh", &text, control).await
}

/// The most commands a job may defer, and the most bytes of them.
const MAX_DEFERRED: usize = usher_core::api::MAX_DEFERRED_COMMANDS;
pub(crate) const MAX_DEFERRED_BYTES: u64 = usher_core::api::MAX_DEFERRED_BYTES as u64;

/// Runs the commands the job deferred, last registered first; None if an abort arrived.
pub(crate) async fn run_deferred(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    cwd: Option<&Path>,
    status: &str,
    reader: Option<crate::isolation::JobUser>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<Vec<DeferredResult>> {
    let commands = deferred_commands(run, reader);
    let mut results = Vec::new();
    for (n, command) in commands.iter().enumerate().rev() {
        run.log.note(&format!("Running the deferred `{command}`"));
        let text = exec.exports(run) + &cleanup_text(&run.state_file, cwd, status, std::slice::from_ref(command), exec.shell());
        let ran = run_in_saved_state(run, exec, "the deferred command", &format!("deferred-{n}.sh"), &text, control).await?;
        results.push(DeferredResult {
            // It leaves the runner with the receipt: masked as the log is.
            command: run.log.mask(command),
            exit_code: ran.exit_code,
            duration_ms: ran.duration_ms,
        });
    }
    Some(results)
}

/// The commands in `state/defer`, in the order they were registered.
fn deferred_commands(run: &JobRun<'_>, reader: Option<crate::isolation::JobUser>) -> Vec<String> {
    let state_dir = run.state_file.parent().unwrap_or(&run.meta_dir);
    let text = match read_deferred_file(state_dir, reader) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            run.log.note(&format!("The deferred commands are not read: {e}"));
            return Vec::new();
        }
    };
    let (commands, problems) = parse_deferred(&text);
    for problem in problems {
        run.log.note(&problem);
    }
    commands
}

/// The text of `state_dir/defer` (at most [`MAX_DEFERRED_BYTES`]), read beneath the
/// directory with `reader`'s rights: the job's file, never followed through a link.
pub(crate) fn read_deferred_file(state_dir: &Path, reader: Option<crate::isolation::JobUser>) -> std::io::Result<String> {
    let tree = crate::beneath::JobTree::open(state_dir, reader)?;
    let mut text = String::new();
    tree.open_file(Path::new("defer"))?
        .take(MAX_DEFERRED_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The commands in a `state/defer` file's text, in the order they were registered, and
/// a line for the log about each record that is not usher-defer's.
pub(crate) fn parse_deferred(text: &str) -> (Vec<String>, Vec<String>) {
    use base64::Engine as _;
    let (mut commands, mut problems) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if commands.len() == MAX_DEFERRED {
            problems.push(format!("More than {MAX_DEFERRED} deferred commands: the rest do not run."));
            break;
        }
        match base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(command) => commands.push(command),
            None => problems.push("A deferred command is not one usher-defer wrote; it does not run.".into()),
        }
    }
    (commands, problems)
}

/// Writes `text` as `file` beside the build directory and runs it with the job's
/// after_script timeout; None if an abort arrived meanwhile.
async fn run_in_saved_state(
    run: &JobRun<'_>,
    exec: &dyn JobExecutor,
    what: &str,
    file_name: &str,
    text: &str,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<AfterScriptResult> {
    let (job, log) = (run.job, &run.log);
    let file = run.meta_dir.join(file_name);
    let started = Instant::now();
    let failed = |log: &LogHandle, e: std::io::Error| {
        log.note(&format!("Could not start {what}: {e}"));
        Some(AfterScriptResult {
            exit_code: None,
            duration_ms: 0,
            timed_out: false,
        })
    };
    if let Err(e) = run.write_for_job(file_name, text) {
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
                "{what} timed out after {} s and was killed.",
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
