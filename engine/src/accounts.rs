//! Accounts: the first admin, users, API tokens, and browser sessions (sign-in and
//! sign-out). Secrets leave here once, in clear, to be shown to their owner; only their
//! hashes are kept.

use usher_core::roles::Role;

use crate::auth::{Credentials, hash_password, hash_token, new_token, verify_password};
use crate::{Actor, Engine, EngineError, format_time};

/// How long a browser session lasts.
pub const SESSION_DAYS: i64 = 14;

/// First-start credentials of `admin`, to print once.
pub struct BootstrapCredentials {
    pub password: String,
    /// Only when it was generated (not given through USHER_ADMIN_TOKEN).
    pub token: Option<String>,
}

impl Engine {
    /// On an empty database, creates `admin`. Returns what to print, or None.
    pub async fn bootstrap_admin(&self, admin_token: Option<&str>) -> Result<Option<BootstrapCredentials>, EngineError> {
        if self.store().count_users().await? > 0 {
            return Ok(None);
        }
        let password = new_token("")[..24].to_string();
        let user_id = self
            .store()
            .create_user("admin", Role::Admin, Some(&hash_password(&password)?))
            .await?;
        let (token, generated) = match admin_token {
            Some(t) if !t.is_empty() => (t.to_string(), false),
            _ => (new_token("usher_"), true),
        };
        self.store().add_api_token(user_id, &hash_token(&token)).await?;
        Ok(Some(BootstrapCredentials {
            password,
            token: generated.then_some(token),
        }))
    }

    /// `usher user add` (local administration: whoever can open the database).
    pub async fn add_user(&self, name: &str, role: Role, password: Option<&str>) -> Result<i64, EngineError> {
        if name.trim().is_empty() {
            return Err(EngineError::BadRequest("a user needs a name".into()));
        }
        let hash = password.map(hash_password).transpose()?;
        self.store().create_user(name, role, hash.as_deref()).await
    }

    /// `usher token create NAME`: a new API token for that user.
    pub async fn create_api_token(&self, user_name: &str) -> Result<String, EngineError> {
        let user_id = self
            .store()
            .user_id_by_name(user_name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("user `{user_name}`")))?;
        let token = new_token("usher_");
        self.store().add_api_token(user_id, &hash_token(&token)).await?;
        Ok(token)
    }

    /// `usher token revoke`: the token stops working at once (401 from then on).
    pub async fn revoke_api_token(&self, token: &str) -> Result<(), EngineError> {
        if self.store().revoke_api_token(&hash_token(token)).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("a live API token with that value".into()))
        }
    }

    /// Who sent a request: the owner of its bearer token, else of its session cookie,
    /// else 401. The one lookup behind the REST extractor, the websockets and the server
    /// functions.
    pub async fn authenticate_request(&self, headers: &http::HeaderMap) -> Result<Actor, EngineError> {
        match Credentials::of(headers) {
            Credentials::Token(token) => self.authenticate_token(&token).await,
            Credentials::Session(session) => self.authenticate_session(&session).await,
            Credentials::None => Err(EngineError::Unauthorized),
        }
    }

    pub async fn authenticate_token(&self, token: &str) -> Result<Actor, EngineError> {
        self.store()
            .actor_by_token_hash(&hash_token(token))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    pub async fn authenticate_session(&self, session: &str) -> Result<Actor, EngineError> {
        self.store()
            .actor_by_session_hash(&hash_token(session))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    /// Checks a password and opens a browser session; returns the session secret.
    pub async fn login(&self, name: &str, password: &str) -> Result<String, EngineError> {
        let refused = || EngineError::BadRequest("unknown user or wrong password".into());
        let (user_id, hash) = self.store().user_credentials(name).await?.ok_or_else(refused)?;
        let hash = hash.ok_or_else(refused)?;
        let ok = tokio::task::spawn_blocking({
            let password = password.to_string();
            move || verify_password(&password, &hash)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        if !ok {
            return Err(refused());
        }
        let session = new_token("");
        let expires = format_time(chrono::Utc::now() + chrono::Duration::days(SESSION_DAYS));
        self.store().add_session(&hash_token(&session), user_id, &expires).await?;
        Ok(session)
    }

    pub async fn logout(&self, session: &str) -> Result<(), EngineError> {
        self.store().delete_session(&hash_token(session)).await
    }
}
