//! Retention: what Usher deletes so its storage does not grow without end. Artifacts
//! with `expire_in` are deleted once it has passed; with a storage cap
//! (`USHER_MAX_STORAGE_BYTES`), the oldest artifacts and then the logs of the oldest
//! finished jobs are removed until logs and artifacts together fit under it. Expiry
//! times and what was removed are in the database, so both survive restarts; the reaper
//! applies them once at start and every ten seconds. An expired artifact stays listed
//! (`expired: true`); a removed log becomes one line saying so. A cache the server keeps
//! goes once nobody has saved it for [`CACHE_KEPT_DAYS`] days.

use crate::{Engine, EngineError};

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub artifacts: usize,
    pub logs: usize,
    pub caches: usize,
}

/// How long the server keeps a cache nobody saves again.
pub const CACHE_KEPT_DAYS: i64 = 14;

const LOG_REMOVED: &str = "\u{1b}[33;1m[usher] This log was removed to keep Usher's storage under its cap.\u{1b}[0m\n";

impl Engine {
    /// One retention pass (see the module comment).
    pub async fn apply_retention(&self) -> Result<Removed, EngineError> {
        self.apply_retention_at(std::time::SystemTime::now()).await
    }

    /// [`Engine::apply_retention`] as if it were `at` (for tests of what time does).
    pub async fn apply_retention_at(&self, at: std::time::SystemTime) -> Result<Removed, EngineError> {
        let at = chrono::DateTime::<chrono::Utc>::from(at);
        let mut removed = Removed::default();
        for (job_id, path) in self.store().due_artifacts(&crate::format_time(at)).await? {
            if self.remove_artifact(job_id, &path).await {
                removed.artifacts += 1;
            }
        }
        let stale = crate::format_time(at - chrono::Duration::days(CACHE_KEPT_DAYS));
        for (project_id, name) in self.store().caches_saved_before(&stale).await? {
            if let Some(storage) = self.artifact_storage()
                && let Err(e) = storage.remove_cache(project_id, &name).await
            {
                tracing::warn!(project = project_id, cache = %name, "retention could not delete a cache: {e}");
                continue;
            }
            self.store().forget_cache(project_id, &name).await?;
            removed.caches += 1;
        }
        let Some(cap) = self.inner.settings.max_storage_bytes else {
            return Ok(removed);
        };
        let (mut artifacts, mut logs) = self.store().stored_bytes().await?;
        while artifacts + logs > cap && artifacts > 0 {
            let oldest = self.store().oldest_artifacts(100).await?;
            let mut progressed = false;
            for (job_id, path, size) in oldest {
                if artifacts + logs <= cap {
                    break;
                }
                if self.remove_artifact(job_id, &path).await {
                    artifacts = artifacts.saturating_sub(size);
                    removed.artifacts += 1;
                    progressed = true;
                }
            }
            // None of the oldest could be deleted (the storage is down, say): the next
            // pass tries again; the logs below still make room meanwhile.
            if !progressed {
                break;
            }
        }
        while artifacts + logs > cap {
            let oldest = self.store().oldest_finished_logs(100).await?;
            if oldest.is_empty() {
                break;
            }
            for (job_id, length) in oldest {
                if artifacts + logs <= cap {
                    break;
                }
                self.store().replace_log(job_id, LOG_REMOVED).await?;
                logs = logs.saturating_sub(length) + LOG_REMOVED.len() as u64;
                removed.logs += 1;
            }
        }
        if removed != Removed::default() {
            tracing::info!(
                artifacts = removed.artifacts,
                logs = removed.logs,
                caches = removed.caches,
                "retention removed old files"
            );
        }
        Ok(removed)
    }

    /// Deletes one artifact's file and marks it expired; whether it did. One that cannot
    /// be deleted now (the bucket unreachable, say) is logged and stays as it is, for the
    /// next pass; it holds up none of the others.
    async fn remove_artifact(&self, job_id: i64, path: &str) -> bool {
        if let Some(storage) = self.artifact_storage()
            && let Err(e) = storage.remove(job_id, path).await
        {
            tracing::warn!(job = job_id, path, "retention could not delete an artifact: {e}");
            return false;
        }
        match self.store().mark_artifact_expired(job_id, path).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(job = job_id, path, "retention could not mark an artifact expired: {e}");
                false
            }
        }
    }
}
