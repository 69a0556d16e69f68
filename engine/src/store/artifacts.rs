//! Artifact files: which paths a job keeps and their sizes (the bytes live on disk under
//! the data dir; see `crate::artifacts`).

use sqlx::Row;
use usher_core::api::Artifact;
use usher_core::status::Status;

use super::{Store, bad_status};
use crate::{EngineError, now};

/// One kept artifact file of a pipeline's job (see [`Store::pipeline_artifacts`]).
pub struct PipelineArtifact {
    pub job_id: i64,
    pub job_name: String,
    pub stage_index: usize,
    pub path: String,
    pub size: u64,
}

impl Store {
    /// A job's status and the runner token of the runner holding it (if any).
    pub async fn job_holder_token(&self, job_id: i64) -> Result<Option<(Status, Option<i64>)>, EngineError> {
        let row = sqlx::query("SELECT j.status, r.token_id FROM jobs j LEFT JOIN runners r ON r.id = j.runner_id WHERE j.id = $1")
            .bind(job_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let status_text: String = row.try_get("status")?;
        let status = Status::parse(&status_text).ok_or_else(|| bad_status(&status_text))?;
        Ok(Some((status, row.try_get("token_id")?)))
    }

    /// Bytes taken by a job's artifacts other than `path`, and how many files they are.
    pub async fn artifacts_besides(&self, job_id: i64, path: &str) -> Result<(u64, u64), EngineError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total, COUNT(*) AS files FROM job_artifacts WHERE job_id = $1 AND path <> $2",
        )
        .bind(job_id)
        .bind(path)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        let (total, files): (i64, i64) = (row.try_get("total")?, row.try_get("files")?);
        Ok((total.max(0) as u64, files.max(0) as u64))
    }

    /// Records (or replaces) an artifact file of a job, deleted at `expires_at` if given.
    pub async fn put_artifact(&self, job_id: i64, path: &str, size: u64, expires_at: Option<&str>) -> Result<(), EngineError> {
        sqlx::query(
            "INSERT INTO job_artifacts (job_id, path, size, created_at, expires_at, expired) VALUES ($1, $2, $3, $4, $5, 0) \
             ON CONFLICT (job_id, path) DO UPDATE SET size = excluded.size, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, expired = 0",
        )
        .bind(job_id)
        .bind(path)
        .bind(size as i64)
        .bind(now())
        .bind(expires_at)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn list_artifacts(&self, job_id: i64) -> Result<Vec<Artifact>, EngineError> {
        let rows = sqlx::query("SELECT path, size, expires_at, expired FROM job_artifacts WHERE job_id = $1 ORDER BY path")
            .bind(job_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                let size: i64 = r.try_get("size")?;
                Ok(Artifact {
                    path: r.try_get("path")?,
                    size: size.max(0) as u64,
                    expires_at: r.try_get("expires_at")?,
                    expired: r.try_get::<i64, _>("expired")? != 0,
                })
            })
            .collect()
    }

    /// The size of an artifact that is still kept.
    pub async fn artifact_size(&self, job_id: i64, path: &str) -> Result<Option<u64>, EngineError> {
        let row = sqlx::query("SELECT size FROM job_artifacts WHERE job_id = $1 AND path = $2 AND expired = 0")
            .bind(job_id)
            .bind(path)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("size").map(|s| s.max(0) as u64)).transpose()?)
    }

    /// The kept artifact files of the newest attempt of every job of a pipeline but
    /// `except`, by stage and job, each with its job's id, name and stage index.
    pub async fn pipeline_artifacts(&self, pipeline_id: i64, except: i64) -> Result<Vec<PipelineArtifact>, EngineError> {
        let rows = sqlx::query(
            "SELECT j.id, j.name, j.stage_index, a.path, a.size FROM jobs j JOIN job_artifacts a ON a.job_id = j.id \
             WHERE j.pipeline_id = $1 AND j.id <> $2 AND j.retried = 0 AND a.expired = 0 ORDER BY j.stage_index, j.id, a.path",
        )
        .bind(pipeline_id)
        .bind(except)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PipelineArtifact {
                    job_id: r.try_get("id")?,
                    job_name: r.try_get("name")?,
                    stage_index: r.try_get::<i64, _>("stage_index")?.max(0) as usize,
                    path: r.try_get("path")?,
                    size: r.try_get::<i64, _>("size")?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Kept artifacts whose expiry is before `now`: (job, path).
    pub async fn due_artifacts(&self, now: &str) -> Result<Vec<(i64, String)>, EngineError> {
        let rows = sqlx::query("SELECT job_id, path FROM job_artifacts WHERE expired = 0 AND expires_at < $1 ORDER BY job_id, path")
            .bind(now)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("job_id")?, r.try_get("path")?))).collect()
    }

    /// Kept artifacts, oldest first: (job, path, size), at most `limit`.
    pub async fn oldest_artifacts(&self, limit: i64) -> Result<Vec<(i64, String, u64)>, EngineError> {
        let rows = sqlx::query("SELECT job_id, path, size FROM job_artifacts WHERE expired = 0 ORDER BY created_at, job_id LIMIT $1")
            .bind(limit)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("job_id")?, r.try_get("path")?, r.try_get::<i64, _>("size")?.max(0) as u64)))
            .collect()
    }

    pub async fn mark_artifact_expired(&self, job_id: i64, path: &str) -> Result<(), EngineError> {
        sqlx::query("UPDATE job_artifacts SET expired = 1 WHERE job_id = $1 AND path = $2")
            .bind(job_id)
            .bind(path)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Bytes kept: (artifacts, logs).
    pub async fn stored_bytes(&self) -> Result<(u64, u64), EngineError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE((SELECT SUM(size) FROM job_artifacts WHERE expired = 0), 0) AS BIGINT) AS artifacts, \
             CAST(COALESCE((SELECT SUM(log_length) FROM jobs), 0) AS BIGINT) AS logs",
        )
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok((
            row.try_get::<i64, _>("artifacts")?.max(0) as u64,
            row.try_get::<i64, _>("logs")?.max(0) as u64,
        ))
    }
}
