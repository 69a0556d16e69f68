//! What keeps a job away from the runner (and, for local runners, from the server it
//! lives in) and what lets the runner end every process a job started.
//!
//! - **A job user per job slot.** A runner started as root runs every job process as an
//!   unprivileged user, and no two jobs running at the same moment share one: a runner
//!   that runs N jobs at once claims N users `usher-job-1`, `usher-job-2`, … (or
//!   `--job-user PREFIX`-<n>), created (`useradd --system`) if missing, and holds them
//!   with a lock in `/run/usher/job-users` so that no other runner on the machine uses
//!   them. So a job can neither read another running job's `/proc/<pid>/environ` (its
//!   secrets) nor signal its processes. No job user can read the server's data dir
//!   (database, tokens, artifacts: private to root) or the runner's token (in root's
//!   process memory and environment). A runner that
//!   is not root cannot switch users, so it refuses to run jobs unless its operator says
//!   they are trusted (`--trust-jobs`): Usher never silently runs untrusted code as the
//!   user that owns its data.
//! - **A cgroup per job.** Where the runner may create cgroup-v2 directories (as root, or
//!   with a delegated subtree), each job's processes start inside a cgroup of their own
//!   (`<our cgroup>/usher-<runner>/job-<id>`), which an unprivileged job cannot leave.
//!   Ending the job writes `cgroup.kill`: every process in it dies, including one that
//!   double-forked, called `setsid`, scrubbed its environment, closed its descriptors and
//!   moved to `/` — what systemd and Kubernetes do. Without cgroups the runner falls back
//!   to the marks of `procs` (environment cookie, pipes, working directory).
//!
//! Both are applied in the forked child before `exec`, using only system calls: by
//! [`crate::spawn`], which creates the child inside the cgroup, or, where the kernel
//! refuses that, by [`Confinement::apply`], which moves it there.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The user job processes run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The prefix of the job users' names a root runner uses when not told another: its
/// jobs run as `usher-job-1`, `usher-job-2`, …
pub const DEFAULT_JOB_USER: &str = "usher-job";

/// Where a runner's claims on job users are held (root's own directory): one lock file
/// per user, locked for as long as a runner process may run jobs as that user.
const CLAIMS_DIR: &str = "/run/usher/job-users";

/// The most job users a machine's runners use together.
const MAX_JOB_USERS: u32 = 1000;

/// How jobs are kept apart from the runner and from each other, decided once at start.
#[derive(Clone, Debug)]
pub enum JobIsolation {
    /// Each job runs as one of these users, which no other job running at that moment
    /// has: one user per job this runner (or this server's local runners) may run at
    /// once, claimed from the machine's pool so no other runner process uses them.
    Users(Arc<JobUsers>),
    /// Jobs run as the runner's own user: the operator passed `--trust-jobs`.
    Trusted,
}

impl JobIsolation {
    /// `--job-user` and `--trust-jobs` as given, whether we are root, and how many jobs
    /// may run at once (`slots`) become a decision or an error that says what to do.
    pub fn decide(job_user: Option<&str>, trust_jobs: bool, slots: u32) -> Result<JobIsolation, String> {
        let root = nix::unistd::geteuid().is_root();
        match (job_user, root) {
            (Some(name), false) => Err(format!(
                "--job-user {name} needs root: only root can start processes as another user"
            )),
            (name, true) => Ok(JobIsolation::Users(Arc::new(JobUsers::claim(
                name.unwrap_or(DEFAULT_JOB_USER),
                slots.max(1),
            )?))),
            (None, false) if trust_jobs => Ok(JobIsolation::Trusted),
            (None, false) => Err(format!(
                "jobs would run as {}, the user that owns this process and its data, so any job could read them. \
                 Start as root (jobs then run as the unprivileged users `{DEFAULT_JOB_USER}-<n>`, or --job-user PREFIX), \
                 or pass --trust-jobs if every job that can reach this runner is trusted.",
                whoami()
            )),
        }
    }

    /// A user for one job, back in the pool when the returned guard drops; Ok(None):
    /// jobs run as the runner's user.
    pub fn take_user(&self) -> Result<Option<SlotUser>, String> {
        match self {
            JobIsolation::Trusted => Ok(None),
            JobIsolation::Users(pool) => {
                let user = pool.free.lock().unwrap().pop().ok_or("every job user of this runner is busy")?;
                Ok(Some(SlotUser { user, pool: pool.clone() }))
            }
        }
    }

    /// Every job user, for what all of them must reach.
    pub fn users(&self) -> &[JobUser] {
        match self {
            JobIsolation::Users(pool) => &pool.users,
            JobIsolation::Trusted => &[],
        }
    }

    /// One line for the log: who jobs run as.
    pub fn describe(&self) -> String {
        match self {
            JobIsolation::Users(pool) => {
                let names: Vec<String> = pool.users.iter().map(|u| format!("{} (uid {})", u.name, u.uid)).collect();
                format!("each job runs as a user no other running job has: {}", names.join(", "))
            }
            JobIsolation::Trusted => format!("jobs run as {} (--trust-jobs): they can read everything this process can", whoami()),
        }
    }
}

/// The job users one runner (or one server's local runners) claimed, and which of them
/// are free.
#[derive(Debug)]
pub struct JobUsers {
    users: Vec<JobUser>,
    free: Mutex<Vec<JobUser>>,
    /// The locked claim files; closing them (when the last runner using the pool ends)
    /// gives the users back to the machine.
    _claims: Vec<std::fs::File>,
}

impl JobUsers {
    /// Claims `slots` users named `<prefix>-<n>` that no other runner process on this
    /// machine holds, creating each (a system user without login) if missing.
    fn claim(prefix: &str, slots: u32) -> Result<JobUsers, String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(CLAIMS_DIR)
            .map_err(|e| format!("cannot create {CLAIMS_DIR}: {e}"))?;
        let (mut users, mut claims) = (Vec::new(), Vec::new());
        for n in 1..=MAX_JOB_USERS {
            if users.len() == slots as usize {
                break;
            }
            let name = format!("{prefix}-{n}");
            let file = std::fs::File::create(Path::new(CLAIMS_DIR).join(&name)).map_err(|e| format!("cannot claim {name}: {e}"))?;
            if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
                continue; // Another runner runs jobs as this one.
            }
            users.push(JobUser::ensure(&name)?);
            claims.push(file);
        }
        if users.len() < slots as usize {
            return Err(format!(
                "no free job users: {MAX_JOB_USERS} named {prefix}-<n> are claimed by other runners"
            ));
        }
        Ok(JobUsers {
            free: Mutex::new(users.iter().rev().cloned().collect()),
            users,
            _claims: claims,
        })
    }
}

/// One job's user, taken from its runner's pool until this drops.
#[derive(Debug)]
pub struct SlotUser {
    pub user: JobUser,
    pool: Arc<JobUsers>,
}

impl Drop for SlotUser {
    fn drop(&mut self) {
        self.pool.free.lock().unwrap().push(self.user.clone());
    }
}

fn whoami() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

impl JobUser {
    pub fn lookup(name: &str) -> Result<JobUser, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) if u.uid.is_root() => Err(format!("the job user {name} is root; jobs need an unprivileged user")),
            Ok(Some(u)) => Ok(JobUser {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(format!("there is no user named {name} (create it, e.g. `useradd --system {name}`)")),
            Err(e) => Err(format!("cannot look up the user {name}: {e}")),
        }
    }

    /// The user, created as a system user without a home or login shell if missing.
    pub fn ensure(name: &str) -> Result<JobUser, String> {
        if let Ok(user) = JobUser::lookup(name) {
            return Ok(user);
        }
        let status = std::process::Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .status()
            .map_err(|e| format!("cannot run useradd to create the job user {name}: {e}"))?;
        // Another runner may have created it meanwhile (exit 9: the user exists).
        if !status.success() && status.code() != Some(9) {
            return Err(format!("useradd could not create the job user {name} ({status})"));
        }
        tracing::info!("created the system user {name} for running jobs");
        JobUser::lookup(name)
    }
}

/// A cgroup-v2 directory holding every process of one job.
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for the child to open before exec.
    procs: CString,
}

/// Where this runner's job cgroups live (`<cgroup2 mount><our cgroup>/usher-<tag>`), if
/// cgroup v2 is mounted and we may create directories there.
pub fn cgroup_root(tag: &str) -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    let root = mount.join(own).join(format!("usher-{tag}"));
    std::fs::create_dir_all(&root).ok()?;
    // Membership only: no controllers are needed to kill every process of a group.
    root.join("cgroup.procs").exists().then_some(root)
}

/// Where cgroup v2 is mounted, if it is.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2")).then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

impl JobCgroup {
    /// A fresh cgroup for job `job_id` under `root`, or None if it cannot be made.
    pub fn create(root: &Path, job_id: i64) -> Option<JobCgroup> {
        let dir = root.join(format!("job-{job_id}"));
        if dir.exists() {
            kill_and_remove(&dir);
        }
        std::fs::create_dir(&dir).ok()?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
        Some(JobCgroup { dir, procs })
    }

    /// Kills every process in the cgroup and waits (up to 5 s) until it is empty; the
    /// number of processes it held.
    pub async fn kill_all(&self) -> usize {
        let held = pids_in(&self.dir).len();
        if held > 0 {
            kill_cgroup(&self.dir).await;
        }
        held
    }

    /// Kills what is left and removes the directory.
    pub async fn remove(self) {
        kill_cgroup(&self.dir).await;
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `cgroup.kill` (Linux 5.14+), else SIGKILL to each member until none is left.
async fn kill_cgroup(dir: &Path) {
    let has_kill = std::fs::write(dir.join("cgroup.kill"), "1").is_ok();
    for _ in 0..500 {
        let pids = pids_in(dir);
        if pids.is_empty() {
            return;
        }
        if !has_kill {
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!("processes of {} survived SIGKILL for 5 s", dir.display());
}

fn kill_and_remove(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..500 {
        if pids_in(dir).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Kills the processes a previous life of this runner left in its job cgroups (after a
/// `kill -9`, say) and removes those cgroups. Returns how many processes it killed.
pub fn kill_leftovers(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    let mut killed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir.is_dir() && entry.file_name().to_string_lossy().starts_with("job-") {
            killed += pids_in(&dir).len();
            kill_and_remove(&dir);
        }
    }
    killed
}

/// What a job's processes get between fork and exec.
#[derive(Clone)]
pub struct Confinement {
    user: Option<JobUser>,
    cgroup_procs: Option<CString>,
    cgroup_dir: Option<PathBuf>,
}

impl Confinement {
    pub fn new(user: Option<&JobUser>, cgroup: Option<&JobCgroup>) -> Confinement {
        Confinement {
            user: user.cloned(),
            cgroup_procs: cgroup.map(|c| c.procs.clone()),
            cgroup_dir: cgroup.map(|c| c.dir.clone()),
        }
    }

    /// The same cgroup, but the runner's own user: for what the runner does on the job's
    /// behalf (fetching into its cache), which a cancel must stop like the job.
    pub fn runner_side(&self) -> Confinement {
        Confinement {
            user: None,
            cgroup_procs: self.cgroup_procs.clone(),
            cgroup_dir: self.cgroup_dir.clone(),
        }
    }

    /// The job's cgroup directory, to start processes in (see [`crate::spawn`]).
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroup_dir.as_deref()
    }

    /// The job user, for files the job must own.
    pub fn user(&self) -> Option<&JobUser> {
        self.user.as_ref()
    }

    /// Makes `cmd`'s child join the job's cgroup (while still root), take a normal umask,
    /// and become the job user. Runs in the forked child: only async-signal-safe calls.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let this = self.clone();
        // SAFETY: the closure only calls async-signal-safe libc functions (open, write,
        // close, umask, setgroups, setgid, setuid) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(procs) = &this.cgroup_procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                libc::umask(0o022);
                if let Some(user) = &this.user
                    && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(user.gid) != 0 || libc::setuid(user.uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Lets the job user's group read (not write) the runner's directory `path`: root's,
/// mode 0750 (no-op without a job user).
pub fn let_read(path: &Path, user: Option<&JobUser>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = user else { return Ok(()) };
    std::os::unix::fs::lchown(path, Some(0), Some(user.gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750))
}

/// Gives `path` and everything below it to the job user (no-op without one).
pub fn give_to(path: &Path, user: Option<&JobUser>) -> std::io::Result<()> {
    let Some(user) = user else { return Ok(()) };
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.map_err(std::io::Error::other)?;
        std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}
