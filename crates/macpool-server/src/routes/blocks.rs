//! Blocks delegated to hosts' native dynamic allocators (the agent's `delegate` strategy).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use macpool_api::dto::*;
use macpool_api::{Problem, convert};
use macpool_core::authority::{BlockClaim, BlockFilter, Read};
use macpool_store::Store;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{Json, Path};
use crate::{AppState, input};

/// Claim a block for the host (pending), or get its pending block back (200, `existing`).
#[utoipa::path(post, path = "/hosts/{host}/blocks", tag = "blocks", request_body = ClaimBlockBody,
    params(("host" = String, Path, description = "the host whose allocator gets the block")),
    responses((status = 201, body = BlockInfo), (status = 200, description = "the host's existing pending block", body = BlockInfo),
        (status = 400, description = "invalid-input", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such pool", body = Problem),
        (status = 409, description = "pool-exhausted: no free run of that size", body = Problem)))]
pub async fn claim_block(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(host): Path<String>,
    Json(body): Json<ClaimBlockBody>,
) -> ApiResult<(StatusCode, Json<BlockInfo>)> {
    c.require_writer()?;
    let claim = BlockClaim {
        host: input::host(host)?,
        pool: body.pool,
        size: body.size,
    };
    let (block, existing) = st.store.claim_block(c.actor(), claim).await?;
    let status = if existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(convert::block(&block, existing))))
}

/// The host's blocks that are not free yet.
#[utoipa::path(get, path = "/hosts/{host}/blocks", tag = "blocks",
    params(("host" = String, Path, description = "host name")),
    responses((status = 200, body = [BlockInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn host_blocks(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(host): Path<String>,
) -> ApiResult<Json<Vec<BlockInfo>>> {
    c.may_read(Read::Host(&host))?;
    let filter = BlockFilter {
        host: Some(input::host(host)?),
        pool: None,
    };
    Ok(Json(blocks(&st, filter).await?))
}

/// Every block that is not free yet, across hosts.
#[utoipa::path(get, path = "/blocks", tag = "blocks",
    responses((status = 200, body = [BlockInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn list_blocks(
    State(st): State<Arc<AppState>>,
    c: Caller,
) -> ApiResult<Json<Vec<BlockInfo>>> {
    c.may_read(Read::Fleet("every host's blocks"))?;
    Ok(Json(blocks(&st, BlockFilter::default()).await?))
}

async fn blocks(st: &AppState, filter: BlockFilter) -> ApiResult<Vec<BlockInfo>> {
    Ok(st
        .store
        .blocks(filter)
        .await?
        .iter()
        .map(|b| convert::block(b, false))
        .collect())
}

/// The host applied the block as its dynamic range: active; its previous active block drains.
#[utoipa::path(post, path = "/hosts/{host}/blocks/{id}/activate", tag = "blocks",
    params(("host" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = BlockInfo), (status = 400, description = "invalid-input: the block is draining", body = Problem),
        (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem), (status = 404, description = "not-found: the host has no such block", body = Problem)))]
pub async fn activate_block(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path((host, id)): Path<(String, u64)>,
) -> ApiResult<Json<BlockInfo>> {
    c.require_writer()?;
    let b = st
        .store
        .activate_block(c.actor(), input::host(host)?, id)
        .await?;
    Ok(Json(convert::block(&b, false)))
}

/// Stop delegating the block (e.g. the host leaves); it returns to the pool once unused.
#[utoipa::path(post, path = "/hosts/{host}/blocks/{id}/drain", tag = "blocks",
    params(("host" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = BlockInfo), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: the host has no such block", body = Problem)))]
pub async fn drain_block(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path((host, id)): Path<(String, u64)>,
) -> ApiResult<Json<BlockInfo>> {
    c.require_writer()?;
    let b = st
        .store
        .drain_block(c.actor(), input::host(host)?, id)
        .await?;
    Ok(Json(convert::block(&b, false)))
}
