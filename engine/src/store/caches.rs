//! The server's copies of caches: which archives a project has (by name: its key's
//! hash), their sizes and when each was last saved (the bytes live in artifact storage;
//! see `crate::caches`).

use sqlx::Row;

use super::Store;
use crate::{EngineError, now};

impl Store {
    /// Records project `project_id`'s cache `name` as saved now with `size` bytes; the
    /// names of its caches beyond the `keep` most recently saved, which it no longer
    /// has (their archives are the caller's to delete).
    pub async fn put_cache(&self, project_id: i64, name: &str, size: u64, keep: usize) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "INSERT INTO caches (project_id, name, size, saved_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project_id, name) DO UPDATE SET size = excluded.size, saved_at = excluded.saved_at",
        )
        .bind(project_id)
        .bind(name)
        .bind(size as i64)
        .bind(now())
        .execute(&mut *conn)
        .await?;
        // A project has a few caches at most (one more than it keeps, just now).
        let rows = sqlx::query("SELECT name FROM caches WHERE project_id = $1 ORDER BY saved_at DESC, name")
            .bind(project_id)
            .fetch_all(&mut *conn)
            .await?;
        let dropped: Vec<String> = rows.iter().skip(keep).map(|r| r.try_get("name")).collect::<Result<_, _>>()?;
        for name in &dropped {
            sqlx::query("DELETE FROM caches WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(name)
                .execute(&mut *conn)
                .await?;
        }
        Ok(dropped)
    }

    /// The size of project `project_id`'s cache `name`, if it has one.
    pub async fn cache_size(&self, project_id: i64, name: &str) -> Result<Option<u64>, EngineError> {
        let row = sqlx::query("SELECT size FROM caches WHERE project_id = $1 AND name = $2")
            .bind(project_id)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("size").map(|s| s.max(0) as u64)).transpose()?)
    }

    /// The caches nobody has saved since `before` (RFC 3339), oldest first, at most 100.
    pub async fn caches_saved_before(&self, before: &str) -> Result<Vec<(i64, String)>, EngineError> {
        let rows = sqlx::query("SELECT project_id, name FROM caches WHERE saved_at < $1 ORDER BY saved_at LIMIT 100")
            .bind(before)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("project_id")?, r.try_get("name")?))).collect()
    }

    /// Forgets project `project_id`'s cache `name` (its archive is deleted already).
    pub async fn forget_cache(&self, project_id: i64, name: &str) -> Result<(), EngineError> {
        sqlx::query("DELETE FROM caches WHERE project_id = $1 AND name = $2")
            .bind(project_id)
            .bind(name)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}
