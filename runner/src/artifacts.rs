//! Artifact upload after after_script: the job's `artifacts.paths` are resolved inside
//! its build directory (files, and directories walked without following links; a link
//! pointing outside the build directory is skipped) and each file is streamed to
//! `PUT /api/runner/v1/jobs/{id}/artifacts/{path}`. Only an abort interrupts an upload.

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::mpsc;
use usher_core::artifacts::normalize_path;
use usher_core::protocol::ArtifactsAssignment;

use crate::control::Control;
use crate::logsink::LogHandle;

/// Characters left as they are in a path segment of the upload URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

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
        let client = match tls {
            Some(config) => reqwest::Client::builder()
                .use_preconfigured_tls((**config).clone())
                .build()
                .unwrap_or_default(),
            None => reqwest::Client::new(),
        };
        Uploader {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn url(&self, job_id: i64, path: &str) -> String {
        let encoded: Vec<String> = path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        format!("{}/api/runner/v1/jobs/{job_id}/artifacts/{}", self.base_url, encoded.join("/"))
    }

    /// Uploads the job's artifacts from `build_dir`, noting progress and refusals in the log.
    pub async fn upload(
        &self,
        job_id: i64,
        spec: &ArtifactsAssignment,
        build_dir: &Path,
        log: &LogHandle,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> UploadOutcome {
        let files = collect_files(build_dir, &spec.paths, log);
        if files.is_empty() {
            log.note("No artifact files to upload.");
            return UploadOutcome::Done;
        }
        log.note(&format!("Uploading {} artifact file(s)", files.len()));
        let (mut done, mut bytes) = (0, 0);
        for (rel, abs) in files {
            let upload = self.upload_one(job_id, &rel, &abs);
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

    async fn upload_one(&self, job_id: i64, rel: &str, abs: &Path) -> Result<u64, (Option<u16>, String)> {
        let file = tokio::fs::File::open(abs).await.map_err(|e| (None, e.to_string()))?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = self
            .client
            .put(self.url(job_id, rel))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| (None, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(size);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<usher_core::api::ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        Err((Some(status.as_u16()), format!("{status}: {message}")))
    }
}

/// The files named by `paths`, as (name relative to the build dir, file on disk).
pub fn collect_files(build_dir: &Path, paths: &[String], log: &LogHandle) -> Vec<(String, PathBuf)> {
    let Ok(root) = build_dir.canonicalize() else { return Vec::new() };
    let inside = |p: &Path| p.canonicalize().map(|c| c.starts_with(&root)).unwrap_or(false);
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for wanted in paths {
        let Some(rel) = normalize_path(wanted) else {
            log.note(&format!(
                "Artifact path {wanted:?} is skipped: it must be a relative path inside the build directory."
            ));
            continue;
        };
        let abs = root.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&abs) else {
            log.note(&format!("Artifact path {wanted} does not exist."));
            continue;
        };
        if !inside(&abs) {
            log.note(&format!("Artifact path {wanted} is skipped: it leads outside the build directory."));
            continue;
        }
        if meta.is_dir() || (meta.file_type().is_symlink() && abs.is_dir()) {
            for entry in walkdir::WalkDir::new(&abs)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter()
                .flatten()
            {
                let path = entry.path();
                let is_file = if entry.file_type().is_symlink() {
                    inside(path) && path.is_file()
                } else {
                    entry.file_type().is_file()
                };
                if !is_file {
                    continue;
                }
                if let Ok(rel) = path.strip_prefix(&root) {
                    files.push((rel.to_string_lossy().into_owned(), path.to_path_buf()));
                }
            }
        } else if abs.is_file() {
            files.push((rel, abs));
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    files
}
