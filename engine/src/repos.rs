//! Repositories on the server side: one bare mirror per project under
//! `<data-dir>/repos/project-<id>.git`, fetched when a pipeline is created, only to
//! resolve a branch or tag to its commit and to read the CI file **at that commit** (the
//! runner checks the code out itself). One fetch at a time per project; other requests
//! never wait for it (git runs as a child process, outside any database connection).
//!
//! git is the command line, as GitLab Runner and Woodpecker use it. Credentials reach it
//! only through its own mechanisms: HTTPS credentials through `GIT_ASKPASS` (a script that
//! prints two environment variables of the git process), an SSH key through
//! `GIT_SSH_COMMAND` with a 0600 key file that is removed afterwards. They are never in a
//! URL, an argument or a message.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usher_core::repository::CI_FILES;

use crate::EngineError;
use crate::store::ProjectSecrets;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Repos {
    root: Option<PathBuf>,
    /// One lock per project: fetches of a mirror take turns.
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

/// A commit a pipeline will run.
pub struct Resolved {
    pub sha: String,
    pub title: String,
    pub is_tag: bool,
    /// The CI file at that commit: its name and text.
    pub ci_file: Option<(String, String)>,
}

impl Repos {
    /// Mirrors live under `root`; None: this engine keeps no repositories.
    pub fn new(root: Option<PathBuf>) -> Repos {
        Repos {
            root,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches project `project_id`'s repository and resolves `sha` (if given) or the
    /// branch or tag `git_ref` to a commit, with its title and CI file.
    pub async fn resolve(
        &self,
        project_id: i64,
        url: &str,
        secrets: &ProjectSecrets,
        git_ref: &str,
        sha: Option<&str>,
    ) -> Result<Resolved, EngineError> {
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| EngineError::Internal("this server keeps no repositories (no data dir)".into()))?;
        let mirror = root.join(format!("project-{project_id}.git"));
        let lock = self.locks.lock().expect("not poisoned").entry(project_id).or_default().clone();
        let _turn = lock.lock().await;
        self.fetch(root, &mirror, url, secrets).await?;
        let (sha, is_tag) = match sha {
            Some(sha) => {
                if sha.len() < 7 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(EngineError::InvalidRef(format!("`{sha}` is not a commit id")));
                }
                let full = rev_parse(&mirror, &format!("{sha}^{{commit}}"))
                    .await
                    .ok_or_else(|| EngineError::InvalidRef(format!("the repository has no commit {sha}")))?;
                let is_tag = rev_parse(&mirror, &format!("refs/tags/{git_ref}^{{commit}}")).await.is_some()
                    && rev_parse(&mirror, &format!("refs/heads/{git_ref}^{{commit}}")).await.is_none();
                (full, is_tag)
            }
            None => match rev_parse(&mirror, &format!("refs/heads/{git_ref}^{{commit}}")).await {
                Some(sha) => (sha, false),
                None => match rev_parse(&mirror, &format!("refs/tags/{git_ref}^{{commit}}")).await {
                    Some(sha) => (sha, true),
                    None => return Err(EngineError::InvalidRef(format!("the repository has no branch or tag `{git_ref}`"))),
                },
            },
        };
        let title = git(&mirror, &["log", "-1", "--format=%s", &sha])
            .await
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        let mut ci_file = None;
        for name in CI_FILES {
            if let Some(text) = git(&mirror, &["show", &format!("{sha}:{name}")]).await {
                ci_file = Some((name.to_string(), text));
                break;
            }
        }
        Ok(Resolved {
            sha,
            title,
            is_tag,
            ci_file,
        })
    }

    /// The paths of the files of commit `sha` of the project's mirror (at most 100,000;
    /// none if it cannot be read), for `rules: exists:`.
    pub async fn files(&self, project_id: i64, sha: &str) -> Vec<String> {
        let Some(root) = &self.root else { return Vec::new() };
        let mirror = root.join(format!("project-{project_id}.git"));
        git(&mirror, &["ls-tree", "-r", "--name-only", "-z", sha])
            .await
            .map(|out| {
                out.split('\0')
                    .filter(|p| !p.is_empty())
                    .take(100_000)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text of the file at `path` of commit `sha` of the project's mirror (at most
    /// the size a CI file may have); None when there is none.
    pub async fn file(&self, project_id: i64, sha: &str, path: &str) -> Option<String> {
        let root = self.root.as_ref()?;
        // A path inside the tree only: `git show` of `sha:path` reads the commit's tree.
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return None;
        }
        let mirror = root.join(format!("project-{project_id}.git"));
        git(&mirror, &["show", &format!("{sha}:{path}")])
            .await
            .filter(|text| text.len() <= usher_core::config::limits::MAX_CONFIG_BYTES)
    }

    /// `git fetch` of every branch and tag into the mirror (created if missing).
    async fn fetch(&self, root: &Path, mirror: &Path, url: &str, secrets: &ProjectSecrets) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::Internal(format!("repository storage: {e}"));
        std::fs::create_dir_all(root).map_err(io)?;
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
        if !mirror.join("HEAD").exists() {
            run(
                tokio::process::Command::new("git").args(["init", "--bare", "--quiet"]).arg(mirror),
                &[],
            )
            .await
            .map_err(|e| EngineError::Internal(format!("git init: {e}")))?;
        }
        usher_git::remove_stale_locks(mirror);
        let access = usher_git::GitAccess::prepare(root, secrets.credentials.as_ref(), secrets.ssh_private_key.as_deref()).map_err(io)?;
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C")
            .arg(mirror)
            .args([
                "-c",
                "protocol.ext.allow=never",
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "--no-write-fetch-head",
            ])
            .arg("--")
            .arg(url)
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
        let result = tokio::time::timeout(FETCH_TIMEOUT, run(&mut cmd, access.env())).await;
        drop(access);
        let redact = |text: String| match &secrets.credentials {
            Some(c) if !c.password.is_empty() => text.replace(&c.password, "***"),
            _ => text,
        };
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(EngineError::InvalidRef(format!("cannot fetch {url}: {}", redact(message)))),
            Err(_) => Err(EngineError::InvalidRef(format!(
                "fetching {url} took longer than {FETCH_TIMEOUT:?}"
            ))),
        }
    }
}

/// A git command's standard output, or its standard error as the failure.
async fn run(cmd: &mut tokio::process::Command, env: &[(String, String)]) -> Result<String, String> {
    let out = cmd
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().lines().last().unwrap_or("git failed").to_string())
    }
}

async fn git(mirror: &Path, args: &[&str]) -> Option<String> {
    run(tokio::process::Command::new("git").arg("-C").arg(mirror).args(args), &[])
        .await
        .ok()
}

async fn rev_parse(mirror: &Path, what: &str) -> Option<String> {
    git(mirror, &["rev-parse", "--verify", "--quiet", what])
        .await
        .map(|s| s.trim().to_string())
}
