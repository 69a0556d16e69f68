//! Job caches on the runner's host (`cache:` in the YAML; see `usher_core::cache`): one
//! copy per project and key under `<builds>/.usher-job-caches/<sha256 of the key>/`,
//! a directory only the runner can enter. A job pulls its caches into its build
//! directory before its scripts run and pushes them when it ends, as its `policy` and
//! `when` say.
//!
//! The job is hostile on both ways: its files are read beneath its build directory with
//! its own rights and never through a link (`beneath::JobTree`), as artifacts are; and
//! a cache is written back into a build directory with `JobTree::create_file`, as the
//! artifacts of earlier jobs are. A new copy is written beside the old one and renamed
//! into place, so a job that pulls while another pushes gets one whole copy. A cache is
//! a speed-up: whatever goes wrong is a line in the log, never a failed job.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use usher_core::cache::CacheAssignment;
use usher_core::config::ArtifactsWhen;

use crate::artifacts::collect_files;
use crate::beneath::JobTree;
use crate::isolation::JobUser;
use crate::logsink::LogHandle;

/// The most bytes one cache may hold; a bigger one is not kept.
pub const MAX_CACHE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Where the caches of the runner with this builds directory live.
pub fn root_of(builds_dir: &Path) -> PathBuf {
    builds_dir.join(".usher-job-caches")
}

/// The most files one cache may hold (as artifacts).
pub const MAX_CACHE_FILES: usize = crate::artifacts::MAX_FILES;

/// The directory of one cache: the key is hashed, so no key names a path.
pub(crate) fn dir_of(root: &Path, key: &str) -> PathBuf {
    root.join(hex::encode(Sha256::digest(key.as_bytes())))
}

/// The caches a job pulls at its start.
pub fn pulled(caches: &[CacheAssignment]) -> impl Iterator<Item = &CacheAssignment> {
    caches.iter().filter(|c| c.policy.pulls())
}

/// The caches a job pushes at its end, given whether it succeeded.
pub fn pushed(caches: &[CacheAssignment], succeeded: bool) -> impl Iterator<Item = &CacheAssignment> {
    caches
        .iter()
        .filter(move |c| c.policy.pushes() && ArtifactsWhen::applies(c.when, succeeded))
}

/// Copies the cache `cache` into `build_dir` (files owned by `owner`, the job's user),
/// noting in the log what it did.
pub fn pull(root: &Path, cache: &CacheAssignment, build_dir: &Path, owner: Option<JobUser>, log: &LogHandle) {
    let key = shown_key(&cache.key);
    let dir = dir_of(root, &cache.key);
    let files = match files_below(&dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log.note(&format!("No cache for key {key} yet."));
            return;
        }
        Err(e) => {
            log.note(&format!("The cache {key} is not used: {e}"));
            return;
        }
    };
    let tree = match JobTree::open(build_dir, owner) {
        Ok(tree) => tree,
        Err(e) => {
            log.note(&format!("The cache {key} is not used: the build directory cannot be opened: {e}"));
            return;
        }
    };
    let (mut count, mut bytes) = (0, 0);
    for rel in files {
        let copied = (|| -> io::Result<u64> {
            let mut from = std::fs::File::open(dir.join(&rel))?;
            let mode = from.metadata()?.permissions().mode();
            let mut to = tree.create_file(&rel)?;
            let size = io::copy(&mut from, &mut to)?;
            to.set_permissions(std::fs::Permissions::from_mode(mode & 0o755))?;
            Ok(size)
        })();
        match copied {
            Ok(size) => {
                count += 1;
                bytes += size;
            }
            Err(e) => log.note(&format!("Cache file {} not restored: {e}", rel.display())),
        }
    }
    log.note(&format!("Restored the cache {key}: {count} file(s), {bytes} bytes."));
}

/// Keeps the files `cache.paths` name in `build_dir` (read with `reader`'s rights) as the
/// new copy of the cache, noting in the log what it did; `tracked`: the files of the
/// checked-out commit (`untracked: true` keeps the others; None: they are not known,
/// and `untracked` takes nothing). Whether it was saved.
pub fn push(
    root: &Path,
    cache: &CacheAssignment,
    build_dir: &Path,
    reader: Option<JobUser>,
    tracked: Option<&HashSet<String>>,
    log: &LogHandle,
) -> bool {
    let key = shown_key(&cache.key);
    let tree = match JobTree::open(build_dir, reader) {
        Ok(tree) => tree,
        Err(e) => {
            log.note(&format!("The cache {key} is not saved: the build directory cannot be opened: {e}"));
            return false;
        }
    };
    let untracked = if cache.untracked { tracked } else { None };
    let files = collect_files(&tree, &cache.paths, untracked, &[], "Cache", log);
    if let Err(e) = prepare_root(root) {
        log.note(&format!("The cache {key} is not saved: {e}"));
        return false;
    }
    let fresh = root.join(format!(".new-{}", hex::encode(rand::random::<[u8; 8]>())));
    let written = (|| -> io::Result<(usize, u64)> {
        std::fs::create_dir(&fresh)?;
        let mut bytes = 0;
        for rel in &files {
            let mut from = tree.open_file(Path::new(rel))?;
            let mode = from.metadata()?.permissions().mode();
            let target = fresh.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut to = std::fs::File::create_new(&target)?;
            bytes += io::copy(&mut io::Read::take(&mut from, MAX_CACHE_BYTES + 1 - bytes), &mut to)?;
            if bytes > MAX_CACHE_BYTES {
                return Err(io::Error::other(format!("it would hold more than {MAX_CACHE_BYTES} bytes")));
            }
            to.set_permissions(std::fs::Permissions::from_mode(mode & 0o755))?;
        }
        Ok((files.len(), bytes))
    })();
    let saved = match written {
        Ok((count, bytes)) => match replace_copy(root, &cache.key, fresh.clone()) {
            Ok(()) => {
                log.note(&format!("Saved the cache {key}: {count} file(s), {bytes} bytes."));
                true
            }
            Err(e) => {
                log.note(&format!("The cache {key} is not saved: {e}"));
                false
            }
        },
        Err(e) => {
            log.note(&format!("The cache {key} is not saved: {e}"));
            false
        }
    };
    let _ = std::fs::remove_dir_all(&fresh);
    saved
}

/// Makes `root`, where the runner keeps its caches, readable only by the runner.
pub(crate) fn prepare_root(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root).and_then(|()| std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)))
}

/// Makes the directory `fresh` (of `root`) the runner's copy of cache `key`, in place
/// of the one before.
pub(crate) fn replace_copy(root: &Path, key: &str, fresh: PathBuf) -> io::Result<()> {
    let dir = dir_of(root, key);
    let old = root.join(format!(".old-{}", hex::encode(rand::random::<[u8; 8]>())));
    let had_one = std::fs::rename(&dir, &old).is_ok();
    let moved = std::fs::rename(&fresh, &dir);
    if had_one {
        let _ = std::fs::remove_dir_all(&old);
    }
    if moved.is_err() {
        let _ = std::fs::remove_dir_all(&fresh);
    }
    moved
}

/// The key as the job's author wrote it (without the project scope).
pub(crate) fn shown_key(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, k)| k)
}

/// Every regular file below `dir` (the runner's own directory), relative to it.
pub(crate) fn files_below(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usher_core::cache::CachePolicy;

    fn cache(key: &str, paths: &[&str]) -> CacheAssignment {
        CacheAssignment {
            key: key.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            policy: CachePolicy::PullPush,
            when: ArtifactsWhen::OnSuccess,
            untracked: false,
        }
    }

    /// What one job pushes, the next one of the project pulls, with its executable bit;
    /// links are neither kept nor followed; another key, or another project, gets none.
    #[tokio::test]
    async fn a_pushed_cache_is_pulled_by_the_next_job_and_only_by_its_key() {
        let builds = tempfile::tempdir().unwrap();
        let root = root_of(builds.path());
        let (first, second) = (builds.path().join("job-1"), builds.path().join("job-2"));
        std::fs::create_dir_all(first.join("deps/sub")).unwrap();
        std::fs::write(first.join("deps/sub/lib.a"), "library").unwrap();
        std::fs::write(first.join("deps/tool"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(first.join("deps/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(secret.path(), first.join("deps/link")).unwrap();
        let log = crate::logsink::spawn(1, Vec::new(), |_| {});
        push(&root, &cache("7/deps", &["deps/"]), &first, None, None, &log);

        std::fs::create_dir_all(&second).unwrap();
        pull(&root, &cache("7/deps", &[]), &second, None, &log);
        assert_eq!(std::fs::read_to_string(second.join("deps/sub/lib.a")).unwrap(), "library");
        let mode = std::fs::metadata(second.join("deps/tool")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "the executable bit is kept");
        assert!(!second.join("deps/link").exists(), "a link is not cached");

        let third = builds.path().join("job-3");
        std::fs::create_dir_all(&third).unwrap();
        pull(&root, &cache("8/deps", &[]), &third, None, &log);
        pull(&root, &cache("7/other", &[]), &third, None, &log);
        assert!(!third.join("deps").exists(), "another project's or key's cache is not this one");

        // A new push replaces the copy as a whole.
        std::fs::remove_file(first.join("deps/sub/lib.a")).unwrap();
        push(&root, &cache("7/deps", &["deps/"]), &first, None, None, &log);
        let fourth = builds.path().join("job-4");
        std::fs::create_dir_all(&fourth).unwrap();
        pull(&root, &cache("7/deps", &[]), &fourth, None, &log);
        assert!(fourth.join("deps/tool").exists() && !fourth.join("deps/sub/lib.a").exists());
        let leftovers: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "only the current copy stays: {leftovers:?}");
    }

    /// `untracked: true` keeps what the commit does not have besides `paths`; the
    /// commit's own files (changed or not) stay out, and nothing is taken when the
    /// commit's files are not known.
    #[tokio::test]
    async fn an_untracked_cache_keeps_the_files_the_commit_does_not_have() {
        let builds = tempfile::tempdir().unwrap();
        let root = root_of(builds.path());
        let job = builds.path().join("job-1");
        std::fs::create_dir_all(job.join("target/debug")).unwrap();
        for (file, text) in [
            ("Cargo.toml", "changed"),
            ("target/debug/app", "built"),
            ("notes.txt", "new"),
            ("vendor.lock", "x"),
        ] {
            std::fs::write(job.join(file), text).unwrap();
        }
        let tracked: HashSet<String> = ["Cargo.toml".to_string()].into();
        let log = crate::logsink::spawn(1, Vec::new(), |_| {});
        let mut untracked = cache("7/u", &["vendor.lock"]);
        untracked.untracked = true;
        push(&root, &untracked, &job, None, Some(&tracked), &log);
        let mut kept = files_below(&dir_of(&root, "7/u")).unwrap();
        kept.sort();
        let kept: Vec<_> = kept.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(kept, ["notes.txt", "target/debug/app", "vendor.lock"]);

        push(&root, &untracked, &job, None, None, &log);
        let kept = files_below(&dir_of(&root, "7/u")).unwrap();
        assert_eq!(
            kept,
            [std::path::PathBuf::from("vendor.lock")],
            "commit's files unknown: only `paths`"
        );
    }

    #[test]
    fn policies_and_when_choose_what_is_pulled_and_pushed() {
        let mut pull_only = cache("1/a", &[]);
        pull_only.policy = CachePolicy::Pull;
        let mut always = cache("1/b", &[]);
        always.when = ArtifactsWhen::Always;
        let caches = [pull_only, always, cache("1/c", &[])];
        let keys = |it: Vec<&CacheAssignment>| it.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(pulled(&caches).collect()), ["1/a", "1/b", "1/c"]);
        assert_eq!(keys(pushed(&caches, true).collect()), ["1/b", "1/c"]);
        assert_eq!(keys(pushed(&caches, false).collect()), ["1/b"]);
    }
}
