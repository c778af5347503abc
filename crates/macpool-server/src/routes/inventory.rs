//! Host inventories, the hosts that reported them, and the conflicts derived from them.

use std::sync::Arc;

use axum::extract::State;
use macpool_api::dto::*;
use macpool_api::{Problem, convert};
use macpool_core::authority::Read;
use macpool_store::Store;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{Json, Path};
use crate::{AppState, input};

/// Report a host's whole inventory; the authority binds, holds and releases to match it.
#[utoipa::path(put, path = "/hosts/{host}/inventory", tag = "inventory", request_body = InventoryBody,
    params(("host" = String, Path, description = "the host the inventory describes")),
    responses((status = 200, body = InventoryResult), (status = 400, description = "invalid-input, invalid-mac, invalid-range", body = Problem),
        (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 409, description = "stale-generation", body = Problem)))]
pub async fn put_inventory(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(host): Path<String>,
    Json(body): Json<InventoryBody>,
) -> ApiResult<Json<InventoryResult>> {
    c.require_writer()?;
    let (inv, generation) = input::inventory(&input::host(host)?, body)?;
    let outcome = st.store.put_inventory(c.actor(), inv, generation).await?;
    Ok(Json(convert::inventory_outcome(&outcome)))
}

/// The latest inventory the authority accepted from a host.
#[utoipa::path(get, path = "/hosts/{host}/inventory", tag = "inventory",
    params(("host" = String, Path, description = "host name")),
    responses((status = 200, body = InventoryInfo), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem), (status = 404, description = "not-found: no inventory from that host", body = Problem)))]
pub async fn get_inventory(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Path(host): Path<String>,
) -> ApiResult<Json<InventoryInfo>> {
    let host = input::host(host)?;
    c.may_read(Read::Host(&host))?;
    Ok(Json(convert::inventory(&st.store.inventory(host).await?)))
}

/// Every host that reported an inventory, by name: its dynamic range and cursor, the hosts
/// whose range overlaps it, its blocks, what it runs, and its latest report (the Hosts page).
#[utoipa::path(get, path = "/hosts", tag = "inventory",
    responses((status = 200, body = [HostInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn list_hosts(
    State(st): State<Arc<AppState>>,
    c: Caller,
) -> ApiResult<Json<Vec<HostInfo>>> {
    c.may_read(Read::Fleet("hosts"))?;
    Ok(Json(
        st.store.hosts().await?.iter().map(convert::host).collect(),
    ))
}

/// Every conflict across the hosts' latest inventories, the pools, leases and holds; each
/// claimant with its VM's power state and guard's latest action on it.
#[utoipa::path(get, path = "/conflicts", tag = "inventory",
    responses((status = 200, body = [ConflictInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn conflicts(
    State(st): State<Arc<AppState>>,
    c: Caller,
) -> ApiResult<Json<Vec<ConflictInfo>>> {
    c.may_read(Read::Fleet("conflicts"))?;
    Ok(Json(
        st.store
            .conflicts_claimed()
            .await?
            .iter()
            .map(|(c, claimants)| convert::conflict_claimed(c, claimants))
            .collect(),
    ))
}
