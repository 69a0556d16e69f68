//! Starting a job's processes directly inside the job's cgroup. Moving a process into a
//! cgroup after it exists (writing `cgroup.procs` between fork and exec) takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
//! period: about 12 ms of every job start on a stock kernel, most of a job's pickup
//! time. `clone3` with `CLONE_INTO_CGROUP` (Linux 5.7) creates the child in the cgroup
//! instead. std's `Command` cannot ask for that, so with a cgroup this module makes the
//! child with [`crate::clone3`] and execs the command in it; without one, or where the kernel
//! refuses `clone3`, it spawns the command as before (tokio's `Command`, the cgroup
//! joined by [`Confinement::apply`]). Either way the caller gets a [`JobProcess`].

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::unix::AsyncFd;
use tokio::process::Command;

use crate::clone3::{CLONE_INTO_CGROUP, CloneArgs, clone3};
use crate::isolation::Confinement;

/// A started job process.
pub enum JobProcess {
    Spawned(tokio::process::Child),
    Cloned(ClonedChild),
}

/// A child made by `clone3`: waited for through its pidfd.
pub struct ClonedChild {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl JobProcess {
    pub fn id(&self) -> Option<u32> {
        match self {
            JobProcess::Spawned(child) => child.id(),
            JobProcess::Cloned(child) => child.status.is_none().then_some(child.pid as u32),
        }
    }

    /// Waits until the process has ended (cancel-safe; again after the end, the status).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            JobProcess::Spawned(child) => child.wait().await,
            JobProcess::Cloned(child) => child.wait().await,
        }
    }
}

impl ClonedChild {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            if let Some(status) = self.reap_if_ended()? {
                self.status = Some(status);
                continue;
            }
            let pidfd = self.pidfd.as_ref().expect("a pidfd while not reaped");
            let mut ready = pidfd.readable().await?;
            ready.clear_ready();
        }
    }

    fn reap_if_ended(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        match unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } {
            0 => Ok(None),
            pid if pid == self.pid => {
                self.pidfd = None;
                Ok(Some(ExitStatus::from_raw(status)))
            }
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

impl Drop for ClonedChild {
    /// A child dropped before it ended is reaped when it ends, not left a zombie.
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.reap_if_ended(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let mut child = ClonedChild {
            pid: self.pid,
            pidfd: self.pidfd.take(),
            status: None,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// Starts `cmd` (which sets its whole environment: every job command clears the
/// runner's) in its own process group, confined, with stdin from /dev/null and stdout
/// and stderr into `output`.
pub fn spawn_confined(mut cmd: Command, output: OwnedFd, confinement: &Confinement) -> std::io::Result<JobProcess> {
    if let Some(cgroup) = confinement.cgroup_dir() {
        match clone_into_cgroup(cmd.as_std(), &output, cgroup, confinement) {
            Ok(child) => return Ok(JobProcess::Cloned(child)),
            Err(CloneError::Refused(e)) => tracing::debug!("clone3 into the job's cgroup refused ({e}); spawning as before"),
            Err(CloneError::Failed(e)) => return Err(e),
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output))
        .process_group(0)
        .kill_on_drop(false);
    confinement.apply(&mut cmd);
    Ok(JobProcess::Spawned(cmd.spawn()?))
}

enum CloneError {
    /// The kernel does not offer it here (old kernel, seccomp, no permission).
    Refused(std::io::Error),
    /// The command itself could not start (no such program, bad directory).
    Failed(std::io::Error),
}

/// Everything the child needs, prepared before the fork: the child may only make
/// system calls (no allocation, no locks).
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
}

fn prepare(cmd: &std::process::Command) -> std::io::Result<Prepared> {
    let c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in a command"));
    let env: Vec<(OsString, OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let program = resolve(cmd.get_program(), path_var.as_deref())?;
    let mut argv = vec![c(cmd.get_program())?];
    for arg in cmd.get_args() {
        argv.push(c(arg)?);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut pair = k.clone();
        pair.push("=");
        pair.push(v);
        envp.push(c(&pair)?);
    }
    Ok(Prepared {
        program: c(program.as_os_str())?,
        argv,
        envp,
        cwd: cmd.get_current_dir().map(|d| c(d.as_os_str())).transpose()?,
    })
}

/// `program` as execvp would find it: itself if it has a slash, else the first
/// executable file of that name on the command's PATH (else the runner's).
fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let runner_path = std::env::var_os("PATH");
    let dirs = path_var.or(runner_path.as_deref()).unwrap_or(OsStr::new("/usr/bin:/bin"));
    std::env::split_paths(dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found on PATH", program.to_string_lossy()),
            )
        })
}

fn clone_into_cgroup(
    cmd: &std::process::Command,
    output: &OwnedFd,
    cgroup: &Path,
    confinement: &Confinement,
) -> Result<ClonedChild, CloneError> {
    let prepared = prepare(cmd).map_err(CloneError::Failed)?;
    let argv: Vec<*const libc::c_char> = prepared.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const libc::c_char> = prepared.envp.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
    let cgroup_dir = std::fs::File::open(cgroup).map_err(CloneError::Refused)?;
    let dev_null = std::fs::File::open("/dev/null").map_err(CloneError::Failed)?;
    let (error_reader, error_writer) = std::io::pipe().map_err(CloneError::Failed)?;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..Default::default()
    };
    let mut plan = ChildPlan {
        prepared: &prepared,
        argv: &argv,
        envp: &envp,
        dev_null: dev_null.as_raw_fd(),
        output: output.as_raw_fd(),
        error_pipe: error_writer.as_raw_fd(),
        user: confinement.user().map(|u| (u.uid, u.gid)),
    };
    // SAFETY: `exec_child` makes only system calls on the plan, prepared above, and
    // execs or exits; the plan lives until clone3 returns.
    let pid = unsafe { clone3(&mut args, exec_child, (&mut plan as *mut ChildPlan).cast()) }.map_err(CloneError::Refused)?;
    drop(error_writer);
    // SAFETY: the kernel returned a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the OwnedFd stays open and the same until the AsyncFd that owns it drops.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| CloneError::Failed(std::io::Error::other(e.to_string())))?;
    let mut child = ClonedChild {
        pid,
        pidfd: Some(pidfd),
        status: None,
    };
    // The child's exec closes the pipe (close-on-exec); before that, a failure sends errno.
    let mut errno = [0u8; 4];
    match std::io::Read::read_exact(&mut (&error_reader), &mut errno) {
        Err(_) => Ok(child),
        Ok(()) => {
            let error = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            let _ = child.reap_if_ended();
            Err(CloneError::Failed(error))
        }
    }
}

/// What the child needs, prepared before the clone (see [`exec_child`]).
struct ChildPlan<'a> {
    prepared: &'a Prepared,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    dev_null: i32,
    output: i32,
    error_pipe: i32,
    user: Option<(u32, u32)>,
}

/// In the child: standard streams, own process group, the default action for every
/// signal the runner handles (SIGPIPE too) and an empty signal mask, the working
/// directory, umask 022, the job user (raw system calls: glibc's setuid would try to
/// reach the runner's threads), exec. On failure, errno into the error pipe and exit.
///
/// # Safety
/// Only as the `main` of [`clone3`], with `plan` pointing to a [`ChildPlan`].
unsafe extern "C" fn exec_child(plan: *mut std::ffi::c_void) -> ! {
    // SAFETY: (whole body) async-signal-safe system calls on prepared data.
    unsafe {
        let ChildPlan {
            prepared,
            argv,
            envp,
            dev_null,
            output,
            error_pipe,
            user,
        } = *plan.cast::<ChildPlan>();
        let fail = || -> ! {
            let errno = *libc::__errno_location();
            libc::write(error_pipe, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        };
        if libc::dup2(dev_null, 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(output, 2) < 0 {
            fail();
        }
        if libc::setpgid(0, 0) != 0 {
            fail();
        }
        // The handlers are the runner's (the child has a copy of the table): none may run
        // here, so every signal stays blocked until they are reset.
        let mut action: libc::sigaction = std::mem::zeroed();
        for signal in 1..=64 {
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && (action.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
                && action.sa_sigaction != libc::SIG_DFL
            {
                let default: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null::<libc::sigset_t>(),
            8,
        );
        if let Some(cwd) = &prepared.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            fail();
        }
        libc::umask(0o022);
        if let Some((uid, gid)) = user
            && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setgid, gid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0)
        {
            fail();
        }
        libc::execve(prepared.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::{JobCgroup, JobIsolation, cgroup_root};

    /// Started by clone3: already in the job's cgroup when it runs its first line, in a
    /// process group of its own, as the job user where there is one, with its exit code.
    #[tokio::test]
    async fn a_job_process_starts_inside_its_cgroup() {
        let Some(root) = cgroup_root("spawn-test") else {
            eprintln!("note: no writable cgroup v2 here; clone3 into a cgroup is not tested");
            return;
        };
        let mut isolations = vec![JobIsolation::Trusted];
        if nix::unistd::geteuid().is_root() {
            isolations.push(JobIsolation::decide(None, false, 1).expect("the default job user"));
        }
        for (n, isolation) in isolations.into_iter().enumerate() {
            let cgroup = JobCgroup::create(&root, 90_000 + n as i64).expect("a job cgroup");
            let slot = isolation.take_user().unwrap();
            let confinement = Confinement::new(slot.as_ref().map(|s| &s.user), Some(&cgroup));
            let (reader, writer) = std::io::pipe().unwrap();
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                "grep ^0:: /proc/self/cgroup; id -u; cut -d' ' -f5 /proc/$$/stat; echo $$; exit 3",
            ])
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
            let mut child = spawn_confined(cmd, writer.into(), &confinement).unwrap();
            assert!(matches!(child, JobProcess::Cloned(_)), "clone3 was not used");
            assert_eq!(child.wait().await.unwrap().code(), Some(3));
            let out = std::io::read_to_string(reader).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert!(
                lines[0].ends_with(&format!("/job-{}", 90_000 + n)),
                "not in the job's cgroup: {out}"
            );
            let uid = confinement.user().map_or(nix::unistd::geteuid().as_raw(), |u| u.uid);
            assert_eq!(lines[1], uid.to_string(), "{out}");
            assert_eq!(lines[2], lines[3], "not the leader of its own process group: {out}");
            cgroup.remove().await;
        }
        let _ = std::fs::remove_dir(&root);
    }

    /// The clone blocks every signal while the child shares the runner's memory: the job
    /// must start with none blocked and SIGPIPE not ignored (the runner ignores it), and
    /// the runner's thread must get its own mask back.
    #[tokio::test]
    async fn a_job_process_starts_with_no_signal_blocked_and_the_runner_keeps_its_mask() {
        let Some(root) = cgroup_root("spawn-test-signals") else { return };
        let _handled = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
        let mask_of = |status: &str, key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
        let runner_before = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let cgroup = JobCgroup::create(&root, 2).unwrap();
        let confinement = Confinement::new(None, Some(&cgroup));
        let (reader, writer) = std::io::pipe().unwrap();
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status").env_clear().env("PATH", "/usr/bin:/bin");
        let mut child = spawn_confined(cmd, writer.into(), &confinement).unwrap();
        let runner_after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
        let job = std::io::read_to_string(reader).unwrap();
        assert_eq!(mask_of(&job, "SigBlk:").as_deref(), Some("0000000000000000"), "{job}");
        let ignored = u64::from_str_radix(&mask_of(&job, "SigIgn:").unwrap(), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored in the job: {job}");
        assert_eq!(mask_of(&runner_after, "SigBlk:"), mask_of(&runner_before, "SigBlk:"));
        cgroup.remove().await;
        let _ = std::fs::remove_dir(&root);
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_child() {
        let Some(root) = cgroup_root("spawn-test-missing") else { return };
        let cgroup = JobCgroup::create(&root, 1).unwrap();
        let confinement = Confinement::new(None, Some(&cgroup));
        let (_reader, writer) = std::io::pipe().unwrap();
        let mut cmd = Command::new("no-such-program-here");
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        let error = spawn_confined(cmd, writer.into(), &confinement).err().expect("an error");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        cgroup.remove().await;
        let _ = std::fs::remove_dir(&root);
    }
}
