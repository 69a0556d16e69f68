//! After a crash: the commands that jobs of a previous life of this runner deferred
//! (`usher-defer`) and never got to run. A runner that starts finds its old job
//! directories before it removes them, and runs each job's pending commands — last
//! registered first, as the job's own user, from the state the job's script last saved
//! (its directory and exported variables), with `CI_JOB_STATUS=canceled` and a timeout
//! each — before it takes new work. The job is over on the server (ended by the reaper
//! as `runner_lost`), so their output goes to this runner's log, not the job's.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::after_script::{MAX_DEFERRED_BYTES, parse_deferred};
use crate::beneath::JobTree;
use crate::script::{Shell, cleanup_text};

/// How long one recovered command may run.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the pending deferred commands of every job directory in `builds_dir`; returns
/// how many ran.
pub(crate) async fn run_pending_deferred(builds_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(builds_dir) else {
        return 0;
    };
    let mut ran = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(job_id) = name
            .strip_prefix("job-")
            .and_then(|r| r.strip_suffix(".usher"))
            .and_then(|id| id.parse::<i64>().ok())
        else {
            continue;
        };
        ran += run_job_commands(builds_dir, job_id).await;
    }
    ran
}

async fn run_job_commands(builds_dir: &Path, job_id: i64) -> usize {
    let meta = builds_dir.join(format!("job-{job_id}.usher"));
    let state_dir = meta.join(crate::rooms::STATE);
    // The job's own directory: its owner is the user the job ran as.
    let Ok(owner) = std::fs::symlink_metadata(&state_dir) else {
        return 0;
    };
    let text = JobTree::open(&state_dir, None).and_then(|tree| {
        let mut text = String::new();
        tree.open_file(Path::new("defer"))?
            .take(MAX_DEFERRED_BYTES)
            .read_to_string(&mut text)?;
        Ok(text)
    });
    let Ok(text) = text else { return 0 };
    let (commands, problems) = parse_deferred(&text);
    for problem in problems {
        tracing::warn!(job_id, "{problem}");
    }
    let build_dir = builds_dir.join(format!("job-{job_id}"));
    let state_file = state_dir.join("state.sh");
    for command in commands.iter().rev() {
        // The saved state moves to the script's last directory; the build directory
        // when there is none.
        let script = format!("cd -- {} 2>/dev/null\n", crate::script::sh_quote(&build_dir.to_string_lossy()))
            + &cleanup_text(&state_file, None, "canceled", std::slice::from_ref(command), Shell::Bash);
        let outcome = run_as(&script, owner.uid(), owner.gid(), &meta.join(crate::rooms::HOME)).await;
        tracing::info!(job_id, command = %command, "a deferred command of a job this runner was running when it stopped: {outcome}");
    }
    commands.len()
}

/// Runs `script` with bash as `uid`/`gid` in a process group of its own, with a cleared
/// environment; kills the group at [`TIMEOUT`]. Returns how it ended and its output.
async fn run_as(script: &str, uid: u32, gid: u32, home: &Path) -> String {
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
        Err(e) => return format!("could not start: {e}"),
    };
    match tokio::time::timeout(TIMEOUT, child).await {
        Ok(Ok(out)) => format!(
            "exit {:?}; output: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).trim()
        ),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => format!("killed after {} s", TIMEOUT.as_secs()),
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
