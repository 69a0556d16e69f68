//! The server's copies of caches: after a job saves a cache on this runner, its files go
//! to the server as one tar archive; before a job restores one, the server's archive (if
//! it has one) becomes this runner's copy first. So a cache saved on any runner of the
//! project is found on every other. The archive holds regular files only, at plain
//! relative paths, within the limits of a cache; one that does not is not used. What
//! goes wrong is a line in the log: a cache is a speed-up, never a failed job.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use usher_core::cache::CacheAssignment;

use crate::artifacts::{Uploader, refusal};
use crate::cache::{MAX_CACHE_BYTES, MAX_CACHE_FILES, dir_of, files_below, prepare_root, replace_copy, shown_key};
use crate::logsink::LogHandle;

/// How long a transfer may send or receive nothing before it is given up.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest a cache may take to send (at the default 100 MiB limit, 170 KB/s).
const SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Sends this runner's copy of `cache` to the server, for job `job_id`.
pub async fn send(uploader: &Uploader, job_id: i64, root: &Path, cache: &CacheAssignment, log: &LogHandle) {
    let key = shown_key(&cache.key);
    let (root_now, dir) = (root.to_path_buf(), dir_of(root, &cache.key));
    let archive = tokio::task::spawn_blocking(move || archive(&root_now, &dir)).await;
    let archive = match archive {
        Ok(Ok(Some(archive))) => archive,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return log.note(&format!("The cache {key} is not sent to the server: {e}")),
        Err(e) => return log.note(&format!("The cache {key} is not sent to the server: {e}")),
    };
    let sent = async {
        let file = tokio::fs::File::open(archive.path()).await.map_err(|e| e.to_string())?;
        let size = file.metadata().await.map_err(|e| e.to_string())?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = uploader
            .put_named(job_id, "caches", &cache.key)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(size)
        } else {
            Err(refusal(response).await)
        }
    };
    let sent = tokio::time::timeout(SEND_LIMIT, sent)
        .await
        .unwrap_or_else(|_| Err(format!("sending it took more than {} s", SEND_LIMIT.as_secs())));
    match sent {
        Ok(size) => log.note(&format!("Sent the cache {key} to the server ({size} bytes), for every runner.")),
        Err(why) => log.note(&format!("The cache {key} stays on this runner only: {why}")),
    }
}

/// Makes the server's archive of `cache`, if it has one, this runner's copy (before the
/// copy is restored into the job's directory).
pub async fn fetch(uploader: &Uploader, job_id: i64, root: &Path, cache: &CacheAssignment, log: &LogHandle) {
    let key = shown_key(&cache.key);
    let fetched = async {
        let response = tokio::time::timeout(STALL, uploader.get_named(job_id, "caches", &cache.key).send())
            .await
            .map_err(|_| format!("the server did not answer within {} s", STALL.as_secs()))?
            .map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        prepare_root(root).map_err(|e| e.to_string())?;
        let file = tempfile::NamedTempFile::new_in(root).map_err(|e| e.to_string())?;
        let mut out = tokio::fs::File::from_std(file.reopen().map_err(|e| e.to_string())?);
        let mut stream = response.bytes_stream();
        let mut size = 0u64;
        loop {
            let next = tokio::time::timeout(STALL, futures::StreamExt::next(&mut stream))
                .await
                .map_err(|_| format!("the server sent nothing for {} s", STALL.as_secs()))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| e.to_string())?;
            size += chunk.len() as u64;
            if size > MAX_CACHE_BYTES {
                return Err(format!("it is larger than a cache may be ({MAX_CACHE_BYTES} bytes)"));
            }
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(|e| e.to_string())?;
        Ok(Some(file))
    };
    let archive = match fetched.await {
        Ok(Some(archive)) => archive,
        Ok(None) => return,
        Err(why) => return log.note(&format!("The server's copy of the cache {key} is not used: {why}")),
    };
    let (root_now, cache_key) = (root.to_path_buf(), cache.key.clone());
    let restored = tokio::task::spawn_blocking(move || restore(&root_now, &cache_key, archive.path())).await;
    match restored {
        Ok(Ok((files, bytes))) => log.note(&format!("Fetched the cache {key} from the server: {files} file(s), {bytes} bytes.")),
        Ok(Err(e)) => log.note(&format!("The server's copy of the cache {key} is not used: {e}")),
        Err(e) => log.note(&format!("The server's copy of the cache {key} is not used: {e}")),
    }
}

/// A tar of the files of the copy at `dir` (None without one), in `root`.
fn archive(root: &Path, dir: &Path) -> io::Result<Option<tempfile::NamedTempFile>> {
    let files = match files_below(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = tempfile::NamedTempFile::new_in(root)?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file.reopen()?));
    builder.follow_symlinks(false);
    for rel in files {
        builder.append_path_with_name(dir.join(&rel), &rel)?;
    }
    io::Write::flush(&mut builder.into_inner()?)?;
    Ok(Some(file))
}

/// Makes the archive at `archive` the runner's copy of cache `key`: its regular files at
/// plain relative paths (anything else in it is refused), within a cache's limits.
fn restore(root: &Path, key: &str, archive: &Path) -> io::Result<(usize, u64)> {
    let fresh = tempfile::Builder::new().prefix(".new-").tempdir_in(root)?;
    let mut tar = tar::Archive::new(io::BufReader::new(std::fs::File::open(archive)?));
    let (mut files, mut bytes) = (0usize, 0u64);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let plain = path.components().all(|c| matches!(c, Component::Normal(_))) && path.components().next().is_some();
        if !kind.is_file() || !plain {
            return Err(io::Error::other(format!("it holds {} that is not a plain file", path.display())));
        }
        files += 1;
        bytes += entry.size();
        if files > MAX_CACHE_FILES || bytes > MAX_CACHE_BYTES {
            return Err(io::Error::other("it holds more than a cache may"));
        }
        let target = fresh.path().join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create_new(&target)?;
        let copied = io::copy(&mut io::Read::take(&mut entry, MAX_CACHE_BYTES), &mut out)?;
        if copied != entry.size() {
            return Err(io::Error::other(format!("{} is cut short", path.display())));
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        out.set_permissions(std::fs::Permissions::from_mode(mode & 0o755))?;
    }
    replace_copy(root, key, fresh.keep())?;
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry written byte by byte (a path `tar::Builder` would refuse, too).
    fn raw_entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8]) {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    #[test]
    fn an_archive_round_trips_and_one_with_anything_but_plain_files_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let copy = dir_of(root.path(), "7/deps");
        std::fs::create_dir_all(copy.join("sub")).unwrap();
        std::fs::write(copy.join("sub/lib.a"), "library").unwrap();
        std::fs::write(copy.join("tool"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(copy.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let made = archive(root.path(), &copy).unwrap().expect("a copy to archive");
        std::fs::remove_dir_all(&copy).unwrap();
        assert_eq!(restore(root.path(), "7/deps", made.path()).unwrap(), (2, 16));
        assert_eq!(std::fs::read_to_string(copy.join("sub/lib.a")).unwrap(), "library");
        assert_eq!(std::fs::metadata(copy.join("tool")).unwrap().permissions().mode() & 0o111, 0o111);
        assert!(archive(root.path(), &dir_of(root.path(), "7/none")).unwrap().is_none());

        for (path, kind, why) in [
            ("../escape", tar::EntryType::Regular, "a path out of the copy"),
            ("/etc/x", tar::EntryType::Regular, "an absolute path"),
            ("link", tar::EntryType::Symlink, "a link"),
            ("fifo", tar::EntryType::Fifo, "a fifo"),
        ] {
            let mut builder = tar::Builder::new(Vec::new());
            raw_entry(&mut builder, "fine.txt", tar::EntryType::Regular, b"ok");
            raw_entry(&mut builder, path, kind, b"bad");
            let bytes = builder.into_inner().unwrap();
            let bad = tempfile::NamedTempFile::new_in(root.path()).unwrap();
            std::fs::write(bad.path(), bytes).unwrap();
            assert!(restore(root.path(), "7/deps", bad.path()).is_err(), "{why}");
            assert!(!root.path().parent().unwrap().join("escape").exists(), "{why}");
            assert_eq!(
                std::fs::read_to_string(copy.join("sub/lib.a")).unwrap(),
                "library",
                "{why}: the copy before stays"
            );
        }
    }
}
