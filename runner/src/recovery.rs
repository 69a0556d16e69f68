//! After a crash: the commands that jobs of a previous life of this runner deferred
//! (`usher-defer`) and never got to run. A runner that starts finds its old job
//! directories before it removes them, and runs each job's pending commands — last
//! registered first, as the job's own user, from the state the job's script last saved
//! (its directory and exported variables), with `CI_JOB_STATUS=canceled` and a timeout
//! each — before it takes new work. Their output goes to this runner's log (the job's
//! log is closed); what each did goes to the server in the job's receipt once the
//! runner is connected (`Recovered`, see `host::prepare_host`), which also ends the job
//! as `runner_lost` if the server had not yet.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use usher_core::api::DeferredResult;

use crate::after_script::{parse_deferred, read_deferred_file};
use crate::script::{Shell, cleanup_text};

/// How long one recovered command may run.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the pending deferred commands of every job directory in `builds_dir`; returns
/// what each job's did.
pub(crate) async fn run_pending_deferred(builds_dir: &Path) -> Vec<(i64, Vec<DeferredResult>)> {
    let Ok(entries) = std::fs::read_dir(builds_dir) else {
        return Vec::new();
    };
    let mut ran = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(job_id) = name
            .strip_prefix("job-")
            .and_then(|r| r.strip_suffix(".usher"))
            .and_then(|id| id.parse::<i64>().ok())
        else {
            continue;
        };
        let results = run_job_commands(builds_dir, job_id).await;
        if !results.is_empty() {
            ran.push((job_id, results));
        }
    }
    ran
}

async fn run_job_commands(builds_dir: &Path, job_id: i64) -> Vec<DeferredResult> {
    let meta = builds_dir.join(format!("job-{job_id}.usher"));
    let state_dir = meta.join(crate::rooms::STATE);
    // The job's own directory: its owner is the user the job ran as.
    let Ok(owner) = std::fs::symlink_metadata(&state_dir) else {
        return Vec::new();
    };
    let Ok(text) = read_deferred_file(&state_dir, None) else {
        return Vec::new();
    };
    let (commands, problems) = parse_deferred(&text);
    for problem in problems {
        tracing::warn!(job_id, "{problem}");
    }
    let build_dir = builds_dir.join(format!("job-{job_id}"));
    let state_file = state_dir.join("state.sh");
    let mut results = Vec::new();
    for command in commands.iter().rev() {
        // The saved state moves to the script's last directory; the build directory
        // when there is none.
        let script = format!("cd -- {} 2>/dev/null\n", crate::script::sh_quote(&build_dir.to_string_lossy()))
            + &cleanup_text(&state_file, None, "canceled", std::slice::from_ref(command), Shell::Bash);
        let started = std::time::Instant::now();
        let (exit_code, outcome) = run_as(&script, owner.uid(), owner.gid(), &meta.join(crate::rooms::HOME)).await;
        tracing::info!(job_id, command = %command, "a deferred command of a job this runner was running when it stopped: {outcome}");
        results.push(DeferredResult {
            command: command.clone(),
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    results
}

/// Runs `script` with bash as `uid`/`gid` in a process group of its own, with a cleared
/// environment; kills the group at [`TIMEOUT`]. Returns its exit code (None: it did not
/// start, was killed, or timed out) and a line on how it ended, with its output.
async fn run_as(script: &str, uid: u32, gid: u32, home: &Path) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    if nix::unistd::geteuid().is_root() && uid != 0 {
        // std drops the supplementary groups when root sets a uid.
        command.uid(uid).gid(gid);
    }
    let child = match command.output_with_timeout() {
        Ok(child) => child,
        Err(e) => return (None, format!("could not start: {e}")),
    };
    match tokio::time::timeout(TIMEOUT, child).await {
        Ok(Ok(out)) => (
            out.status.code(),
            format!(
                "exit {:?}; output: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).trim()
            ),
        ),
        Ok(Err(e)) => (None, format!("failed: {e}")),
        Err(_) => (None, format!("killed after {} s", TIMEOUT.as_secs())),
    }
}

/// `Command::output` as a future that kills the process group when dropped.
trait OutputWithTimeout {
    fn output_with_timeout(
        &mut self,
    ) -> std::io::Result<std::pin::Pin<Box<dyn Future<Output = std::io::Result<std::process::Output>> + Send>>>;
}

impl OutputWithTimeout for tokio::process::Command {
    fn output_with_timeout(
        &mut self,
    ) -> std::io::Result<std::pin::Pin<Box<dyn Future<Output = std::io::Result<std::process::Output>> + Send>>> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let pgid = child.id();
        let guard = GroupKiller(pgid);
        Ok(Box::pin(async move {
            let out = child.wait_with_output().await;
            drop(guard);
            out
        }))
    }
}

/// Kills a process group when dropped (the command timed out, or finished and left
/// something behind).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            crate::procs::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
