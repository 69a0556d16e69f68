//! An S3-compatible bucket where artifacts are kept (see the module above): opened from
//! `s3://BUCKET/PREFIX` and the standard `AWS_*` settings through Apache Arrow's
//! `object_store` crate, checked at start, written whole or in parts from a received
//! file, read by range, deleted; its errors logged without credentials.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as Key;
use object_store::{ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use tokio::io::AsyncReadExt;

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
        let allow_http = settings.iter().any(|(k, v)| k == "AWS_ENDPOINT" && v.starts_with("http://"));
        let build = |options: ClientOptions| {
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(name)
                .with_virtual_hosted_style_request(false);
            for (key, value) in &settings {
                if let Ok(config_key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(config_key, value);
                }
            }
            builder
                .with_client_options(options.with_allow_http(allow_http))
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

    /// The key of project `project_id`'s cache archive `name`.
    pub fn cache_key(&self, project_id: i64, name: &str) -> Key {
        self.prefix.child("caches").child(format!("project-{project_id}")).child(name)
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
    pub(super) async fn upload_file(&self, key: &Key, file: &Path, size: u64) -> Result<(), EngineError> {
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
