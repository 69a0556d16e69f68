//! Runner tokens, the runners that connected with them, and their heartbeats: what the
//! runner protocol and the lost-runner reaper read and write.

use sqlx::Row;
use usher_core::status::Status;

use super::{Store, bad_status, sql_statuses, strings_from, tags_to};
use crate::{EngineError, now};
use usher_core::status::StatusGroup;

impl Store {
    /// The tags of each runner seen at or after `seen_since` and not paused (the ones
    /// that may take jobs).
    pub async fn online_runner_tags(&self, seen_since: &str) -> Result<Vec<Vec<String>>, EngineError> {
        let rows = sqlx::query("SELECT tags FROM runners WHERE last_seen_at >= $1 AND paused = 0")
            .bind(seen_since)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok(strings_from(r.try_get("tags")?))).collect()
    }

    /// Marks a runner token revoked; false if no live token has that hash.
    pub async fn revoke_runner_token(&self, token_hash: &str) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE runner_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(token_hash)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn runner_token_is_live(&self, id: i64) -> Result<bool, EngineError> {
        let row = sqlx::query("SELECT id FROM runner_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.is_some())
    }

    pub async fn add_runner_token(&self, token_hash: &str) -> Result<i64, EngineError> {
        let row = sqlx::query("INSERT INTO runner_tokens (token_hash, created_at) VALUES ($1, $2) RETURNING id")
            .bind(token_hash)
            .bind(now())
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn runner_token_id(&self, token_hash: &str) -> Result<Option<i64>, EngineError> {
        let row = sqlx::query("SELECT id FROM runner_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn add_runner(&self, name: &str, token_id: i64, tags: &[String]) -> Result<i64, EngineError> {
        let t = now();
        let row =
            sqlx::query("INSERT INTO runners (name, token_id, connected_at, last_seen_at, tags) VALUES ($1, $2, $3, $3, $4) RETURNING id")
                .bind(name)
                .bind(token_id)
                .bind(t)
                .bind(tags_to(tags))
                .fetch_one(&mut *self.conn().await?)
                .await?;
        Ok(row.try_get("id")?)
    }

    /// Marks a runner seen; false if no runner with that id uses that token.
    pub async fn touch_runner(&self, id: i64, token_id: i64, tags: &[String]) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE runners SET last_seen_at = $1, tags = $4 WHERE id = $2 AND token_id = $3")
            .bind(now())
            .bind(id)
            .bind(token_id)
            .bind(tags_to(tags))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn runner_seen(&self, id: i64) -> Result<(), EngineError> {
        sqlx::query("UPDATE runners SET last_seen_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Active jobs held by runners last seen before `cutoff`.
    pub async fn jobs_of_runners_seen_before(&self, cutoff: &str) -> Result<Vec<(i64, Status)>, EngineError> {
        let active = sql_statuses(StatusGroup::Active);
        let rows = sqlx::query(&format!(
            "SELECT j.id, j.status FROM jobs j JOIN runners r ON r.id = j.runner_id \
             WHERE j.status IN ({active}) AND r.last_seen_at < $1 ORDER BY j.id"
        ))
        .bind(cutoff)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get("status")?;
                Ok((r.try_get("id")?, Status::parse(&s).ok_or_else(|| bad_status(&s))?))
            })
            .collect()
    }

    /// What a runner said when it (re)connected: its executor; and it is not draining
    /// (a drained runner that comes back is a new start).
    pub async fn runner_connected(&self, id: i64, executor: Option<&str>) -> Result<(), EngineError> {
        sqlx::query("UPDATE runners SET executor = $1, draining = 0 WHERE id = $2")
            .bind(executor)
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn set_runner_draining(&self, id: i64) -> Result<(), EngineError> {
        sqlx::query("UPDATE runners SET draining = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Pauses or resumes a runner; false when there is no such runner.
    pub async fn set_runner_paused(&self, id: i64, paused: bool) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE runners SET paused = $1 WHERE id = $2")
            .bind(paused as i64)
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn runner_paused(&self, id: i64) -> Result<bool, EngineError> {
        let row = sqlx::query("SELECT paused FROM runners WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("paused")).transpose()?.unwrap_or(0) != 0)
    }

    /// Every runner, newest first, with its active jobs; `connected` when seen at or after `seen_since`.
    pub async fn list_runners(&self, seen_since: &str) -> Result<Vec<usher_core::api::RunnerInfo>, EngineError> {
        let rows =
            sqlx::query("SELECT id, name, tags, executor, paused, draining, connected_at, last_seen_at FROM runners ORDER BY id DESC")
                .fetch_all(&mut *self.conn().await?)
                .await?;
        let active = sqlx::query(&format!(
            "SELECT id, runner_id FROM jobs WHERE status IN ({}) AND runner_id IS NOT NULL ORDER BY id",
            sql_statuses(StatusGroup::Active)
        ))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut held: Vec<(i64, i64)> = Vec::new();
        for r in &active {
            held.push((r.try_get("runner_id")?, r.try_get("id")?));
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let last_seen_at: String = r.try_get("last_seen_at")?;
                Ok(usher_core::api::RunnerInfo {
                    id,
                    name: r.try_get("name")?,
                    tags: strings_from(r.try_get("tags")?),
                    executor: r.try_get("executor")?,
                    paused: r.try_get::<i64, _>("paused")? != 0,
                    draining: r.try_get::<i64, _>("draining")? != 0,
                    connected_at: r.try_get("connected_at")?,
                    connected: last_seen_at.as_str() >= seen_since,
                    last_seen_at,
                    active_jobs: held.iter().filter(|(runner, _)| *runner == id).map(|(_, job)| *job).collect(),
                })
            })
            .collect()
    }
}
