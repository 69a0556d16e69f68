//! How Usher hands a repository's credentials to the git command line, for the server's
//! mirrors and the runner's caches alike: HTTPS credentials through `GIT_ASKPASS` (a
//! script that prints them from the environment), an SSH key through a private file named
//! in `GIT_SSH_COMMAND`, never on a command line or in a message. Also the cleanup a
//! repository needs after a git process was killed mid-write (its lock files).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use usher_core::repository::RepoCredentials;

/// The askpass helper git runs for a username or password.
const ASKPASS: &str = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$USHER_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$USHER_GIT_PASSWORD\" ;;\nesac\n";

/// What one git fetch needs to authenticate: the environment for the git process. A
/// private key file lives as long as this value and is removed when it is dropped.
pub struct GitAccess {
    env: Vec<(String, String)>,
    key_file: Option<PathBuf>,
}

impl GitAccess {
    /// Prepares access in `dir` (only its owner may read it): writes the askpass helper
    /// once, and the SSH key, when there is one, to a fresh private file.
    pub fn prepare(dir: &Path, credentials: Option<&RepoCredentials>, ssh_private_key: Option<&str>) -> std::io::Result<GitAccess> {
        let askpass = dir.join(".askpass");
        if !askpass.exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o700)
                .open(&askpass)?;
            f.write_all(ASKPASS.as_bytes())?;
        }
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("GIT_ASKPASS".to_string(), askpass.to_string_lossy().into_owned()),
        ];
        if let Some(c) = credentials {
            env.push(("USHER_GIT_USERNAME".into(), c.username.clone()));
            env.push(("USHER_GIT_PASSWORD".into(), c.password.clone()));
        }
        let mut access = GitAccess { env, key_file: None };
        if let Some(key) = ssh_private_key {
            let path = dir.join(format!(".key-{}", hex::encode(rand::random::<[u8; 8]>())));
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            access.key_file = Some(path.clone());
            f.write_all(format!("{}\n", key.trim_end()).as_bytes())?;
            access.env.push((
                "GIT_SSH_COMMAND".into(),
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                    path.display()
                ),
            ));
        }
        Ok(access)
    }

    /// The environment variables to give the git process.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

impl Drop for GitAccess {
    fn drop(&mut self) {
        if let Some(path) = &self.key_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes the lock files a killed git left in `repo` (call only while holding the
/// repository's own lock, so no live git is writing). `objects/` is not searched.
pub fn remove_stale_locks(repo: &Path) {
    let Ok(entries) = std::fs::read_dir(repo) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "objects") {
                remove_stale_locks(&path);
            }
        } else if path.extension().is_some_and(|e| e == "lock") {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_private_and_gone_after_use() {
        let dir = std::env::temp_dir().join(format!("usher-git-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let credentials = RepoCredentials {
            username: "u".into(),
            password: "p".into(),
        };
        let access = GitAccess::prepare(&dir, Some(&credentials), Some("KEY")).unwrap();
        let ssh = access.env().iter().find(|(k, _)| k == "GIT_SSH_COMMAND").unwrap().1.clone();
        let key = ssh.split('\'').nth(1).unwrap().to_string();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY\n");
        assert!(!ssh.contains("KEY") && !access.env().iter().any(|(_, v)| v.contains("KEY")));
        drop(access);
        assert!(!Path::new(&key).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_locks_go_but_objects_stay() {
        let dir = std::env::temp_dir().join(format!("usher-git-locks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("refs/heads")).unwrap();
        std::fs::create_dir_all(dir.join("objects/pack")).unwrap();
        std::fs::write(dir.join("index.lock"), "").unwrap();
        std::fs::write(dir.join("refs/heads/main.lock"), "").unwrap();
        std::fs::write(dir.join("objects/pack/x.lock"), "").unwrap();
        remove_stale_locks(&dir);
        assert!(!dir.join("index.lock").exists());
        assert!(!dir.join("refs/heads/main.lock").exists());
        assert!(dir.join("objects/pack/x.lock").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
