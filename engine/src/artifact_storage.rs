//! Where artifact files are kept: a directory of this server (`<data-dir>/artifacts`, the
//! default) or a bucket of S3-compatible object storage (`--artifacts-url
//! s3://BUCKET/PREFIX`), which every replica reads and writes, so any replica serves any
//! job's artifacts. Either way a file is named `job-{id}/{path}` below the root (in the
//! bucket each segment as object_store encodes it: `%`, `*`, `~`… percent-encoded), and
//! an upload is first written to a temporary file of the directory, becoming the
//! artifact only once it is complete and the engine has said so ([`Received::keep`]): a
//! partial or refused upload leaves nothing behind, and a slow client holds no memory.
//! Sizes and
//! expiry live in the database, not here, so retention and the storage cap work the same
//! on both.
//!
//! The bucket is reached through Apache Arrow's `object_store` crate (signed S3 requests,
//! multipart uploads, ranged reads, retries), with credentials and region from the
//! standard `AWS_*` variables.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use object_store::path::Path as Key;
use object_store::{ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::EngineError;

/// A file at most this big goes to the bucket in one request; a bigger one as a
/// multipart upload of parts this big (S3 wants at least 5 MiB), sent one at a time, so
/// one upload holds one part in memory. The runner's body is first written to a file
/// beside the artifacts dir: a slow or stalled client holds no memory, and the bucket
/// sees only complete files.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// How long the start waits for the bucket to answer its check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one delete (retention) may take, retries included.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// S3's longest key.
const MAX_KEY_BYTES: usize = 1024;
/// The settings [`Bucket::open`] takes; any other `AWS_*` variable is ignored.
pub const SETTINGS: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
];

/// An S3-compatible bucket, and the prefix below which artifacts are kept.
#[derive(Clone)]
pub struct Bucket {
    /// For writes and deletes: object_store's request timeouts and retries.
    store: Arc<dyn ObjectStore>,
    /// For downloads, which last as long as the client takes to read: no overall
    /// request timeout (connecting still times out).
    reads: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
    /// The secret key and session token, cut out of any storage error before it is logged.
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

impl Bucket {
    /// The bucket of `url` (`s3://BUCKET` or `s3://BUCKET/PREFIX`), reached with
    /// `settings`: pairs named as the standard variables of [`SETTINGS`]
    /// (`AWS_ENDPOINT` for an S3-compatible server; others are ignored, so nothing else in
    /// the environment redirects or unsigns the requests). Without keys, object_store
    /// looks for the machine's role (EC2 instance profile, ECS task, web identity). An
    /// `http://` endpoint is allowed (a storage server on a private network), and
    /// requests use path-style URLs, which every S3-compatible server understands.
    pub fn open(url: &str, settings: impl IntoIterator<Item = (String, String)>) -> Result<Bucket, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("artifacts URL {url:?}: expected s3://BUCKET/PREFIX"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(format!("artifacts URL {url:?} names no bucket (s3://BUCKET/PREFIX)"));
        }
        let prefix = Key::parse(prefix.trim_matches('/')).map_err(|e| format!("the prefix of artifacts URL {url:?}: {e}"))?;
        let settings: Vec<(String, String)> = settings.into_iter().filter(|(key, _)| SETTINGS.contains(&key.as_str())).collect();
        let secrets: Vec<String> = settings
            .iter()
            .filter(|(key, value)| (key == "AWS_SECRET_ACCESS_KEY" || key == "AWS_SESSION_TOKEN") && !value.is_empty())
            .map(|(_, value)| value.clone())
            .collect();
        let build = |options: ClientOptions| {
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(name)
                .with_virtual_hosted_style_request(false);
            for (key, value) in &settings {
                if key == "AWS_ENDPOINT" && value.starts_with("http://") {
                    builder = builder.with_allow_http(true);
                }
                if let Ok(config_key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(config_key, value);
                }
            }
            builder
                .with_client_options(options.with_allow_http(settings.iter().any(|(k, v)| k == "AWS_ENDPOINT" && v.starts_with("http://"))))
                .build()
                .map_err(|e| format!("artifacts URL {url:?}: {e}"))
        };
        Ok(Bucket {
            store: Arc::new(build(ClientOptions::new())?),
            reads: Arc::new(build(ClientOptions::new().with_timeout_disabled())?),
            prefix,
            url: url.to_string(),
            secrets: Arc::new(secrets),
        })
    }

    /// Whether the bucket can be written, read and deleted from with the credentials
    /// given: checked once at start, so a wrong bucket or key fails the start, not the
    /// first job's upload.
    pub async fn check(&self) -> Result<(), String> {
        let probe = self
            .prefix
            .child(format!(".usher-check-{}", hex::encode(rand::random::<[u8; 8]>())));
        let fail =
            |what: &str, e: object_store::Error| format!("artifact storage {}: cannot {what}: {}", self.url, self.redact(e.to_string()));
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
                "artifact storage {}: cannot write: no answer within {} s (is the endpoint right and reachable? without AWS_ACCESS_KEY_ID, credentials are looked for in the machine's metadata service)",
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

    /// The bytes of `key` in `range` (all of it without one), with the range they are
    /// and the object's size (read from the bucket, so they agree with the bytes).
    pub async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<ObjectRead, EngineError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let found = self.reads.get_opts(key, options).await.map_err(|e| self.error("read", e))?;
        Ok(ObjectRead {
            range: found.range.clone(),
            size: found.meta.size,
            body: found.into_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed(),
        })
    }

    /// Deletes `key`; one already gone is no error.
    pub async fn delete(&self, key: &Key) -> Result<(), EngineError> {
        match tokio::time::timeout(DELETE_TIMEOUT, self.store.delete(key)).await {
            Ok(Ok(()) | Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(self.error("delete", e)),
            Err(_) => Err(EngineError::Internal(format!("artifact storage: deleting {key} took over 30 s"))),
        }
    }

    /// Sends the file at `file` (`size` bytes) as `key`: in one request, or in parts; a
    /// multipart upload that does not complete is aborted.
    async fn upload_file(&self, key: &Key, file: &Path, size: u64) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: reading the received file: {e}"));
        if size <= PART_BYTES as u64 {
            let bytes = tokio::fs::read(file).await.map_err(io)?;
            return self
                .store
                .put(key, bytes.into())
                .await
                .map(drop)
                .map_err(|e| self.error("write", e));
        }
        let mut upload = OpenUpload(Some(self.store.put_multipart(key).await.map_err(|e| self.error("write", e))?));
        let sent = async {
            let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
            loop {
                let mut part = Vec::with_capacity(PART_BYTES);
                (&mut reader).take(PART_BYTES as u64).read_to_end(&mut part).await.map_err(io)?;
                if part.is_empty() {
                    break;
                }
                upload.parts().put_part(part.into()).await.map_err(|e| self.error("write", e))?;
            }
            upload.parts().complete().await.map_err(|e| self.error("write", e))?;
            upload.0 = None;
            Ok(())
        }
        .await;
        if sent.is_err()
            && let Some(mut parts) = upload.0.take()
        {
            let _ = parts.abort().await;
        }
        sent
    }

    /// `e` as the engine's error: a missing object is not found; anything else is logged
    /// here (without secrets) and answered without the storage's words, which may quote
    /// the signed request.
    fn error(&self, what: &str, e: object_store::Error) -> EngineError {
        match e {
            object_store::Error::NotFound { path, .. } => EngineError::NotFound(format!("stored artifact {path}")),
            e => {
                tracing::warn!(storage = %self.url, "artifact storage: cannot {what}: {}", self.redact(e.to_string()));
                EngineError::Internal(format!("artifact storage: cannot {what} (the server's log says why)"))
            }
        }
    }

    /// `text` without the credentials and the signed request an S3 error may quote.
    fn redact(&self, mut text: String) -> String {
        for secret in self.secrets.iter() {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        for element in ["CanonicalRequest", "CanonicalRequestBytes", "StringToSign", "StringToSignBytes"] {
            let (open, close) = (format!("<{element}>"), format!("</{element}>"));
            while let Some(start) = text.find(&open) {
                let end = text[start..].find(&close).map_or(text.len(), |i| start + i + close.len());
                text.replace_range(start..end, "[redacted]");
            }
        }
        text
    }
}

/// What [`Bucket::read`] found.
pub struct ObjectRead {
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
    /// The bytes of the object `body` holds.
    pub range: Range<u64>,
    /// The whole object's size.
    pub size: u64,
}

/// A multipart upload that is aborted (in the background) if it is dropped before it
/// completed: a handler cancelled mid-upload leaves no parts behind.
struct OpenUpload(Option<Box<dyn MultipartUpload>>);

impl OpenUpload {
    fn parts(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.0.as_mut().expect("an open upload")
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        if let (Some(mut parts), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = parts.abort().await;
            });
        }
    }
}

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
        let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
        let name = format!(".upload-{}", hex::encode(rand::random::<[u8; 8]>()));
        // Where the file goes once kept: a path of the directory, or a key of the bucket.
        let (temporary, destination) = match self {
            ArtifactStorage::Dir(root) => {
                let job_dir = root.join(format!("job-{job_id}"));
                tokio::fs::create_dir_all(&job_dir).await.map_err(io)?;
                (job_dir.join(name), Err(job_dir.join(path)))
            }
            ArtifactStorage::Bucket { bucket, spool } => {
                let key = bucket.key(job_id, path);
                if key.as_ref().len() > MAX_KEY_BYTES {
                    return Err(EngineError::BadRequest(format!(
                        "artifact path {path:?} is too long for object storage (keys are at most {MAX_KEY_BYTES} bytes)"
                    )));
                }
                tokio::fs::create_dir_all(spool).await.map_err(io)?;
                (spool.join(name), Ok((bucket.clone(), key)))
            }
        };
        let size = match write_limited(&temporary, body, allowed, too_large).await {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                return Err(e);
            }
        };
        let received = match destination {
            Ok((bucket, key)) => Received::Object {
                temporary,
                size,
                bucket,
                key,
            },
            Err(target) => Received::File { temporary, target },
        };
        Ok((received, size))
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

/// Deletes what uploads cut short by a crash of this server left in the artifacts
/// directory `dir` (temporary `.upload-*` files, in it and in its `job-*` directories);
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

    fn bucket(settings: &[(&str, &str)]) -> Bucket {
        Bucket::open("s3://ci/usher", settings.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn storage_errors_are_logged_without_credentials_or_the_signed_request() {
        let b = bucket(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEJr//token"),
        ]);
        let said = "Client error with status 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>\
            <StringToSign>AWS4-HMAC-SHA256\n20261207T000000Z</StringToSign>\
            <CanonicalRequest>PUT\n/ci/usher/job-1/a\nx-amz-security-token:FwoGZXIvYXdzEJr//token\n</CanonicalRequest>\
            <StringToSignBytes>41 57</StringToSignBytes><Note>key wJalrXUtnFEMI/K7MDENG</Note></Error>";
        let redacted = b.redact(said.to_string());
        assert!(!redacted.contains("FwoGZXIvYXdzEJr//token"), "{redacted}");
        assert!(!redacted.contains("wJalrXUtnFEMI/K7MDENG"), "{redacted}");
        assert!(!redacted.contains("PUT\n/ci"), "{redacted}");
        assert!(!redacted.contains("41 57"), "{redacted}");
        assert!(redacted.contains("SignatureDoesNotMatch"), "the cause stays: {redacted}");
        assert!(!format!("{b:?}").contains("wJalr"), "Debug shows the URL only");
    }

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

    #[test]
    fn only_the_documented_variables_are_read() {
        // AWS_BUCKET would have replaced the URL's bucket, AWS_SKIP_SIGNATURE unsigned
        // every request; both are ignored.
        let b = bucket(&[("AWS_BUCKET", "elsewhere"), ("AWS_SKIP_SIGNATURE", "true")]);
        assert_eq!(b.store.to_string(), "AmazonS3(ci)");
        assert_eq!(b.key(7, "out/a b~.txt").as_ref(), "usher/job-7/out/a b%7E.txt");
        for bad in ["https://ci/x", "s3://", "s3:///x"] {
            let e = Bucket::open(bad, std::iter::empty()).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
