//! Process control for jobs: signals to process groups, and finding every process a job
//! started — even those that left its process group with `setsid` or a double fork.
//!
//! A process is the job's ([`JobMarks`]) when any of these holds:
//! - its environment holds the job's cookie (`USHER_JOB_COOKIE`), which every descendant
//!   inherits (the approach of Jenkins' ProcessTreeKiller; no privileges needed, unlike
//!   cgroups);
//! - it holds one of the job's output pipes open (a daemon started with `env -i setsid`
//!   that kept its stdout or stderr);
//! - its working directory is inside the job's build directory.
//!
//! A process that scrubbed its environment, closed every inherited descriptor and left the
//! build directory is not found; catching that needs a cgroup per job.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::isolation::JobCgroup;

pub const COOKIE_VAR: &str = "USHER_JOB_COOKIE";

/// What marks a process as one of a job's (see the module comment).
#[derive(Debug)]
pub struct JobMarks {
    pub cookie: String,
    dirs: Vec<PathBuf>,
    /// `pipe:[inode]`, as /proc shows the job's output pipes in a process's fd table.
    pipes: Mutex<Vec<String>>,
    /// The job's cgroup, when the runner could make one: it holds every process of the
    /// job, whatever the process did to its environment, descriptors or directory.
    cgroup: Option<JobCgroup>,
}

impl JobMarks {
    /// `dirs`: directories only the job works in (its build directory).
    pub fn new(cookie: String, dirs: &[&Path]) -> Self {
        let mut all = Vec::new();
        for dir in dirs {
            all.push(dir.to_path_buf());
            // /proc shows a resolved path; resolve the parent, which exists already.
            if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name())
                && let Ok(real) = std::fs::canonicalize(parent)
            {
                all.push(real.join(name));
            }
        }
        all.dedup();
        Self {
            cookie,
            dirs: all,
            pipes: Mutex::new(Vec::new()),
            cgroup: None,
        }
    }

    pub fn with_cgroup(mut self, cgroup: Option<JobCgroup>) -> Self {
        self.cgroup = cgroup;
        self
    }

    /// Kills what is left in the job's cgroup and removes it.
    pub async fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove().await;
        }
    }

    /// Remembers one of the job's output pipes (either end).
    pub fn add_pipe(&self, fd: BorrowedFd<'_>) {
        if let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            self.pipes.lock().unwrap().push(target.to_string_lossy().into_owned());
        }
    }

    /// `runner_child`: the process is a direct child of the runner. Those are judged by
    /// the cookie alone: a child between fork and exec still holds copies of every
    /// descriptor of the runner (the read ends of all jobs' pipes) and may be about to
    /// become another job's bash.
    fn owns(&self, pid: i32, runner_child: bool, pipes: &[String]) -> bool {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let needle = format!("{COOKIE_VAR}={}", self.cookie);
        if std::fs::read(proc_dir.join("environ")).is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == needle.as_bytes())) {
            return true;
        }
        if runner_child {
            return false;
        }
        if std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| self.dirs.iter().any(|d| cwd.starts_with(d))) {
            return true;
        }
        if pipes.is_empty() {
            return false;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| pipes.iter().any(|p| target.as_os_str() == p.as_str())))
    }
}

pub fn signal_group(pgid: u32, signal: Signal) {
    // 0 would be the runner's own group (a child whose id is no longer known), 1 init's:
    // neither is ever a job's.
    if pgid <= 1 {
        return;
    }
    // ESRCH (group already gone) is the normal case at the end.
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Pids of the job's live processes, other than the runner itself.
fn processes_of(marks: &JobMarks) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pipes = marks.pipes.lock().unwrap().clone();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some((state, ppid)) = state_and_parent(pid) else { continue };
        if state != 'Z' && marks.owns(pid, ppid == me, &pipes) {
            found.push(pid);
        }
    }
    found
}

/// The state letter and parent pid from `/proc/<pid>/stat`.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// SIGKILLs every process of the job until none is left (a few rounds catch processes
/// forked during the sweep). Returns how many were killed.
pub async fn kill_all(marks: &JobMarks) -> usize {
    let mut killed = match &marks.cgroup {
        Some(cgroup) => cgroup.kill_all().await,
        None => 0,
    };
    for _ in 0..20 {
        let pids = processes_of(marks);
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

/// Pids of the live processes that run as `uid` (real, effective, saved or filesystem
/// id), never root's.
fn processes_of_user(uid: u32) -> Vec<i32> {
    let (me, wanted) = (std::process::id() as i32, uid.to_string());
    if uid == 0 {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().to_string();
        let zombie = field("State:").trim_start().starts_with('Z');
        if pid != me && !zombie && field("Uid:").split_whitespace().any(|id| id == wanted) {
            found.push(pid);
        }
    }
    found
}

/// SIGKILLs every process that runs as a job user, a few rounds; returns how many were
/// killed and how many are still there (a process stuck in the kernel outlives
/// SIGKILL until it leaves it). While a job runs its user is the job's alone (see
/// `isolation`), so what runs as it when the job has ended is the job's, however it hid
/// from [`kill_all`] (no cookie, no pipe, away from the build directory, no cgroup).
pub async fn kill_user(uid: u32) -> (usize, usize) {
    let mut killed = 0;
    for _ in 0..10 {
        let pids = processes_of_user(uid);
        if pids.is_empty() {
            return (killed, 0);
        }
        for pid in pids {
            if nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (killed, processes_of_user(uid).len())
}

/// The current directory of a live process.
pub fn cwd_of(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

#[cfg(test)]
mod tests {
    /// A process of a user that left every mark behind is found by its uid and killed;
    /// root's processes never are. The uid is one no account has, so nothing else on
    /// the machine runs as it.
    #[tokio::test]
    async fn every_process_of_a_job_user_is_killed_by_uid() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to start a process as another user");
            return;
        }
        let uid = 64_000 + (std::process::id() % 1000);
        let mut child = std::process::Command::new("sleep").arg("300").uid(uid).gid(uid).spawn().unwrap();
        for _ in 0..100 {
            if !super::processes_of_user(uid).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(super::processes_of_user(uid), [child.id() as i32]);
        assert_eq!(super::kill_user(uid).await, (1, 0));
        assert!(!child.wait().unwrap().success());
        assert!(super::processes_of_user(0).is_empty(), "root's processes are never a job user's");
    }

    #[test]
    fn an_unknown_group_is_never_the_runners_own() {
        // SIGTERM to group 0 would end this test process; the guard makes it a no-op.
        super::signal_group(0, nix::sys::signal::Signal::SIGTERM);
        super::signal_group(1, nix::sys::signal::Signal::SIGCONT);
    }
}
