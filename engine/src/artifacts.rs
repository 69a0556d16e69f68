//! Artifacts: files the runner uploads after after_script, streamed to a temporary file
//! and kept under the data dir only when complete and within the job's allowance.

use std::path::PathBuf;

use usher_core::api::Artifact;

use crate::{Actor, Engine, EngineError, format_time};

impl Engine {
    /// Stores one artifact file uploaded by the runner holding job `job_id` (runner token
    /// `token_id`) while the job is still active: the body goes to a temporary file, and
    /// only a complete upload within the job's byte allowance replaces `path`.
    pub async fn store_artifact<S, B, E>(&self, token_id: i64, job_id: i64, path: &str, mut body: S) -> Result<Artifact, EngineError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let path = usher_core::artifacts::normalize_path(path)
            .ok_or_else(|| EngineError::BadRequest(format!("artifact path {path:?} is not a plain relative path")))?;
        self.check_artifact_upload(token_id, job_id).await?;
        let root = self
            .inner
            .settings
            .artifacts_dir
            .clone()
            .ok_or_else(|| EngineError::Internal("this server keeps no artifacts (no artifacts dir)".into()))?;
        let max = self.inner.settings.max_artifact_bytes;
        let (bytes, files) = self.store().artifacts_besides(job_id, &path).await?;
        let max_files = self.inner.settings.max_artifact_files;
        if files >= max_files {
            return Err(EngineError::TooLarge(format!(
                "job {job_id} may keep at most {max_files} files of artifacts"
            )));
        }
        let allowed = max.saturating_sub(bytes);
        let job_dir = root.join(format!("job-{job_id}"));
        let io = |e: std::io::Error| EngineError::Internal(format!("artifact storage: {e}"));
        tokio::fs::create_dir_all(&job_dir).await.map_err(io)?;
        let tmp = job_dir.join(format!(".upload-{}", hex::encode(rand::random::<[u8; 8]>())));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| EngineError::BadRequest(format!("the upload broke off: {e}")))?;
                size += chunk.as_ref().len() as u64;
                if size > allowed {
                    return Err(EngineError::TooLarge(format!(
                        "job {job_id}'s artifacts would exceed the limit of {max} bytes"
                    )));
                }
                file.write_all(chunk.as_ref()).await.map_err(io)?;
            }
            file.flush().await.map_err(io)?;
            // The job may have been aborted meanwhile: nothing more is kept then.
            self.check_artifact_upload(token_id, job_id).await?;
            let target = job_dir.join(&path);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| EngineError::Conflict(format!("artifact {path} collides with another: {e}")))?;
            }
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(|e| EngineError::Conflict(format!("artifact {path} collides with another: {e}")))?;
            let expire_in = self.store().job_spec(job_id).await?.job.artifacts.and_then(|a| a.expire_in_secs);
            let expires_at = expire_in.map(|secs| format_time(chrono::Utc::now() + chrono::Duration::seconds(secs as i64)));
            self.store().put_artifact(job_id, &path, size, expires_at.as_deref()).await?;
            Ok(Artifact {
                path: path.clone(),
                size,
                expires_at,
                expired: false,
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    pub(crate) async fn check_artifact_upload(&self, token_id: i64, job_id: i64) -> Result<(), EngineError> {
        match self.store().job_holder_token(job_id).await? {
            None => Err(EngineError::NotFound(format!("job {job_id}"))),
            Some((_, holder)) if holder != Some(token_id) => Err(EngineError::Conflict(format!("job {job_id} is not held by this runner"))),
            Some((status, _)) if !status.is_active() => Err(EngineError::Conflict(format!(
                "job {job_id} is {status}: artifacts are taken only while it runs or cleans up"
            ))),
            Some(_) => Ok(()),
        }
    }

    pub async fn list_artifacts(&self, actor: &Actor, job_id: i64) -> Result<Vec<Artifact>, EngineError> {
        self.get_job(actor, job_id).await?;
        self.store().list_artifacts(job_id).await
    }

    /// The stored file of one artifact and its size.
    pub async fn artifact_file(&self, actor: &Actor, job_id: i64, path: &str) -> Result<(PathBuf, u64), EngineError> {
        self.get_job(actor, job_id).await?;
        let not_found = || EngineError::NotFound(format!("artifact {path:?} of job {job_id}"));
        let path = usher_core::artifacts::normalize_path(path).ok_or_else(not_found)?;
        let size = self.store().artifact_size(job_id, &path).await?.ok_or_else(not_found)?;
        let root = self.inner.settings.artifacts_dir.as_ref().ok_or_else(not_found)?;
        Ok((root.join(format!("job-{job_id}")).join(&path), size))
    }
}
