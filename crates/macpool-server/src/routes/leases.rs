//! Leases, holds, MAC status and history.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use macpool_api::dto::*;
use macpool_api::{LIMIT_CAPPED_HEADER, MAX_PAGE, NEXT_CURSOR_HEADER, Problem, convert};
use macpool_core::authority::{
    HoldRequest, LeaseFilter, Read, ReleaseSelector, Released, UnholdRequest,
};
use macpool_core::lease::Hold;
use macpool_store::{HistoryFilter, Store};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::{AppState, input};

/// History rows one request returns when it names no limit.
const DEFAULT_HISTORY: u32 = 100;
/// Leases one request returns when it names no limit.
const DEFAULT_LEASES: u32 = 1_000;

/// The limit a page applies: `asked` (or `default`), at most [`MAX_PAGE`]; and whether it was cut.
fn page_limit(asked: Option<u32>, default: u32) -> (u32, bool) {
    let asked = asked.unwrap_or(default).max(1);
    (asked.min(MAX_PAGE), asked > MAX_PAGE)
}

/// The headers of a listing page: the next page's cursor when more follow, the applied limit
/// when the asked one was cut.
fn page_headers(next: Option<String>, limit: u32, capped: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert(NEXT_CURSOR_HEADER, v);
    }
    if capped {
        headers.insert(LIMIT_CAPPED_HEADER, HeaderValue::from(limit));
    }
    headers
}

pub(crate) async fn allocate_in(
    st: &AppState,
    c: &Caller,
    pool: String,
    body: AllocateBody,
) -> ApiResult<(StatusCode, Json<AllocationResult>)> {
    c.require_writer()?;
    let req = input::allocate(pool.clone(), body)?;
    let allocations = st.store.allocate(c.actor(), req).await?;
    let new = allocations.iter().filter(|a| !a.existing).count() as u64;
    st.metrics.count_allocations(&pool, new);
    let status = if new > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(convert::allocations(&allocations))))
}

/// List live leases in MAC order, a page at a time; page with `after`.
#[utoipa::path(get, path = "/leases", tag = "leases", params(LeaseQuery),
    responses((status = 200, body = [LeaseInfo], headers(
        ("Macpool-Next-Cursor" = String, description = "more leases follow: pass this as `after`"),
        ("Macpool-Limit-Capped" = u32, description = "the asked limit was above 10000: the limit applied"))),
        (status = 400, description = "invalid-input: a bad cursor or parameter", body = Problem), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn list_leases(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Query(q): Query<LeaseQuery>,
) -> ApiResult<(HeaderMap, Json<Vec<LeaseInfo>>)> {
    c.may_read(Read::Fleet("leases"))?;
    let filter = LeaseFilter {
        pool: q.pool,
        host: q.host,
        vm_id: q.vm,
    };
    let (limit, capped) = page_limit(q.limit, DEFAULT_LEASES);
    let after = q.after.as_deref().map(input::lease_cursor).transpose()?;
    let page = st.store.lease_page(filter, after, limit as usize).await?;
    let next = page
        .more
        .then(|| {
            page.leases
                .last()
                .map(|l| input::lease_cursor_of(&macpool_store::LeaseKey::of(l)))
        })
        .flatten();
    Ok((
        page_headers(next, limit, capped),
        Json(page.leases.iter().map(convert::lease).collect()),
    ))
}

/// Allocate a MAC for a VM adapter (idempotent per `vm_id` + `adapter_id`).
#[utoipa::path(post, path = "/leases", tag = "leases", request_body = AllocateBody,
    responses((status = 201, body = AllocationResult), (status = 200, description = "the owner already had its lease", body = AllocationResult),
        (status = 400, description = "invalid-input, invalid-mac, mac-outside-pool", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such pool", body = Problem),
        (status = 409, description = "pool-exhausted, mac-in-use, mac-cooling, owner-conflict", body = Problem)))]
pub async fn allocate(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(mut body): Json<AllocateBody>,
) -> ApiResult<(StatusCode, Json<AllocationResult>)> {
    let pool = body
        .pool
        .take()
        .ok_or_else(|| ApiError::bad_request("invalid-input", "'pool' is required"))?;
    allocate_in(&st, &c, pool, body).await
}

/// Release leases by MAC or by VM; the MAC cools down before reuse.
#[utoipa::path(post, path = "/leases/release", tag = "leases", request_body = ReleaseBody,
    responses((status = 200, body = [ReleasedInfo]), (status = 400, description = "invalid-input, invalid-mac", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such lease", body = Problem), (status = 409, description = "ambiguous", body = Problem)))]
pub async fn release(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(body): Json<ReleaseBody>,
) -> ApiResult<Json<Vec<ReleasedInfo>>> {
    let released = release_in(&st, &c, body).await?;
    Ok(Json(released.iter().map(convert::released).collect()))
}

/// Releases what `body` selects: the API's and the dashboard's one way to release.
pub(crate) async fn release_in(
    st: &AppState,
    c: &Caller,
    body: ReleaseBody,
) -> ApiResult<Vec<Released>> {
    c.require_writer()?;
    let selector = match (body.mac, body.vm_id) {
        (Some(m), vm_id) => {
            if body.adapter_id.is_some() {
                return Err(ApiError::bad_request(
                    "invalid-input",
                    "'adapter_id' goes with 'vm_id', not with 'mac'",
                ));
            }
            ReleaseSelector::Mac {
                mac: input::mac("mac", &m)?,
                vm_id,
            }
        }
        (None, Some(vm_id)) => ReleaseSelector::Vm {
            vm_id,
            adapter_id: body.adapter_id,
        },
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid-input",
                "give 'mac' or 'vm_id'",
            ));
        }
    };
    Ok(st.store.release(c.actor(), selector).await?)
}

/// Everything known about one MAC: pool, leases, holds, cooldown.
#[utoipa::path(get, path = "/macs/{mac}", tag = "leases", params(("mac" = String, Path, description = "any MAC spelling")),
    responses((status = 200, body = MacInfo), (status = 400, description = "invalid-mac", body = Problem)))]
pub async fn mac_info(
    State(st): State<Arc<AppState>>,
    _c: Caller,
    Path(mac): Path<String>,
) -> ApiResult<Json<MacInfo>> {
    let mac = input::mac("mac", &mac)?;
    Ok(Json(convert::mac_status(&st.store.mac_status(mac).await?)))
}

/// List holds.
#[utoipa::path(get, path = "/holds", tag = "holds", params(HoldQuery), responses((status = 200, body = [HoldInfo]), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn list_holds(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Query(q): Query<HoldQuery>,
) -> ApiResult<Json<Vec<HoldInfo>>> {
    c.may_read(Read::Fleet("holds"))?;
    Ok(Json(
        st.store
            .holds(q.vm)
            .await?
            .iter()
            .map(convert::hold)
            .collect(),
    ))
}

/// Keep a MAC out of circulation for a VM (checkpoint, template, backup, departed).
#[utoipa::path(post, path = "/holds", tag = "holds", request_body = HoldBody,
    responses((status = 201, body = HoldInfo), (status = 400, description = "invalid-input, invalid-mac", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 409, description = "mac-in-use", body = Problem)))]
pub async fn place_hold(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(body): Json<HoldBody>,
) -> ApiResult<(StatusCode, Json<HoldInfo>)> {
    let hold = hold_in(&st, &c, body).await?;
    Ok((StatusCode::CREATED, Json(convert::hold(&hold))))
}

pub(crate) async fn hold_in(st: &AppState, c: &Caller, body: HoldBody) -> ApiResult<Hold> {
    c.require_writer()?;
    let req = HoldRequest {
        mac: input::mac("mac", &body.mac)?,
        vm_id: body.vm_id,
        reason: input::hold_reason(&body.reason)?,
        reference: body.reference.unwrap_or_default(),
    };
    Ok(st.store.hold(c.actor(), req).await?)
}

/// Remove a VM's holds on a MAC; the MAC cools down if nothing else keeps it.
#[utoipa::path(post, path = "/holds/remove", tag = "holds", request_body = UnholdBody,
    responses((status = 200, body = [HoldInfo]), (status = 400, description = "invalid-input, invalid-mac", body = Problem), (status = 403, description = "forbidden: the token's role or host may not do this", body = Problem),
        (status = 404, description = "not-found: no such hold", body = Problem)))]
pub async fn remove_hold(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Json(body): Json<UnholdBody>,
) -> ApiResult<Json<Vec<HoldInfo>>> {
    let removed = unhold_in(&st, &c, body).await?;
    Ok(Json(removed.iter().map(convert::hold).collect()))
}

pub(crate) async fn unhold_in(st: &AppState, c: &Caller, body: UnholdBody) -> ApiResult<Vec<Hold>> {
    c.require_writer()?;
    let req = UnholdRequest {
        mac: input::mac("mac", &body.mac)?,
        vm_id: body.vm_id,
        reason: body.reason.as_deref().map(input::hold_reason).transpose()?,
        reference: body.reference,
    };
    Ok(st.store.unhold(c.actor(), req).await?)
}

/// The history of a MAC or a VM (or everything), newest first; page with `before`.
#[utoipa::path(get, path = "/history", tag = "history", params(HistoryQuery),
    responses((status = 200, body = [HistoryInfo], headers(
        ("Macpool-Next-Cursor" = u64, description = "older entries follow: pass this as `before`"),
        ("Macpool-Limit-Capped" = u32, description = "the asked limit was above 10000: the limit applied"))),
        (status = 400, description = "invalid-mac, invalid-input", body = Problem), (status = 403, description = "forbidden: an agent token (agents read one MAC and their own host's blocks and inventory)", body = Problem)))]
pub async fn history(
    State(st): State<Arc<AppState>>,
    c: Caller,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<(HeaderMap, Json<Vec<HistoryInfo>>)> {
    c.may_read(Read::Fleet("the history"))?;
    let (limit, capped) = page_limit(q.limit, DEFAULT_HISTORY);
    let filter = HistoryFilter {
        mac: q.mac.as_deref().map(|m| input::mac("mac", m)).transpose()?,
        vm_id: q.vm,
        // One more than the page: whether it exists says whether another page follows.
        limit: limit + 1,
        before: q.before,
        ..HistoryFilter::default()
    };
    let mut rows = st.store.history(filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok((
        page_headers(next, limit, capped),
        Json(
            rows.iter()
                .map(|r| convert::history(r.id, &r.entry))
                .collect(),
        ),
    ))
}
