//! Hand-written conversions between domain types and DTOs.

use macpool_core::authority::{Allocation, Available, MacStatus, PoolView, Released};
use macpool_core::history::HistoryEntry;
use macpool_core::lease::{Hold, Lease};
use macpool_core::{Mac, Timestamp};

use crate::dto::*;

/// RFC 3339 UTC with milliseconds.
pub fn time(t: Timestamp) -> String {
    t.to_string()
}

pub fn mac(m: Mac) -> String {
    m.to_string()
}

pub fn pool(v: &PoolView) -> PoolInfo {
    let p = &v.spec.policy;
    PoolInfo {
        name: v.spec.name.to_string(),
        ranges: v
            .spec
            .ranges
            .iter()
            .map(|r| RangeView {
                first: mac(r.first()),
                last: mac(r.last()),
                size: r.len(),
            })
            .collect(),
        order: p.order.name().into(),
        cooldown: humantime::format_duration(p.cooldown).to_string(),
        cooldown_seconds: p.cooldown.as_secs(),
        duplicates: p.duplicates.name().into(),
        low_water: p.low_water.to_string(),
        size: v.usage.size,
        leased: v.usage.leased,
        held: v.usage.held,
        cooling: v.usage.cooling,
        free: v.usage.free,
        percent_used: (v.usage.percent_used() * 100.0).round() / 100.0,
        low: v.low,
    }
}

pub fn available(a: &Available) -> AvailableInfo {
    let runs: Vec<FreeRun> = a
        .runs
        .iter()
        .map(|(f, l)| FreeRun {
            first: mac(*f),
            last: mac(*l),
            count: l.to_u64() - f.to_u64() + 1,
        })
        .collect();
    AvailableInfo {
        pool: a.pool.to_string(),
        size: a.size,
        free: a.free,
        listed: runs.iter().map(|r| r.count).sum(),
        runs,
        truncated: a.truncated,
    }
}

pub fn lease(l: &Lease) -> LeaseInfo {
    LeaseInfo {
        mac: mac(l.mac),
        pool: l.pool.to_string(),
        vm_id: l.owner.vm_id.clone(),
        adapter_id: l.owner.adapter_id.clone(),
        vm_name: l.owner.vm_name.clone(),
        host: l.owner.host.clone(),
        cluster: l.owner.cluster.clone(),
        state: l.state.name().into(),
        created: time(l.created),
        duplicate: l.duplicate,
    }
}

pub fn allocations(v: &[Allocation]) -> AllocationResult {
    AllocationResult {
        allocations: v
            .iter()
            .map(|a| AllocationInfo {
                lease: lease(&a.lease),
                existing: a.existing,
            })
            .collect(),
        pool_low: v.iter().any(|a| a.pool_low),
    }
}

pub fn released(r: &Released) -> ReleasedInfo {
    ReleasedInfo {
        lease: lease(&r.lease),
        cooling_until: r.cooling_until.map(time),
    }
}

pub fn hold(h: &Hold) -> HoldInfo {
    HoldInfo {
        mac: mac(h.mac),
        vm_id: h.vm_id.clone(),
        reason: h.reason.name().into(),
        reference: h.reference.clone(),
        created: time(h.created),
    }
}

pub fn mac_status(s: &MacStatus) -> MacInfo {
    MacInfo {
        mac: mac(s.mac),
        state: s.state().into(),
        pool: s.pool.as_ref().map(|p| p.to_string()),
        leases: s.leases.iter().map(lease).collect(),
        holds: s.holds.iter().map(hold).collect(),
        cooling_until: s.cooling_until.map(time),
    }
}

pub fn history(h: &HistoryEntry) -> HistoryInfo {
    HistoryInfo {
        at: time(h.at),
        actor: h.actor.clone(),
        action: h.action.name().into(),
        mac: h.mac.map(mac),
        pool: h.pool.as_ref().map(|p| p.to_string()),
        vm_id: h.vm_id.clone(),
        vm_name: h.vm_name.clone(),
        adapter_id: h.adapter_id.clone(),
        host: h.host.clone(),
        reason: h.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(
            time(Timestamp(1_445_000_000_123)),
            "2015-10-16T12:53:20.123Z"
        );
    }
}
