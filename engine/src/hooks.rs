//! Push webhooks: a git host tells Usher about a push, authenticated by the project's
//! webhook secret instead of a token (GitLab sends it in `X-Gitlab-Token`; GitHub, Gitea
//! and Forgejo sign the body with it, `X-Hub-Signature-256: sha256=<HMAC-SHA256>`), and a
//! pipeline starts at the pushed commit through the same engine function as
//! `POST …/pipelines` — so auto-cancel of superseded pipelines applies as always.
//! Secrets and signatures are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use usher_core::api::{CreatePipeline, Pipeline};
use usher_core::roles::Role;

use crate::{Actor, Engine, EngineError};

/// How a push request proves it knows the project's webhook secret.
pub enum PushAuth<'a> {
    /// `X-Gitlab-Token: <secret>`.
    Token(&'a str),
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Signature(&'a str),
    None,
}

impl Engine {
    /// Starts a pipeline for a pushed branch or tag; None for a deletion (nothing runs).
    /// 401 when the project has no webhook secret or the request does not prove it.
    pub async fn receive_push(&self, project_id: i64, auth: PushAuth<'_>, body: &[u8]) -> Result<Option<Pipeline>, EngineError> {
        let secret = self
            .store()
            .project_secrets(project_id)
            .await?
            .webhook_secret
            .ok_or(EngineError::Unauthorized)?;
        let genuine = match auth {
            // Hashing both sides first makes the comparison independent of their lengths.
            PushAuth::Token(token) => bool::from(Sha256::digest(token.as_bytes()).ct_eq(&Sha256::digest(secret.as_bytes()))),
            PushAuth::Signature(signature) => verify_signature(&secret, body, signature),
            PushAuth::None => false,
        };
        if !genuine {
            return Err(EngineError::Unauthorized);
        }
        let push = usher_core::push::parse_push(body).map_err(EngineError::BadRequest)?;
        let Some(sha) = push.sha else { return Ok(None) };
        let pusher = Actor {
            user_id: 0,
            name: format!("push:{}", push.pusher.as_deref().unwrap_or("webhook")),
            role: Role::Developer,
        };
        let request = CreatePipeline {
            git_ref: push.git_ref,
            sha: Some(sha),
            ci_config: None,
        };
        match self
            .create_pipeline_from(&pusher, project_id, request, crate::pipeline_source::Origin::Push)
            .await
        {
            Ok(pipeline) => Ok(Some(pipeline)),
            // The file's rules make no pipeline of this push: nothing to do.
            Err(EngineError::NoPipeline(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn verify_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_body_and_secret() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
        mac.update(b"Hello, World!");
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        // GitHub's documented example.
        assert_eq!(signature, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        assert!(verify_signature("It's a Secret to Everybody", b"Hello, World!", &signature));
        assert!(!verify_signature("It's a Secret to Everybody", b"Hello, World?", &signature));
        assert!(!verify_signature("another secret", b"Hello, World!", &signature));
        assert!(!verify_signature("It's a Secret to Everybody", b"Hello, World!", "sha1=abc"));
    }
}
