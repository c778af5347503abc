//! Turning request DTOs into domain values, with precise errors that name the field.

use std::time::Duration;

use macpool_api::dto::{AllocateBody, InventoryBody, PoolCreate, PoolEditBody};
use macpool_core::Timestamp;
use macpool_core::authority::{AllocateRequest, PoolEdit};
use macpool_core::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, CursorSource, HostInventory, MacKind, Vm,
    VmState,
};
use macpool_core::lease::{HoldReason, validate_field};
use macpool_core::pool::{
    AllocationOrder, DuplicatePolicy, LowWater, PoolName, PoolPolicy, PoolSpec,
};
use macpool_core::{Mac, MacRange};

use crate::error::ApiError;

pub fn mac(field: &str, s: &str) -> Result<Mac, ApiError> {
    Mac::parse(s).map_err(|e| ApiError::bad_request("invalid-mac", format!("{field}: {e}")))
}

/// A host name from a path, checked as a token's `host` and an inventory's host are.
pub fn host(s: String) -> Result<String, ApiError> {
    if s.trim().is_empty() {
        return Err(invalid("host name must not be empty".into()));
    }
    validate_field("host", &s).map_err(invalid)?;
    Ok(s)
}

/// The opaque `after` cursor of a lease listing: the hex of `MAC\nvm_id\nadapter_id` (ids hold
/// no control characters, so the newline separates them).
pub fn lease_cursor_of(k: &macpool_store::LeaseKey) -> String {
    hex::encode(format!("{}\n{}\n{}", k.mac, k.vm_id, k.adapter_id))
}

pub fn lease_cursor(s: &str) -> Result<macpool_store::LeaseKey, ApiError> {
    let bad = || {
        invalid(format!(
            "after '{s}' is not a cursor this server gave (Macpool-Next-Cursor)"
        ))
    };
    let text = hex::decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let mut parts = text.split('\n');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(mac), Some(vm_id), Some(adapter_id), None) => Ok(macpool_store::LeaseKey {
            mac: Mac::parse(mac).map_err(|_| bad())?,
            vm_id: vm_id.into(),
            adapter_id: adapter_id.into(),
        }),
        _ => Err(bad()),
    }
}

pub fn range(s: &str) -> Result<MacRange, ApiError> {
    MacRange::parse(s).map_err(|e| ApiError::bad_request("invalid-range", e.to_string()))
}

fn ranges(v: &[String]) -> Result<Vec<MacRange>, ApiError> {
    v.iter().map(|r| range(r)).collect()
}

fn invalid(msg: String) -> ApiError {
    ApiError::bad_request("invalid-input", msg)
}

pub fn cooldown(s: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| invalid(format!("cooldown '{s}': {e} (use e.g. 24h, 30m, 0s)")))?;
    if d > Duration::from_secs(3650 * 86_400) {
        return Err(invalid(format!("cooldown '{s}' is longer than ten years")));
    }
    Ok(d)
}

pub fn hold_reason(s: &str) -> Result<HoldReason, ApiError> {
    HoldReason::parse(s).map_err(invalid)
}

pub fn pool_spec(body: PoolCreate) -> Result<PoolSpec, ApiError> {
    let mut policy = PoolPolicy::default();
    if let Some(o) = &body.order {
        policy.order = AllocationOrder::parse(o).map_err(invalid)?;
    }
    if let Some(c) = &body.cooldown {
        policy.cooldown = cooldown(c)?;
    }
    if let Some(d) = &body.duplicates {
        policy.duplicates = DuplicatePolicy::parse(d).map_err(invalid)?;
    }
    if let Some(l) = &body.low_water {
        policy.low_water = LowWater::parse(l).map_err(invalid)?;
    }
    Ok(PoolSpec {
        name: PoolName::new(&body.name).map_err(invalid)?,
        ranges: ranges(&body.ranges)?,
        policy,
    })
}

pub fn pool_edit(body: PoolEditBody) -> Result<PoolEdit, ApiError> {
    Ok(PoolEdit {
        ranges: body.ranges.as_deref().map(ranges).transpose()?,
        add_ranges: ranges(&body.add_ranges)?,
        remove_ranges: ranges(&body.remove_ranges)?,
        order: body
            .order
            .as_deref()
            .map(AllocationOrder::parse)
            .transpose()
            .map_err(invalid)?,
        cooldown: body.cooldown.as_deref().map(cooldown).transpose()?,
        duplicates: body
            .duplicates
            .as_deref()
            .map(DuplicatePolicy::parse)
            .transpose()
            .map_err(invalid)?,
        low_water: body
            .low_water
            .as_deref()
            .map(LowWater::parse)
            .transpose()
            .map_err(invalid)?,
    })
}

pub fn allocate(pool: String, body: AllocateBody) -> Result<AllocateRequest, ApiError> {
    macpool_api::convert::allocate_request(pool, body)
        .map_err(|e| ApiError::bad_request("invalid-mac", format!("mac: {e}")))
}

/// Builds a domain inventory of `host` from its wire form. Errors name the VM and adapter:
/// `vms[0] (vm-1) adapters[1] 'Network Adapter' mac: …`.
pub fn inventory(host: &str, body: InventoryBody) -> Result<(HostInventory, u64), ApiError> {
    let bad = |msg: String| invalid(format!("inventory of host '{host}': {msg}"));
    let mut inv = HostInventory::new(host).map_err(|e| bad(e.to_string()))?;
    inv.cluster = body.cluster;
    for (i, ip) in body.ipv4.iter().enumerate() {
        inv.ipv4.push(
            ip.trim()
                .parse()
                .map_err(|_| bad(format!("ipv4[{i}] '{ip}' is not an IPv4 address")))?,
        );
    }
    let end = |field: &str, v: &Option<String>| -> Result<Option<Mac>, ApiError> {
        v.as_deref()
            .map(|s| {
                Mac::parse(s).map_err(|e| {
                    ApiError::bad_request(
                        "invalid-mac",
                        format!("inventory of host '{host}': {field}: {e}"),
                    )
                })
            })
            .transpose()
    };
    let range = match (
        end("range_min", &body.range_min)?,
        end("range_max", &body.range_max)?,
    ) {
        (Some(a), Some(b)) => Some(MacRange::new(a, b).map_err(|e| {
            ApiError::bad_request(
                "invalid-range",
                format!("inventory of host '{host}': range_min..range_max: {e}"),
            )
        })?),
        (None, None) => None,
        _ => return Err(bad("give both range_min and range_max, or neither".into())),
    };
    inv.set_dynamic_range(range, end("cursor", &body.cursor)?)
        .map_err(|e| bad(e.to_string()))?;
    for (i, v) in body.vms.into_iter().enumerate() {
        let state = VmState::parse(v.state.as_deref().unwrap_or(""));
        let mut vm =
            Vm::new(v.id.clone(), v.name, state).map_err(|e| bad(format!("vms[{i}]: {e}")))?;
        for (j, a) in v.adapters.into_iter().enumerate() {
            let at = format!("vms[{i}] ({}) adapters[{j}] '{}'", v.id, a.name);
            let mac = Mac::parse(&a.mac).map_err(|e| {
                ApiError::bad_request(
                    "invalid-mac",
                    format!("inventory of host '{host}': {at} mac: {e}"),
                )
            })?;
            let location = match a.checkpoint {
                None => AdapterLocation::Live,
                Some(c) => {
                    if c.id.trim().is_empty() {
                        return Err(bad(format!("{at}: checkpoint id must not be empty")));
                    }
                    let created = c
                        .created
                        .as_deref()
                        .map(|t| {
                            humantime::parse_rfc3339_weak(t)
                                .ok()
                                .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
                                .map(|d| Timestamp(d.as_millis() as u64))
                                .ok_or_else(|| {
                                    bad(format!("{at}: checkpoint created '{t}' is not RFC 3339"))
                                })
                        })
                        .transpose()?;
                    AdapterLocation::Checkpoint(Checkpoint {
                        id: c.id,
                        name: c.name,
                        kind: CheckpointType::parse(c.kind.as_deref().unwrap_or("")),
                        created,
                    })
                }
            };
            vm.adapters.push(Adapter {
                id: None,
                name: a.name,
                mac,
                kind: if a.dynamic {
                    MacKind::Dynamic
                } else {
                    MacKind::Static
                },
                location,
            });
        }
        inv.add_vm(vm).map_err(|e| bad(format!("vms[{i}]: {e}")))?;
    }
    for (j, a) in body.management_adapters.into_iter().enumerate() {
        let mac = Mac::parse(&a.mac).map_err(|e| {
            ApiError::bad_request(
                "invalid-mac",
                format!(
                    "inventory of host '{host}': management_adapters[{j}] '{}' mac: {e}",
                    a.name
                ),
            )
        })?;
        inv.management_adapters.push(Adapter {
            id: None,
            name: a.name,
            mac,
            kind: if a.dynamic {
                MacKind::Dynamic
            } else {
                MacKind::Static
            },
            location: AdapterLocation::Live,
        });
    }
    inv.cursor_source = body
        .cursor_source
        .as_deref()
        .map(CursorSource::parse)
        .transpose()
        .map_err(|e| bad(format!("cursor_source: {e}")))?;
    // checked by the core with every other free-text field
    inv.strategy = body.strategy;
    Ok((inv, body.generation))
}
