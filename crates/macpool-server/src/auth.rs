//! Bearer tokens with roles. A token is `mp_<id>_<secret>`: the id finds the record, the
//! secret's SHA-256 is compared in constant time. Secrets are 256 random bits, so a fast hash is
//! enough at rest (no password stretching needed); only the hash is ever stored.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use macpool_core::authority::{Actor, Scope};
use macpool_store::{Role, Store, TokenRecord};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The id under which a bootstrap token that is not in `mp_<id>_<secret>` form is stored.
pub const BOOTSTRAP_ID: &str = "bootstrap";
/// How long another replica's token changes may take to be seen here.
const REFRESH: Duration = Duration::from_secs(5);
/// Shortest bootstrap token accepted from `MACPOOL_BOOTSTRAP_TOKEN`.
pub const MIN_BOOTSTRAP_LEN: usize = 24;

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh token: `(id, full token string, hash of its secret)`.
pub fn generate() -> (String, String, [u8; 32]) {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = format!("mp_{id}_{secret}");
    (id, token, hash_secret(&secret))
}

/// Splits a presented token into the record id to look up and the secret to hash.
fn split(token: &str) -> (&str, &str) {
    if let Some(rest) = token.strip_prefix("mp_")
        && let Some((id, secret)) = rest.split_once('_')
        && !id.is_empty()
        && !secret.is_empty()
    {
        return (id, secret);
    }
    (BOOTSTRAP_ID, token)
}

/// The tokens, cached in memory so a request does not wait for the store.
pub struct TokenCache {
    inner: RwLock<(HashMap<String, TokenRecord>, Instant)>,
}

impl TokenCache {
    pub fn new(tokens: Vec<TokenRecord>) -> TokenCache {
        TokenCache {
            inner: RwLock::new((index(tokens), Instant::now())),
        }
    }

    pub fn replace(&self, tokens: Vec<TokenRecord>) {
        *self.inner.write().unwrap() = (index(tokens), Instant::now());
    }

    fn is_stale(&self) -> bool {
        self.inner.read().unwrap().1.elapsed() > REFRESH
    }

    /// The record of a presented token, if it is valid and not revoked.
    pub fn verify(&self, presented: &str) -> Option<TokenRecord> {
        let (id, secret) = split(presented);
        let hash = hash_secret(secret);
        let guard = self.inner.read().unwrap();
        let record = guard.0.get(id)?;
        let equal: bool = record.secret_hash.ct_eq(&hash).into();
        (equal && record.revoked.is_none()).then(|| record.clone())
    }
}

fn index(tokens: Vec<TokenRecord>) -> HashMap<String, TokenRecord> {
    tokens.into_iter().map(|t| (t.id.clone(), t)).collect()
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    /// The actor the core sees: admins act on everything, agents on their host.
    pub fn actor(&self) -> Actor {
        match (self.token.role, &self.token.host) {
            (Role::Agent, Some(h)) => Actor {
                name: format!("{} (agent {h})", self.token.name),
                scope: Scope::Host(h.clone()),
            },
            _ => Actor {
                name: self.token.name.clone(),
                scope: Scope::All,
            },
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.token.role {
            Role::Admin => Ok(()),
            r => Err(ApiError::forbidden(format!(
                "this needs an admin token; '{}' is a {} token",
                self.token.name,
                r.name()
            ))),
        }
    }

    /// Admins and agents may change leases and holds; readers may not.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        match self.token.role {
            Role::Admin | Role::Agent => Ok(()),
            Role::Reader => Err(ApiError::forbidden(format!(
                "'{}' is a reader token and cannot change anything",
                self.token.name
            ))),
        }
    }
}

impl FromRequestParts<std::sync::Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing 'Authorization: Bearer <token>' header")
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        if state.tokens.is_stale()
            && let Ok(all) = state.store.tokens().await
        {
            state.tokens.replace(all);
        }
        state
            .tokens
            .verify(token)
            .map(|token| Caller { token })
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use macpool_core::Timestamp;

    fn record(id: &str, secret: &str, revoked: bool) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: "t".into(),
            role: Role::Admin,
            host: None,
            secret_hash: hash_secret(secret),
            created: Timestamp(0),
            revoked: revoked.then_some(Timestamp(1)),
        }
    }

    #[test]
    fn generated_tokens_verify_and_wrong_ones_do_not() {
        let (id, token, hash) = generate();
        let mut r = record(&id, "x", false);
        r.secret_hash = hash;
        let cache = TokenCache::new(vec![r]);
        assert!(cache.verify(&token).is_some());
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push('0');
        if wrong == token {
            wrong.pop();
            wrong.push('1');
        }
        assert!(cache.verify(&wrong).is_none());
        assert!(cache.verify("mp_nothere_abc").is_none());
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let cache = TokenCache::new(vec![record("a1", "s", true)]);
        assert!(cache.verify("mp_a1_s").is_none());
    }

    #[test]
    fn a_free_form_bootstrap_token_is_found_under_its_id() {
        let cache = TokenCache::new(vec![record(
            BOOTSTRAP_ID,
            "my-long-bootstrap-secret-value",
            false,
        )]);
        assert!(cache.verify("my-long-bootstrap-secret-value").is_some());
        assert!(cache.verify("my-long-bootstrap-secret-valuX").is_none());
    }
}
