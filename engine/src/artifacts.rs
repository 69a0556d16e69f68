//! Artifacts: files the runner uploads after after_script, streamed to a temporary file
//! and kept under the data dir only when complete and within the job's allowance; and
//! the ones a later job of the pipeline gets before its scripts run (its dependencies),
//! which only the runner holding that job may fetch.

use std::path::PathBuf;

use usher_core::api::Artifact;
use usher_core::config::JobConfig;
use usher_core::protocol::{DependencyArtifacts, DependencyFile, MAX_DEPENDENCY_BYTES, MAX_DEPENDENCY_FILES};

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
        self.check_holder(token_id, job_id, "artifacts are taken").await?;
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
            self.check_holder(token_id, job_id, "artifacts are taken").await?;
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

    /// Whether the runner with token `token_id` holds job `job_id` and the job is still
    /// active (`what` says what is allowed only then).
    async fn check_holder(&self, token_id: i64, job_id: i64, what: &str) -> Result<(), EngineError> {
        match self.store().job_holder_token(job_id).await? {
            None => Err(EngineError::NotFound(format!("job {job_id}"))),
            Some((_, holder)) if holder != Some(token_id) => Err(EngineError::Conflict(format!("job {job_id} is not held by this runner"))),
            Some((status, _)) if !status.is_active() => Err(EngineError::Conflict(format!(
                "job {job_id} is {status}: {what} only while it runs or cleans up"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The kept artifacts of the earlier jobs of its pipeline that job `job_id` (of stage
    /// `stage_index`, defined by `job`) gets, by job (see [`JobConfig::takes_from`]), at
    /// most [`MAX_DEPENDENCY_FILES`] files and [`MAX_DEPENDENCY_BYTES`] in all; and how
    /// many files were left out for that.
    pub(crate) async fn dependency_artifacts(
        &self,
        job_id: i64,
        pipeline_id: i64,
        job: &JobConfig,
        stage_index: usize,
    ) -> Result<(Vec<DependencyArtifacts>, u64), EngineError> {
        let mut out: Vec<DependencyArtifacts> = Vec::new();
        let (mut files, mut bytes, mut left_out) = (0usize, 0u64, 0u64);
        for file in self.store().pipeline_artifacts(pipeline_id, job_id).await? {
            if !job.takes_from(stage_index, &file.job_name, file.stage_index) {
                continue;
            }
            if files + 1 > MAX_DEPENDENCY_FILES || bytes + file.size > MAX_DEPENDENCY_BYTES {
                left_out += 1;
                continue;
            }
            files += 1;
            bytes += file.size;
            let entry = DependencyFile {
                path: file.path,
                size: file.size,
            };
            match out.last_mut() {
                Some(last) if last.job_id == file.job_id => last.files.push(entry),
                _ => out.push(DependencyArtifacts {
                    job_id: file.job_id,
                    job_name: file.job_name,
                    files: vec![entry],
                }),
            }
        }
        Ok((out, left_out))
    }

    /// The stored file of an artifact of `dependency` and its size, for the runner (token
    /// `token_id`) holding job `job_id` while it is active, when `job_id` gets the
    /// artifacts of `dependency`; 404 otherwise, as for a file that does not exist.
    pub async fn dependency_artifact_file(
        &self,
        token_id: i64,
        job_id: i64,
        dependency: i64,
        path: &str,
    ) -> Result<(PathBuf, u64), EngineError> {
        self.check_holder(token_id, job_id, "its dependencies' artifacts are given").await?;
        let not_found = || EngineError::NotFound(format!("artifact {path:?} of job {dependency} for job {job_id}"));
        let path = usher_core::artifacts::normalize_path(path).ok_or_else(not_found)?;
        // The same rule as the assignment's listing, read for these two jobs only.
        let (spec, pipeline_id, stage_index) = self.store().job_spec_and_place(job_id).await?;
        let earlier = self.store().job_place(dependency).await?.ok_or_else(not_found)?;
        let depended_on = dependency != job_id
            && earlier.pipeline_id == pipeline_id
            && !earlier.retried
            && spec.job.takes_from(stage_index, &earlier.name, earlier.stage_index);
        if !depended_on {
            return Err(not_found());
        }
        let size = self.store().artifact_size(dependency, &path).await?.ok_or_else(not_found)?;
        let root = self.inner.settings.artifacts_dir.as_ref().ok_or_else(not_found)?;
        Ok((root.join(format!("job-{dependency}")).join(&path), size))
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
