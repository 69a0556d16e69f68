//! Artifacts: files the runner uploads after after_script, kept (in the directory or the
//! bucket of `artifact_storage`) only when complete and within the job's allowance; and
//! the ones a later job of the pipeline gets before its scripts run (its dependencies),
//! which only the runner holding that job may fetch.

use usher_core::api::Artifact;
use usher_core::config::JobConfig;
use usher_core::protocol::{DependencyArtifacts, DependencyFile, MAX_DEPENDENCY_BYTES, MAX_DEPENDENCY_FILES};

use crate::artifact_storage::{ArtifactStorage, StoredArtifact};
use crate::{Actor, Engine, EngineError, format_time};

impl Engine {
    /// Stores one artifact file uploaded by the runner holding job `job_id` (runner token
    /// `token_id`) while the job is still active: the body goes to a temporary file, and
    /// only a complete upload within the job's byte allowance replaces `path`.
    pub async fn store_artifact<S, B, E>(&self, token_id: i64, job_id: i64, path: &str, body: S) -> Result<Artifact, EngineError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let path = usher_core::artifacts::normalize_path(path)
            .ok_or_else(|| EngineError::BadRequest(format!("artifact path {path:?} is not a plain relative path")))?;
        self.check_holder(token_id, job_id, "artifacts are taken").await?;
        let storage = self
            .artifact_storage()
            .ok_or_else(|| EngineError::Internal("this server keeps no artifacts (no artifacts storage)".into()))?;
        let max = self.inner.settings.max_artifact_bytes;
        let (bytes, files) = self.store().artifacts_besides(job_id, &path).await?;
        let max_files = self.inner.settings.max_artifact_files;
        if files >= max_files {
            return Err(EngineError::TooLarge(format!(
                "job {job_id} may keep at most {max_files} files of artifacts"
            )));
        }
        let too_large = || EngineError::TooLarge(format!("job {job_id}'s artifacts would exceed the limit of {max} bytes"));
        let (received, size) = storage.receive(job_id, &path, body, max.saturating_sub(bytes), too_large).await?;
        // The job may have been aborted meanwhile: nothing more is kept then.
        if let Err(e) = self.check_holder(token_id, job_id, "artifacts are taken").await {
            received.discard().await;
            return Err(e);
        }
        received.keep(&path).await?;
        let expire_in = self.store().job_spec(job_id).await?.job.artifacts.and_then(|a| a.expire_in_secs);
        let expires_at = expire_in.map(|secs| format_time(chrono::Utc::now() + chrono::Duration::seconds(secs as i64)));
        self.store().put_artifact(job_id, &path, size, expires_at.as_deref()).await?;
        Ok(Artifact {
            path,
            size,
            expires_at,
            expired: false,
        })
    }

    /// Where artifacts are kept: the bucket when there is one (uploads are received into
    /// the directory first), else the directory; None without a directory (uploads are
    /// refused).
    pub(crate) fn artifact_storage(&self) -> Option<ArtifactStorage<'_>> {
        let settings = &self.inner.settings;
        match (&settings.artifacts_bucket, &settings.artifacts_dir) {
            (Some(bucket), Some(dir)) => Some(ArtifactStorage::Bucket { bucket, spool: dir }),
            (None, Some(dir)) => Some(ArtifactStorage::Dir(dir)),
            (_, None) => None,
        }
    }

    /// Whether the runner with token `token_id` holds job `job_id` and the job is still
    /// active (`what` says what is allowed only then).
    pub(crate) async fn check_holder(&self, token_id: i64, job_id: i64, what: &str) -> Result<(), EngineError> {
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
    ) -> Result<(StoredArtifact, u64), EngineError> {
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
        Ok((self.artifact_storage().ok_or_else(not_found)?.locate(dependency, &path), size))
    }

    pub async fn list_artifacts(&self, actor: &Actor, job_id: i64) -> Result<Vec<Artifact>, EngineError> {
        self.get_job(actor, job_id).await?;
        self.store().list_artifacts(job_id).await
    }

    /// The stored file of one artifact and its size.
    pub async fn artifact_file(&self, actor: &Actor, job_id: i64, path: &str) -> Result<(StoredArtifact, u64), EngineError> {
        self.get_job(actor, job_id).await?;
        let not_found = || EngineError::NotFound(format!("artifact {path:?} of job {job_id}"));
        let path = usher_core::artifacts::normalize_path(path).ok_or_else(not_found)?;
        let size = self.store().artifact_size(job_id, &path).await?.ok_or_else(not_found)?;
        Ok((self.artifact_storage().ok_or_else(not_found)?.locate(job_id, &path), size))
    }
}
