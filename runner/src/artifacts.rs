//! Artifact upload after after_script: the job's `artifacts.paths` are resolved inside
//! its build directory (regular files, and directories walked; links of any kind,
//! FIFOs, sockets and devices are skipped) and each file is streamed to
//! `PUT /api/runner/v1/jobs/{id}/artifacts/{path}`. Every name is opened beneath the
//! build directory's descriptor with the job user's rights (`beneath`), so what the job
//! swaps in after the listing yields its own file or an error, never the runner's
//! data. Only an abort interrupts an upload.

use std::collections::HashSet;
use std::path::Path;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::mpsc;
use usher_core::path_pattern::PathPattern;
use usher_core::protocol::ArtifactsAssignment;

use crate::beneath::{Entry, JobTree};
use crate::control::Control;
use crate::isolation::JobUser;
use crate::logsink::LogHandle;

/// Characters left as they are in a path segment of the upload URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Characters left as they are in a name sent as one segment: not `.` (no name may be
/// `..`) nor `/`.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// Where uploads go and how the runner proves who it is.
#[derive(Clone)]
pub struct Uploader {
    client: reqwest::Client,
    base_url: String,
    token: String,
}

/// How an upload run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Every file was tried (the log says which were refused).
    Done,
    /// An abort arrived: stop everything.
    Aborted,
}

impl Uploader {
    /// `tls`: the configuration for an `https://` server (see `crate::tls`).
    pub fn new(base_url: &str, token: &str, tls: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Uploader {
        // A server that does not answer at all is given up on soon; a slow transfer is
        // not (each caller bounds its own stalls).
        let builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(15));
        let client = match tls {
            Some(config) => builder.use_preconfigured_tls((**config).clone()).build(),
            None => builder.build(),
        }
        .unwrap_or_default();
        Uploader {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// A GET of `/api/runner/v1/jobs/{job_id}/{what}/{path}` (`path` percent-encoded),
    /// authenticated as this runner.
    pub(crate) fn get(&self, job_id: i64, what: &str, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, job_id, what, path)
    }

    /// A GET of `/api/runner/v1/jobs/{job_id}/{what}/{name}`, `name` one segment
    /// whatever it holds (a cache's key: `/` and `.` percent-encoded too).
    pub(crate) fn get_named(&self, job_id: i64, what: &str, name: &str) -> reqwest::RequestBuilder {
        self.request_url(reqwest::Method::GET, job_id, what, &utf8_percent_encode(name, NAME).to_string())
    }

    /// A PUT as [`Uploader::get_named`].
    pub(crate) fn put_named(&self, job_id: i64, what: &str, name: &str) -> reqwest::RequestBuilder {
        self.request_url(reqwest::Method::PUT, job_id, what, &utf8_percent_encode(name, NAME).to_string())
    }

    fn request(&self, method: reqwest::Method, job_id: i64, what: &str, path: &str) -> reqwest::RequestBuilder {
        self.request_url(method, job_id, what, &encoded(path))
    }

    /// The request, with the runner's token only when the URL, as the client will read
    /// it, is still below the job's `what`: a URL parser resolves `..` (and `%2e%2e`)
    /// segments, and a name a job chose must not make the token reach another job's
    /// routes. Otherwise a request that cannot be sent.
    fn request_url(&self, method: reqwest::Method, job_id: i64, what: &str, tail: &str) -> reqwest::RequestBuilder {
        let below = format!("{}/api/runner/v1/jobs/{job_id}/{what}/", self.base_url);
        let url = format!("{below}{tail}");
        let stays = reqwest::Url::parse(&url).is_ok_and(|parsed| parsed.as_str().starts_with(&below));
        if !stays {
            return self.client.request(method, "invalid:path-leaves-the-job");
        }
        self.client.request(method, url).bearer_auth(&self.token)
    }

    /// Uploads the job's artifacts from `build_dir`, noting progress and refusals in the
    /// log; `tracked`: the files of the checked-out commit (`untracked: true` keeps the
    /// others; None: they are not known, and `untracked` takes nothing).
    #[allow(clippy::too_many_arguments)]
    pub async fn upload(
        &self,
        job_id: i64,
        spec: &ArtifactsAssignment,
        build_dir: &Path,
        reader: Option<JobUser>,
        tracked: Option<&HashSet<String>>,
        log: &LogHandle,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> UploadOutcome {
        let tree = match JobTree::open(build_dir, reader) {
            Ok(tree) => tree,
            Err(e) => {
                log.note(&format!("Artifacts are not uploaded: the build directory cannot be opened: {e}"));
                return UploadOutcome::Done;
            }
        };
        let untracked = if spec.untracked { tracked } else { None };
        let files = collect_files(&tree, &spec.paths, untracked, &spec.exclude, "Artifact", log);
        if files.is_empty() {
            log.note("No artifact files to upload.");
            return UploadOutcome::Done;
        }
        log.note(&format!("Uploading {} artifact file(s)", files.len()));
        let (mut done, mut bytes) = (0, 0);
        for rel in files {
            if let Some(max) = spec.max_bytes {
                let size = tree.open_file(Path::new(&rel)).and_then(|f| f.metadata()).map(|m| m.len());
                if let Ok(size) = size
                    && bytes + size > max
                {
                    log.note(&format!(
                        "Artifact {rel} was not uploaded: with its {size} bytes, the job's artifacts would exceed the limit of {max} bytes"
                    ));
                    break;
                }
            }
            let upload = self.upload_one(job_id, &rel, &tree);
            tokio::pin!(upload);
            let result = loop {
                tokio::select! {
                    r = &mut upload => break r,
                    c = control.recv() => match c {
                        Some(Control::Abort) => return UploadOutcome::Aborted,
                        // Already stopping; the upload is part of the cleanup.
                        Some(Control::Cancel | Control::Shutdown) => continue,
                        None => break upload.await,
                    },
                }
            };
            match result {
                Ok(size) => {
                    done += 1;
                    bytes += size;
                }
                Err((status, message)) => {
                    log.note(&format!("Artifact {rel} was not uploaded: {message}"));
                    // Over the limit, or the job is no longer ours: the rest would fail too.
                    if status == Some(413) || status == Some(409) {
                        break;
                    }
                }
            }
        }
        log.note(&format!("Uploaded {done} artifact file(s), {bytes} bytes."));
        UploadOutcome::Done
    }

    /// Streams one file, opened with the job's rights at this moment (see `beneath`), at
    /// most as many bytes as it had when opened.
    async fn upload_one(&self, job_id: i64, rel: &str, tree: &JobTree) -> Result<u64, (Option<u16>, String)> {
        let file = tree.open_file(Path::new(rel)).map_err(|e| (None, e.to_string()))?;
        let size = file.metadata().map(|m| m.len()).map_err(|e| (None, e.to_string()))?;
        let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), size);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = self
            .request(reqwest::Method::PUT, job_id, "artifacts", rel)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| (None, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(size);
        }
        Err((Some(status.as_u16()), refusal(response).await))
    }
}

/// A path's segments, each percent-encoded.
fn encoded(path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
    segments.join("/")
}

/// What the server said when it refused a request: its status and its error's message.
pub(crate) async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<usher_core::api::ErrorBody>(&text)
        .map(|b| b.error.message)
        .unwrap_or(text);
    format!("{status}: {message}")
}

/// The most files one job's artifacts may hold (the server's default limit too): a job
/// that names more is told so, and the rest is not listed.
pub const MAX_FILES: usize = 10_000;

/// The files named by `paths` (plain paths or GitLab's glob patterns, see
/// [`PathPattern`]) — and with `untracked` (the commit's files), every file that is not
/// one of them, outside any `.git` — less those `exclude` matches, relative to the build
/// directory, found beneath `tree` without following links (see `beneath`); `what`
/// (`Artifact`, `Cache`) names them in the log's notes.
pub fn collect_files(
    tree: &JobTree,
    paths: &[String],
    untracked: Option<&HashSet<String>>,
    exclude: &[String],
    what: &str,
    log: &LogHandle,
) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    if let Some(tracked) = untracked {
        match tree.files_below(Path::new("")) {
            Ok(all) => {
                let before = files.len();
                files.extend(
                    all.iter()
                        .map(|p| p.to_string_lossy().into_owned())
                        .filter(|f| !tracked.contains(f) && !f.split('/').any(|part| part == ".git")),
                );
                log.note(&format!("`untracked`: {} file(s) the commit does not have.", files.len() - before));
            }
            Err(e) => log.note(&format!("`untracked` files are skipped: {e}.")),
        }
    }
    for wanted in paths {
        let pattern = match PathPattern::parse(wanted) {
            Ok(pattern) => pattern,
            Err(why) => {
                log.note(&format!("{what} path {wanted:?} is skipped: it {why}."));
                continue;
            }
        };
        let Some(rel) = pattern.literal() else {
            let found = matching_files(tree, &pattern);
            match found {
                Ok(found) if found.is_empty() => log.note(&format!("{what} path {wanted} matches no file.")),
                Ok(found) => files.extend(found),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => log.note(&format!("{what} path {wanted} matches no file.")),
                Err(e) => log.note(&format!("{what} path {wanted} is skipped: {e}.")),
            }
            continue;
        };
        match tree.kind(Path::new(rel)) {
            Ok(Entry::File) => files.push(rel.to_string()),
            Ok(Entry::Dir) => match tree.files_below(Path::new(rel)) {
                Ok(below) => files.extend(below.iter().map(|p| p.to_string_lossy().into_owned())),
                Err(e) => log.note(&format!("{what} path {wanted} is skipped: {e}.")),
            },
            Ok(Entry::Other(kind)) => log.note(&format!(
                "{what} path {wanted} is skipped: it is a {kind} (only regular files and directories are kept)."
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => log.note(&format!("{what} path {wanted} does not exist.")),
            Err(e) => log.note(&format!("{what} path {wanted} is skipped: {e}.")),
        }
    }
    files.sort();
    files.dedup();
    let exclude: Vec<PathPattern> = exclude.iter().filter_map(|e| PathPattern::parse(e).ok()).collect();
    if !exclude.is_empty() {
        let before = files.len();
        files.retain(|f| !exclude.iter().any(|e| e.matches(f)));
        if files.len() < before {
            log.note(&format!("{} file(s) left out by `exclude`.", before - files.len()));
        }
    }
    if files.len() > MAX_FILES {
        log.note(&format!(
            "The {} paths name {} files; only the first {MAX_FILES} are kept.",
            what.to_lowercase(),
            files.len()
        ));
        files.truncate(MAX_FILES);
    }
    files
}

/// The files below the pattern's base directory that it takes (walked beneath the build
/// directory: links are not followed, so a pattern cannot reach outside it).
fn matching_files(tree: &JobTree, pattern: &PathPattern) -> std::io::Result<Vec<String>> {
    Ok(tree
        .files_below(Path::new(pattern.base()))?
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|f| pattern.takes(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name a job chose (a cache key) is one segment, whatever it holds; a path that a
    /// URL parser would take out of the job's routes gets no token and cannot be sent.
    #[test]
    fn names_stay_below_the_jobs_routes_and_the_token_never_leaves_them() {
        let uploader = Uploader::new("http://127.0.0.1:9", "runner-token", None);
        let request = uploader.get_named(5, "caches", "7/../../../9/caches/8/deps").build().unwrap();
        assert_eq!(
            request.url().path(),
            "/api/runner/v1/jobs/5/caches/7%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F9%2Fcaches%2F8%2Fdeps"
        );
        assert!(request.headers().contains_key(reqwest::header::AUTHORIZATION));
        for path in ["../../9/artifacts/x", "a/%2e%2e/%2e%2e/%2e%2e/9/x"] {
            let built = uploader.request_url(reqwest::Method::GET, 5, "artifacts", path).build();
            assert!(built.is_err(), "{path}: {built:?}");
        }
        // Plain paths are as they were.
        let request = uploader.get(5, "artifacts", "out/a b.txt").build().unwrap();
        assert_eq!(request.url().path(), "/api/runner/v1/jobs/5/artifacts/out/a%20b.txt");
    }
}
