//! The behaviour every back end must show, as async functions over any [`Store`]. Each back
//! end's tests call [`run_all`] with a factory that opens (or reopens) the same store.

use std::future::Future;

use macpool_core::authority::{
    Actor, AllocateRequest, BlockClaim, BlockFilter, HoldRequest, LeaseFilter, ReleaseSelector,
    Scope, StoredInventory,
};
use macpool_core::block::BlockState;
use macpool_core::conflict::ConflictClass;
use macpool_core::history::HistoryAction;
use macpool_core::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, CursorSource, HostInventory, MacKind, Vm,
    VmState,
};
use macpool_core::lease::{HoldReason, LeaseState, Owner};
use macpool_core::pool::{PoolName, PoolPolicy, PoolSpec};
use macpool_core::{Mac, MacRange, Timestamp};

use crate::{HistoryFilter, LeaseKey, Role, Store, StoreError, TokenRecord};

pub fn request(pool: &str, vm: &str) -> AllocateRequest {
    AllocateRequest {
        pool: pool.into(),
        owner: Owner {
            vm_id: vm.into(),
            ..Owner::default()
        },
        mac: None,
        count: 1,
        reason: None,
    }
}

pub async fn create_pool<S: Store>(store: &S, name: &str, range: &str) {
    store
        .create_pool(
            Actor::admin("test"),
            PoolSpec {
                name: PoolName::new(name).unwrap(),
                ranges: vec![MacRange::parse(range).unwrap()],
                policy: PoolPolicy::default(),
            },
        )
        .await
        .unwrap();
}

/// Runs every check. `reopen` says whether the factory returns the same durable store again
/// (then durability across reopen is checked).
pub async fn run_all<S: Store, F: Future<Output = S>>(open: impl Fn() -> F, reopen: bool) {
    let store = open().await;
    create_pool(&store, "conf", "00155D0C0000-00155D0C00FF").await;
    acknowledged_changes_survive_and_history_is_kept(&store).await;
    refused_requests_change_nothing(&store).await;
    tokens_round_trip(&store).await;
    token_rules_hold_and_refusals_change_nothing(&store).await;
    inventories_bind_hold_and_refusals_change_nothing(&store).await;
    blocks_rotate_and_refusals_change_nothing(&store).await;
    agent_reports_round_trip_and_claimants_are_known(&store).await;
    let diffed = later_reports_are_stored_as_diffs(&store).await;
    lease_pages_cover_every_lease_once(&store).await;
    a_long_read_does_not_hold_up_writes(&store).await;
    if reopen {
        let blocks = store.blocks(BlockFilter::default()).await.unwrap();
        let leases = store.leases(LeaseFilter::default()).await.unwrap();
        let pools = store.pools().await.unwrap();
        let holds = store.holds(None).await.unwrap();
        let conflicts = store.conflicts().await.unwrap();
        let inventory = store.inventory("conf-h2".into()).await.unwrap();
        let reported = store.inventory("conf-h3".into()).await.unwrap();
        drop(store);
        let again = open().await;
        assert_eq!(again.leases(LeaseFilter::default()).await.unwrap(), leases);
        assert_eq!(again.pools().await.unwrap(), pools);
        assert_eq!(again.holds(None).await.unwrap(), holds);
        assert_eq!(again.conflicts().await.unwrap(), conflicts);
        assert!(!conflicts.is_empty());
        assert_eq!(again.inventory("conf-h2".into()).await.unwrap(), inventory);
        assert_eq!(again.inventory("conf-h3".into()).await.unwrap(), reported);
        assert_eq!(again.inventory("conf-h5".into()).await.unwrap(), diffed);
        assert_eq!(reported.inventory.management_adapters.len(), 2);
        assert_eq!(again.blocks(BlockFilter::default()).await.unwrap(), blocks);
        // block ids are never reused, also after a restart
        let (next, _) = again
            .claim_block(Actor::admin("t"), block_claim("conf-h9"))
            .await
            .unwrap();
        assert!(
            blocks.iter().all(|b| b.id < next.id),
            "{next:?} after {blocks:?}"
        );
        // the stored generation survived too
        let stale = again
            .put_inventory(Actor::admin("t"), host("conf-h2", vec![]), 1)
            .await;
        assert!(matches!(stale, Err(StoreError::Domain(ref d)) if d.kind() == "stale-generation"));
    }
}

async fn acknowledged_changes_survive_and_history_is_kept<S: Store>(store: &S) {
    let a = store
        .allocate(Actor::admin("alice"), request("conf", "vm-1"))
        .await
        .unwrap();
    let mac = a[0].lease.mac;
    store
        .hold(
            Actor::admin("alice"),
            HoldRequest {
                mac,
                vm_id: "vm-1".into(),
                reason: HoldReason::Checkpoint,
                reference: "cp-1".into(),
            },
        )
        .await
        .unwrap();
    store
        .release(
            Actor::admin("bob"),
            ReleaseSelector::Mac { mac, vm_id: None },
        )
        .await
        .unwrap();
    let status = store.mac_status(mac).await.unwrap();
    assert!(status.leases.is_empty());
    assert_eq!(
        status.holds.len(),
        1,
        "the checkpoint hold outlives the lease"
    );
    let h = store
        .history(HistoryFilter {
            mac: Some(mac),
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = h.iter().map(|r| r.entry.action.name()).collect();
    assert_eq!(actions, ["released", "held", "allocated"], "newest first");
    assert_eq!(h[0].entry.actor, "bob");
    let by_vm = store
        .history(HistoryFilter {
            vm_id: Some("vm-1".into()),
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_vm.len(), 3);
    // the dashboard's filters: each field, and time
    let count = |f: HistoryFilter| async move {
        store
            .history(HistoryFilter { limit: 100, ..f })
            .await
            .unwrap()
            .len()
    };
    let released = HistoryFilter {
        action: Some(HistoryAction::Released),
        mac: Some(mac),
        ..HistoryFilter::default()
    };
    assert_eq!(count(released.clone()).await, 1);
    let by_bob = HistoryFilter {
        actor: Some("bob".into()),
        ..released.clone()
    };
    assert_eq!(count(by_bob).await, 1);
    let by_nobody = HistoryFilter {
        actor: Some("nobody".into()),
        ..released.clone()
    };
    assert_eq!(count(by_nobody).await, 0);
    let of_pool = HistoryFilter {
        pool: Some(h[0].entry.pool.as_ref().unwrap().as_str().to_string()),
        ..released.clone()
    };
    assert_eq!(count(of_pool).await, 1);
    let at = h[0].entry.at;
    let window = HistoryFilter {
        since: Some(at),
        until: Some(Timestamp(at.0 + 1)),
        ..released.clone()
    };
    assert_eq!(count(window).await, 1);
    let later = HistoryFilter {
        since: Some(Timestamp(at.0 + 1)),
        ..released
    };
    assert_eq!(count(later).await, 0);
    for (vm, rows) in [("vm-1", 3), ("vm-2", 0)] {
        let both = HistoryFilter {
            mac: Some(mac),
            vm_id: Some(vm.into()),
            limit: 10,
            ..HistoryFilter::default()
        };
        assert_eq!(store.history(both).await.unwrap().len(), rows, "{vm}");
    }
    history_pages_cover_everything_once(store, HistoryFilter::default()).await;
    let of_mac = HistoryFilter {
        mac: Some(mac),
        ..HistoryFilter::default()
    };
    history_pages_cover_everything_once(store, of_mac).await;
}

/// Paging through the leases with any page size lists each lease once, in the listing's order.
async fn lease_pages_cover_every_lease_once<S: Store>(store: &S) {
    for vm in ["page-b", "page-a", "page-c"] {
        store
            .allocate(Actor::admin("t"), request("conf", vm))
            .await
            .unwrap();
    }
    let mut all = store.leases(LeaseFilter::default()).await.unwrap();
    all.sort_by_key(LeaseKey::of);
    assert!(all.len() >= 3, "too few leases to page: {}", all.len());
    for size in [1, 2, all.len(), all.len() + 1] {
        let (mut paged, mut after) = (Vec::new(), None);
        loop {
            let page = store
                .lease_page(LeaseFilter::default(), after.clone(), size)
                .await
                .unwrap();
            assert!(page.leases.len() <= size);
            after = page.leases.last().map(LeaseKey::of);
            paged.extend(page.leases);
            if !page.more {
                break;
            }
        }
        assert_eq!(paged, all, "pages of {size}");
    }
    let one = LeaseFilter {
        vm_id: Some("page-a".into()),
        ..LeaseFilter::default()
    };
    let page = store.lease_page(one, None, 10).await.unwrap();
    assert_eq!((page.leases.len(), page.more), (1, false));
}

async fn history_pages_cover_everything_once<S: Store>(store: &S, filter: HistoryFilter) {
    let all = store
        .history(HistoryFilter {
            limit: 10_000,
            ..filter.clone()
        })
        .await
        .unwrap();
    assert!(all.len() >= 3, "too little history to page: {}", all.len());
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(HistoryFilter {
                limit: 2,
                before,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

async fn refused_requests_change_nothing<S: Store>(store: &S) {
    let before = history_len(store).await;
    let leases_before = store.leases(LeaseFilter::default()).await.unwrap();
    let agent = Actor {
        name: "agent:h1".into(),
        scope: Scope::Host("h1".into()),
    };
    let mut foreign = request("conf", "vm-x");
    foreign.owner.host = Some("h2".into());
    let refusals = [
        store.allocate(agent, foreign).await.err(),
        store
            .allocate(Actor::admin("t"), request("nope", "vm-x"))
            .await
            .err(),
        store
            .release(
                Actor::admin("t"),
                ReleaseSelector::Mac {
                    mac: Mac::from_u64(0x00155D0C0001).unwrap(),
                    vm_id: Some("ghost".into()),
                },
            )
            .await
            .err(),
    ];
    let kinds = refusal_kinds(&refusals);
    assert_eq!(kinds, ["forbidden", "not-found", "not-found"]);
    assert_eq!(history_len(store).await, before);
    assert_eq!(
        store.leases(LeaseFilter::default()).await.unwrap(),
        leases_before
    );
}

fn block_claim(host: &str) -> BlockClaim {
    BlockClaim {
        host: host.into(),
        pool: "conf-blocks".into(),
        size: Some(16),
    }
}

async fn blocks_rotate_and_refusals_change_nothing<S: Store>(store: &S) {
    create_pool(store, "conf-blocks", "00155D0D0000-00155D0D003F").await;
    let admin = || Actor::admin("t");
    let (b1, existing) = store
        .claim_block(admin(), block_claim("conf-h1"))
        .await
        .unwrap();
    assert!(!existing);
    assert_eq!(b1.state, BlockState::Pending);
    let (again, existing) = store
        .claim_block(admin(), block_claim("conf-h1"))
        .await
        .unwrap();
    assert!(existing);
    assert_eq!(again, b1);
    let active = store
        .activate_block(admin(), "conf-h1".into(), b1.id)
        .await
        .unwrap();
    assert_eq!(active.state, BlockState::Active);
    let (b2, _) = store
        .claim_block(admin(), block_claim("conf-h1"))
        .await
        .unwrap();
    store
        .activate_block(admin(), "conf-h1".into(), b2.id)
        .await
        .unwrap();
    let states: Vec<(u64, BlockState)> = store
        .blocks(BlockFilter {
            host: Some("conf-h1".into()),
            pool: None,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.id, b.state))
        .collect();
    assert_eq!(
        states,
        [(b1.id, BlockState::Draining), (b2.id, BlockState::Active)]
    );
    let usage = store.pool("conf-blocks".into()).await.unwrap().usage;
    assert_eq!((usage.delegated, usage.free), (32, 32));
    // refusals change nothing
    let before = history_len(store).await;
    let agent = Actor {
        name: "agent:conf-h2".into(),
        scope: Scope::Host("conf-h2".into()),
    };
    let mut huge = block_claim("conf-h2");
    huge.size = Some(64);
    let refusals = [
        store
            .claim_block(agent.clone(), block_claim("conf-h1"))
            .await
            .err(),
        store.claim_block(admin(), huge).await.err(),
        store
            .activate_block(admin(), "conf-h1".into(), 999)
            .await
            .err(),
        store
            .drain_block(agent, "conf-h1".into(), b2.id)
            .await
            .err(),
    ];
    assert_eq!(
        refusal_kinds(&refusals),
        ["forbidden", "pool-exhausted", "not-found", "forbidden"]
    );
    assert_eq!(history_len(store).await, before);
    assert_eq!(store.pool("conf-blocks".into()).await.unwrap().usage, usage);
}

async fn tokens_round_trip<S: Store>(store: &S) {
    let t = TokenRecord {
        id: "conf1".into(),
        name: "ci".into(),
        role: Role::Agent,
        host: Some("h1".into()),
        secret_hash: [7; 32],
        created: Timestamp(1),
        revoked: None,
    };
    let admin = Actor::admin("conf-admin");
    store.save_token(admin.clone(), t.clone()).await.unwrap();
    assert!(store.tokens().await.unwrap().contains(&t));
    let revoked = store
        .revoke_token(admin.clone(), "conf1".into())
        .await
        .unwrap();
    assert!(revoked.revoked.is_some());
    // Revoking again changes nothing, and is not recorded twice.
    let again = store
        .revoke_token(admin.clone(), "conf1".into())
        .await
        .unwrap();
    assert_eq!(again.revoked, revoked.revoked);
    assert!(matches!(
        store.revoke_token(admin, "nope".into()).await,
        Err(StoreError::NotFound(_))
    ));
    // Both are in the history, under the admin who did them, naming the token, never its hash.
    let token_rows: Vec<_> = store
        .history(HistoryFilter {
            limit: 100,
            ..HistoryFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.contains("id conf1")))
        .collect();
    let actions: Vec<_> = token_rows.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [HistoryAction::TokenRevoked, HistoryAction::TokenCreated],
        "{token_rows:?}"
    );
    for e in &token_rows {
        assert_eq!(e.actor, "conf-admin");
        assert_eq!(e.host.as_deref(), Some("h1"));
        let reason = e.reason.as_deref().unwrap();
        assert!(
            reason.contains("'ci'") && reason.contains("role agent"),
            "{reason}"
        );
        assert!(!reason.contains("0707"), "no hash in the history: {reason}");
    }
}

/// A token for the token-rule checks: `role`, bound to `host`.
pub fn token(id: &str, role: Role, host: Option<&str>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("token {id}"),
        role,
        host: host.map(str::to_string),
        secret_hash: [9; 32],
        created: Timestamp(1),
        revoked: None,
    }
}

/// The store's token rules: an agent token names its host and no other does; the last active
/// admin token is never revoked. Refusals write nothing.
async fn token_rules_hold_and_refusals_change_nothing<S: Store>(store: &S) {
    let admin = Actor::admin("conf-admin");
    let before = store.tokens().await.unwrap();
    let history = history_len(store).await;
    for bad in [
        token("rule-agent", Role::Agent, None),
        token("rule-blank", Role::Agent, Some(" ")),
        token("rule-reader", Role::Reader, Some("h1")),
    ] {
        assert!(
            matches!(
                store.save_token(admin.clone(), bad.clone()).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.tokens().await.unwrap(), before);
    assert_eq!(history_len(store).await, history);
    // Revoke every active admin but one; the last is refused, and stays active.
    store
        .save_token(admin.clone(), token("rule-admin", Role::Admin, None))
        .await
        .unwrap();
    let active_admins = |all: &[TokenRecord]| -> Vec<String> {
        all.iter()
            .filter(|t| t.role == Role::Admin && t.revoked.is_none())
            .map(|t| t.id.clone())
            .collect()
    };
    let mut admins = active_admins(&store.tokens().await.unwrap());
    let last = admins.pop().unwrap();
    for id in admins {
        store.revoke_token(admin.clone(), id).await.unwrap();
    }
    let before = store.tokens().await.unwrap();
    let history = history_len(store).await;
    assert!(matches!(
        store.revoke_token(admin.clone(), last.clone()).await,
        Err(StoreError::LastAdmin)
    ));
    assert_eq!(store.tokens().await.unwrap(), before);
    assert_eq!(history_len(store).await, history);
    assert_eq!(active_admins(&before), vec![last]);
    // Another admin first, then the old one may go.
    store
        .save_token(admin.clone(), token("rule-admin-2", Role::Admin, None))
        .await
        .unwrap();
    store
        .revoke_token(admin, "rule-admin".into())
        .await
        .unwrap();
}

/// A host inventory with one VM: live MACs and `(mac, checkpoint id)` checkpoint adapters.
/// `(vm id, live MACs, (checkpoint MAC, checkpoint id))`.
pub type TestVm<'a> = (&'a str, Vec<Mac>, Vec<(Mac, &'a str)>);

pub fn host(name: &str, vms: Vec<TestVm>) -> HostInventory {
    let mut h = HostInventory::new(name).unwrap();
    for (id, live, checkpoints) in vms {
        let mut vm = Vm::new(id, format!("name-{id}"), VmState::Running).unwrap();
        let adapter = |mac, location| Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac,
            kind: MacKind::Dynamic,
            location,
        };
        vm.adapters
            .extend(live.into_iter().map(|m| adapter(m, AdapterLocation::Live)));
        vm.adapters.extend(checkpoints.into_iter().map(|(m, cp)| {
            adapter(
                m,
                AdapterLocation::Checkpoint(Checkpoint {
                    id: cp.into(),
                    name: format!("RDV_ROLLBACK {cp}"),
                    kind: CheckpointType::Standard,
                    created: Some(Timestamp(1_445_000_000_000)),
                }),
            )
        }));
        h.add_vm(vm).unwrap();
    }
    // distinct per host, so that their default dynamic ranges do not overlap
    let last = name.bytes().last().unwrap_or(0);
    h.ipv4 = vec![std::net::Ipv4Addr::new(10, 9, last, 7)];
    h
}

async fn inventories_bind_hold_and_refusals_change_nothing<S: Store>(store: &S) {
    let a = store
        .allocate(Actor::admin("t"), request("conf", "desk"))
        .await
        .unwrap();
    let m = a[0].lease.mac;
    let other = Mac::from_u64(0x00155D990001).unwrap();
    let out = store
        .put_inventory(
            Actor::admin("t"),
            host("conf-h1", vec![("desk", vec![m], vec![(m, "rdv")])]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(out.bound.len(), 1);
    assert_eq!(out.held.len(), 1);
    let status = store.mac_status(m).await.unwrap();
    assert_eq!(status.leases[0].state, LeaseState::Bound);
    assert_eq!(status.leases[0].owner.host.as_deref(), Some("conf-h1"));
    assert_eq!(status.holds[0].reference, "rdv");

    let before = history_len(store).await;
    let agent = Actor {
        name: "agent:conf-h1".into(),
        scope: Scope::Host("conf-h1".into()),
    };
    let refusals = [
        store
            .put_inventory(Actor::admin("t"), host("conf-h1", vec![]), 3)
            .await
            .err(),
        store
            .put_inventory(agent, host("conf-h2", vec![]), 1)
            .await
            .err(),
    ];
    let kinds = refusal_kinds(&refusals);
    assert_eq!(kinds, ["stale-generation", "forbidden"]);
    assert_eq!(history_len(store).await, before);
    assert_eq!(
        store.inventory("conf-h1".into()).await.unwrap().generation,
        3
    );
    assert!(store.inventory("conf-h2".into()).await.is_err());
    assert_eq!(store.mac_status(m).await.unwrap(), status);

    // the seed's scenario: the desktop migrates with its checkpoint, host 1 reuses the MAC
    store
        .put_inventory(
            Actor::admin("t"),
            host("conf-h2", vec![("desk", vec![other], vec![(m, "rdv")])]),
            1,
        )
        .await
        .unwrap();
    store
        .put_inventory(
            Actor::admin("t"),
            host("conf-h1", vec![("new-vm", vec![m], vec![])]),
            4,
        )
        .await
        .unwrap();
    let conflicts = store.conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].class, ConflictClass::Latent);
    assert_eq!(conflicts[0].mac(), Some(m));
}

/// An agent's push: management OS vNICs, its strategy and how it knows the cursor are stored
/// as sent; a conflict's claimants carry their power state and guard's last replacement.
/// A host's later reports reach the store as diffs from the stored one (issue 18): every
/// shape of diff (nothing but the generation, a VM changed, VMs gone from the end and one
/// appended, a changed header) reads back as sent, also after a reopen (the returned copy).
async fn later_reports_are_stored_as_diffs<S: Store>(store: &S) -> StoredInventory {
    let m = |v: u64| Mac::from_u64(0x00155D770000 + v).unwrap();
    let three = || {
        host(
            "conf-h5",
            vec![
                ("a", vec![m(1)], vec![]),
                ("b", vec![m(2)], vec![]),
                ("c", vec![m(3)], vec![]),
            ],
        )
    };
    let reports = [
        three(),
        three(),
        host(
            "conf-h5",
            vec![
                ("a", vec![m(1)], vec![]),
                ("b", vec![m(2)], vec![(m(4), "cp-b")]),
                ("c", vec![m(3)], vec![]),
            ],
        ),
        host(
            "conf-h5",
            vec![("a", vec![m(1)], vec![]), ("d", vec![m(5)], vec![])],
        ),
        {
            let mut h = host("conf-h5", vec![("d", vec![m(5)], vec![])]);
            h.cluster = Some("conf-cluster".into());
            h.strategy = Some("guard".into());
            h
        },
    ];
    let mut last = None;
    for (g, inv) in reports.into_iter().enumerate() {
        let generation = g as u64 + 1;
        store
            .put_inventory(Actor::admin("t"), inv.clone(), generation)
            .await
            .unwrap();
        let stored = store.inventory("conf-h5".into()).await.unwrap();
        assert_eq!(stored.inventory, inv, "report {generation} stored as sent");
        assert_eq!(stored.generation, generation);
        last = Some(stored);
    }
    let status = store.mac_status(m(2)).await.unwrap();
    assert!(status.seen.is_empty(), "VM b's MAC is gone with it");
    last.unwrap()
}

async fn agent_reports_round_trip_and_claimants_are_known<S: Store>(store: &S) {
    let shared = Mac::from_u64(0x00155D990100).unwrap();
    let mut inv = host("conf-h3", vec![("conf-vm3", vec![shared], vec![])]);
    let vnic = |name: &str, mac, kind| Adapter {
        id: None,
        name: name.into(),
        mac,
        kind,
        location: AdapterLocation::Live,
    };
    inv.management_adapters = vec![
        vnic("vEthernet (External)", shared, MacKind::Dynamic),
        vnic(
            "vEthernet (Storage)",
            Mac::from_u64(0x00155D990101).unwrap(),
            MacKind::Static,
        ),
    ];
    inv.cursor_source = Some(CursorSource::InventoryBound);
    inv.strategy = Some("delegate+guard".into());
    store
        .put_inventory(Actor::admin("t"), inv.clone(), 1)
        .await
        .unwrap();
    let stored = store.inventory("conf-h3".into()).await.unwrap();
    assert_eq!(stored.inventory, inv, "stored as sent");
    let status = store.mac_status(shared).await.unwrap();
    assert!(
        status.leases.is_empty(),
        "a management vNIC is never leased"
    );
    assert!(status.seen.iter().any(|s| s.management_os));

    let (c, claimants) = claimed(store, shared).await;
    assert_eq!(c.class, ConflictClass::LiveDuplicate);
    let vm_at = c
        .sightings()
        .iter()
        .position(|s| s.owner.vm_id.as_deref() == Some("conf-vm3"))
        .unwrap();
    assert_eq!(claimants[vm_at].state, Some(VmState::Running));
    assert_eq!(claimants[vm_at].guard, None, "nothing yet");

    let mut req = request("conf", "conf-vm3");
    req.reason = Some(format!(
        "guard: replaces {shared} of adapter 'Network Adapter' (in use) after rollback event x #7"
    ));
    let fresh = store.allocate(Actor::admin("guard"), req).await.unwrap()[0]
        .lease
        .mac;
    let (c, claimants) = claimed(store, shared).await;
    let guard = claimants[vm_at]
        .guard
        .as_ref()
        .expect("guard's replacement");
    assert_eq!(guard.1.mac, Some(fresh));
    assert!(
        claimants
            .iter()
            .zip(c.sightings())
            .filter(|(_, s)| s.owner.vm_id.is_none())
            .all(|(cl, _)| cl.guard.is_none() && cl.state.is_none())
    );
}

/// The conflict about `mac`, with its claimants.
async fn claimed<S: Store>(
    store: &S,
    mac: Mac,
) -> (
    macpool_core::conflict::Conflict,
    Vec<macpool_core::authority::Claimant>,
) {
    store
        .conflicts_claimed()
        .await
        .unwrap()
        .into_iter()
        .find(|(c, _)| c.mac() == Some(mac))
        .expect("the VM and the management OS share a MAC")
}

async fn history_len<S: Store>(store: &S) -> usize {
    let all = HistoryFilter {
        limit: 10_000,
        ..HistoryFilter::default()
    };
    store.history(all).await.unwrap().len()
}

/// The problem kinds of refusals that must all be domain refusals (not store failures).
fn refusal_kinds(refusals: &[Option<StoreError>]) -> Vec<&'static str> {
    refusals
        .iter()
        .map(|e| match e {
            Some(StoreError::Domain(d)) => d.kind(),
            other => panic!("expected a domain refusal, got {other:?}"),
        })
        .collect()
}

/// A read runs on a snapshot, never on the writer: while a read is still running, a write is
/// made durable and answered, and the read keeps seeing the state it started on. (A read on
/// the writer would hold the write until the read ends: the timeout turns that into a failure.)
async fn a_long_read_does_not_hold_up_writes<S: Store>(store: &S) {
    let (started, wait_started) = tokio::sync::oneshot::channel();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let read = store.read(move |a| {
        let before = a.leases(&LeaseFilter::default()).len();
        let _ = started.send(());
        let _ = wait_go.recv();
        Ok((before, a.leases(&LeaseFilter::default()).len()))
    });
    let write = async {
        wait_started.await.expect("the read started");
        let written = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store.allocate(Actor::admin("t"), request("conf", "conf-while-reading")),
        )
        .await;
        let _ = go.send(());
        written
    };
    let (read, written) = tokio::join!(read, write);
    let allocated = written
        .expect("the write waited for the read to end")
        .unwrap();
    let (before, after) = read.unwrap();
    assert_eq!(before, after, "a snapshot does not move under a write");
    let now = store.leases(LeaseFilter::default()).await.unwrap().len();
    assert_eq!(now, before + allocated.len());
    store
        .release(
            Actor::admin("t"),
            ReleaseSelector::Mac {
                mac: allocated[0].lease.mac,
                vm_id: None,
            },
        )
        .await
        .unwrap();
}
