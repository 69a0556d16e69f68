//! Where artifact files are kept: a directory of this server (`<data-dir>/artifacts`, the
//! default) or a bucket of S3-compatible object storage (`--artifacts-url
//! s3://BUCKET/PREFIX`), which every replica reads and writes, so any replica serves any
//! job's artifacts. Either way a file is named `job-{id}/{path}` below the root, and an
//! upload becomes visible only once it is complete and the engine has said so
//! ([`Received::keep`]): a partial or refused upload leaves nothing behind. Sizes and
//! expiry live in the database, not here, so retention and the storage cap work the same
//! on both.
//!
//! The bucket is reached through Apache Arrow's `object_store` crate (signed S3 requests,
//! multipart uploads, ranged reads, retries), with credentials and region from the
//! standard `AWS_*` variables.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use crate::EngineError;

/// An upload at most this big is sent in one request; a bigger one in parts of this size
/// (S3 wants parts of at least 5 MiB), so one upload holds about this much in memory.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;
/// How long the start waits for the bucket to answer its check.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// An S3-compatible bucket, and the prefix below which artifacts are kept.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

impl Bucket {
    /// The bucket of `url` (`s3://BUCKET` or `s3://BUCKET/PREFIX`), reached with
    /// `settings`: pairs named as the standard variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
    /// `AWS_ENDPOINT`); other names are ignored. An `http://` endpoint is allowed
    /// (a storage server on a private network), and requests use path-style URLs, which
    /// every S3-compatible server understands.
    pub fn open(url: &str, settings: impl IntoIterator<Item = (String, String)>) -> Result<Bucket, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("artifacts URL {url:?}: expected s3://BUCKET/PREFIX"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(format!("artifacts URL {url:?} names no bucket (s3://BUCKET/PREFIX)"));
        }
        let prefix = Key::parse(prefix.trim_matches('/')).map_err(|e| format!("the prefix of artifacts URL {url:?}: {e}"))?;
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(name);
        for (key, value) in settings {
            if !key.starts_with("AWS_") {
                continue;
            }
            if key == "AWS_ENDPOINT" && value.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            if let Ok(config_key) = key.to_ascii_lowercase().parse() {
                builder = builder.with_config(config_key, value);
            }
        }
        let store = builder.build().map_err(|e| format!("artifacts URL {url:?}: {e}"))?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix,
            url: url.to_string(),
        })
    }

    /// Whether the bucket can be written, read and deleted from with the credentials
    /// given: checked once at start, so a wrong bucket or key fails the start, not the
    /// first job's upload.
    pub async fn check(&self) -> Result<(), String> {
        let probe = self
            .prefix
            .child(format!(".usher-check-{}", hex::encode(rand::random::<[u8; 8]>())));
        let fail = |what: &str, e: object_store::Error| format!("artifact storage {}: cannot {what}: {e}", self.url);
        let round_trip = async {
            self.store
                .put(&probe, PutPayload::from_static(b"usher"))
                .await
                .map_err(|e| fail("write", e))?;
            self.store.head(&probe).await.map_err(|e| fail("read", e))?;
            self.store.delete(&probe).await.map_err(|e| fail("delete", e))
        };
        // object_store retries for minutes; a start should say sooner what is wrong.
        match tokio::time::timeout(CHECK_TIMEOUT, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "artifact storage {}: cannot write: no answer within {} s (is the endpoint right and reachable?)",
                self.url,
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }

    /// The key of artifact `path` (normalized: relative, no `..`) of job `job_id`.
    pub fn key(&self, job_id: i64, path: &str) -> Key {
        path.split('/')
            .fold(self.prefix.child(format!("job-{job_id}")), |key, part| key.child(part))
    }

    /// The bytes of `key` in `range` (all of it without one).
    pub async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<BoxStream<'static, std::io::Result<Bytes>>, EngineError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let found = self.store.get_opts(key, options).await.map_err(|e| storage_error("read", e))?;
        Ok(found.into_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed())
    }

    /// Deletes `key`; one already gone is no error.
    pub async fn delete(&self, key: &Key) -> Result<(), EngineError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error("delete", e)),
        }
    }
}

fn storage_error(what: &str, e: object_store::Error) -> EngineError {
    match e {
        object_store::Error::NotFound { path, .. } => EngineError::NotFound(format!("stored artifact {path}")),
        e => EngineError::Internal(format!("artifact storage: cannot {what}: {e}")),
    }
}

/// The storage artifacts go to: the bucket when there is one, else the directory.
#[derive(Clone, Copy, Debug)]
pub enum ArtifactStorage<'a> {
    Dir(&'a Path),
    Bucket(&'a Bucket),
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
    File { temporary: PathBuf, target: PathBuf },
    Whole { bucket: Bucket, key: Key, body: PutPayload },
    Parts { upload: WriteMultipart },
}

impl ArtifactStorage<'_> {
    /// Where artifact `path` of job `job_id` is.
    pub fn locate(self, job_id: i64, path: &str) -> StoredArtifact {
        match self {
            ArtifactStorage::Dir(root) => StoredArtifact::File(root.join(format!("job-{job_id}")).join(path)),
            ArtifactStorage::Bucket(bucket) => StoredArtifact::Object {
                bucket: bucket.clone(),
                key: bucket.key(job_id, path),
            },
        }
    }

    /// Takes `body` as artifact `path` of job `job_id`, refusing it with `too_large()`
    /// once it passes `allowed` bytes; returns it with its size.
    pub async fn receive<S, B, E>(
        self,
        job_id: i64,
        path: &str,
        mut body: S,
        allowed: u64,
        too_large: impl Fn() -> EngineError,
    ) -> Result<(Received, u64), EngineError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let broke = |e: E| EngineError::BadRequest(format!("the upload broke off: {e}"));
        match self {
            ArtifactStorage::Dir(root) => {
                use tokio::io::AsyncWriteExt;
                let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
                let job_dir = root.join(format!("job-{job_id}"));
                tokio::fs::create_dir_all(&job_dir).await.map_err(io)?;
                let temporary = job_dir.join(format!(".upload-{}", hex::encode(rand::random::<[u8; 8]>())));
                let received = Received::File {
                    temporary: temporary.clone(),
                    target: job_dir.join(path),
                };
                let written = async {
                    let mut file = tokio::fs::File::create(&temporary).await.map_err(io)?;
                    let mut size: u64 = 0;
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(broke)?;
                        size += chunk.as_ref().len() as u64;
                        if size > allowed {
                            return Err(too_large());
                        }
                        file.write_all(chunk.as_ref()).await.map_err(io)?;
                    }
                    file.flush().await.map_err(io)?;
                    Ok(size)
                }
                .await;
                match written {
                    Ok(size) => Ok((received, size)),
                    Err(e) => {
                        received.discard().await;
                        Err(e)
                    }
                }
            }
            ArtifactStorage::Bucket(bucket) => {
                let key = bucket.key(job_id, path);
                let (mut buffered, mut buffered_len) = (Vec::<Bytes>::new(), 0usize);
                let mut upload: Option<WriteMultipart> = None;
                let mut size: u64 = 0;
                let result = async {
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(broke)?;
                        let chunk = chunk.as_ref();
                        size += chunk.len() as u64;
                        if size > allowed {
                            return Err(too_large());
                        }
                        if let Some(upload) = upload.as_mut() {
                            upload
                                .wait_for_capacity(PARTS_IN_FLIGHT)
                                .await
                                .map_err(|e| storage_error("write", e))?;
                            upload.write(chunk);
                            continue;
                        }
                        buffered_len += chunk.len();
                        buffered.push(Bytes::copy_from_slice(chunk));
                        if buffered_len > PART_BYTES {
                            let parts = bucket.store.put_multipart(&key).await.map_err(|e| storage_error("write", e))?;
                            let mut started = WriteMultipart::new_with_chunk_size(parts, PART_BYTES);
                            for piece in buffered.drain(..) {
                                started.put(piece);
                            }
                            upload = Some(started);
                        }
                    }
                    Ok(())
                }
                .await;
                match (result, upload) {
                    (Ok(()), Some(upload)) => Ok((Received::Parts { upload }, size)),
                    (Ok(()), None) => Ok((
                        Received::Whole {
                            bucket: bucket.clone(),
                            key,
                            body: buffered.into_iter().collect(),
                        },
                        size,
                    )),
                    (Err(e), upload) => {
                        if let Some(upload) = upload {
                            let _ = upload.abort().await;
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// Deletes artifact `path` of job `job_id`; one already gone is no error.
    pub async fn remove(self, job_id: i64, path: &str) -> Result<(), EngineError> {
        match self.locate(job_id, path) {
            StoredArtifact::File(file) => match tokio::fs::remove_file(&file).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Internal(format!("artifact storage: {e}"))),
                _ => Ok(()),
            },
            StoredArtifact::Object { bucket, key } => bucket.delete(&key).await,
        }
    }
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
            Received::Whole { bucket, key, body } => bucket.store.put(&key, body).await.map(drop).map_err(|e| storage_error("write", e)),
            Received::Parts { upload } => upload.finish().await.map(drop).map_err(|e| storage_error("write", e)),
        }
    }

    /// Leaves nothing of the upload.
    pub async fn discard(self) {
        match self {
            Received::File { temporary, .. } => {
                let _ = tokio::fs::remove_file(&temporary).await;
            }
            Received::Whole { .. } => {}
            Received::Parts { upload } => {
                let _ = upload.abort().await;
            }
        }
    }
}
