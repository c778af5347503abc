//! Pools and "what is free".

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use macpool_api::dto::*;
use macpool_api::{Problem, convert};
use macpool_core::authority::Read;
use macpool_store::Store;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::{AppState, input};

/// Most addresses `GET …/available` lists when no limit is given.
const DEFAULT_AVAILABLE_LIMIT: u64 = 65_536;

/// List pools with their counters.
#[utoipa::path(get, path = "/pools", tag = "pools",
    responses((status = 200, body = [PoolInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn list_pools(
    State(st): State<Arc<AppState>>,
    c: Caller,
) -> ApiResult<Json<Vec<PoolInfo>>> {
    c.may_read(Read::Fleet("pools"))?;
    Ok(Json(
        st.store.pools().await?.iter().map(convert::pool).collect(),
    ))
}

/// Create a pool.
#[utoipa::path(post, path = "/pools", tag = "pools", request_body = PoolCreate,
    responses((status = 201, body = PoolInfo), (status = 400, description = "invalid-input, invalid-range", body = Problem),
        (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem), (status = 409, description = "range-overlap or pool-exists", body = Problem)))]
pub async fn create_pool(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(body): Json<PoolCreate>,
) -> ApiResult<(StatusCode, Json<PoolInfo>)> {
    let view = create_pool_in(&st, &c, body).await?;
    Ok((StatusCode::CREATED, Json(convert::pool(&view))))
}

pub(crate) async fn create_pool_in(
    st: &AppState,
    c: &Caller,
    body: PoolCreate,
) -> ApiResult<macpool_core::authority::PoolView> {
    c.require_admin()?;
    let spec = input::pool_spec(body)?;
    Ok(st.store.create_pool(c.actor(), spec).await?)
}

/// One pool with its counters.
#[utoipa::path(get, path = "/pools/{name}", tag = "pools", params(("name" = String, Path)),
    responses((status = 200, body = PoolInfo), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem), (status = 404, description = "not-found: no such pool", body = Problem)))]
pub async fn get_pool(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<PoolInfo>> {
    c.may_read(Read::Fleet("pools"))?;
    Ok(Json(convert::pool(&st.store.pool(name).await?)))
}

/// Change a pool's ranges or policy.
#[utoipa::path(patch, path = "/pools/{name}", tag = "pools", params(("name" = String, Path)), request_body = PoolEditBody,
    responses((status = 200, body = PoolInfo), (status = 400, description = "invalid-input, invalid-range", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such pool", body = Problem), (status = 409, description = "range-overlap, range-in-use", body = Problem)))]
pub async fn edit_pool(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(name): Path<String>,
    Json(body): Json<PoolEditBody>,
) -> ApiResult<Json<PoolInfo>> {
    Ok(Json(convert::pool(
        &edit_pool_in(&st, &c, name, body).await?,
    )))
}

pub(crate) async fn edit_pool_in(
    st: &AppState,
    c: &Caller,
    name: String,
    body: PoolEditBody,
) -> ApiResult<macpool_core::authority::PoolView> {
    c.require_admin()?;
    let edit = input::pool_edit(body)?;
    Ok(st.store.edit_pool(c.actor(), name, edit).await?)
}

/// Delete a pool; refused while it has leases or holds.
#[utoipa::path(delete, path = "/pools/{name}", tag = "pools", params(("name" = String, Path)),
    responses((status = 204), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem), (status = 404, description = "not-found: no such pool", body = Problem),
        (status = 409, description = "pool-in-use", body = Problem)))]
pub async fn delete_pool(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    st.store.delete_pool(c.actor(), name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The free addresses of a pool, as runs.
#[utoipa::path(get, path = "/pools/{name}/available", tag = "pools", params(("name" = String, Path), AvailableQuery),
    responses((status = 200, body = AvailableInfo), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem), (status = 404, description = "not-found: no such pool", body = Problem)))]
pub async fn list_available(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<AvailableQuery>,
) -> ApiResult<Json<AvailableInfo>> {
    c.may_read(Read::Fleet("pools"))?;
    let limit = q.limit.unwrap_or(DEFAULT_AVAILABLE_LIMIT);
    Ok(Json(convert::available(
        &st.store.available(name, limit).await?,
    )))
}

/// Allocate one (or `count`) free addresses of this pool.
#[utoipa::path(post, path = "/pools/{name}/available", tag = "pools", params(("name" = String, Path)), request_body = AllocateBody,
    responses((status = 201, body = AllocationResult), (status = 200, description = "the owner already had its lease", body = AllocationResult),
        (status = 400, description = "invalid-input, invalid-mac, mac-outside-pool", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such pool", body = Problem),
        (status = 409, description = "pool-exhausted, mac-in-use, mac-cooling, owner-conflict", body = Problem)))]
pub async fn allocate_available(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(name): Path<String>,
    Json(body): Json<AllocateBody>,
) -> ApiResult<(StatusCode, Json<AllocationResult>)> {
    // The path names the pool; a body naming another one is a mistake, never silently ignored.
    if let Some(other) = body.pool.as_deref().filter(|p| *p != name) {
        return Err(ApiError::bad_request(
            "invalid-input",
            format!("pool: the path names pool '{name}', the body '{other}'"),
        ));
    }
    crate::routes::leases::allocate_in(&st, &c, name, body).await
}
