//! Hand-written conversions between domain types and DTOs.

use macpool_core::authority::{
    Allocation, Available, Claimant, HostSummary, InventoryOutcome, MacStatus, PoolView, Released,
    StoredInventory,
};
use macpool_core::conflict::{Conflict, RangeClaim, Seen, Sighting, Subject};
use macpool_core::history::HistoryEntry;
use macpool_core::inventory::{AdapterLocation, HostInventory, MacKind};
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
        delegated: v.usage.delegated,
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
        seen: s
            .seen
            .iter()
            .map(|v| SeenInfo {
                host: v.host.clone(),
                vm_id: v.vm_id.clone(),
                vm_name: v.vm_name.clone(),
                checkpoint: v.checkpoint.clone(),
                management_os: v.management_os,
            })
            .collect(),
    }
}

/// A history entry and the id its store gave it.
pub fn history(id: u64, h: &HistoryEntry) -> HistoryInfo {
    HistoryInfo {
        id,
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

/// A stored inventory back in its wire form (the generation and every field as accepted).
pub fn inventory(s: &StoredInventory) -> InventoryInfo {
    InventoryInfo {
        host: s.inventory.host().to_string(),
        received: time(s.received),
        inventory: inventory_body(&s.inventory, s.generation),
    }
}

/// A host's inventory as the body of `PUT /hosts/{host}/inventory`.
pub fn inventory_body(inv: &HostInventory, generation: u64) -> InventoryBody {
    InventoryBody {
        generation,
        cluster: inv.cluster.clone(),
        ipv4: inv.ipv4.iter().map(|ip| ip.to_string()).collect(),
        range_min: inv.dynamic_range().map(|r| mac(r.first())),
        range_max: inv.dynamic_range().map(|r| mac(r.last())),
        cursor: inv.cursor().map(mac),
        vms: inv
            .vms()
            .iter()
            .map(|v| InventoryVm {
                id: v.id().to_string(),
                name: v.name.clone(),
                state: Some(v.state.name().to_string()),
                adapters: v
                    .adapters
                    .iter()
                    .map(|a| InventoryAdapter {
                        name: a.name.clone(),
                        mac: mac(a.mac),
                        dynamic: a.kind == MacKind::Dynamic,
                        checkpoint: match &a.location {
                            AdapterLocation::Live => None,
                            AdapterLocation::Checkpoint(c) => Some(InventoryCheckpoint {
                                id: c.id.clone(),
                                name: c.name.clone(),
                                kind: Some(c.kind.name().to_string()),
                                created: c.created.map(time),
                            }),
                        },
                    })
                    .collect(),
            })
            .collect(),
        management_adapters: inv
            .management_adapters
            .iter()
            .map(|a| InventoryManagementAdapter {
                name: a.name.clone(),
                mac: mac(a.mac),
                dynamic: a.kind == MacKind::Dynamic,
            })
            .collect(),
        cursor_source: inv.cursor_source.map(|c| c.name().to_string()),
        strategy: inv.strategy.clone(),
    }
}

pub fn inventory_outcome(o: &InventoryOutcome) -> InventoryResult {
    InventoryResult {
        host: o.host.clone(),
        generation: o.generation,
        bound: o.bound.iter().map(lease).collect(),
        released: o.released.iter().map(released).collect(),
        held: o.held.iter().map(hold).collect(),
        unheld: o.unheld.iter().map(hold).collect(),
        unmanaged: o.unmanaged.iter().map(|m| mac(*m)).collect(),
        notes: o.notes.clone(),
    }
}

fn owner(s: &Sighting, claimant: Option<&Claimant>) -> ConflictOwner {
    let (seen, checkpoint_id, checkpoint_name) = match &s.seen {
        Seen::Live => ("live", None, None),
        Seen::ManagementOs => ("management-os", None, None),
        Seen::Checkpoint { id, name } => ("checkpoint", Some(id.clone()), Some(name.clone())),
        Seen::Listed { .. } => ("listed", None, None),
        Seen::DhcpLease { .. } => ("dhcp-lease", None, None),
    };
    ConflictOwner {
        seen: seen.into(),
        host: s.owner.host.clone(),
        vm_id: s.owner.vm_id.clone(),
        vm_name: s.owner.vm_name.clone(),
        adapter: s.owner.adapter.clone(),
        checkpoint_id,
        checkpoint_name,
        source: s.owner.source.clone(),
        state: claimant
            .and_then(|c| c.state.as_ref())
            .map(|v| v.name().to_string()),
        guard: claimant
            .and_then(|c| c.guard.as_ref())
            .map(|(id, e)| GuardActionInfo {
                id: *id,
                at: time(e.at),
                new_mac: e.mac.map(mac),
                reason: e.reason.clone(),
            }),
    }
}

fn claim(c: &RangeClaim) -> RangeClaimInfo {
    let (kind, name) = match c {
        RangeClaim::Host(h) => ("host", h.host.clone()),
        RangeClaim::Pool(p) => ("pool", p.pool.clone()),
    };
    RangeClaimInfo {
        kind: kind.into(),
        name,
        first: mac(c.range().first()),
        last: mac(c.range().last()),
    }
}

pub fn conflict(c: &Conflict) -> ConflictInfo {
    conflict_claimed(c, &[])
}

/// A conflict with what the authority knows of each claimant (in the order of its sightings;
/// missing ones are unknown).
pub fn conflict_claimed(c: &Conflict, claimants: &[Claimant]) -> ConflictInfo {
    let (mac_s, ranges, overlap) = match &c.subject {
        Subject::Mac { mac: m, .. } => (Some(mac(*m)), Vec::new(), None),
        Subject::Ranges { a, b, overlap } => (
            None,
            vec![claim(a), claim(b)],
            Some(RangeView {
                first: mac(overlap.first()),
                last: mac(overlap.last()),
                size: overlap.len(),
            }),
        ),
    };
    ConflictInfo {
        class: c.class.slug().into(),
        mac: mac_s,
        ranges,
        overlap,
        owners: c
            .sightings()
            .iter()
            .enumerate()
            .map(|(i, s)| owner(s, claimants.get(i)))
            .collect(),
        explanation: c.explanation.clone(),
        fix: c.fix.clone(),
    }
}

pub fn block(b: &macpool_core::block::Block, existing: bool) -> BlockInfo {
    BlockInfo {
        id: b.id,
        pool: b.pool.to_string(),
        host: b.host.clone(),
        first: mac(b.range.first()),
        last: mac(b.range.last()),
        size: b.range.len(),
        state: b.state.name().into(),
        claimed: time(b.claimed),
        changed: time(b.changed),
        unused_since: b.unused_since.map(time),
        existing,
    }
}

/// One row of `GET /hosts`.
pub fn host(s: &HostSummary) -> HostInfo {
    HostInfo {
        host: s.host.clone(),
        cluster: s.cluster.clone(),
        range_min: s.dynamic_range.map(|r| mac(r.first())),
        range_max: s.dynamic_range.map(|r| mac(r.last())),
        cursor: s.cursor.map(mac),
        cursor_source: s.cursor_source.map(|c| c.name().to_string()),
        cursor_estimated: s.cursor_estimated(),
        overlaps: s.overlaps.clone(),
        blocks: s.blocks.iter().map(|b| block(b, false)).collect(),
        vms: s.vms as u64,
        live_adapters: s.live_adapters as u64,
        checkpoint_adapters: s.checkpoint_adapters as u64,
        management_adapters: s.management_adapters as u64,
        received: time(s.received),
        generation: s.generation,
        strategy: s.strategy.clone(),
    }
}

/// The domain request of `POST /leases` (or `POST /pools/{pool}/available`) for `pool`. One
/// conversion for the server and the in-process authorities (simulator, tests).
pub fn allocate_request(
    pool: String,
    body: AllocateBody,
) -> Result<macpool_core::authority::AllocateRequest, macpool_core::MacParseError> {
    Ok(macpool_core::authority::AllocateRequest {
        pool,
        mac: body.mac.as_deref().map(Mac::parse).transpose()?,
        count: body.count.unwrap_or(1),
        reason: body.reason,
        owner: macpool_core::lease::Owner {
            vm_id: body.vm_id,
            adapter_id: body.adapter_id.unwrap_or_default(),
            vm_name: body.vm_name,
            host: body.host,
            cluster: body.cluster,
        },
    })
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
