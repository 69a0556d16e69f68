//! Caches (`cache:`) kept by the server, so that every runner finds what any runner of
//! the project saved, and every replica serves them: the runner holding a job uploads
//! the archive of a cache it saved and downloads the one it is to restore, by the key
//! the assignment gave it (`<project id>/<key>`: a job reaches only its own project's
//! caches). Each is kept in artifact storage (the directory or the bucket) under its
//! key's hash; a project keeps its [`MAX_CACHES_PER_PROJECT`] most recently saved, each
//! at most the artifact limit. A cache is a speed-up: what the server does not keep, a
//! runner may still have.

use crate::artifact_storage::{StoredArtifact, cache_name};
use crate::{Engine, EngineError};

/// The caches a project keeps: saving one more drops the least recently saved.
pub const MAX_CACHES_PER_PROJECT: usize = 20;

impl Engine {
    /// Keeps `body`, the archive of cache `key` saved by the runner (token `token_id`)
    /// holding job `job_id`; its size.
    pub async fn store_cache<S, B, E>(&self, token_id: i64, job_id: i64, key: &str, body: S) -> Result<u64, EngineError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let project_id = self.cache_project(token_id, job_id, key).await?;
        let storage = self
            .artifact_storage()
            .ok_or_else(|| EngineError::Internal("this server keeps no caches (no artifacts storage)".into()))?;
        let max = self.inner.settings.max_artifact_bytes;
        let name = cache_name(key);
        let too_large = || EngineError::TooLarge(format!("a cache may be at most {max} bytes on the server"));
        let (received, size) = storage.receive_cache(project_id, &name, body, max, too_large).await?;
        if let Err(e) = self.check_holder(token_id, job_id, "caches are taken").await {
            received.discard().await;
            return Err(e);
        }
        received.keep(&name).await?;
        for dropped in self.store().put_cache(project_id, &name, size, MAX_CACHES_PER_PROJECT).await? {
            if let Err(e) = storage.remove_cache(project_id, &dropped).await {
                tracing::warn!(project = project_id, cache = %dropped, "a dropped cache could not be deleted: {e}");
            }
        }
        Ok(size)
    }

    /// The archive of cache `key` and its size, for the runner holding job `job_id`.
    pub async fn cache_file(&self, token_id: i64, job_id: i64, key: &str) -> Result<(StoredArtifact, u64), EngineError> {
        let project_id = self.cache_project(token_id, job_id, key).await?;
        let name = cache_name(key);
        let not_found = || EngineError::NotFound(format!("cache {key}"));
        let size = self.store().cache_size(project_id, &name).await?.ok_or_else(not_found)?;
        let storage = self.artifact_storage().ok_or_else(not_found)?;
        Ok((storage.locate_cache(project_id, &name), size))
    }

    /// The project of job `job_id`, held by the runner with token `token_id` and active,
    /// when `key` is one of that project's (`<project id>/…`, as assignments give them).
    async fn cache_project(&self, token_id: i64, job_id: i64, key: &str) -> Result<i64, EngineError> {
        self.check_holder(token_id, job_id, "caches are given and taken").await?;
        let job = self
            .store()
            .get_job(job_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        let scoped = key
            .strip_prefix(&format!("{}/", job.project_id))
            .is_some_and(|rest| !rest.is_empty() && rest.len() <= usher_core::cache::MAX_KEY_BYTES);
        if !scoped {
            return Err(EngineError::BadRequest(format!(
                "cache key {key:?} is not one of job {job_id}'s project"
            )));
        }
        Ok(job.project_id)
    }
}
