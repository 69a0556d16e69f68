//! Process control for jobs: signals to process groups, and finding every process a job
//! started — even those that left its process group with `setsid` or a double fork.
//!
//! Each job's processes carry an environment cookie (`USHER_JOB_COOKIE`), inherited by
//! every descendant; scanning `/proc/*/environ` for it finds them all (the approach of
//! Jenkins' ProcessTreeKiller; it needs no privileges, unlike cgroups).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::Path;

pub const COOKIE_VAR: &str = "USHER_JOB_COOKIE";

pub fn signal_group(pgid: u32, signal: Signal) {
    // ESRCH (group already gone) is the normal case at the end.
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Pids of live processes whose environment holds `COOKIE_VAR=cookie`.
pub fn processes_with_cookie(cookie: &str) -> Vec<i32> {
    let needle = format!("{COOKIE_VAR}={cookie}");
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) && !is_zombie(pid) {
            found.push(pid);
        }
    }
    found
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// SIGKILLs every process of the job until none is left (a few rounds catch processes
/// forked during the sweep). Returns how many were killed.
pub async fn kill_all_with_cookie(cookie: &str) -> usize {
    let mut killed = 0;
    for _ in 0..20 {
        let pids = processes_with_cookie(cookie);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    killed
}

/// The current directory of a live process.
pub fn cwd_of(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}
