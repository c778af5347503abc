//! The in-process app the test files drive: a SQLite store in a temporary directory with one
//! admin, one agent (host `h1`) and one reader token, or the tokens a test asks for.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use macpool_core::authority::Actor;
use macpool_server::auth::{TokenCache, hash_secret};
use macpool_server::metrics::Metrics;
use macpool_server::{AppState, ServerConfig, app};
use macpool_store::sqlite::SqliteStore;
use macpool_store::{AnyStore, Role, Store, TokenRecord};

pub const ADMIN: &str = "mp_adm_secretadmin";
pub const AGENT: &str = "mp_agt_secretagent";
pub const READER: &str = "mp_rdr_secretreader";

pub fn token(id: &str, secret: &str, role: Role, host: Option<&str>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("{}-test", role.name()),
        role,
        host: host.map(str::to_string),
        secret_hash: hash_secret(secret),
        created: macpool_core::Timestamp(0),
        revoked: None,
    }
}

/// The whole app and the directory its store lives in (dropped with it).
pub async fn app_with_tokens() -> (axum::Router, Arc<AppState>, tempfile::TempDir) {
    app_with(vec![
        token("adm", "secretadmin", Role::Admin, None),
        token("agt", "secretagent", Role::Agent, Some("h1")),
        token("rdr", "secretreader", Role::Reader, None),
    ])
    .await
}

/// The whole app with exactly these tokens (stored, and in the cache).
pub async fn app_with(
    tokens: Vec<TokenRecord>,
) -> (axum::Router, Arc<AppState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(dir.path()).unwrap());
    for t in &tokens {
        store
            .save_token(Actor::admin("test"), t.clone())
            .await
            .unwrap();
    }
    let state = Arc::new(AppState {
        store,
        tokens: TokenCache::new(tokens),
        metrics: Metrics::default(),
        config: ServerConfig::default(),
        sessions: Default::default(),
    });
    (app(state.clone()), state, dir)
}
