//! The checkout a job starts with, when its project has a repository: the runner keeps
//! one bare cache per repository (`<builds>/.usher-cache/<name>.git`), fetches into it
//! (a fetch, not a clone, after the first time; one at a time per cache), then clones
//! exactly the pipeline's commit into the job's empty build directory, sharing the
//! cache's objects (`git clone --shared`, no copy). The fetch runs as the runner (the
//! cache is the runner's), the clone as the job user (the build directory is the job's).
//!
//! Every git runs in its own process group inside the job's cgroup, with its output in
//! the job log, so a cancel during the checkout is the same signal path as during the
//! script: TERM to git's group, `cancel_grace`, KILL. Lock files a killed fetch leaves in
//! the cache are removed before the next fetch, so the cache stays usable. Credentials
//! reach git through `GIT_ASKPASS` or `GIT_SSH_COMMAND`, never on its command line.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use usher_core::protocol::Checkout;
use usher_core::repository::short_sha;

use crate::control::Control;
use crate::isolation::JobUser;
use crate::job_run::JobRun;
use crate::procs;
use crate::supervise::{Heed, Waited, supervise};

/// How a checkout ended.
pub enum CheckoutEnd {
    Done,
    /// git's own words (the last line of its error), or what is missing.
    Failed(String),
    /// A cancel, shutdown or abort arrived; git's group is dead already.
    Stopped(Control),
}

/// One lock per cache: fetches into it take turns, across this process's jobs.
fn cache_lock(cache: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut locks = LOCKS.lock().expect("not poisoned");
    locks
        .get_or_insert_with(HashMap::new)
        .entry(cache.to_path_buf())
        .or_default()
        .clone()
}

/// A cache directory name for a URL: readable, and distinct for distinct URLs.
fn cache_name(url: &str) -> String {
    let readable: String = url
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across runs and Rust versions (the cache outlives the process).
    let hash = url
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{}-{hash:016x}.git", readable.trim_start_matches(['.', '_']))
}

pub(crate) async fn check_out(run: &JobRun<'_>, spec: &Checkout, control: &mut mpsc::UnboundedReceiver<Control>) -> CheckoutEnd {
    let log = &run.log;
    if let Err(e) = prepare_caches(&run.caches, run.confinement.user()) {
        return CheckoutEnd::Failed(format!("cannot prepare the runner's repository cache: {e}"));
    }
    let cache = run.caches.join(cache_name(&spec.url));
    let lock = cache_lock(&cache);
    let _turn = tokio::select! {
        turn = lock.lock() => turn,
        c = control.recv() => return CheckoutEnd::Stopped(c.unwrap_or(Control::Abort)),
    };
    log.note(&format!("Fetching {} into the runner's cache…", spec.url));
    if let Some(end) = fetch(run, spec, &cache, control).await {
        return end;
    }
    log.note(&format!("Checking out {} …", short_sha(&spec.sha)));
    let cache_os = cache.as_os_str();
    let sha = OsStr::new(&spec.sha);
    let steps: [&[&OsStr]; 3] = [
        &[
            "clone".as_ref(),
            "--quiet".as_ref(),
            "--shared".as_ref(),
            "--no-checkout".as_ref(),
            cache_os,
            ".".as_ref(),
        ],
        &[
            "-c".as_ref(),
            "advice.detachedHead=false".as_ref(),
            "checkout".as_ref(),
            "--quiet".as_ref(),
            "--detach".as_ref(),
            sha,
        ],
        &["remote".as_ref(), "set-url".as_ref(), "origin".as_ref(), OsStr::new(&spec.url)],
    ];
    let job_env = [(
        "GIT_CONFIG_GLOBAL".to_string(),
        run.caches.join(".gitconfig-job").to_string_lossy().into_owned(),
    )];
    for args in steps {
        match git(run, args, &run.build_dir, &job_env, true, control).await {
            Ok(true) => {}
            Ok(false) => {
                return CheckoutEnd::Failed(format!(
                    "git {} failed",
                    args[..3].iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
                ));
            }
            Err(end) => return end,
        }
    }
    CheckoutEnd::Done
}

/// Fetches every branch and tag of the repository into the cache; None when the commit is
/// there afterwards.
async fn fetch(run: &JobRun<'_>, spec: &Checkout, cache: &Path, control: &mut mpsc::UnboundedReceiver<Control>) -> Option<CheckoutEnd> {
    if !cache.join("HEAD").exists() {
        let args: [&OsStr; 4] = ["init".as_ref(), "--bare".as_ref(), "--quiet".as_ref(), cache.as_os_str()];
        match git(run, &args, &run.caches, &[], false, control).await {
            Ok(true) => {}
            Ok(false) => return Some(CheckoutEnd::Failed("git init of the cache failed".into())),
            Err(end) => return Some(end),
        }
    }
    usher_git::remove_stale_locks(cache);
    let access = match usher_git::GitAccess::prepare(&run.caches, spec.credentials.as_ref(), spec.ssh_private_key.as_deref()) {
        Ok(access) => access,
        Err(e) => return Some(CheckoutEnd::Failed(format!("cannot prepare git's credentials: {e}"))),
    };
    let args: Vec<&OsStr> = vec![
        "-C".as_ref(),
        cache.as_os_str(),
        "-c".as_ref(),
        "protocol.ext.allow=never".as_ref(),
        "-c".as_ref(),
        "gc.auto=0".as_ref(),
        "fetch".as_ref(),
        "--quiet".as_ref(),
        "--prune".as_ref(),
        "--force".as_ref(),
        "--no-write-fetch-head".as_ref(),
        "--".as_ref(),
        OsStr::new(&spec.url),
        "+refs/heads/*:refs/heads/*".as_ref(),
        "+refs/tags/*:refs/tags/*".as_ref(),
    ];
    let fetched = git(run, &args, &run.caches, access.env(), false, control).await;
    drop(access);
    match fetched {
        Ok(true) => {}
        Ok(false) => return Some(CheckoutEnd::Failed(format!("could not fetch {}", spec.url))),
        Err(end) => {
            // A killed fetch may leave lock files: the next job's fetch removes them.
            return Some(end);
        }
    }
    let commit = format!("{}^{{commit}}", spec.sha);
    let args: [&OsStr; 5] = [
        "-C".as_ref(),
        cache.as_os_str(),
        "cat-file".as_ref(),
        "-e".as_ref(),
        OsStr::new(&commit),
    ];
    match git(run, &args, &run.caches, &[], false, control).await {
        Ok(true) => None,
        Ok(false) => Some(CheckoutEnd::Failed(format!("the repository has no commit {}", spec.sha))),
        Err(end) => Some(end),
    }
}

/// The paths of the files of the checked-out commit (for `artifacts: untracked`), read
/// from the runner's own cache of the repository — never from the build directory, whose
/// `.git` the job could have changed. None if git cannot list them.
pub(crate) async fn tracked_files(run: &JobRun<'_>, spec: &Checkout) -> Option<std::collections::HashSet<String>> {
    let cache = run.caches.join(cache_name(&spec.url));
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(&cache)
        .args(["ls-tree", "-r", "--name-only", "-z", "--full-tree"])
        .arg(&spec.sha)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .kill_on_drop(true)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
    )
}

/// Runs git to its end, or stops it as a cancel says: Ok(exited 0 or not), or Err with
/// how the checkout was stopped.
async fn git(
    run: &JobRun<'_>,
    args: &[&OsStr],
    cwd: &Path,
    env: &[(String, String)],
    as_job: bool,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<bool, CheckoutEnd> {
    let (mut child, output) = match run.spawn_tool("git", args, cwd, env, as_job) {
        Ok(c) => c,
        Err(e) => return Err(CheckoutEnd::Failed(format!("cannot run git: {e}"))),
    };
    let pgid = child.id().unwrap_or(0);
    let stopped = match supervise(&mut child, control, None, Heed::EveryStop).await {
        Waited::Stopped(stop) => stop,
        Waited::Exited(code) => {
            output.drain().await;
            return Ok(code == Some(0));
        }
        // No time limit was given, so this cannot happen; stop like an abort.
        Waited::TimedOut => Control::Abort,
    };
    if stopped == Control::Abort {
        procs::signal_group(pgid, Signal::SIGKILL);
    } else {
        procs::signal_group(pgid, Signal::SIGTERM);
        let grace = Duration::from_secs(run.job.cancel_grace_secs);
        if !matches!(
            supervise(&mut child, control, Some(grace), Heed::AbortOnly).await,
            Waited::Exited(_)
        ) {
            procs::signal_group(pgid, Signal::SIGKILL);
        }
    }
    let _ = child.wait().await;
    procs::signal_group(pgid, Signal::SIGKILL);
    output.drain().await;
    Err(CheckoutEnd::Stopped(stopped))
}

/// Where a job user's repository caches live: `<builds>/.usher-cache/<user>`, which
/// only that user (and the runner) may read, so a job cannot read the repositories that
/// jobs running as other users fetched.
pub(crate) fn caches_of(builds_dir: &Path, user: Option<&JobUser>) -> PathBuf {
    builds_dir.join(".usher-cache").join(user.map_or("runner", |u| u.name.as_str()))
}

/// The cache directory: readable for the job user, whose clone reads the objects (git's
/// credential files in it are the runner's only, see `usher_git`); closed to others.
fn prepare_caches(caches: &Path, user: Option<&JobUser>) -> std::io::Result<()> {
    std::fs::create_dir_all(caches)?;
    if let Some(all) = caches.parent() {
        std::fs::set_permissions(all, std::fs::Permissions::from_mode(0o711))?;
    }
    match user {
        Some(_) => crate::isolation::let_read(caches, user)?,
        None => std::fs::set_permissions(caches, std::fs::Permissions::from_mode(0o755))?,
    }
    // The job user's clone reads a cache the runner owns; git refuses that unless told in
    // protected configuration (a global file; `-c` does not reach upload-pack).
    let job_config = caches.join(".gitconfig-job");
    if !job_config.exists() {
        std::fs::write(&job_config, "[safe]\n\tdirectory = *\n")?;
        std::fs::set_permissions(&job_config, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cache_name;

    #[test]
    fn cache_names_are_distinct_and_plain() {
        let a = cache_name("https://host/group/app.git");
        assert_ne!(a, cache_name("https://host/other/app.git"));
        assert!(a.ends_with(".git") && !a.contains('/'), "{a}");
        assert_eq!(a, cache_name("https://host/group/app.git"));
    }
}
