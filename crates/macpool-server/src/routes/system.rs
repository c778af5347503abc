//! Health and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use macpool_api::dto::Health;
use macpool_core::authority::Read;
use macpool_store::Store;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::Json;

/// Liveness: the process is up and its store answers.
pub async fn healthz(State(st): State<Arc<AppState>>) -> ApiResult<Json<Health>> {
    st.store.pools().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

/// Prometheus metrics; needs a token unless the server was started with `--public-metrics`.
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    caller: Result<Caller, crate::error::ApiError>,
) -> ApiResult<impl IntoResponse> {
    match &caller {
        Err(_) if !st.config.public_metrics => {
            return Err(crate::error::ApiError::unauthorized(
                "metrics need a token (or start the server with --public-metrics)",
            ));
        }
        Ok(c) if !st.config.public_metrics => c.may_read(Read::Fleet("metrics"))?,
        _ => {}
    }
    let scrape = crate::metrics::Scrape {
        gauges: st.store.gauges().await?,
        store: st.store.stats(),
    };
    let body = st.metrics.render(&scrape);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4".parse().unwrap(),
    );
    Ok((headers, body))
}
