//! Users, API tokens and browser sessions: the rows behind sign-in. Secrets are stored
//! only as hashes (see `crate::auth`); these queries never see a clear-text token.

use sqlx::Row;
use usher_core::roles::Role;

use super::{Store, actor_from_row};
use crate::{Actor, EngineError, now};

impl Store {
    /// Every user with their API tokens (ids and dates only), by name.
    pub async fn list_users(&self) -> Result<Vec<usher_core::api::UserInfo>, EngineError> {
        let users = sqlx::query("SELECT id, name, role, password_hash, created_at FROM users ORDER BY name")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        let tokens = sqlx::query("SELECT id, user_id, created_at, revoked_at FROM api_tokens ORDER BY id")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        users
            .iter()
            .map(|u| {
                let id: i64 = u.try_get("id")?;
                let role: String = u.try_get("role")?;
                let mut mine = Vec::new();
                for t in &tokens {
                    if t.try_get::<i64, _>("user_id")? == id {
                        mine.push(usher_core::api::TokenInfo {
                            id: t.try_get("id")?,
                            created_at: t.try_get("created_at")?,
                            revoked: t.try_get::<Option<String>, _>("revoked_at")?.is_some(),
                        });
                    }
                }
                Ok(usher_core::api::UserInfo {
                    name: u.try_get("name")?,
                    role: Role::parse(&role).ok_or_else(|| EngineError::Internal(format!("unknown role `{role}`")))?,
                    created_at: u.try_get("created_at")?,
                    has_password: u.try_get::<Option<String>, _>("password_hash")?.is_some(),
                    tokens: mine,
                })
            })
            .collect()
    }

    /// False if there is no such user.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<bool, EngineError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE name = $2")
            .bind(role.as_str())
            .bind(name)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes an API token by its id; false if no live token has it.
    pub async fn revoke_api_token_id(&self, id: i64) -> Result<bool, EngineError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's new password hash; their sessions end. False if there is no such user.
    pub async fn set_password_hash(&self, name: &str, hash: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let changed = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(hash)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub async fn count_users(&self) -> Result<i64, EngineError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *self.conn().await?)
            .await?
            .try_get("n")?)
    }

    pub async fn create_user(&self, name: &str, role: Role, password_hash: Option<&str>) -> Result<i64, EngineError> {
        let row = sqlx::query("INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now())
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    EngineError::Conflict(format!("a user named `{name}` already exists"))
                }
                e => e.into(),
            })?;
        Ok(row.try_get("id")?)
    }

    /// (user id, password hash) of a user.
    pub async fn user_credentials(&self, name: &str) -> Result<Option<(i64, Option<String>)>, EngineError> {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("id")?, r.try_get("password_hash")?)),
            None => None,
        })
    }

    pub async fn user_id_by_name(&self, name: &str) -> Result<Option<i64>, EngineError> {
        let row = sqlx::query("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn add_api_token(&self, user_id: i64, token_hash: &str) -> Result<(), EngineError> {
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(token_hash)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Marks an API token revoked; false if no live token has that hash.
    pub async fn revoke_api_token(&self, token_hash: &str) -> Result<bool, EngineError> {
        let result = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(token_hash)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn actor_by_token_hash(&self, token_hash: &str) -> Result<Option<Actor>, EngineError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.as_ref().map(actor_from_row).transpose()
    }

    pub async fn add_session(&self, token_hash: &str, user_id: i64, expires_at: &str) -> Result<(), EngineError> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now())
            .bind(expires_at)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn actor_by_session_hash(&self, token_hash: &str) -> Result<Option<Actor>, EngineError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now())
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.as_ref().map(actor_from_row).transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), EngineError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}
