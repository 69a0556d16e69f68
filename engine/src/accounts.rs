//! Accounts: the first admin, users, API tokens, and browser sessions (sign-in and
//! sign-out). Secrets leave here once, in clear, to be shown to their owner; only their
//! hashes are kept.

use usher_core::roles::{Action, Role};

use crate::auth::{Credentials, hash_password, hash_token, new_token};
use crate::{Actor, Engine, EngineError, format_time};
use std::net::IpAddr;

/// A hash of a password nobody knows, checked for unknown users so that a sign-in takes
/// as long whether the user exists or not.
fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_token("")).expect("argon2 works"))
}

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

    /// The users and their tokens (the admin page).
    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<usher_core::api::UserInfo>, EngineError> {
        actor.require(Action::Administer)?;
        self.store().list_users().await
    }

    /// An admin adds a user (the admin page; `usher user add` on the server's machine).
    pub async fn create_user(&self, actor: &Actor, name: &str, role: Role, password: Option<&str>) -> Result<(), EngineError> {
        actor.require(Action::Administer)?;
        usher_core::names::check_name("user", name).map_err(EngineError::BadRequest)?;
        self.add_user(name.trim(), role, password.filter(|p| !p.is_empty()))
            .await
            .map(|_| ())
    }

    /// An admin changes a user's role; an admin cannot take their own admin role away.
    pub async fn set_role(&self, actor: &Actor, name: &str, role: Role) -> Result<(), EngineError> {
        actor.require(Action::Administer)?;
        if name == actor.name && role != Role::Admin {
            return Err(EngineError::BadRequest("you cannot take away your own admin role".into()));
        }
        if self.store().set_role(name, role).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("user `{name}`")))
        }
    }

    /// An admin makes a new API token for a user; the token is shown only in this answer.
    pub async fn create_token_for(&self, actor: &Actor, name: &str) -> Result<String, EngineError> {
        actor.require(Action::Administer)?;
        self.create_api_token(name).await
    }

    /// An admin revokes an API token by its id (it stops working at once).
    pub async fn revoke_token_id(&self, actor: &Actor, id: i64) -> Result<(), EngineError> {
        actor.require(Action::Administer)?;
        if self.store().revoke_api_token_id(id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("a live API token #{id}")))
        }
    }

    /// `usher user password NAME`: a new password; the user's sessions end.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), EngineError> {
        let hash = hash_password(password)?;
        if self.store().set_password_hash(name, &hash).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("user `{name}`")))
        }
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
    ///
    /// Bounded cost: a user name or address with too many recent failures is refused
    /// (429) before any hashing; at most as many argon2 checks as the machine has cores
    /// run at once (each takes ~19 MiB), the rest wait their turn; and an unknown user
    /// costs the same argon2 check as a known one, so timing does not tell them apart.
    pub async fn login(&self, name: &str, password: &str, address: Option<IpAddr>) -> Result<String, EngineError> {
        if let Some(wait) = self.inner.login_throttle.refusal(name, address) {
            return Err(EngineError::TooManyRequests(format!(
                "too many failed sign-ins; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let credentials = self.store().user_credentials(name).await?;
        let (user_id, hash) = match credentials {
            Some((id, Some(hash))) => (Some(id), hash),
            _ => (None, dummy_password_hash().to_string()),
        };
        let ok = self.inner.password_checks.verify(password, &hash).await;
        let Some(user_id) = user_id.filter(|_| ok) else {
            self.inner.login_throttle.failed(name, address);
            return Err(EngineError::BadRequest("unknown user or wrong password".into()));
        };
        self.inner.login_throttle.succeeded(name);
        let session = new_token("");
        let expires = format_time(chrono::Utc::now() + chrono::Duration::days(SESSION_DAYS));
        self.store().add_session(&hash_token(&session), user_id, &expires).await?;
        Ok(session)
    }

    pub async fn logout(&self, session: &str) -> Result<(), EngineError> {
        self.store().delete_session(&hash_token(session)).await
    }
}
