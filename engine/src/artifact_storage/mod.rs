//! Where artifact files are kept: a directory of this server (`<data-dir>/artifacts`, the
//! default) or a bucket of S3-compatible object storage (`--artifacts-url
//! s3://BUCKET/PREFIX`), which every replica reads and writes, so any replica serves any
//! job's artifacts. Either way a file is named `job-{id}/{path}` below the root (in the
//! bucket each segment as object_store encodes it: `%`, `*`, `~`… percent-encoded), and
//! an upload is first written to a temporary file of the directory, becoming the
//! artifact only once it is complete and the engine has said so ([`Received::keep`]): a
//! partial or refused upload leaves nothing behind, and a slow client holds no memory.
//! Sizes and expiry live in the database, not here, so retention and the storage cap
//! work the same on both. The bucket itself is [`Bucket`].

mod bucket;

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use object_store::path::Path as Key;
use tokio::io::AsyncWriteExt;

pub use bucket::{Bucket, ObjectRead, SETTINGS};

use crate::EngineError;

/// S3's longest key.
const MAX_KEY_BYTES: usize = 1024;

/// The storage artifacts go to: the bucket when there is one (with the directory uploads
/// are received into first), else the directory.
#[derive(Clone, Copy, Debug)]
pub enum ArtifactStorage<'a> {
    Dir(&'a Path),
    Bucket { bucket: &'a Bucket, spool: &'a Path },
}

/// Where one stored artifact file is, for reading it.
#[derive(Clone, Debug)]
pub enum StoredArtifact {
    File(PathBuf),
    Object { bucket: Bucket, key: Key },
}

/// An upload received in full and within its allowance, not yet visible: [`keep`]
/// makes it the artifact, [`discard`] (or an error on the way) leaves nothing.
///
/// [`keep`]: Received::keep
/// [`discard`]: Received::discard
pub enum Received {
    File {
        temporary: PathBuf,
        target: PathBuf,
    },
    Object {
        temporary: PathBuf,
        size: u64,
        bucket: Bucket,
        key: Key,
    },
}

impl ArtifactStorage<'_> {
    /// Where artifact `path` of job `job_id` is.
    pub fn locate(self, job_id: i64, path: &str) -> StoredArtifact {
        match self {
            ArtifactStorage::Dir(root) => StoredArtifact::File(root.join(format!("job-{job_id}")).join(path)),
            ArtifactStorage::Bucket { bucket, .. } => StoredArtifact::Object {
                bucket: bucket.clone(),
                key: bucket.key(job_id, path),
            },
        }
    }

    /// Takes `body` as artifact `path` of job `job_id` into a temporary file, refusing
    /// it with `too_large()` once it passes `allowed` bytes; returns it with its size.
    pub async fn receive<S, B, E>(
        self,
        job_id: i64,
        path: &str,
        body: S,
        allowed: u64,
        too_large: impl Fn() -> EngineError,
    ) -> Result<(Received, u64), EngineError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let destination = self.locate(job_id, path);
        if let StoredArtifact::Object { key, .. } = &destination
            && key.as_ref().len() > MAX_KEY_BYTES
        {
            return Err(EngineError::BadRequest(format!(
                "artifact path {path:?} is too long for object storage (keys are at most {MAX_KEY_BYTES} bytes)"
            )));
        }
        // In the directory, beside the job's other files (a crash's leftovers are found there).
        let temporary_dir = match self {
            ArtifactStorage::Dir(root) => root.join(format!("job-{job_id}")),
            ArtifactStorage::Bucket { spool, .. } => spool.to_path_buf(),
        };
        receive_to(destination, &temporary_dir, body, allowed, too_large).await
    }

    /// Where project `project_id`'s cache archive `name` (a name [`cache_name`] made) is.
    pub fn locate_cache(self, project_id: i64, name: &str) -> StoredArtifact {
        match self {
            ArtifactStorage::Dir(root) => StoredArtifact::File(root.join(CACHES).join(format!("project-{project_id}")).join(name)),
            ArtifactStorage::Bucket { bucket, .. } => StoredArtifact::Object {
                bucket: bucket.clone(),
                key: bucket.cache_key(project_id, name),
            },
        }
    }

    /// [`ArtifactStorage::receive`] of a cache archive of project `project_id`.
    pub async fn receive_cache<S, B, E>(
        self,
        project_id: i64,
        name: &str,
        body: S,
        allowed: u64,
        too_large: impl Fn() -> EngineError,
    ) -> Result<(Received, u64), EngineError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let destination = self.locate_cache(project_id, name);
        let temporary_dir = match (self, &destination) {
            (ArtifactStorage::Bucket { spool, .. }, _) => spool.to_path_buf(),
            (ArtifactStorage::Dir(_), StoredArtifact::File(file)) => file.parent().map(Path::to_path_buf).unwrap_or_default(),
            (ArtifactStorage::Dir(root), StoredArtifact::Object { .. }) => root.to_path_buf(),
        };
        receive_to(destination, &temporary_dir, body, allowed, too_large).await
    }

    /// Deletes project `project_id`'s cache archive `name`; one already gone is no error.
    pub async fn remove_cache(self, project_id: i64, name: &str) -> Result<(), EngineError> {
        remove_stored(self.locate_cache(project_id, name)).await
    }

    /// Deletes artifact `path` of job `job_id`; one already gone is no error.
    pub async fn remove(self, job_id: i64, path: &str) -> Result<(), EngineError> {
        remove_stored(self.locate(job_id, path)).await
    }
}

/// `body` into a temporary file of `temporary_dir`, refused past `allowed` bytes; to
/// become `destination` when kept.
async fn receive_to<S, B, E>(
    destination: StoredArtifact,
    temporary_dir: &Path,
    body: S,
    allowed: u64,
    too_large: impl Fn() -> EngineError,
) -> Result<(Received, u64), EngineError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
    tokio::fs::create_dir_all(temporary_dir).await.map_err(io)?;
    let temporary = temporary_dir.join(format!(".upload-{}", hex::encode(rand::random::<[u8; 8]>())));
    let size = match write_limited(&temporary, body, allowed, too_large).await {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(e);
        }
    };
    let received = match destination {
        StoredArtifact::Object { bucket, key } => Received::Object {
            temporary,
            size,
            bucket,
            key,
        },
        StoredArtifact::File(target) => Received::File { temporary, target },
    };
    Ok((received, size))
}

/// Where the server's copies of caches are, below the directory or the bucket's prefix.
const CACHES: &str = "caches";

/// The name a cache archive is kept under: its key's SHA-256 (a key is any text).
pub fn cache_name(key: &str) -> String {
    use sha2::Digest;
    format!("{}.tar", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

/// Deletes a stored file or object; one already gone is no error.
async fn remove_stored(stored: StoredArtifact) -> Result<(), EngineError> {
    match stored {
        StoredArtifact::File(file) => match tokio::fs::remove_file(&file).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Internal(format!("artifact storage: {e}"))),
            _ => Ok(()),
        },
        StoredArtifact::Object { bucket, key } => bucket.delete(&key).await,
    }
}

/// Deletes what uploads cut short by a crash of this server left in the artifacts
/// directory `dir` (temporary `.upload-*` files, in it, in its `job-*` directories and
/// in those of the caches);
/// how many. Called at start, before any upload.
pub fn remove_leftover_uploads(dir: &Path) -> usize {
    let leftovers = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(".upload-"))
            .map(|entry| entry.path())
            .collect()
    };
    let mut found = leftovers(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("job-") && entry.path().is_dir() {
            found.extend(leftovers(&entry.path()));
        }
    }
    for entry in std::fs::read_dir(dir.join(CACHES)).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            found.extend(leftovers(&entry.path()));
        }
    }
    found.iter().filter(|file| std::fs::remove_file(file).is_ok()).count()
}

/// Writes `body` to a new file at `temporary`, refusing it with `too_large()` once it
/// passes `allowed` bytes; its size.
async fn write_limited<S, B, E>(
    temporary: &Path,
    mut body: S,
    allowed: u64,
    too_large: impl Fn() -> EngineError,
) -> Result<u64, EngineError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
    let mut file = tokio::fs::File::create(temporary).await.map_err(io)?;
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| EngineError::BadRequest(format!("the upload broke off: {e}")))?;
        size += chunk.as_ref().len() as u64;
        if size > allowed {
            return Err(too_large());
        }
        file.write_all(chunk.as_ref()).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(size)
}

impl Received {
    /// Makes the upload the artifact, replacing an earlier file of the same name.
    pub async fn keep(self, path: &str) -> Result<(), EngineError> {
        match self {
            Received::File { temporary, target } => {
                let collides = |e: std::io::Error| EngineError::Conflict(format!("artifact {path} collides with another: {e}"));
                let moved = async {
                    if let Some(parent) = target.parent() {
                        tokio::fs::create_dir_all(parent).await.map_err(collides)?;
                    }
                    tokio::fs::rename(&temporary, &target).await.map_err(collides)
                }
                .await;
                if moved.is_err() {
                    let _ = tokio::fs::remove_file(&temporary).await;
                }
                moved
            }
            Received::Object {
                temporary,
                size,
                bucket,
                key,
            } => {
                let sent = bucket.upload_file(&key, &temporary, size).await;
                let _ = tokio::fs::remove_file(&temporary).await;
                sent
            }
        }
    }

    /// Leaves nothing of the upload.
    pub async fn discard(self) {
        let (Received::File { temporary, .. } | Received::Object { temporary, .. }) = self;
        let _ = tokio::fs::remove_file(&temporary).await;
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_a_crash_cut_short_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job-3");
        std::fs::create_dir_all(&job).unwrap();
        for file in [".upload-ab12", "job-3/.upload-cd34", "job-3/kept.txt"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        assert_eq!(remove_leftover_uploads(dir.path()), 2);
        assert!(job.join("kept.txt").exists(), "artifacts stay");
        assert!(!dir.path().join(".upload-ab12").exists() && !job.join(".upload-cd34").exists());
    }
}
