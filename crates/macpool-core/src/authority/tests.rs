use super::*;
use crate::block::Block;
use crate::pool::PoolPolicy;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::HashSet;

const HOUR: Duration = Duration::from_secs(3600);

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn range(s: &str) -> MacRange {
    MacRange::parse(s).unwrap()
}

fn admin(now: u64) -> Context {
    Context {
        now: Timestamp(now),
        actor: Actor::admin("test"),
    }
}

fn agent(host: &str) -> Context {
    Context {
        now: Timestamp(0),
        actor: Actor {
            name: format!("agent:{host}"),
            scope: Scope::Host(host.into()),
        },
    }
}

fn spec(name: &str, ranges: &[&str], policy: PoolPolicy) -> PoolSpec {
    PoolSpec {
        name: PoolName::new(name).unwrap(),
        ranges: ranges.iter().map(|r| range(r)).collect(),
        policy,
    }
}

fn policy(order: AllocationOrder, cooldown: Duration) -> PoolPolicy {
    PoolPolicy {
        order,
        cooldown,
        ..PoolPolicy::default()
    }
}

fn owner(vm: &str) -> Owner {
    Owner {
        vm_id: vm.into(),
        ..Owner::default()
    }
}

fn req(pool: &str, vm: &str) -> AllocateRequest {
    AllocateRequest {
        pool: pool.into(),
        owner: owner(vm),
        mac: None,
        count: 1,
        reason: None,
    }
}

/// A pool `p` of `n` addresses starting at 00-15-5D-00-00-00.
fn authority_with_pool(n: u64, order: AllocationOrder, cooldown: Duration) -> Authority {
    let mut a = Authority::new();
    let last = Mac::from_u64(0x00155D000000 + n - 1).unwrap();
    let r = format!("00155D000000-{}", last.display(crate::MacFormat::Hyperv));
    a.create_pool(&admin(0), spec("p", &[&r], policy(order, cooldown)), 0)
        .unwrap();
    a
}

fn alloc(a: &mut Authority, now: u64, vm: &str) -> Result<Mac> {
    a.allocate(&admin(now), req("p", vm))
        .map(|(v, _)| v[0].lease.mac)
}

#[test]
fn allocation_is_idempotent_per_owner() {
    let mut a = authority_with_pool(16, AllocationOrder::NextFit, HOUR);
    let (first, changes) = a.allocate(&admin(0), req("p", "vm1")).unwrap();
    assert!(!first[0].existing);
    assert!(!changes.is_empty());
    let (again, changes) = a.allocate(&admin(5), req("p", "vm1")).unwrap();
    assert!(again[0].existing);
    assert_eq!(again[0].lease.mac, first[0].lease.mac);
    assert!(changes.is_empty(), "asking again must not write anything");
    assert_eq!(a.pool("p").unwrap().usage.leased, 1);
}

#[test]
fn next_fit_moves_on_and_does_not_reuse_a_fresh_release() {
    let mut a = authority_with_pool(4, AllocationOrder::NextFit, Duration::ZERO);
    let m1 = alloc(&mut a, 0, "vm1").unwrap();
    a.release(
        &admin(1),
        ReleaseSelector::Mac {
            mac: m1,
            vm_id: None,
        },
    )
    .unwrap();
    let m2 = alloc(&mut a, 2, "vm2").unwrap();
    assert_ne!(m1, m2, "a just-released MAC is not handed out next");
    assert_eq!(m2.to_u64(), m1.to_u64() + 1);
}

#[test]
fn next_fit_wraps_around_to_the_start() {
    let mut a = authority_with_pool(3, AllocationOrder::NextFit, Duration::ZERO);
    let macs: Vec<Mac> = (0..3)
        .map(|i| alloc(&mut a, 0, &format!("vm{i}")).unwrap())
        .collect();
    let distinct: HashSet<Mac> = macs.iter().copied().collect();
    assert_eq!(distinct.len(), 3);
    a.release(
        &admin(0),
        ReleaseSelector::Mac {
            mac: macs[0],
            vm_id: None,
        },
    )
    .unwrap();
    assert_eq!(alloc(&mut a, 0, "vm9").unwrap(), macs[0]);
}

#[test]
fn lowest_order_takes_the_lowest_free() {
    let mut a = authority_with_pool(8, AllocationOrder::Lowest, Duration::ZERO);
    assert_eq!(alloc(&mut a, 0, "a").unwrap(), mac("00155D000000"));
    assert_eq!(alloc(&mut a, 0, "b").unwrap(), mac("00155D000001"));
    a.release(
        &admin(0),
        ReleaseSelector::Vm {
            vm_id: "a".into(),
            adapter_id: None,
        },
    )
    .unwrap();
    assert_eq!(alloc(&mut a, 0, "c").unwrap(), mac("00155D000000"));
}

#[test]
fn exhaustion_is_an_error_that_names_the_counts_and_changes_nothing() {
    let mut a = authority_with_pool(2, AllocationOrder::NextFit, HOUR);
    alloc(&mut a, 0, "a").unwrap();
    let b = alloc(&mut a, 0, "b").unwrap();
    a.release(
        &admin(0),
        ReleaseSelector::Mac {
            mac: b,
            vm_id: None,
        },
    )
    .unwrap();
    let err = alloc(&mut a, 1, "c").unwrap_err();
    assert_eq!(err.kind(), "pool-exhausted");
    assert_eq!(
        err.to_string(),
        "pool 'p' is exhausted: 1 wanted, 0 free of 2 (1 leased, 0 held, 1 cooling down)"
    );
    assert_eq!(a.lease_count(), 1);
    a.check_invariants().unwrap();
}

#[test]
fn batch_allocation_is_all_or_nothing() {
    let mut a = authority_with_pool(3, AllocationOrder::NextFit, HOUR);
    let mut r = req("p", "tmpl");
    r.count = 4;
    assert_eq!(
        a.allocate(&admin(0), r.clone()).unwrap_err().kind(),
        "pool-exhausted"
    );
    assert_eq!(a.lease_count(), 0);
    r.count = 3;
    let (v, _) = a.allocate(&admin(0), r.clone()).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[1].lease.owner.adapter_id, "#2");
    let (again, changes) = a.allocate(&admin(0), r).unwrap();
    assert!(again.iter().all(|x| x.existing) && changes.is_empty());
}

#[test]
fn released_mac_cools_down_before_reuse() {
    let mut a = authority_with_pool(1, AllocationOrder::NextFit, HOUR);
    let m = alloc(&mut a, 0, "a").unwrap();
    let (rel, _) = a
        .release(
            &admin(10),
            ReleaseSelector::Mac {
                mac: m,
                vm_id: None,
            },
        )
        .unwrap();
    assert_eq!(rel[0].cooling_until, Some(Timestamp(10 + 3_600_000)));
    assert_eq!(
        alloc(&mut a, 3_600_009, "b").unwrap_err().kind(),
        "pool-exhausted"
    );
    let mut specific = req("p", "b");
    specific.mac = Some(m);
    assert_eq!(
        a.allocate(&admin(20), specific).unwrap_err().kind(),
        "mac-cooling"
    );
    assert_eq!(alloc(&mut a, 3_600_010, "b").unwrap(), m);
}

#[test]
fn specific_mac_taken_is_refused_or_flagged_by_policy() {
    let mut a = authority_with_pool(4, AllocationOrder::Lowest, HOUR);
    let m = alloc(&mut a, 0, "a").unwrap();
    let mut r = req("p", "b");
    r.mac = Some(m);
    let err = a.allocate(&admin(0), r.clone()).unwrap_err();
    assert_eq!(err.kind(), "mac-in-use");
    assert_eq!(
        err.to_string(),
        "00-15-5D-00-00-00 is already in use: leased to VM a"
    );
    a.edit_pool(
        &admin(0),
        "p",
        PoolEdit {
            duplicates: Some(DuplicatePolicy::AllowAndFlag),
            ..PoolEdit::default()
        },
    )
    .unwrap();
    let (v, changes) = a.allocate(&admin(0), r).unwrap();
    assert!(v[0].lease.duplicate);
    assert!(
        changes.iter().any(
            |c| matches!(c, Change::History(h) if h.action == HistoryAction::AllocatedDuplicate)
        )
    );
    assert_eq!(a.mac_status(m).leases.len(), 2);
    assert_eq!(
        a.release(
            &admin(0),
            ReleaseSelector::Mac {
                mac: m,
                vm_id: None
            }
        )
        .unwrap_err()
        .kind(),
        "ambiguous"
    );
    a.check_invariants().unwrap();
}

#[test]
fn specific_mac_outside_the_pool_names_its_real_pool() {
    let mut a = authority_with_pool(4, AllocationOrder::Lowest, HOUR);
    a.create_pool(
        &admin(0),
        spec(
            "other",
            &["00155D100000-00155D1000FF"],
            PoolPolicy::default(),
        ),
        7,
    )
    .unwrap();
    let mut r = req("p", "b");
    r.mac = Some(mac("00155D100005"));
    assert_eq!(
        a.allocate(&admin(0), r).unwrap_err().to_string(),
        "00-15-5D-10-00-05 is not in pool 'p' (it belongs to pool 'other')"
    );
}

#[test]
fn ranges_may_not_overlap_across_pools_and_the_error_names_the_other() {
    let mut a = authority_with_pool(256, AllocationOrder::NextFit, HOUR);
    let err = a
        .create_pool(
            &admin(0),
            spec("q", &["00155D0000F0-00155D0001FF"], PoolPolicy::default()),
            0,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "range 00-15-5D-00-00-F0 - 00-15-5D-00-01-FF overlaps range 00-15-5D-00-00-00 - 00-15-5D-00-00-FF of pool 'p'"
    );
    let err = a
        .create_pool(
            &admin(0),
            spec(
                "q",
                &["00155D100000-00155D1000FF", "00155D100080-00155D1001FF"],
                PoolPolicy::default(),
            ),
            0,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "range-overlap");
    assert!(a.pool("q").is_err());
}

#[test]
fn a_pool_with_leases_or_holds_cannot_be_deleted() {
    let mut a = authority_with_pool(4, AllocationOrder::NextFit, HOUR);
    let m = alloc(&mut a, 0, "a").unwrap();
    assert_eq!(
        a.delete_pool(&admin(0), "p").unwrap_err().kind(),
        "pool-in-use"
    );
    a.hold(
        &admin(0),
        HoldRequest {
            mac: m,
            vm_id: "a".into(),
            reason: HoldReason::Checkpoint,
            reference: "cp1".into(),
        },
    )
    .unwrap();
    a.release(
        &admin(0),
        ReleaseSelector::Mac {
            mac: m,
            vm_id: None,
        },
    )
    .unwrap();
    assert_eq!(
        a.delete_pool(&admin(0), "p").unwrap_err().to_string(),
        "pool 'p' still has 0 leased and 1 held addresses and 0 blocks delegated to hosts; \
         release and drain them first"
    );
    a.unhold(
        &admin(0),
        UnholdRequest {
            mac: m,
            vm_id: "a".into(),
            reason: None,
            reference: None,
        },
    )
    .unwrap();
    a.delete_pool(&admin(0), "p").unwrap();
    assert!(a.pools().is_empty());
}

#[test]
fn a_hold_keeps_the_mac_out_of_circulation_and_unhold_starts_the_cooldown() {
    let mut a = authority_with_pool(1, AllocationOrder::NextFit, HOUR);
    let m = mac("00155D000000");
    a.hold(
        &admin(0),
        HoldRequest {
            mac: m,
            vm_id: "vm7".into(),
            reason: HoldReason::Template,
            reference: String::new(),
        },
    )
    .unwrap();
    assert_eq!(a.pool("p").unwrap().usage.held, 1);
    assert_eq!(alloc(&mut a, 0, "x").unwrap_err().kind(), "pool-exhausted");
    // The VM that owns the hold may lease its own MAC: a VM never conflicts with its own hold.
    let mut r = req("p", "vm7");
    r.mac = Some(m);
    let err = a.allocate(&admin(0), r).unwrap_err();
    assert_eq!(
        err.kind(),
        "mac-in-use",
        "explicit leases over a hold still need allow-and-flag"
    );
    let (_, changes) = a
        .unhold(
            &admin(5),
            UnholdRequest {
                mac: m,
                vm_id: "vm7".into(),
                reason: Some(HoldReason::Template),
                reference: None,
            },
        )
        .unwrap();
    assert!(changes.contains(&Change::CoolingStarted {
        mac: m,
        until: Timestamp(5 + 3_600_000)
    }));
    assert_eq!(a.pool("p").unwrap().usage.cooling, 1);
}

#[test]
fn holding_another_vms_mac_is_refused() {
    let mut a = authority_with_pool(4, AllocationOrder::NextFit, HOUR);
    let m = alloc(&mut a, 0, "a").unwrap();
    let err = a
        .hold(
            &admin(0),
            HoldRequest {
                mac: m,
                vm_id: "b".into(),
                reason: HoldReason::Checkpoint,
                reference: "x".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), "mac-in-use");
    a.hold(
        &admin(0),
        HoldRequest {
            mac: m,
            vm_id: "a".into(),
            reason: HoldReason::Checkpoint,
            reference: "x".into(),
        },
    )
    .unwrap();
}

#[test]
fn agent_tokens_act_only_for_their_host() {
    let mut a = authority_with_pool(8, AllocationOrder::NextFit, HOUR);
    let (v, _) = a.allocate(&agent("h1"), req("p", "vm1")).unwrap();
    assert_eq!(
        v[0].lease.owner.host.as_deref(),
        Some("h1"),
        "the host is filled in from the token"
    );
    let mut other = req("p", "vm2");
    other.owner.host = Some("h2".into());
    assert_eq!(
        a.allocate(&agent("h1"), other.clone()).unwrap_err().kind(),
        "forbidden"
    );
    a.allocate(&admin(0), other).unwrap();
    let err = a
        .release(
            &agent("h1"),
            ReleaseSelector::Vm {
                vm_id: "vm2".into(),
                adapter_id: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), "forbidden");
    assert_eq!(a.lease_count(), 2);
    assert_eq!(
        a.create_pool(
            &agent("h1"),
            spec("z", &["00155D200000-00155D2000FF"], PoolPolicy::default()),
            0
        )
        .unwrap_err()
        .kind(),
        "forbidden"
    );
}

#[test]
fn shrinking_a_pool_under_a_lease_is_refused() {
    let mut a = authority_with_pool(256, AllocationOrder::Lowest, HOUR);
    alloc(&mut a, 0, "a").unwrap();
    let err = a
        .edit_pool(
            &admin(0),
            "p",
            PoolEdit {
                ranges: Some(vec![range("00155D000080-00155D0000FF")]),
                ..PoolEdit::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), "range-in-use");
    let (view, _) = a
        .edit_pool(
            &admin(0),
            "p",
            PoolEdit {
                add_ranges: vec![range("00155D000100-00155D0001FF")],
                ..PoolEdit::default()
            },
        )
        .unwrap();
    assert_eq!(view.usage.size, 512);
    assert_eq!(view.usage.leased, 1);
    a.check_invariants().unwrap();
}

#[test]
fn invalid_owner_fields_are_refused() {
    let mut a = authority_with_pool(4, AllocationOrder::Lowest, HOUR);
    assert_eq!(alloc(&mut a, 0, " ").unwrap_err().kind(), "invalid-input");
    assert_eq!(
        alloc(&mut a, 0, &"v".repeat(300)).unwrap_err().kind(),
        "invalid-input"
    );
    assert_eq!(
        alloc(&mut a, 0, "bad\nname").unwrap_err().kind(),
        "invalid-input"
    );
    assert_eq!(a.lease_count(), 0);
}

// ----- inventories -----------------------------------------------------------------------------

use crate::conflict::ConflictClass;
use crate::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, HostInventory, MacKind, Vm, VmState,
};

/// A VM with live MACs and `(mac, checkpoint id)` checkpoint adapters.
fn vm(id: &str, live: &[&str], checkpoints: &[(&str, &str)]) -> Vm {
    let mut v = Vm::new(id, format!("name-{id}"), VmState::Running).unwrap();
    for m in live {
        v.adapters.push(Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac: mac(m),
            kind: MacKind::Dynamic,
            location: AdapterLocation::Live,
        });
    }
    for (m, cp) in checkpoints {
        v.adapters.push(Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac: mac(m),
            kind: MacKind::Dynamic,
            location: AdapterLocation::Checkpoint(Checkpoint {
                id: (*cp).into(),
                name: format!("RDV_ROLLBACK {cp}"),
                kind: CheckpointType::Standard,
                created: None,
            }),
        });
    }
    v
}

fn host_inv(name: &str, vms: Vec<Vm>) -> HostInventory {
    let mut h = HostInventory::new(name).unwrap();
    for v in vms {
        h.add_vm(v).unwrap();
    }
    h
}

fn push(a: &mut Authority, now: u64, inv: HostInventory, generation: u64) -> InventoryOutcome {
    let (out, _) = a.apply_inventory(&admin(now), inv, generation).unwrap();
    a.check_invariants().unwrap();
    out
}

/// Pool `p` (16 addresses from 00155D000000, 1h cooldown) with `vm` leasing 00155D000000.
fn leased_to(vm_id: &str) -> (Authority, Mac) {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    let m = alloc(&mut a, 0, vm_id).unwrap();
    assert_eq!(m, mac("00155D000000"));
    (a, m)
}

#[test]
fn inventory_binds_a_leased_mac_to_its_vm_and_host() {
    let (mut a, m) = leased_to("vm1");
    let out = push(
        &mut a,
        1,
        host_inv("h1", vec![vm("VM1", &["00155D000000"], &[])]),
        1,
    );
    assert_eq!(out.bound.len(), 1, "ids compare case-insensitively");
    let l = &a.mac_status(m).leases[0];
    assert_eq!(l.state, LeaseState::Bound);
    assert_eq!(l.owner.host.as_deref(), Some("h1"));
    assert_eq!(l.owner.vm_name.as_deref(), Some("name-VM1"));
    let (again, changes) = a
        .apply_inventory(
            &admin(2),
            host_inv("h1", vec![vm("VM1", &["00155D000000"], &[])]),
            2,
        )
        .unwrap();
    assert!(again.bound.is_empty(), "nothing new to bind");
    assert_eq!(
        changes.len(),
        1,
        "only the inventory itself is saved: {changes:?}"
    );
}

fn vnic(m: &str) -> Adapter {
    Adapter {
        id: None,
        name: "vEthernet (External)".into(),
        mac: mac(m),
        kind: MacKind::Dynamic,
        location: AdapterLocation::Live,
    }
}

#[test]
fn management_os_vnics_are_seen_and_conflict_but_are_never_leased() {
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv("h1", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    let mut h2 = host_inv("h2", vec![]);
    h2.management_adapters = vec![vnic("00155D000000"), vnic("00155D000005")];
    let out = push(&mut a, 2, h2.clone(), 1);
    assert!(out.bound.is_empty() && out.released.is_empty() && out.held.is_empty());
    let st = a.mac_status(m);
    assert_eq!(st.leases.len(), 1);
    assert_eq!(
        st.leases[0].owner.host.as_deref(),
        Some("h1"),
        "not moved to h2"
    );
    assert!(st.seen.iter().any(|s| s.management_os && s.host == "h2"));
    assert!(
        a.mac_status(mac("00155D000005")).leases.is_empty(),
        "no lease invented"
    );

    let conflicts = a.conflicts();
    let dup = conflicts
        .iter()
        .find(|c| c.class == ConflictClass::LiveDuplicate && c.mac() == Some(m))
        .expect("the VM and h2's management OS share a MAC");
    assert!(
        dup.explanation.contains("the management OS of h2"),
        "{}",
        dup.explanation
    );
    assert!(dup.fix.contains("the management OS of h2"), "{}", dup.fix);
    let states: Vec<_> = a.claimants(dup).into_iter().map(|c| c.state).collect();
    assert_eq!(states, [Some(VmState::Running), None]);
    assert!(
        conflicts
            .iter()
            .any(|c| c.class == ConflictClass::Unmanaged && c.mac() == Some(mac("00155D000005")))
    );

    // the vNIC gone: nothing released, the index forgets it
    h2.management_adapters.truncate(1);
    let out = push(&mut a, 3, h2, 2);
    assert!(out.released.is_empty());
    assert!(a.mac_status(mac("00155D000005")).seen.is_empty());
    assert_eq!(a.mac_status(m).leases[0].owner.host.as_deref(), Some("h1"));
}

#[test]
fn an_agents_strategy_and_cursor_source_are_kept_and_checked() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    let mut inv = host_inv("h1", vec![]);
    inv.strategy = Some("delegate+guard".into());
    inv.cursor_source = Some(crate::inventory::CursorSource::InventoryBound);
    push(&mut a, 1, inv.clone(), 1);
    let s = &a.host_summaries()[0];
    assert_eq!(s.strategy.as_deref(), Some("delegate+guard"));
    assert_eq!(
        s.cursor_source,
        Some(crate::inventory::CursorSource::InventoryBound)
    );
    // a changed strategy alone is a change, not an idempotent resend
    inv.strategy = Some("guard".into());
    push(&mut a, 2, inv.clone(), 2);
    assert_eq!(
        a.inventory("h1").unwrap().inventory.strategy.as_deref(),
        Some("guard")
    );
    inv.strategy = Some("<b>guard</b>".into());
    let err = a.apply_inventory(&admin(3), inv, 3).unwrap_err();
    assert_eq!(err.kind(), "invalid-input");
    assert!(err.to_string().contains("strategy '<b>guard</b>'"), "{err}");
    assert_eq!(a.inventory("h1").unwrap().generation, 2, "nothing stored");
}

#[test]
fn a_host_summary_names_the_hosts_its_range_overlaps_and_carries_its_blocks() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    let (b1, _) = claim(&mut a, &admin(0), "h1", 16).unwrap();
    let range = |r: &str| r.parse::<MacRange>().unwrap();
    for (host, r) in [
        ("h1", "00155D100000-00155D1000FF"),
        ("h2", "00155D100080-00155D10017F"),
        ("h3", "00155D200000-00155D2000FF"),
    ] {
        let mut inv = host_inv(host, vec![]);
        inv.set_dynamic_range(Some(range(r)), None).unwrap();
        push(&mut a, 1, inv, 1);
    }
    push(&mut a, 1, host_inv("h4", vec![]), 1);
    let summaries = a.host_summaries();
    let got: Vec<(&str, Vec<&str>, Vec<u64>)> = summaries
        .iter()
        .map(|s| {
            (
                s.host.as_str(),
                s.overlaps.iter().map(String::as_str).collect(),
                s.blocks.iter().map(|b| b.id).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("h1", vec!["h2"], vec![b1.id]),
            ("h2", vec!["h1"], vec![]),
            ("h3", vec![], vec![]),
            ("h4", vec![], vec![]),
        ]
    );
}

#[test]
fn stale_generation_is_refused_and_changes_nothing() {
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv("h1", vec![vm("vm1", &["00155D000000"], &[])]),
        5,
    );
    for g in [5, 4, 0] {
        let err = a
            .apply_inventory(&admin(2), host_inv("h1", vec![]), g)
            .unwrap_err();
        assert_eq!(err.kind(), "stale-generation");
        assert!(
            err.to_string()
                .contains(&format!("generation {g} of host 'h1'")),
            "{err}"
        );
    }
    assert_eq!(a.inventory("h1").unwrap().generation, 5);
    assert_eq!(a.inventory("h1").unwrap().inventory.vms().len(), 1);
    assert_eq!(
        a.mac_status(m).leases.len(),
        1,
        "the refused empty inventory released nothing"
    );
    // another host has its own generations
    push(&mut a, 3, host_inv("h2", vec![]), 1);
}

#[test]
fn resending_the_applied_generation_unchanged_is_an_idempotent_retry() {
    let (mut a, m) = leased_to("vm1");
    let inv = || host_inv("h1", vec![vm("vm1", &["00155D000000"], &[])]);
    push(&mut a, 1, inv(), 5);
    let before = a.inventory("h1").unwrap();
    let (out, changes) = a.apply_inventory(&admin(2), inv(), 5).unwrap();
    assert!(changes.is_empty(), "a retry writes nothing");
    assert!(out.notes[0].contains("already applied"), "{:?}", out.notes);
    assert_eq!(
        a.inventory("h1").unwrap(),
        before,
        "the stored inventory keeps its receive time"
    );
    assert_eq!(a.mac_status(m).leases.len(), 1);
    // The same generation with different content is still refused.
    let err = a
        .apply_inventory(&admin(3), host_inv("h1", vec![]), 5)
        .unwrap_err();
    assert_eq!(err.kind(), "stale-generation");
}

/// Issue 18: a host's first report is stored whole, every later one as its diff (the VMs that
/// differ position by position), so a store writes O(changed VMs); the diff replayed onto the
/// stored copy gives the report.
#[test]
fn a_later_report_is_written_as_its_diff() {
    let mut a = Authority::new();
    let three = || {
        host_inv(
            "h1",
            vec![
                vm("a", &["00155D990001"], &[]),
                vm("b", &["00155D990002"], &[]),
                vm("c", &["00155D990003"], &[]),
            ],
        )
    };
    let saved = |a: &mut Authority, inv: HostInventory, generation| {
        let (_, changes) = a
            .apply_inventory(&admin(generation), inv.clone(), generation)
            .unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.inventory("h1").unwrap().inventory, inv);
        changes.into_iter().next().unwrap()
    };
    assert!(matches!(
        saved(&mut a, three(), 1),
        Change::InventorySaved(_)
    ));
    let before = a.inventory("h1").unwrap();
    let Change::InventoryPatched(p) = saved(&mut a, three(), 2) else {
        panic!("a later report is a diff")
    };
    assert!(p.vms.is_empty() && p.len == 3 && p.generation == 2, "{p:?}");
    let mut replayed = before.clone();
    p.apply_to(&mut replayed).unwrap();
    assert_eq!(replayed, a.inventory("h1").unwrap());

    let mut changed = three();
    changed.vms_mut()[1].name = "renamed".into();
    let Change::InventoryPatched(p) = saved(&mut a, changed, 3) else {
        panic!("a diff")
    };
    assert_eq!(
        p.vms
            .iter()
            .map(|(i, v)| (*i, v.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "renamed")]
    );

    let shorter = host_inv(
        "h1",
        vec![
            vm("a", &["00155D990001"], &[]),
            vm("d", &["00155D990004"], &[]),
        ],
    );
    let Change::InventoryPatched(p) = saved(&mut a, shorter, 4) else {
        panic!("a diff")
    };
    assert_eq!(
        (p.len, p.vms.len()),
        (2, 1),
        "VM b replaced by d, VM c gone: {p:?}"
    );
    assert!(a.mac_status(mac("00155D990003")).seen.is_empty());
}

/// A diff that does not fit the stored inventory is refused and changes nothing: another host,
/// a gap past the end, a position past its length, two VMs with one id.
#[test]
fn an_inventory_diff_that_does_not_fit_changes_nothing() {
    let two = host_inv(
        "h1",
        vec![
            vm("a", &["00155D990001"], &[]),
            vm("b", &["00155D990002"], &[]),
        ],
    );
    let header = two.header();
    let cases = [
        (host_inv("h2", vec![]), 2, vec![]),
        (
            header.clone(),
            4,
            vec![(3, vm("x", &[], &[])), (2, vm("y", &[], &[]))],
        ),
        (header.clone(), 1, vec![(1, vm("x", &[], &[]))]),
        (header.clone(), 2, vec![(1, vm("A", &[], &[]))]),
    ];
    for (header, len, vms) in cases {
        let mut inv = two.clone();
        assert!(inv.patch(&header, len, &vms).is_err(), "{len} {vms:?}");
        assert_eq!(inv, two, "unchanged");
    }
    let mut inv = two.clone();
    inv.patch(
        &header,
        3,
        &[(0, vm("a", &["00155D990009"], &[])), (2, vm("c", &[], &[]))],
    )
    .unwrap();
    let ids: Vec<&str> = inv.vms().iter().map(|v| v.id()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[test]
fn agent_may_send_only_its_own_hosts_inventory() {
    let (mut a, m) = leased_to("vm1");
    let err = a
        .apply_inventory(
            &agent("h1"),
            host_inv("h2", vec![vm("vm1", &["00155D000000"], &[])]),
            1,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "forbidden");
    assert!(
        err.to_string()
            .contains("cannot send the inventory of host 'h2'"),
        "{err}"
    );
    assert_eq!(a.inventory("h2").unwrap_err().kind(), "not-found");
    assert_eq!(a.mac_status(m).leases[0].state, LeaseState::Reserved);
    let (out, _) = a
        .apply_inventory(
            &agent("h1"),
            host_inv("h1", vec![vm("vm1", &["00155D000000"], &[])]),
            1,
        )
        .unwrap();
    assert_eq!(out.bound.len(), 1);
}

/// The seed's duplicate through an agent token: HV-A may not free the MAC frozen in HV-B's
/// rollback checkpoint (held by HV-B's inventory), nor hold for HV-B's VMs; HV-B's own agent may.
#[test]
fn an_agent_holds_and_unholds_only_for_its_own_hosts_vms() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    push(
        &mut a,
        1,
        host_inv("hvb", vec![vm("desk", &[], &[("00155D000005", "cp1")])]),
        1,
    );
    let frozen = mac("00155D000005");
    assert_eq!(
        a.mac_status(frozen).holds.len(),
        1,
        "hvb's inventory holds it"
    );
    let unhold = UnholdRequest {
        mac: frozen,
        vm_id: "desk".into(),
        reason: None,
        reference: None,
    };
    let err = a.unhold(&agent("hva"), unhold.clone()).unwrap_err();
    assert_eq!(err.kind(), "forbidden");
    assert!(err.to_string().contains("VM desk is neither"), "{err}");
    assert_eq!(a.mac_status(frozen).holds.len(), 1, "nothing changed");
    let mut taken = req("p", "intruder");
    taken.mac = Some(frozen);
    assert_eq!(
        a.allocate(&agent("hva"), taken).unwrap_err().kind(),
        "mac-in-use"
    );
    let hold = |m: &str, vm: &str| HoldRequest {
        mac: mac(m),
        vm_id: vm.into(),
        reason: HoldReason::Backup,
        reference: String::new(),
    };
    assert_eq!(
        a.hold(&agent("hva"), hold("00155D000006", "desk"))
            .unwrap_err()
            .kind(),
        "forbidden"
    );
    // The VM's own host may hold for it, and its agent may remove a hold only its host needs.
    a.hold(&agent("hvb"), hold("00155D000006", "desk")).unwrap();
    let mine = UnholdRequest {
        mac: mac("00155D000006"),
        vm_id: "desk".into(),
        reason: None,
        reference: None,
    };
    a.unhold(&agent("hvb"), mine).unwrap();
    a.check_invariants().unwrap();
}

/// A VM that migrated keeps its checkpoint on the old host's last report too: the new host's
/// agent may not drop the hold while the old host still shows it.
#[test]
fn an_agent_may_not_remove_a_hold_another_hosts_inventory_relies_on() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    let inv = |h: &str| host_inv(h, vec![vm("desk", &[], &[("00155D000005", "cp1")])]);
    push(&mut a, 1, inv("hva"), 1);
    push(&mut a, 2, inv("hvb"), 1);
    let unhold = UnholdRequest {
        mac: mac("00155D000005"),
        vm_id: "desk".into(),
        reason: None,
        reference: None,
    };
    let err = a.unhold(&agent("hva"), unhold.clone()).unwrap_err();
    assert_eq!(err.kind(), "forbidden");
    assert!(
        err.to_string().contains("host 'hvb' still reports"),
        "{err}"
    );
    a.unhold(&admin(3), unhold).unwrap();
}

#[test]
fn an_agent_reads_only_what_its_strategies_need() {
    let h1 = agent("h1").actor;
    assert!(h1.may_read(Read::Mac).is_ok());
    assert!(h1.may_read(Read::Host("h1")).is_ok());
    assert_eq!(
        h1.may_read(Read::Host("h2")).unwrap_err().kind(),
        "forbidden"
    );
    let err = h1.may_read(Read::Fleet("leases")).unwrap_err();
    assert!(err.to_string().contains("cannot read leases"), "{err}");
    let admin = Actor::admin("a");
    assert!(admin.may_read(Read::Fleet("leases")).is_ok());
    assert!(admin.may_read(Read::Host("h2")).is_ok());
}

#[test]
fn invalid_inventory_field_is_refused_naming_the_adapter() {
    let (mut a, _) = leased_to("vm1");
    let mut v = vm("vm1", &["00155D000000"], &[]);
    v.adapters[0].name = "bad\nname".into();
    let err = a
        .apply_inventory(&admin(1), host_inv("h1", vec![v]), 1)
        .unwrap_err();
    assert_eq!(err.kind(), "invalid-input");
    assert!(
        err.to_string()
            .contains("host 'h1' VM vm1 adapter 'bad\nname'"),
        "{err}"
    );
    assert!(a.inventories().is_empty());
    assert_eq!(
        a.leases(&LeaseFilter::default())[0].state,
        LeaseState::Reserved
    );
}

#[test]
fn live_pool_mac_without_lease_is_unmanaged_and_no_lease_is_invented() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    let out = push(
        &mut a,
        1,
        host_inv(
            "h1",
            vec![vm("vm1", &["00155D000003", "00155D990000"], &[])],
        ),
        1,
    );
    assert_eq!(
        out.unmanaged,
        [mac("00155D000003")],
        "MACs outside every pool are not ours"
    );
    assert_eq!(a.lease_count(), 0);
    let c = a.conflicts();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].class, ConflictClass::Unmanaged);
    assert_eq!(c[0].mac(), Some(mac("00155D000003")));
}

#[test]
fn checkpoint_adapter_holds_its_mac_until_the_checkpoint_is_gone() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    let out = push(
        &mut a,
        1,
        host_inv("h1", vec![vm("vm1", &[], &[("00155D000005", "cp-1")])]),
        1,
    );
    assert_eq!(out.held.len(), 1);
    let h = &a.holds(None)[0];
    assert_eq!(
        (h.reason, h.reference.as_str(), h.vm_id.as_str()),
        (HoldReason::Checkpoint, "cp-1", "vm1")
    );
    assert_eq!(a.pool("p").unwrap().usage.held, 1);
    assert!(
        a.conflicts().is_empty(),
        "a held checkpoint MAC is explained"
    );
    // same checkpoint again: nothing new
    assert!(
        push(
            &mut a,
            2,
            host_inv("h1", vec![vm("vm1", &[], &[("00155D000005", "cp-1")])]),
            2
        )
        .held
        .is_empty()
    );
    let out = push(&mut a, 10, host_inv("h1", vec![vm("vm1", &[], &[])]), 3);
    assert_eq!(out.unheld.len(), 1);
    assert!(a.holds(None).is_empty());
    assert_eq!(
        a.mac_status(mac("00155D000005")).cooling_until,
        Some(Timestamp(10 + 3_600_000))
    );
    assert_eq!(a.pool("p").unwrap().usage.cooling, 1);
}

#[test]
fn vanished_vm_releases_its_bound_leases_into_cooldown_but_not_reserved_ones() {
    let (mut a, m) = leased_to("vm1");
    let reserved = alloc(&mut a, 0, "vm2").unwrap();
    let mut on_h1 = a.leases[&owner("vm2").key()].clone();
    on_h1.owner.host = Some("h1".into());
    a.put_lease(owner("vm2").key(), on_h1);
    push(
        &mut a,
        1,
        host_inv("h1", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    let out = push(&mut a, 7, host_inv("h1", vec![]), 2);
    assert_eq!(out.released.len(), 1);
    assert_eq!(out.released[0].lease.mac, m);
    assert_eq!(
        out.released[0].cooling_until,
        Some(Timestamp(7 + 3_600_000))
    );
    assert!(a.mac_status(m).leases.is_empty());
    assert_eq!(
        a.mac_status(reserved).leases.len(),
        1,
        "reserved: the VM may not exist yet"
    );
    assert_eq!(a.departed(m).unwrap().owner.vm_id, "vm1");
}

#[test]
fn migration_reported_by_the_new_host_first_moves_the_lease_and_releases_nothing() {
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv(
            "A",
            vec![vm("vm1", &["00155D000000"], &[("00155D000000", "cp")])],
        ),
        1,
    );
    // B sees it while A still lists it: in flight, the lease stays on A
    push(
        &mut a,
        2,
        host_inv(
            "B",
            vec![vm("vm1", &["00155D000000"], &[("00155D000000", "cp")])],
        ),
        1,
    );
    assert_eq!(a.mac_status(m).leases[0].owner.host.as_deref(), Some("A"));
    assert!(
        a.conflicts().is_empty(),
        "a VM on two hosts during a migration is no conflict"
    );
    let out = push(&mut a, 3, host_inv("A", vec![]), 2);
    assert!(out.released.is_empty() && out.unheld.is_empty(), "{out:?}");
    let status = a.mac_status(m);
    assert_eq!(status.leases[0].owner.host.as_deref(), Some("B"));
    assert_eq!(
        status.holds.len(),
        1,
        "the checkpoint moved with its VM and is still held"
    );
    assert!(a.conflicts().is_empty());
}

#[test]
fn migration_reported_by_the_old_host_first_restores_the_lease_on_the_new_host() {
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv(
            "A",
            vec![vm("vm1", &["00155D000000"], &[("00155D000000", "cp")])],
        ),
        1,
    );
    let out = push(&mut a, 2, host_inv("A", vec![]), 2);
    assert_eq!((out.released.len(), out.unheld.len()), (1, 1));
    assert_eq!(a.pool("p").unwrap().usage.cooling, 1);
    let out = push(
        &mut a,
        3,
        host_inv(
            "B",
            vec![vm("vm1", &["00155D000000"], &[("00155D000000", "cp")])],
        ),
        1,
    );
    assert_eq!(out.bound.len(), 1);
    assert!(out.unmanaged.is_empty());
    let status = a.mac_status(m);
    assert_eq!(status.leases.len(), 1);
    assert_eq!(status.leases[0].owner.host.as_deref(), Some("B"));
    assert_eq!(status.leases[0].state, LeaseState::Bound);
    assert_eq!(
        status.cooling_until, None,
        "the cooldown ended with the lease's return"
    );
    assert_eq!(status.holds.len(), 1);
    let u = a.pool("p").unwrap().usage;
    assert_eq!((u.leased, u.cooling), (1, 0));
    assert!(a.departed(m).is_none());
    assert!(a.conflicts().is_empty());
}

#[test]
fn a_departed_vm_does_not_take_back_a_mac_reissued_meanwhile() {
    // vm1 leaves host A: its lease is released into cooldown and remembered as departed.
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv("A", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    push(&mut a, 2, host_inv("A", vec![]), 2);
    // After the cooldown the MAC goes to vm2, which releases it again.
    let later = 2 + 3_600_000 + 1;
    let req = AllocateRequest {
        mac: Some(m),
        ..req("p", "vm2")
    };
    a.allocate(&admin(later), req).unwrap();
    assert!(!a.departed.contains_key(&m), "the MAC was reissued");
    let selector = ReleaseSelector::Vm {
        vm_id: "vm2".into(),
        adapter_id: None,
    };
    a.release(&admin(later + 1), selector).unwrap();
    // A stale report of vm1 with that MAC, inside vm2's cooldown, restores nothing.
    let out = push(
        &mut a,
        later + 2,
        host_inv("B", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    assert!(out.bound.is_empty(), "{out:?}");
    assert!(a.mac_status(m).leases.is_empty());
    assert!(a.mac_status(m).cooling_until.is_some());
}

#[test]
fn a_released_mac_taken_by_another_vm_is_not_given_back() {
    let (mut a, m) = leased_to("vm1");
    push(
        &mut a,
        1,
        host_inv("A", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    push(&mut a, 2, host_inv("A", vec![]), 2);
    a.hold(
        &admin(3),
        HoldRequest {
            mac: m,
            vm_id: "other".into(),
            reason: HoldReason::Template,
            reference: String::new(),
        },
    )
    .unwrap();
    assert!(a.departed(m).is_none(), "someone else holds it now");
    let out = push(
        &mut a,
        4,
        host_inv("B", vec![vm("vm1", &["00155D000000"], &[])]),
        1,
    );
    assert!(out.bound.is_empty());
    assert_eq!(a.lease_count(), 0);
}

#[test]
fn seed_scenario_checkpoint_migrated_and_mac_reused_on_the_old_host_is_latent() {
    // desk-01 got M on host1 with an RDV_ROLLBACK checkpoint, migrated to host2 and got a new
    // (host2-native) MAC there; host1 then handed M to a new VM.
    let (mut a, m) = leased_to("desk-01");
    push(
        &mut a,
        1,
        host_inv(
            "host1",
            vec![vm("desk-01", &["00155D000000"], &[("00155D000000", "rdv")])],
        ),
        1,
    );
    push(
        &mut a,
        2,
        host_inv(
            "host2",
            vec![vm("desk-01", &["00155D990022"], &[("00155D000000", "rdv")])],
        ),
        1,
    );
    push(
        &mut a,
        3,
        host_inv("host1", vec![vm("new-vm", &["00155D000000"], &[])]),
        2,
    );
    let c = a.conflicts();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].class, ConflictClass::Latent);
    assert_eq!(c[0].mac(), Some(m));
    assert!(
        c[0].explanation.contains("VM 'name-new-vm' on host1"),
        "{}",
        c[0].explanation
    );
    assert!(
        c[0].explanation
            .contains("checkpoint 'RDV_ROLLBACK rdv' of VM 'name-desk-01' on host2")
    );
    assert_eq!(
        a.mac_status(m).leases[0].owner.host.as_deref(),
        Some("host2"),
        "the lease followed the VM"
    );
}

#[test]
fn a_checkpoint_mac_leased_to_another_vm_is_noted_and_reported_latent() {
    let (mut a, m) = leased_to("vm1");
    let out = push(
        &mut a,
        1,
        host_inv(
            "h1",
            vec![
                vm("vm2", &[], &[(&m.to_string(), "cp")]),
                vm("vm1", &["00155D000000"], &[]),
            ],
        ),
        1,
    );
    assert!(out.held.is_empty());
    assert_eq!(out.notes.len(), 1);
    assert!(out.notes[0].contains("not held"), "{:?}", out.notes);
    assert_eq!(a.conflicts()[0].class, ConflictClass::Latent);
}

#[test]
fn inventories_and_departed_owners_survive_a_restore() {
    let (mut a, m) = leased_to("vm1");
    let mut store = Persisted::default();
    for (spec, cursor) in a.pools.values().map(|p| (p.spec.clone(), p.cursor)) {
        store.pools.insert(spec.name.clone(), (spec, cursor));
    }
    for l in a.leases(&LeaseFilter::default()) {
        store.leases.insert(l.owner.key(), l);
    }
    for (i, inv) in [
        host_inv(
            "A",
            vec![vm("vm1", &["00155D000000"], &[("00155D000001", "cp")])],
        ),
        host_inv("A", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, ch) = a.apply_inventory(&admin(1), inv, i as u64 + 1).unwrap();
        store.apply(ch);
    }
    let restored = store.restore(Timestamp(2));
    assert_eq!(restored.inventories(), a.inventories());
    assert_eq!(restored.departed(m), a.departed(m));
    assert!(restored.departed(m).is_some());
    assert_eq!(restored.pools(), a.pools());
}

// ----- blocks ----------------------------------------------------------------------------------

fn claim(a: &mut Authority, ctx: &Context, host: &str, size: u64) -> Result<(Block, bool)> {
    a.claim_block(
        ctx,
        BlockClaim {
            host: host.into(),
            pool: "p".into(),
            size: Some(size),
        },
    )
    .map(|(b, existing, _)| (b, existing))
}

#[test]
fn a_block_is_an_aligned_free_run_that_the_allocator_never_touches() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    // 00 is leased: the first aligned run of 16 free addresses starts at 10
    assert_eq!(alloc(&mut a, 0, "vm0").unwrap(), mac("00155D000000"));
    let (b, existing) = claim(&mut a, &admin(0), "hv1", 16).unwrap();
    assert!(!existing);
    assert_eq!(b.range, range("00155D000010-00155D00001F"));
    assert_eq!(b.state, BlockState::Pending);
    let u = a.pool("p").unwrap().usage;
    assert_eq!((u.delegated, u.leased, u.free), (16, 1, 47));
    a.check_invariants().unwrap();
    // the allocator skips the block
    for i in 1..48 {
        let m = alloc(&mut a, 0, &format!("vm{i}")).unwrap();
        assert!(!b.range.contains(m), "{m} is inside the block");
    }
    assert_eq!(
        alloc(&mut a, 0, "one-too-many").unwrap_err().kind(),
        "pool-exhausted"
    );
    // a specific MAC or a hold inside the block is refused, naming the host
    let e = a
        .allocate(
            &admin(0),
            AllocateRequest {
                mac: Some(mac("00155D000011")),
                ..req("p", "x")
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), "mac-in-use");
    assert!(
        e.to_string().contains("delegated to host hv1 (block 1"),
        "{e}"
    );
    let e = a
        .hold(
            &admin(0),
            HoldRequest {
                mac: mac("00155D000012"),
                vm_id: "x".into(),
                reason: HoldReason::Template,
                reference: String::new(),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), "mac-in-use");
}

#[test]
fn claiming_again_returns_the_pending_block_and_bad_claims_change_nothing() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    let (b1, _) = claim(&mut a, &admin(0), "hv1", 16).unwrap();
    let (again, existing) = claim(&mut a, &admin(0), "hv1", 16).unwrap();
    assert!(existing);
    assert_eq!(again, b1);
    let before = a.pools();
    for (ctx, host, size, kind) in [
        (admin(0), "hv1", 4, "invalid-input"),
        (admin(0), "hv2", 100_000, "invalid-input"),
        (admin(0), "hv2", 64, "pool-exhausted"),
        (agent("hv3"), "hv2", 16, "forbidden"),
        (admin(0), "", 16, "invalid-input"),
    ] {
        let e = claim(&mut a, &ctx, host, size).unwrap_err();
        assert_eq!(e.kind(), kind, "{host} {size}: {e}");
    }
    let e = claim(&mut a, &admin(0), "hv2", 64).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pool 'p' has no free run of 64 contiguous addresses for a block (48 free, longest run 48)"
    );
    assert_eq!(a.pools(), before);
    // an agent claims for its own host
    let (b2, _) = claim(&mut a, &agent("hv2"), "hv2", 16).unwrap();
    assert_eq!(b2.id, 2);
    assert!(a.activate_block(&agent("hv2"), "hv1", b1.id).is_err());
    assert_eq!(
        a.activate_block(&admin(0), "hv2", b1.id)
            .unwrap_err()
            .kind(),
        "not-found"
    );
}

#[test]
fn rotation_drains_the_old_block_and_frees_it_only_when_unused_and_cooled_down() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    let (b1, _) = claim(&mut a, &admin(0), "hv1", 16).unwrap();
    let (active, ch) = a.activate_block(&admin(0), "hv1", b1.id).unwrap();
    assert_eq!(active.state, BlockState::Active);
    assert!(!ch.is_empty());
    assert!(
        a.activate_block(&admin(0), "hv1", b1.id)
            .unwrap()
            .1
            .is_empty()
    );
    // a desktop got 00155D000003 from the host's allocator; its checkpoint froze it
    let in_b1 = mac("00155D000003");
    assert!(b1.range.contains(in_b1));
    let out = push(
        &mut a,
        0,
        host_inv(
            "hv1",
            vec![vm("d1", &["00155D000003"], &[("00155D000003", "cp1")])],
        ),
        1,
    );
    assert!(out.unmanaged.is_empty(), "a delegated MAC is explained");
    assert!(out.held.is_empty(), "the block keeps it, not a hold");
    assert!(a.conflicts().is_empty(), "{:?}", a.conflicts());
    // rotate
    let (b2, _) = claim(&mut a, &admin(1), "hv1", 16).unwrap();
    let (_, _) = a.activate_block(&admin(1), "hv1", b2.id).unwrap();
    let states: Vec<_> = a
        .blocks(&BlockFilter::default())
        .into_iter()
        .map(|b| (b.id, b.state, b.unused_since))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, BlockState::Draining, None),
            (2, BlockState::Active, None)
        ]
    );
    // the desktop migrated to hv2 and still has the MAC: the block stays
    push(&mut a, 2, host_inv("hv1", vec![]), 2);
    push(
        &mut a,
        2,
        host_inv(
            "hv2",
            vec![vm("d1", &["00155D000003"], &[("00155D000003", "cp1")])],
        ),
        1,
    );
    assert_eq!(a.blocks(&BlockFilter::default())[0].unused_since, None);
    // the desktop is gone everywhere: unused from now on; still delegated within the cooldown
    push(&mut a, 10, host_inv("hv2", vec![]), 2);
    assert_eq!(
        a.blocks(&BlockFilter::default())[0].unused_since,
        Some(Timestamp(10))
    );
    push(
        &mut a,
        10 + HOUR.as_millis() as u64 - 1,
        host_inv("hv2", vec![]),
        3,
    );
    assert_eq!(a.blocks(&BlockFilter::default()).len(), 2);
    // seen again (a backup restored): the clock resets
    push(
        &mut a,
        20,
        host_inv("hv3", vec![vm("d1", &[], &[("00155D000004", "cp9")])]),
        1,
    );
    assert_eq!(a.blocks(&BlockFilter::default())[0].unused_since, None);
    let t = 30;
    push(&mut a, t, host_inv("hv3", vec![]), 2);
    // cooled down, but hv1 has not reported since (its VMs may have its MACs): not yet
    let late = t + HOUR.as_millis() as u64;
    push(&mut a, late, host_inv("hv3", vec![]), 3);
    assert_eq!(a.blocks(&BlockFilter::default()).len(), 2);
    let (_, ch) = a
        .apply_inventory(&admin(late), host_inv("hv1", vec![]), 3)
        .unwrap();
    let freed: Vec<_> = ch
        .iter()
        .filter_map(|c| match c {
            Change::BlockSaved(b) if b.state == BlockState::Free => Some(b.id),
            _ => None,
        })
        .collect();
    assert_eq!(freed, vec![1]);
    assert_eq!(a.blocks(&BlockFilter::default()).len(), 1);
    let u = a.pool("p").unwrap().usage;
    assert_eq!((u.delegated, u.free), (16, 48));
    a.check_invariants().unwrap();
}

#[test]
fn a_host_range_still_inside_a_draining_block_keeps_it() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, Duration::ZERO);
    let (b1, _) = claim(&mut a, &admin(0), "hv1", 16).unwrap();
    a.activate_block(&admin(0), "hv1", b1.id).unwrap();
    let mut inv = host_inv("hv1", vec![]);
    inv.set_dynamic_range(Some(b1.range), None).unwrap();
    push(&mut a, 0, inv.clone(), 1);
    a.drain_block(&admin(1), "hv1", b1.id).unwrap();
    push(&mut a, 5, inv, 2);
    assert_eq!(
        a.blocks(&BlockFilter::default()).len(),
        1,
        "still the host's range"
    );
    assert!(a.conflicts().is_empty());
    push(&mut a, 6, host_inv("hv1", vec![]), 3);
    assert_eq!(
        a.blocks(&BlockFilter::default()).len(),
        1,
        "unused from now on"
    );
    push(&mut a, 7, host_inv("hv1", vec![]), 4);
    assert!(
        a.blocks(&BlockFilter::default()).is_empty(),
        "zero cooldown: freed at the next report"
    );
    assert_eq!(a.pool("p").unwrap().usage.free, 64);
}

#[test]
fn pools_with_blocks_cannot_be_deleted_or_shrunk_past_them() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    claim(&mut a, &admin(0), "hv1", 16).unwrap();
    let e = a.delete_pool(&admin(0), "p").unwrap_err();
    assert_eq!(e.kind(), "pool-in-use");
    assert!(e.to_string().contains("1 blocks delegated"), "{e}");
    let e = a
        .edit_pool(
            &admin(0),
            "p",
            PoolEdit {
                ranges: Some(vec![range("00155D000010-00155D00003F")]),
                ..PoolEdit::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), "range-in-use");
    // growing the pool keeps the block delegated
    a.edit_pool(
        &admin(0),
        "p",
        PoolEdit {
            add_ranges: vec![range("00155D000100-00155D0001FF")],
            ..PoolEdit::default()
        },
    )
    .unwrap();
    a.check_invariants().unwrap();
    assert_eq!(a.pool("p").unwrap().usage.delegated, 16);
}

#[test]
fn block_ids_are_never_reused_after_a_restore() {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, Duration::ZERO);
    let mut store = Persisted::default();
    for (spec, cursor) in a.pools.values().map(|p| (p.spec.clone(), p.cursor)) {
        store.pools.insert(spec.name.clone(), (spec, cursor));
    }
    let (b, _, ch) = a
        .claim_block(
            &admin(0),
            BlockClaim {
                host: "hv1".into(),
                pool: "p".into(),
                size: Some(16),
            },
        )
        .unwrap();
    store.apply(ch);
    let (_, ch) = a.drain_block(&admin(0), "hv1", b.id).unwrap();
    store.apply(ch);
    assert!(
        a.blocks(&BlockFilter::default()).is_empty(),
        "freed at once"
    );
    let mut restored = store.restore(Timestamp(1));
    let (next, _, _) = restored
        .claim_block(
            &admin(1),
            BlockClaim {
                host: "hv1".into(),
                pool: "p".into(),
                size: Some(16),
            },
        )
        .unwrap();
    assert_eq!(next.id, 2);
}

#[test]
fn a_mac_shows_every_vm_the_inventories_have_it_on_leased_or_not() {
    let mut a = authority_with_pool(16, AllocationOrder::Lowest, HOUR);
    // the seed: the desktop's checkpoint froze 0003 on hv2; hv1 gave 0003 to a new VM
    push(
        &mut a,
        0,
        host_inv(
            "hv2",
            vec![vm("desk", &["00155D000009"], &[("00155D000003", "cp1")])],
        ),
        1,
    );
    push(
        &mut a,
        0,
        host_inv("hv1", vec![vm("new", &["00155D000003"], &[])]),
        1,
    );
    let seen = a.mac_status(mac("00155D000003")).seen;
    let who: Vec<(&str, &str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.host.as_str(), s.vm_id.as_str(), s.checkpoint.as_deref()))
        .collect();
    assert_eq!(
        who,
        [
            ("hv1", "new", None),
            ("hv2", "desk", Some("RDV_ROLLBACK cp1"))
        ]
    );
    // the new VM is deleted: only the checkpoint is left
    push(&mut a, 1, host_inv("hv1", vec![]), 2);
    assert_eq!(a.mac_status(mac("00155D000003")).seen.len(), 1);
    assert!(a.mac_status(mac("00155D00000F")).seen.is_empty());
}

// ----- model-based property test ---------------------------------------------------------------

/// What a store would hold after applying every change: the persisted form.
#[derive(Default)]
struct Persisted {
    pools: BTreeMap<PoolName, (PoolSpec, Mac)>,
    leases: HashMap<OwnerKey, Lease>,
    holds: BTreeMap<HoldKey, Hold>,
    cooling: HashMap<Mac, Timestamp>,
    inventories: BTreeMap<String, StoredInventory>,
    departed: HashMap<Mac, Lease>,
    blocks: BTreeMap<u64, Block>,
}

impl Persisted {
    fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::PoolSaved { spec, cursor } => {
                    self.pools.insert(spec.name.clone(), (spec, cursor));
                }
                Change::PoolDeleted { name } => {
                    let (spec, _) = self.pools.remove(&name).unwrap();
                    self.cooling
                        .retain(|m, _| !spec.ranges.iter().any(|r| r.contains(*m)));
                }
                Change::CursorMoved { pool, cursor } => {
                    self.pools.get_mut(&pool).unwrap().1 = cursor
                }
                Change::LeaseSaved(l) => {
                    self.leases.insert(l.owner.key(), l);
                }
                Change::LeaseDeleted { owner, .. } => {
                    self.leases.remove(&owner).unwrap();
                }
                Change::HoldSaved(h) => {
                    self.holds.insert(h.key(), h);
                }
                Change::HoldDeleted(k) => {
                    self.holds.remove(&k).unwrap();
                }
                Change::CoolingStarted { mac, until } => {
                    self.cooling.insert(mac, until);
                }
                Change::CoolingCleared { mac } => {
                    self.cooling.remove(&mac);
                }
                Change::History(_) => {}
                Change::InventorySaved(s) => {
                    self.inventories.insert(s.inventory.host().to_string(), s);
                }
                Change::InventoryPatched(p) => {
                    let stored = self.inventories.get_mut(p.host()).unwrap();
                    p.apply_to(stored).unwrap();
                }
                Change::DepartedSaved(l) => {
                    self.departed.insert(l.mac, l);
                }
                Change::DepartedCleared { mac } => {
                    self.departed.remove(&mac).unwrap();
                }
                Change::BlockSaved(b) => {
                    self.blocks.insert(b.id, b);
                }
            }
        }
    }

    fn restore(&self, now: Timestamp) -> Authority {
        Authority::restore(
            self.pools.values().cloned().collect(),
            self.leases.values().cloned().collect(),
            self.holds.values().cloned().collect(),
            self.cooling.iter().map(|(m, t)| (*m, *t)).collect(),
            now,
        )
        .unwrap()
        .with_inventories(
            self.inventories.values().cloned().collect(),
            self.departed.values().cloned().collect(),
        )
        .with_blocks(self.blocks.values().cloned().collect())
        .unwrap()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        vm: u8,
        mac: Option<u8>,
    },
    ReleaseVm {
        vm: u8,
    },
    Hold {
        vm: u8,
        mac: u8,
    },
    Unhold {
        vm: u8,
        mac: u8,
    },
    Tick {
        ms: u16,
    },
    ToggleDuplicates,
    /// Adds MACs 8..12 to pool `p` as a second range, or removes that range again (refused
    /// while any of them is leased or held).
    ToggleSecondRange,
    /// Tries to add a range starting at the all-zero address to pool `p` (always refused).
    AddZeroRange,
    /// Creates pool `c` (MACs 0x200..0x204), or deletes it.
    TogglePoolC,
    /// A host's whole inventory: `(vm, live MAC, checkpoint MAC, checkpoint id)` per VM;
    /// `stale` resends the current generation (refused).
    Inventory {
        host: u8,
        stale: bool,
        vms: Vec<(u8, Option<u8>, Option<u8>, u8)>,
    },
    ClaimBlock {
        host: u8,
    },
    ActivateBlock {
        host: u8,
    },
    DrainBlock {
        host: u8,
        nth: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, proptest::option::of(0u8..10)).prop_map(|(vm, mac)| Op::Allocate { vm, mac }),
        2 => (0u8..12).prop_map(|vm| Op::ReleaseVm { vm }),
        1 => (0u8..12, 0u8..12).prop_map(|(vm, mac)| Op::Hold { vm, mac }),
        1 => (0u8..12, 0u8..12).prop_map(|(vm, mac)| Op::Unhold { vm, mac }),
        1 => (0u16..500).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::ToggleDuplicates),
        1 => Just(Op::ToggleSecondRange),
        1 => Just(Op::AddZeroRange),
        1 => Just(Op::TogglePoolC),
        3 => (0u8..3, proptest::bool::weighted(0.1), proptest::collection::vec((0u8..12, proptest::option::of(0u8..16), proptest::option::of(0u8..16), 0u8..2), 0..5))
            .prop_map(|(host, stale, vms)| Op::Inventory { host, stale, vms }),
        1 => (0u8..3).prop_map(|host| Op::ClaimBlock { host }),
        1 => (0u8..3).prop_map(|host| Op::ActivateBlock { host }),
        1 => (0u8..3, 0u8..3).prop_map(|(host, nth)| Op::DrainBlock { host, nth }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// After every step: invariants hold, a restore from the persisted changes equals the live
    /// state, and no MAC has two leases unless one is flagged as a duplicate.
    #[test]
    fn incremental_state_equals_a_restore(ops in proptest::collection::vec(op(), 1..60), order in any::<bool>()) {
        let order = if order { AllocationOrder::NextFit } else { AllocationOrder::Lowest };
        let mut a = Authority::new();
        let mut store = Persisted::default();
        // A second replica that only replays what `a` persisted (PostgreSQL's change log).
        let mut follower = Authority::new();
        let mut now = 0u64;
        // 8 addresses in the pool; MACs 8..12 lie outside it (holds there are allowed).
        let (_, ch) = a.create_pool(&admin(0), spec("p", &["00155D000000-00155D000007"], policy(order, Duration::from_millis(300))), 3).unwrap();
        follower.apply_persisted(&ch).unwrap();
        store.apply(ch);
        // Pool `b` (32 addresses) is for blocks of 8; MACs 12..16 fall into its four blocks.
        let (_, ch) = a.create_pool(&admin(0), spec("b", &["00155D000100-00155D00011F"], policy(order, Duration::from_millis(300))), 0).unwrap();
        follower.apply_persisted(&ch).unwrap();
        store.apply(ch);
        let m = |i: u8| {
            let i = u64::from(i);
            Mac::from_u64(if i < 12 { 0x00155D000000 + i } else { 0x00155D000100 + (i - 12) * 8 + 3 }).unwrap()
        };
        let mut allow = false;
        let mut generations = [0u64; 3];
        for (step, op) in ops.into_iter().enumerate() {
            // A reader's snapshot from before the step must not see the step.
            let snapshot = a.snapshot();
            let before = (snapshot.leases(&LeaseFilter::default()), snapshot.holds(None), snapshot.conflicts(), snapshot.inventories());
            let ctx = admin(now);
            let result: std::result::Result<Vec<Change>, AuthorityError> = match op.clone() {
                Op::Allocate { vm, mac } => a.allocate(&ctx, AllocateRequest { pool: "p".into(), owner: owner(&format!("vm{vm}")), mac: mac.map(m), count: 1, reason: None }).map(|(_, c)| c),
                Op::ReleaseVm { vm } => a.release(&ctx, ReleaseSelector::Vm { vm_id: format!("vm{vm}"), adapter_id: None }).map(|(_, c)| c),
                Op::Hold { vm, mac } => a.hold(&ctx, HoldRequest { mac: m(mac), vm_id: format!("vm{vm}"), reason: HoldReason::Checkpoint, reference: "cp".into() }).map(|(_, c)| c),
                Op::Unhold { vm, mac } => a.unhold(&ctx, UnholdRequest { mac: m(mac), vm_id: format!("vm{vm}"), reason: None, reference: None }).map(|(_, c)| c),
                Op::Tick { ms } => { now += u64::from(ms); Ok(Vec::new()) }
                Op::ToggleDuplicates => {
                    allow = !allow;
                    let d = if allow { DuplicatePolicy::AllowAndFlag } else { DuplicatePolicy::Deny };
                    a.edit_pool(&ctx, "p", PoolEdit { duplicates: Some(d), ..PoolEdit::default() }).map(|(_, c)| c)
                }
                Op::ToggleSecondRange => {
                    let second: MacRange = "00155D000008-00155D00000B".parse().unwrap();
                    let has = a.pool("p").unwrap().spec.ranges.contains(&second);
                    let edit = if has { PoolEdit { remove_ranges: vec![second], ..PoolEdit::default() } } else { PoolEdit { add_ranges: vec![second], ..PoolEdit::default() } };
                    a.edit_pool(&ctx, "p", edit).map(|(_, c)| c)
                }
                Op::AddZeroRange => {
                    let zero: MacRange = "000000000000-000000000003".parse().unwrap();
                    let r = a.edit_pool(&ctx, "p", PoolEdit { add_ranges: vec![zero], ..PoolEdit::default() }).map(|(_, c)| c);
                    prop_assert_eq!(r.as_ref().map_err(|e| e.kind()).err(), Some("invalid-input"), "{:?}", r);
                    r
                }
                Op::TogglePoolC => {
                    if a.pool("c").is_ok() {
                        a.delete_pool(&ctx, "c")
                    } else {
                        a.create_pool(&ctx, spec("c", &["00155D000200-00155D000203"], policy(order, Duration::from_millis(300))), 1).map(|(_, c)| c)
                    }
                }
                Op::Inventory { host, stale, vms } => {
                    let mut inv = HostInventory::new(format!("h{host}")).unwrap();
                    for (v, live, cp, cp_id) in vms {
                        let mut x = Vm::new(format!("vm{v}"), "", VmState::Running).unwrap();
                        let hex = |i: u8| m(i).to_string();
                        let live: Vec<String> = live.map(hex).into_iter().collect();
                        let cps: Vec<(String, String)> = cp.map(|c| (hex(c), format!("cp{cp_id}"))).into_iter().collect();
                        let built = vm("x", &live.iter().map(String::as_str).collect::<Vec<_>>(), &cps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>());
                        x.adapters = built.adapters;
                        let _ = inv.add_vm(x);
                    }
                    let h = usize::from(host);
                    let generation = if stale { generations[h] } else { generations[h] + 1 };
                    let resend = a.inventory(inv.host()).is_ok_and(|s| s.generation == generation && s.inventory == inv);
                    let r = a.apply_inventory(&ctx, inv, generation).map(|(_, c)| c);
                    if resend {
                        prop_assert_eq!(r.as_ref().map(Vec::len).ok(), Some(0), "an unchanged resend is a no-op");
                    } else if stale && generations[h] > 0 {
                        prop_assert_eq!(r.as_ref().map_err(|e| e.kind()).err(), Some("stale-generation"));
                    }
                    if r.is_ok() {
                        generations[h] = generation;
                    }
                    r
                }
                Op::ClaimBlock { host } => a.claim_block(&ctx, BlockClaim { host: format!("h{host}"), pool: "b".into(), size: Some(8) }).map(|(_, _, c)| c),
                Op::ActivateBlock { host } => {
                    let pending = a.blocks(&BlockFilter { host: Some(format!("h{host}")), pool: None }).into_iter().find(|b| b.state == BlockState::Pending);
                    match pending {
                        Some(b) => a.activate_block(&ctx, &b.host, b.id).map(|(_, c)| c),
                        None => Ok(Vec::new()),
                    }
                }
                Op::DrainBlock { host, nth } => {
                    let mine = a.blocks(&BlockFilter { host: Some(format!("h{host}")), pool: None });
                    match mine.get(usize::from(nth)) {
                        Some(b) => a.drain_block(&ctx, &b.host, b.id).map(|(_, c)| c),
                        None => Ok(Vec::new()),
                    }
                }
            };
            if let Ok(changes) = result {
                follower.apply_persisted(&changes).unwrap();
                store.apply(changes);
            }
            a.expire(Timestamp(now));
            follower.expire(Timestamp(now));
            prop_assert_eq!(&before, &(snapshot.leases(&LeaseFilter::default()), snapshot.holds(None), snapshot.conflicts(), snapshot.inventories()), "a snapshot changed under step {} {:?}", step, op);
            // The read view: a settled copy (what a store publishes) equals a rebuild. The
            // follower is never settled, so its reads catch up from whatever it had.
            let view = a.snapshot();
            prop_assert_eq!(view.check_invariants(), Ok(()), "read view after step {} {:?}", step, op);
            prop_assert_eq!(view.conflicts(), view.conflicts_rebuilt());
            prop_assert_eq!(follower.check_invariants(), Ok(()), "follower after step {} {:?}", step, op);
            prop_assert_eq!(follower.pools(), a.pools(), "follower pools differ after step {} {:?}", step, op);
            prop_assert_eq!(follower.leases(&LeaseFilter::default()), a.leases(&LeaseFilter::default()));
            prop_assert_eq!(follower.holds(None), a.holds(None));
            prop_assert_eq!(follower.available("p", 100).unwrap(), a.available("p", 100).unwrap());
            prop_assert_eq!(follower.available("b", 100).unwrap(), a.available("b", 100).unwrap());
            prop_assert_eq!(follower.inventories(), a.inventories());
            prop_assert_eq!(follower.conflicts(), a.conflicts());
            prop_assert_eq!(follower.blocks(&BlockFilter::default()), a.blocks(&BlockFilter::default()));
            prop_assert_eq!(follower.next_block_id, a.next_block_id);
            prop_assert_eq!(&follower.checkpoint_refs, &a.checkpoint_refs);
            for i in 0..16 {
                prop_assert_eq!(follower.mac_status(m(i)), a.mac_status(m(i)));
                prop_assert_eq!(follower.departed(m(i)), a.departed(m(i)));
            }
            prop_assert_eq!(follower.pool_cursor("p").unwrap(), a.pool_cursor("p").unwrap());
            prop_assert_eq!(a.check_invariants(), Ok(()), "step {} {:?}", step, op);
            let mut restored = store.restore(Timestamp(now));
            restored.expire(Timestamp(now));
            prop_assert_eq!(restored.check_invariants(), Ok(()));
            prop_assert_eq!(restored.pools(), a.pools(), "pools differ after step {} {:?}", step, op);
            prop_assert_eq!(restored.leases(&LeaseFilter::default()), a.leases(&LeaseFilter::default()));
            prop_assert_eq!(restored.holds(None), a.holds(None));
            prop_assert_eq!(restored.available("p", 100).unwrap(), a.available("p", 100).unwrap());
            prop_assert_eq!(restored.inventories(), a.inventories());
            prop_assert_eq!(restored.conflicts(), a.conflicts());
            prop_assert_eq!(restored.blocks(&BlockFilter::default()), a.blocks(&BlockFilter::default()));
            prop_assert_eq!(restored.available("b", 100).unwrap(), a.available("b", 100).unwrap());
            // No MAC inside a block is leased or held.
            for b in a.blocks(&BlockFilter::default()) {
                for l in a.leases(&LeaseFilter::default()) {
                    prop_assert!(!b.range.contains(l.mac), "{} leased inside block {}", l.mac, b.id);
                }
            }
            for i in 0..12 {
                prop_assert_eq!(restored.departed(m(i)), a.departed(m(i)));
            }
            // No MAC leased twice unless flagged.
            let mut seen = HashMap::new();
            for l in a.leases(&LeaseFilter::default()) {
                if let Some(prev) = seen.insert(l.mac, l.clone()) {
                    prop_assert!(l.duplicate || prev.duplicate, "{} leased twice without a flag", l.mac);
                }
            }
        }
    }
}

/// A pool with every state the dashboard draws: leased, held, cooling, delegated, unmanaged,
/// free; and a live duplicate (a conflict) on the unmanaged MAC.
fn every_state() -> Authority {
    let mut a = authority_with_pool(64, AllocationOrder::Lowest, HOUR);
    let leased = alloc(&mut a, 0, "vm-l").unwrap(); // ..00
    let cooled = alloc(&mut a, 0, "vm-c").unwrap(); // ..01
    a.release(
        &admin(0),
        ReleaseSelector::Mac {
            mac: cooled,
            vm_id: None,
        },
    )
    .unwrap();
    a.hold(
        &admin(0),
        HoldRequest {
            mac: mac("00155D000005"),
            vm_id: "vm-t".into(),
            reason: HoldReason::Template,
            reference: "gold".into(),
        },
    )
    .unwrap();
    a.claim_block(
        &admin(0),
        BlockClaim {
            host: "hv1".into(),
            pool: "p".into(),
            size: Some(16),
        },
    )
    .unwrap();
    let _ = leased;
    // 00155D000009 is in nobody's books but two hosts run it
    push(
        &mut a,
        0,
        host_inv("hv1", vec![vm("u1", &["00155D000009"], &[])]),
        1,
    );
    push(
        &mut a,
        0,
        host_inv("hv2", vec![vm("u2", &["00155D000009"], &[])]),
        1,
    );
    a
}

#[test]
fn the_map_shows_each_addresss_state_as_the_books_have_it() {
    let a = every_state();
    let conflicts = a.conflicting_macs();
    let map = a
        .address_map("p", mac("00155D000000"), 1, 80, &conflicts)
        .unwrap();
    let MapCells::Addresses(cells) = map.cells else {
        panic!("single addresses")
    };
    assert_eq!(cells.len(), 80);
    let key = |i: usize| cells[i].state.key();
    assert_eq!(key(0), "leased");
    assert_eq!(key(1), "cooling");
    assert_eq!(key(5), "held");
    assert_eq!(key(9), "unmanaged");
    assert!(cells[9].conflict && !cells[0].conflict);
    assert_eq!(key(2), "free");
    assert_eq!(key(16), "delegated", "the 16-aligned block");
    assert_eq!(key(31), "delegated");
    assert_eq!(key(32), "free");
    assert_eq!(key(64), "outside", "past the pool's end");
    // every cell agrees with the per-MAC status
    for c in &cells {
        let s = a.mac_status(c.mac);
        match &c.state {
            AddressState::Leased => assert!(!s.leases.is_empty()),
            AddressState::Held(r) => assert_eq!(s.holds[0].reason, *r),
            AddressState::Cooling(t) => assert_eq!(s.cooling_until, Some(*t)),
            AddressState::Outside => assert!(s.pool.is_none()),
            _ => assert!(s.leases.is_empty() && s.holds.is_empty()),
        }
    }
}

#[test]
fn a_zoomed_out_cell_counts_what_is_used_inside_it() {
    let a = every_state();
    let conflicts = a.conflicting_macs();
    let map = a
        .address_map("p", mac("00155D000000"), 16, 5, &conflicts)
        .unwrap();
    let MapCells::Summaries(cells) = map.cells else {
        panic!("summaries")
    };
    let used: Vec<u64> = cells.iter().map(|c| c.used).collect();
    // 00 leased, 01 cooling, 05 held (09 is unmanaged: free in the books); then the block
    assert_eq!(used, vec![3, 16, 0, 0, 0]);
    let in_pool: Vec<u64> = cells.iter().map(|c| c.in_pool).collect();
    assert_eq!(in_pool, vec![16, 16, 16, 16, 0]);
    assert_eq!(cells[0].conflicts, 1);
    let total: u64 = used.iter().sum();
    let u = a.pool("p").unwrap().usage;
    assert_eq!(total, u.size - u.free);
}

#[test]
fn address_rows_cover_the_pool_once_in_order_with_free_runs_between() {
    let a = every_state();
    let conflicts = a.conflicting_macs();
    let (rows, next) = a
        .address_rows("p", mac("00155D000000"), 1000, &conflicts, &|_| true)
        .unwrap();
    assert_eq!(next, None);
    let mut expect = 0x00155D000000u64;
    let mut shape = Vec::new();
    for r in &rows {
        let (first, last, what) = match r {
            AddressRow::Used { status, state, .. } => (status.mac, status.mac, state.key()),
            AddressRow::Block(b) => (b.range.first(), b.range.last(), "block"),
            AddressRow::Free { first, last } => (*first, *last, "free"),
        };
        assert_eq!(first.to_u64(), expect, "rows are contiguous");
        expect = last.to_u64() + 1;
        shape.push(format!("{what}:{}", last.to_u64() - first.to_u64() + 1));
    }
    assert_eq!(expect, 0x00155D000000 + 64);
    assert_eq!(
        shape,
        [
            "leased:1",
            "cooling:1",
            "free:3",
            "held:1",
            "free:3",
            "unmanaged:1",
            "free:6",
            "block:16",
            "free:32"
        ]
    );
    // paging: two rows a page, resumed where the last page stopped, gives the same rows
    let mut paged = Vec::new();
    let mut from = Some(mac("00155D000000"));
    while let Some(f) = from {
        let (page, next) = a.address_rows("p", f, 2, &conflicts, &|_| true).unwrap();
        paged.extend(page);
        from = next;
    }
    assert_eq!(paged, rows);
    // a filter applies inside the read: one page of kept rows, whatever lies between them
    let free_only = |r: &AddressRow| matches!(r, AddressRow::Free { .. });
    let (kept, next) = a
        .address_rows("p", mac("00155D000000"), 3, &conflicts, &free_only)
        .unwrap();
    let want: Vec<AddressRow> = rows
        .iter()
        .filter(|r| free_only(r))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(kept, want);
    assert_eq!(
        next,
        Some(mac("00155D000010")),
        "the page ends after the third free run"
    );
}

#[test]
fn a_map_of_no_cells_or_an_unknown_pool_is_refused() {
    let a = every_state();
    let none = BTreeSet::new();
    assert_eq!(
        a.address_map("p", mac("00155D000000"), 0, 4, &none)
            .unwrap_err()
            .kind(),
        "invalid-input"
    );
    assert_eq!(
        a.address_rows("nope", mac("00155D000000"), 4, &none, &|_| true)
            .unwrap_err()
            .kind(),
        "not-found"
    );
}

#[test]
fn a_specific_mac_with_a_count_takes_that_many_consecutive_addresses_or_none() {
    let mut a = authority_with_pool(16, AllocationOrder::NextFit, HOUR);
    let run = AllocateRequest {
        mac: Some(mac("00155D000004")),
        count: 3,
        ..req("p", "vm-run")
    };
    let (got, _) = a.allocate(&admin(0), run.clone()).unwrap();
    let macs: Vec<String> = got.iter().map(|g| g.lease.mac.to_string()).collect();
    assert_eq!(
        macs,
        [
            "00-15-5D-00-00-04",
            "00-15-5D-00-00-05",
            "00-15-5D-00-00-06"
        ]
    );
    // asking again returns the same run
    let (again, ch) = a.allocate(&admin(0), run).unwrap();
    assert!(again.iter().all(|g| g.existing) && ch.is_empty());
    // a run that meets a used address changes nothing
    let before = a.pool("p").unwrap().usage;
    let clash = AllocateRequest {
        mac: Some(mac("00155D000002")),
        count: 3,
        ..req("p", "vm-clash")
    };
    assert_eq!(
        a.allocate(&admin(0), clash).unwrap_err().kind(),
        "mac-in-use"
    );
    // and one that runs past the pool is refused too
    let past = AllocateRequest {
        mac: Some(mac("00155D00000E")),
        count: 3,
        ..req("p", "vm-past")
    };
    assert_eq!(
        a.allocate(&admin(0), past).unwrap_err().kind(),
        "mac-outside-pool"
    );
    assert_eq!(a.pool("p").unwrap().usage, before);
    a.check_invariants().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// No pool holds the all-zero address: a range with it is refused at create and edit and
    /// changes nothing; a pool stored with one (before they were refused) opens without it, and
    /// every address it hands out, lists as free or counts is a valid adapter address.
    #[test]
    fn the_zero_address_is_never_in_a_pool(last in 0u64..40, order in any::<bool>(), random in any::<u64>(), cursor in 0u64..41) {
        let order = if order { AllocationOrder::NextFit } else { AllocationOrder::Lowest };
        let zero = MacRange::new(Mac::ZERO, Mac::from_u64(last).unwrap()).unwrap();
        let z = || PoolSpec { name: PoolName::new("z").unwrap(), ranges: vec![zero], policy: policy(order, HOUR) };
        let mut a = Authority::new();
        let err = a.create_pool(&admin(0), z(), random).unwrap_err();
        prop_assert!(err.to_string().contains("all-zero"), "{}", err);
        prop_assert!(a.pools().is_empty());
        a.create_pool(&admin(0), spec("p", &["00155D000000-00155D000003"], policy(order, HOUR)), random).unwrap();
        let before = a.pools();
        for edit in [PoolEdit { add_ranges: vec![zero], ..PoolEdit::default() }, PoolEdit { ranges: Some(vec![zero]), ..PoolEdit::default() }] {
            let err = a.edit_pool(&admin(0), "p", edit).unwrap_err();
            prop_assert_eq!(err.kind(), "invalid-input");
        }
        prop_assert_eq!(a.pools(), before);

        let mut b = Authority::restore(vec![(z(), Mac::from_u64(cursor).unwrap())], Vec::new(), Vec::new(), Vec::new(), Timestamp(0)).unwrap();
        let view = b.pool("z").unwrap();
        prop_assert_eq!(view.usage.size, last);
        prop_assert!(view.spec.ranges.iter().all(|r| r.invalid_address().is_none()));
        prop_assert!(b.available("z", 100).unwrap().runs.iter().all(|(f, _)| f.invalid_reason().is_none()));
        prop_assert!(b.pool_of(Mac::ZERO).is_none());
        let mut handed = HashSet::new();
        for i in 0..=last {
            match b.allocate(&admin(0), req("z", &format!("vm{i}"))) {
                Ok((v, _)) => {
                    prop_assert_eq!(v[0].lease.mac.invalid_reason(), None);
                    prop_assert!(handed.insert(v[0].lease.mac));
                }
                Err(e) => prop_assert_eq!(e.kind(), "pool-exhausted"),
            }
        }
        prop_assert_eq!(handed.len() as u64, last);
        prop_assert_eq!(b.check_invariants(), Ok(()));
    }
}

/// A store from before zero was refused, whose pool already handed 00-00-00-00-00-00 to a VM:
/// it opens, the lease stays (outside the pool now, releasable), the address is never reissued.
#[test]
fn a_stored_lease_of_the_zero_address_opens_and_is_never_reissued() {
    let zero_pool = spec(
        "z",
        &["000000000000-000000000003"],
        policy(AllocationOrder::Lowest, Duration::ZERO),
    );
    let lease = Lease {
        mac: Mac::ZERO,
        pool: zero_pool.name.clone(),
        owner: owner("old"),
        state: LeaseState::Reserved,
        created: Timestamp(0),
        duplicate: false,
    };
    let mut a = Authority::restore(
        vec![(zero_pool, Mac::ZERO)],
        vec![lease],
        Vec::new(),
        Vec::new(),
        Timestamp(0),
    )
    .unwrap();
    assert_eq!(a.check_invariants(), Ok(()));
    assert_eq!(a.pool("z").unwrap().usage.size, 3);
    assert_eq!(a.leases(&LeaseFilter::default()).len(), 1);
    a.release(
        &admin(1),
        ReleaseSelector::Vm {
            vm_id: "old".into(),
            adapter_id: None,
        },
    )
    .unwrap();
    let mut got = Vec::new();
    while let Ok((v, _)) = a.allocate(&admin(2), req("z", &format!("vm{}", got.len()))) {
        got.push(v[0].lease.mac);
    }
    assert_eq!(
        got,
        vec![
            mac("00-00-00-00-00-01"),
            mac("00-00-00-00-00-02"),
            mac("00-00-00-00-00-03")
        ]
    );
    assert_eq!(a.check_invariants(), Ok(()));
}
