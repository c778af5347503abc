//! The authority's HTTP server: the JSON API under `/api/v1`, `/healthz`, `/metrics` and the
//! OpenAPI document. Handlers translate between DTOs and the store; they hold no rules of their
//! own (those live in `macpool-core`).

pub mod auth;
pub mod error;
mod extract;
mod head;
mod input;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod serve;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use macpool_store::AnyStore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::auth::TokenCache;
use crate::error::{ApiError, ErrorSlug};
use crate::metrics::Metrics;

/// Largest request body accepted; every API body but an inventory is far smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest inventory accepted: a host's whole view (thousands of VMs and checkpoints).
pub const MAX_INVENTORY_BYTES: usize = 16 * 1024 * 1024;
/// Longest request URI read (path and query); every API URI is far shorter. Below hyper's own
/// limit (64 KiB), so that the answer is a problem, not hyper's bodiless 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes of request headers read (names and values); below hyper's own limit.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Settings that change how requests are answered.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Serve /metrics without a token.
    pub public_metrics: bool,
    /// Served over TLS: dashboard cookies are marked `Secure`.
    pub tls: bool,
}

pub struct AppState {
    pub store: AnyStore,
    pub tokens: TokenCache,
    pub metrics: Metrics,
    pub config: ServerConfig,
    /// Dashboard sessions (in memory: a restart signs everyone out).
    pub sessions: ui::session::Sessions,
}

/// The API routes with their OpenAPI description; one list feeds both.
fn api() -> OpenApiRouter<Arc<AppState>> {
    use routes::{blocks, inventory, leases, pools, tokens};
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(pools::list_pools, pools::create_pool))
        .routes(routes!(
            pools::get_pool,
            pools::edit_pool,
            pools::delete_pool
        ))
        .routes(routes!(pools::list_available, pools::allocate_available))
        .routes(routes!(leases::list_leases, leases::allocate))
        .routes(routes!(leases::release))
        .routes(routes!(leases::mac_info))
        .routes(routes!(leases::list_holds, leases::place_hold))
        .routes(routes!(leases::remove_hold))
        .routes(routes!(leases::history))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(
            routes!(inventory::put_inventory, inventory::get_inventory)
                .layer(DefaultBodyLimit::max(MAX_INVENTORY_BYTES)),
        )
        .routes(routes!(inventory::list_hosts))
        .routes(routes!(inventory::conflicts))
        .routes(routes!(blocks::claim_block, blocks::host_blocks))
        .routes(routes!(blocks::list_blocks))
        .routes(routes!(blocks::activate_block))
        .routes(routes!(blocks::drain_block))
}

/// The API router and its finished OpenAPI document.
fn api_parts() -> (Router<Arc<AppState>>, serde_json::Value) {
    let (router, doc) = api().split_for_parts();
    let mut doc = openapi::finish(doc);
    doc["servers"] = serde_json::json!([{ "url": macpool_api::API_PREFIX }]);
    (router, doc)
}

/// The OpenAPI document of the API as served, paths relative to `/api/v1`.
pub fn openapi_document() -> serde_json::Value {
    api_parts().1
}

/// The whole application; tests drive it without a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let (api_router, doc) = api_parts();
    let doc = Arc::new(doc);
    Router::new()
        .nest(macpool_api::API_PREFIX, api_router)
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(ui::router())
        .route("/healthz", get(routes::system::healthz))
        .route("/metrics", get(routes::system::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(limit_head))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn no_route(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-route",
        format!(
            "no endpoint {} {}; see /api/v1/openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Refuses request heads larger than the API reads, with a problem like every other error.
async fn limit_head(req: Request, next: Next) -> Response {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request URI is {uri} bytes long; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the request headers are {headers} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Times every request and counts error responses by problem type.
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let res = next.run(req).await;
    st.metrics.observe_request(started.elapsed());
    if let Some(ErrorSlug(slug)) = res.extensions().get::<ErrorSlug>() {
        st.metrics.count_error(slug);
    } else if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        st.metrics.count_error("payload-too-large");
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            extract::too_large(),
        )
        .into_response();
    }
    res
}
