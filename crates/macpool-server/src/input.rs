//! Turning request DTOs into domain values, with precise errors that name the field.

use std::time::Duration;

use macpool_api::dto::{AllocateBody, PoolCreate, PoolEditBody};
use macpool_core::authority::{AllocateRequest, PoolEdit};
use macpool_core::lease::{HoldReason, Owner};
use macpool_core::pool::{
    AllocationOrder, DuplicatePolicy, LowWater, PoolName, PoolPolicy, PoolSpec,
};
use macpool_core::{Mac, MacRange};

use crate::error::ApiError;

pub fn mac(field: &str, s: &str) -> Result<Mac, ApiError> {
    Mac::parse(s).map_err(|e| ApiError::bad_request("invalid-mac", format!("{field}: {e}")))
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
    Ok(AllocateRequest {
        pool,
        mac: body.mac.as_deref().map(|m| mac("mac", m)).transpose()?,
        count: body.count.unwrap_or(1),
        owner: Owner {
            vm_id: body.vm_id,
            adapter_id: body.adapter_id.unwrap_or_default(),
            vm_name: body.vm_name,
            host: body.host,
            cluster: body.cluster,
        },
    })
}
