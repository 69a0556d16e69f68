//! Credentials: API, session and runner tokens (random, stored only as SHA-256 hashes,
//! which is enough for 256-bit random secrets) and passwords (argon2id, memory-hard).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use usher_core::roles::{Action, Role};

use crate::EngineError;

/// The browser session cookie's name.
pub const SESSION_COOKIE: &str = "usher_session";

/// The value of cookie `name` in `Cookie:` header values.
pub fn cookie_value<'a>(header_values: impl IntoIterator<Item = &'a str>, name: &str) -> Option<String> {
    header_values
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The value of a request's cookie `name`, if present.
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    cookie_value(headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()), name)
}

/// The token of `Authorization: Bearer <token>`, if present.
pub fn bearer(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
}

/// The credentials a request carries: an API token wins over a session cookie.
pub enum Credentials {
    Token(String),
    Session(String),
    None,
}

impl Credentials {
    pub fn of(headers: &http::HeaderMap) -> Credentials {
        match (bearer(headers), cookie(headers, SESSION_COOKIE)) {
            (Some(token), _) => Credentials::Token(token),
            (None, Some(session)) => Credentials::Session(session),
            (None, None) => Credentials::None,
        }
    }
}

/// Who is calling: a signed-in user (browser) or a token's owner (API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// Refuses with 403 unless the actor's role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), EngineError> {
        if self.role.may(action) {
            Ok(())
        } else {
            Err(EngineError::Forbidden {
                role: self.role.to_string(),
                action: action.describe(),
                needed: action.minimum_role().to_string(),
            })
        }
    }
}

/// A fresh secret: `prefix` + 64 hex characters (256 random bits).
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, EngineError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::Internal(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_others() {
        assert_eq!(cookie_value(["a=1; usher_session=xyz", "b=2"], SESSION_COOKIE), Some("xyz".into()));
        assert_eq!(cookie_value(["a=1"], SESSION_COOKIE), None);
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = new_token("usher_");
        assert_ne!(a, new_token("usher_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
    }
}
