//! `macpool serve`: opens the store, makes sure an admin token exists, listens (plain HTTP or
//! TLS) and shuts down gracefully on SIGTERM / Ctrl-C, letting in-flight requests finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use macpool_core::authority::Actor;
use macpool_store::{AnyStore, Location, Role, Store, TokenRecord};

use crate::auth::{self, BOOTSTRAP_ID, MIN_BOOTSTRAP_LEN, TokenCache};
use crate::metrics::Metrics;
use crate::{AppState, ServerConfig, app};

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// `sqlite:DIR` or `postgres://…`.
    pub database: Location,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub public_metrics: bool,
    /// From `MACPOOL_BOOTSTRAP_TOKEN`: the admin token to create on an empty store.
    pub bootstrap_token: Option<String>,
}

pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let store = AnyStore::open(&opts.database)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure_admin_token(&store, opts.bootstrap_token.as_deref()).await?;
    let tokens = TokenCache::new(store.tokens().await?);
    let state = Arc::new(AppState {
        store,
        tokens,
        metrics: Metrics::default(),
        config: ServerConfig {
            public_metrics: opts.public_metrics,
            tls: tls.is_some(),
        },
        sessions: Default::default(),
    });
    let router = app(state.clone());
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "macpool listening on {scheme}://{addr} (store {})",
        opts.database
    );
    tracing::info!(%addr, "listening");

    match tls {
        None => {
            let listener = crate::head::Listener(tokio::net::TcpListener::from_std(listener)?);
            // The peer address feeds the failed-token throttle (auth::Throttle).
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<crate::head::Peer>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        }
        Some((cert, key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load TLS certificate {} / key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                h.graceful_shutdown(Some(Duration::from_secs(30)));
            });
            axum_server::from_tcp_rustls(listener, config)
                .map(crate::head::Acceptor)
                .handle(handle)
                .serve(router.into_make_service_with_connect_info::<SocketAddr>())
                .await?;
        }
    }
    tracing::info!("shutting down: finishing the store's last batch");
    drop(state);
    println!("macpool stopped");
    Ok(())
}

/// Creates the first admin token on a store that has none, and prints it once.
async fn ensure_admin_token(store: &AnyStore, bootstrap: Option<&str>) -> anyhow::Result<()> {
    if !store.tokens().await?.is_empty() {
        return Ok(());
    }
    let (id, token, secret_hash) = match bootstrap {
        Some(t) if t.len() < MIN_BOOTSTRAP_LEN => {
            bail!("MACPOOL_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_LEN} characters")
        }
        Some(t) => match t.strip_prefix("mp_").and_then(|r| r.split_once('_')) {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                (id.to_string(), t.to_string(), auth::hash_secret(secret))
            }
            _ => (
                BOOTSTRAP_ID.to_string(),
                t.to_string(),
                auth::hash_secret(t),
            ),
        },
        None => auth::generate(),
    };
    store
        .save_token(
            Actor::admin("bootstrap"),
            TokenRecord {
                id,
                name: "bootstrap-admin".into(),
                role: Role::Admin,
                host: None,
                secret_hash,
                created: macpool_store::now(),
                revoked: None,
            },
        )
        .await?;
    if bootstrap.is_none() {
        println!("created the first admin token; it is shown only this once:\n\n    {token}\n");
        println!("use it with: export MACPOOL_TOKEN={token}");
    } else {
        println!("created the first admin token from MACPOOL_BOOTSTRAP_TOKEN");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (how service managers stop a process).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
