//! The behaviour every back end must show, as async functions over any [`Store`]. Each back
//! end's tests call [`run_all`] with a factory that opens (or reopens) the same store.

use std::future::Future;

use macpool_core::authority::{
    Actor, AllocateRequest, HoldRequest, LeaseFilter, ReleaseSelector, Scope,
};
use macpool_core::lease::{HoldReason, Owner};
use macpool_core::pool::{PoolName, PoolPolicy, PoolSpec};
use macpool_core::{Mac, MacRange, Timestamp};

use crate::{HistoryFilter, Role, Store, StoreError, TokenRecord};

pub fn request(pool: &str, vm: &str) -> AllocateRequest {
    AllocateRequest {
        pool: pool.into(),
        owner: Owner {
            vm_id: vm.into(),
            ..Owner::default()
        },
        mac: None,
        count: 1,
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
    if reopen {
        let leases = store.leases(LeaseFilter::default()).await.unwrap();
        let pools = store.pools().await.unwrap();
        drop(store);
        let again = open().await;
        assert_eq!(again.leases(LeaseFilter::default()).await.unwrap(), leases);
        assert_eq!(again.pools().await.unwrap(), pools);
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
            vm_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = h.iter().map(|e| e.action.name()).collect();
    assert_eq!(actions, ["released", "held", "allocated"], "newest first");
    assert_eq!(h[0].actor, "bob");
    let by_vm = store
        .history(HistoryFilter {
            mac: None,
            vm_id: Some("vm-1".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(by_vm.len(), 3);
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
    let kinds: Vec<&str> = refusals
        .iter()
        .map(|e| match e {
            Some(StoreError::Domain(d)) => d.kind(),
            other => panic!("expected a domain refusal, got {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["forbidden", "not-found", "not-found"]);
    assert_eq!(history_len(store).await, before);
    assert_eq!(
        store.leases(LeaseFilter::default()).await.unwrap(),
        leases_before
    );
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
    store.save_token(t.clone()).await.unwrap();
    assert!(store.tokens().await.unwrap().contains(&t));
    let revoked = store.revoke_token("conf1".into()).await.unwrap();
    assert!(revoked.revoked.is_some());
    assert!(matches!(
        store.revoke_token("nope".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn history_len<S: Store>(store: &S) -> usize {
    let all = HistoryFilter {
        limit: 10_000,
        ..HistoryFilter::default()
    };
    store.history(all).await.unwrap().len()
}
