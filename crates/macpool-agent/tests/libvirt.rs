//! The libvirt hypervisor against real libvirt (Debian's libvirt0: the in-process test driver,
//! `test:///default` and the node file `tests/data/libvirt-node.xml`), and the guard decision
//! run on it with the real core state machine as the authority.
//!
//! Every `test:///<file>` connection gets its own private copy of the node file, so these
//! tests run in parallel without seeing each other; only one test uses the shared
//! `test:///default`, and only reads it.
#![cfg(all(feature = "libvirt", unix))]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::decide::{
    Authority, AuthorityError, DecideConfig, Outcome, Remedy, Strategy, handle_event,
};
use macpool_agent::libvirt::{LibvirtHypervisor, NO_HOST_RANGE};
use macpool_agent::{AdapterRef, Bookmarks, EventKind, HvError, HvEvent, Hypervisor, MacSetting};
use macpool_api::dto::{AllocateBody, MacInfo};
use macpool_core::authority::{
    Actor, AllocateRequest, Authority as Core, Context, LeaseFilter, Scope,
};
use macpool_core::conflict::{ConflictClass, Subject};
use macpool_core::inventory::{AdapterLocation, CheckpointType, HostInventory, VmState};
use macpool_core::lease::Owner;
use macpool_core::pool::{AllocationOrder, PoolName, PoolPolicy, PoolSpec};
use macpool_core::{Mac, MacFormat, MacRange, Timestamp};

const A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const C: &str = "cccccccc-0000-4000-8000-00000000000c";
const D: &str = "dddddddd-0000-4000-8000-00000000000d";
const E: &str = "eeeeeeee-0000-4000-8000-00000000000e";

fn node_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/libvirt-node.xml")
}

fn node_uri() -> String {
    format!("test://{}", node_file().display())
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn live(inv: &HostInventory, vm_id: &str) -> Vec<(String, Mac)> {
    inv.vms()
        .iter()
        .find(|v| v.id() == vm_id)
        .unwrap_or_else(|| panic!("{vm_id} not in the inventory"))
        .adapters
        .iter()
        .filter(|a| a.location == AdapterLocation::Live)
        .map(|a| (a.name.clone(), a.mac))
        .collect()
}

fn checkpoint_macs(inv: &HostInventory, vm_id: &str) -> Vec<(String, String, Mac)> {
    inv.vms()
        .iter()
        .find(|v| v.id() == vm_id)
        .unwrap()
        .adapters
        .iter()
        .filter_map(|a| match &a.location {
            AdapterLocation::Checkpoint(c) => Some((c.name.clone(), a.name.clone(), a.mac)),
            AdapterLocation::Live => None,
        })
        .collect()
}

fn adapter(vm_id: &str, name: &str) -> AdapterRef {
    AdapterRef {
        vm_id: vm_id.into(),
        adapter: name.into(),
        id: None,
        checkpoint_id: None,
    }
}

/// The next event, failing the test when none comes.
async fn next(hv: &LibvirtHypervisor) -> HvEvent {
    hv.next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an event within 5 s")
}

/// Everything queued until 300 ms pass without an event: libvirt dispatches events from its
/// event loop a moment after the call that caused them, so the events of a test's setup can
/// still arrive after `watch`.
async fn drain(hv: &LibvirtHypervisor) -> Vec<HvEvent> {
    let mut out = Vec::new();
    while let Some(e) = hv.next_event(Duration::from_millis(300)).await.unwrap() {
        out.push(e);
    }
    out
}

/// What the persistent (inactive) definition of a domain says its adapters' MACs are.
fn persistent_macs(hv: &LibvirtHypervisor, vm_id: &str) -> Vec<(String, Mac)> {
    let conn = hv.connection().unwrap();
    let dom = conn.lookup_domain_by_uuid_string(vm_id).unwrap();
    let xml = dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
    macpool_agent::libvirt::xml::live_adapters(&xml)
        .unwrap()
        .adapters
        .into_iter()
        .map(|a| (a.name, a.mac))
        .collect()
}

fn snapshot(
    hv: &LibvirtHypervisor,
    vm_id: &str,
    name: &str,
) -> virt::domain_snapshot::DomainSnapshot {
    let conn = hv.connection().unwrap();
    let dom = conn.lookup_domain_by_uuid_string(vm_id).unwrap();
    dom.create_snapshot_xml(
        &format!("<domainsnapshot><name>{name}</name></domainsnapshot>"),
        0,
    )
    .unwrap()
}

/// Off, one MAC set, on again — through the hypervisor's own actions.
async fn redefine(hv: &LibvirtHypervisor, vm_id: &str, new: Mac) {
    hv.turn_off(vm_id).await.unwrap();
    hv.set_adapter_mac(&adapter(vm_id, "net0"), MacSetting::Static(new))
        .await
        .unwrap();
    hv.start(vm_id).await.unwrap();
}

#[tokio::test]
async fn the_node_file_inventory_has_every_domain_with_live_and_snapshot_adapters() {
    let hv = LibvirtHypervisor::connect(&node_uri()).unwrap();
    let (inv, problems) = hv.inventory_report().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(inv.host(), hv.connection().unwrap().hostname().unwrap());
    let mut vms: Vec<(&str, &str, VmState)> = inv
        .vms()
        .iter()
        .map(|v| (v.id(), v.name.as_str(), v.state.clone()))
        .collect();
    vms.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(
        vms,
        [
            (A, "desk-a", VmState::Running),
            (B, "desk-b", VmState::Running),
            (C, "build-c", VmState::Off),
            (D, "web-d", VmState::Paused),
            (E, "appliance-e", VmState::Off),
        ]
    );
    assert_eq!(live(&inv, A), [("net0".into(), mac("52:54:00:aa:00:01"))]);
    // a target dev the admin chose names the adapter; libvirt's own `testnet0` does not
    assert_eq!(
        live(&inv, C),
        [
            ("net0".into(), mac("52:54:00:aa:00:03")),
            ("tap-c1".into(), mac("52:54:00:aa:00:04"))
        ]
    );
    assert_eq!(
        checkpoint_macs(&inv, C),
        [(
            "before-upgrade".into(),
            "net0".into(),
            mac("52:54:00:aa:00:13")
        )]
    );
    // the interface without <mac>: libvirt generated one, the user alias names it
    let d = live(&inv, D);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "ua-uplink");
    assert_eq!(d[0].1.oui(), [0x52, 0x54, 0x00], "{}", d[0].1);
    assert!(
        live(&inv, E).is_empty(),
        "a domain without interfaces is listed"
    );

    let c = hv.vm(C).await.unwrap().unwrap();
    let cp = c.current_checkpoint.unwrap();
    assert_eq!(
        (cp.id.as_str(), cp.name.as_str()),
        ("before-upgrade", "before-upgrade")
    );
    assert_eq!(cp.kind, CheckpointType::Other("libvirt-shutoff".into()));
    assert_eq!(cp.created, Some(Timestamp::from_millis(1_444_800_000_000)));
    assert_eq!(hv.vm(A).await.unwrap().unwrap().current_checkpoint, None);
    assert_eq!(
        hv.vm("ffffffff-0000-4000-8000-00000000000f").await.unwrap(),
        None
    );
    assert_eq!(hv.vm("not a uuid").await.unwrap(), None);

    assert_eq!(
        hv.host_range().await,
        Err(HvError::NotApplicable(NO_HOST_RANGE.into()))
    );
    let r = MacRange::new(mac("52:54:00:00:00:00"), mac("52:54:00:00:00:ff")).unwrap();
    assert_eq!(
        hv.set_host_range(r).await,
        Err(HvError::NotApplicable(NO_HOST_RANGE.into()))
    );
    assert!(NO_HOST_RANGE.contains("delegate is not applicable"));
}

#[tokio::test]
async fn the_default_test_driver_is_read_too() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    let inv = hv.inventory().await.unwrap();
    let vm = inv
        .vms()
        .iter()
        .find(|v| v.name == "test")
        .expect("the default driver's domain 'test'");
    assert_eq!(vm.id(), "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(
        live(&inv, vm.id()),
        [("net0".into(), mac("aa:bb:cc:dd:ee:ff"))]
    );
    assert_eq!(hv.channel(), "libvirt:test:///default");
}

#[tokio::test]
async fn actions_refuse_what_libvirt_cannot_do_and_events_follow_them() {
    let hv = LibvirtHypervisor::connect(&node_uri()).unwrap();
    hv.watch(&Bookmarks::new()).await.unwrap();
    let new = mac("52:54:00:aa:00:21");
    // the running domain is never edited live
    let err = hv
        .set_adapter_mac(&adapter(A, "net0"), MacSetting::Static(new))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HvError::Failed { message, .. } if message.contains("'desk-a' is running")),
        "{err}"
    );
    // snapshot adapters: libvirt refuses a snapshot whose MAC differs
    let mut cp = adapter(C, "net0");
    cp.checkpoint_id = Some("before-upgrade".into());
    let err = hv
        .set_adapter_mac(&cp, MacSetting::Dynamic)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not supported on libvirt"),
        "{err}"
    );
    // an adapter that is not there
    let err = hv
        .set_adapter_mac(&adapter(C, "eth7"), MacSetting::Static(new))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "set-adapter-mac failed: domain 'build-c': the domain has no interface named 'eth7' (it has: net0, tap-c1)"
    );
    assert_eq!(
        persistent_macs(&hv, C)[0].1,
        mac("52:54:00:aa:00:03"),
        "nothing changed"
    );

    hv.turn_off(A).await.unwrap();
    hv.turn_off(A).await.unwrap(); // already off: fine
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.vm_id.as_str()), (EventKind::Stopped, A));
    assert_eq!(ev.vm_name.as_deref(), Some("desk-a"));
    assert_eq!(ev.channel, format!("libvirt:{}", node_uri()));
    assert!(ev.raw.contains("STOPPED/"), "{}", ev.raw);

    hv.set_adapter_mac(&adapter(A, "net0"), MacSetting::Static(new))
        .await
        .unwrap();
    assert_eq!(persistent_macs(&hv, A), [("net0".into(), new)]);
    // dynamic: libvirt generates a MAC when the <mac> element is gone
    hv.set_adapter_mac(&adapter(C, "tap-c1"), MacSetting::Dynamic)
        .await
        .unwrap();
    let c = persistent_macs(&hv, C);
    assert_eq!(c[1].0, "tap-c1");
    assert_ne!(c[1].1, mac("52:54:00:aa:00:04"));
    assert_eq!(c[1].1.oui(), [0x52, 0x54, 0x00]);
    assert_eq!(
        c[0].1,
        mac("52:54:00:aa:00:03"),
        "the other adapter is untouched"
    );

    hv.start(A).await.unwrap();
    hv.start(A).await.unwrap(); // already running: fine
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.vm_id.as_str()), (EventKind::Started, A));
    assert_eq!(
        live(&hv.inventory().await.unwrap(), A),
        [("net0".into(), new)]
    );

    // defined / undefined
    let conn = hv.connection().unwrap();
    let dom = conn
        .define_domain_xml(
            "<domain type='test'><name>new-f</name><memory>65536</memory><os><type>hvm</type></os>\
             <devices><interface type='network'><source network='default'/></interface></devices></domain>",
        )
        .unwrap();
    let ev = next(&hv).await;
    assert_eq!(
        (ev.kind, ev.vm_name.as_deref()),
        (EventKind::Created, Some("new-f"))
    );
    let f = ev.vm_id.clone();
    assert_eq!(f, dom.uuid_string().unwrap());
    dom.undefine().unwrap();
    let ev = next(&hv).await;
    assert_eq!(
        (ev.kind, ev.vm_id.as_str()),
        (EventKind::Deleted, f.as_str())
    );
    // every delivered event can be asked for again by its record id (deferred decisions)
    assert_eq!(
        hv.event(&ev.channel, ev.record_id).await.unwrap(),
        Some(ev.clone())
    );
    assert_eq!(hv.event(&ev.channel, 1).await.unwrap(), None);
    assert_eq!(
        hv.next_event(Duration::from_millis(200)).await.unwrap(),
        None
    );

    // a transient domain is never turned off: it would be gone
    let t = conn
        .create_domain_xml(
            "<domain type='test'><name>transient-g</name><memory>65536</memory><os><type>hvm</type></os></domain>",
            0,
        )
        .unwrap();
    let err = hv.turn_off(&t.uuid_string().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("transient"), "{err}");
    assert!(t.is_active().unwrap());
}

#[tokio::test]
async fn a_revert_arrives_as_one_restored_event_and_brings_the_old_mac_back() {
    let hv = LibvirtHypervisor::connect(&node_uri()).unwrap();
    let snap = snapshot(&hv, A, "RDV_ROLLBACK");
    let moved = mac("52:54:00:aa:00:31");
    redefine(&hv, A, moved).await;
    let inv = hv.inventory().await.unwrap();
    assert_eq!(live(&inv, A), [("net0".into(), moved)]);
    assert_eq!(
        checkpoint_macs(&inv, A),
        [(
            "RDV_ROLLBACK".into(),
            "net0".into(),
            mac("52:54:00:aa:00:01")
        )]
    );

    hv.watch(&Bookmarks::new()).await.unwrap();
    drain(&hv).await;
    snap.revert(0).unwrap();
    // the test driver reports this running → running revert as STOPPED/FROM_SNAPSHOT and
    // STARTED/FROM_SNAPSHOT: both are queued before anyone asks, and fold into one
    std::thread::sleep(Duration::from_millis(1000));
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.vm_id.as_str()), (EventKind::Restored, A));
    assert!(ev.raw.contains("FROM_SNAPSHOT"), "{}", ev.raw);
    assert_eq!(
        hv.next_event(Duration::from_millis(300)).await.unwrap(),
        None
    );

    let a = hv.vm(A).await.unwrap().unwrap();
    assert_eq!(a.vm.state, VmState::Running);
    assert_eq!(
        a.current_checkpoint.map(|c| c.name),
        Some("RDV_ROLLBACK".into())
    );
    let back: Vec<Mac> =
        a.vm.adapters
            .iter()
            .filter(|x| x.location == AdapterLocation::Live)
            .map(|x| x.mac)
            .collect();
    assert_eq!(
        back,
        [mac("52:54:00:aa:00:01")],
        "the reverted MAC is live again"
    );
    assert_eq!(
        persistent_macs(&hv, A),
        [("net0".into(), mac("52:54:00:aa:00:01"))]
    );
}

/// [`Authority`] backed by the real core state machine, acting as this host's agent token.
struct CoreAuthority {
    core: Mutex<Core>,
    agent: Context,
}

impl CoreAuthority {
    fn lease_of(&self, vm_id: &str) -> Vec<(String, Mac)> {
        let core = self.core.lock().unwrap();
        core.leases(&LeaseFilter {
            vm_id: Some(vm_id.into()),
            ..LeaseFilter::default()
        })
        .into_iter()
        .map(|l| (l.owner.adapter_id, l.mac))
        .collect()
    }
}

impl Authority for CoreAuthority {
    async fn mac(&self, mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        let core = self.core.lock().unwrap();
        Ok(Some(macpool_api::convert::mac_status(
            &core.mac_status(mac),
        )))
    }

    async fn allocate(&self, body: AllocateBody) -> Result<Mac, AuthorityError> {
        let mut core = self.core.lock().unwrap();
        let pool = body.pool.clone().unwrap_or_default();
        let req = macpool_api::convert::allocate_request(pool, body).unwrap();
        let (allocations, _changes) = core
            .allocate(&self.agent, req)
            .map_err(|e| AuthorityError::Refused(e.to_string()))?;
        Ok(allocations[0].lease.mac)
    }
}

fn conflicts_on(core: &Core, class: ConflictClass) -> Vec<Mac> {
    core.conflicts()
        .into_iter()
        .filter(|c| c.class == class)
        .filter_map(|c| match c.subject {
            Subject::Mac { mac, .. } => Some(mac),
            Subject::Ranges { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn guard_fixes_a_reverted_mac_that_another_domain_holds() {
    let hv = LibvirtHypervisor::connect(&node_uri()).unwrap();
    let host = hv.inventory().await.unwrap().host().to_string();
    let old = mac("52:54:00:aa:00:01");

    // desk-a's rollback snapshot freezes its MAC; desk-a then gets another MAC (outside the
    // pool, as libvirt would generate), and desk-b is redefined with the old one (a clone).
    let snap = snapshot(&hv, A, "RDV_ROLLBACK");
    redefine(&hv, A, mac("52:54:00:5e:00:0a")).await;
    redefine(&hv, B, old).await;

    // the authority: one pool, desk-b's MAC leased to it, the host's inventory applied
    let now = Timestamp::from_millis(1_700_000_000_000);
    let admin = Context {
        now,
        actor: Actor::admin("test"),
    };
    let agent = Context {
        now,
        actor: Actor {
            name: format!("agent:{host}"),
            scope: Scope::Host(host.clone()),
        },
    };
    let mut core = Core::new();
    let spec = PoolSpec {
        name: PoolName::new("kvm").unwrap(),
        ranges: vec![MacRange::new(mac("52:54:00:aa:00:00"), mac("52:54:00:aa:00:ff")).unwrap()],
        policy: PoolPolicy {
            order: AllocationOrder::Lowest,
            ..PoolPolicy::default()
        },
    };
    core.create_pool(&admin, spec, 0).unwrap();
    core.allocate(
        &agent,
        AllocateRequest {
            pool: "kvm".into(),
            owner: Owner {
                vm_id: B.into(),
                adapter_id: "net0".into(),
                vm_name: Some("desk-b".into()),
                host: Some(host.clone()),
                cluster: None,
            },
            mac: Some(old),
            count: 1,
            reason: Some("desk-b's MAC, recorded as it is".into()),
        },
    )
    .unwrap();
    let (outcome, _) = core
        .apply_inventory(&agent, hv.inventory().await.unwrap(), 1)
        .unwrap();
    assert!(
        outcome
            .bound
            .iter()
            .any(|l| l.mac == old && l.owner.vm_id == B)
    );
    assert_eq!(
        conflicts_on(&core, ConflictClass::Latent),
        [old],
        "desk-a's snapshot MAC is live on desk-b: latent before any revert"
    );
    let auth = CoreAuthority {
        core: Mutex::new(core),
        agent,
    };

    // the rollback: desk-a comes back with desk-b's MAC
    hv.watch(&Bookmarks::new()).await.unwrap();
    drain(&hv).await;
    snap.revert(0).unwrap();
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.vm_id.as_str()), (EventKind::Restored, A));
    assert_eq!(
        live(&hv.inventory().await.unwrap(), A),
        [("net0".into(), old)]
    );

    let cfg = DecideConfig::new(
        Strategy::Guard,
        host.clone(),
        Remedy::FreshStatic { pool: "kvm".into() },
    );
    let d = handle_event(&hv, &auth, &cfg, &ev).await;
    let Outcome::Done {
        changes, reason, ..
    } = &d.outcome
    else {
        panic!("{}", d.outcome.summary());
    };
    assert!(reason.contains("leased to VM desk-b"), "{reason}");
    assert_eq!(changes.len(), 1);
    let MacSetting::Static(fresh) = changes[0].new else {
        panic!("{:?}", changes[0]);
    };
    assert_eq!(
        (changes[0].adapter.adapter.as_str(), changes[0].old),
        ("net0", Some(old))
    );
    let pool = MacRange::new(mac("52:54:00:aa:00:00"), mac("52:54:00:aa:00:ff")).unwrap();
    assert!(pool.contains(fresh) && fresh != old, "{fresh}");
    assert_eq!(changes[0].record_id, ev.record_id);

    // libvirt: desk-a's persistent definition has the fresh MAC, and it runs with it
    assert_eq!(persistent_macs(&hv, A), [("net0".into(), fresh)]);
    let conn = hv.connection().unwrap();
    let dom = conn.lookup_domain_by_uuid_string(A).unwrap();
    assert!(dom.is_active().unwrap());
    assert!(dom.xml_desc(0).unwrap().contains(&format!(
        "<mac address='{}'/>",
        fresh.display(MacFormat::Unix)
    )));
    let inv = hv.inventory().await.unwrap();
    assert_eq!(live(&inv, A), [("net0".into(), fresh)]);
    assert_eq!(
        live(&inv, B),
        [("net0".into(), old)],
        "desk-b keeps its MAC"
    );
    assert_eq!(auth.lease_of(A), [("net0".to_string(), fresh)]);

    // the authority sees no live duplicate any more (the snapshot still holds the old MAC)
    {
        let mut core = auth.core.lock().unwrap();
        core.apply_inventory(&auth.agent, inv, 2).unwrap();
        assert!(conflicts_on(&core, ConflictClass::LiveDuplicate).is_empty());
        assert_eq!(conflicts_on(&core, ConflictClass::Latent), [old]);
    }

    // the agent's own turn-off and start come back as events it has nothing to do about; so
    // does the revert's STARTED/FROM_SNAPSHOT when it came after the first event was taken
    // (it is folded into the first only while that one is still queued)
    let mut kinds = Vec::new();
    while let Some(e) = hv.next_event(Duration::from_millis(500)).await.unwrap() {
        let d = handle_event(&hv, &auth, &cfg, &e).await;
        assert!(
            matches!(d.outcome, Outcome::Ignored { .. }),
            "{}",
            d.outcome.summary()
        );
        assert_eq!(e.vm_id, A);
        kinds.push(e.kind);
    }
    if kinds.first() == Some(&EventKind::Restored) {
        kinds.remove(0);
    }
    assert_eq!(kinds, [EventKind::Stopped, EventKind::Started]);
    // the same restore decided again: nothing left to fix
    let again = handle_event(&hv, &auth, &cfg, &ev).await;
    assert!(
        matches!(&again.outcome, Outcome::Ignored { reason } if reason.starts_with("no conflict")),
        "{}",
        again.outcome.summary()
    );
}

#[tokio::test]
async fn malformed_macs_are_refused_precisely_by_libvirt_itself() {
    // a node file with a malformed MAC: libvirt refuses to open it, naming the MAC
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-mac.xml");
    let text = std::fs::read_to_string(node_file()).unwrap();
    std::fs::write(&bad, text.replace("52:54:00:aa:00:02", "52:54:00:zz:00:02")).unwrap();
    let uri = format!("test://{}", bad.display());
    let err = LibvirtHypervisor::connect(&uri).err().expect("refused");
    assert_eq!(
        err,
        HvError::Failed {
            command: format!("connect {uri}"),
            message: "XML error: unable to parse mac address '52:54:00:zz:00:02'".into(),
        }
    );
    // …and a domain with one at define time, while the others stay as they were
    let hv = LibvirtHypervisor::connect(&node_uri()).unwrap();
    let conn = hv.connection().unwrap();
    let err = conn
        .define_domain_xml(
            "<domain type='test'><name>bad</name><memory>65536</memory><os><type>hvm</type></os>\
             <devices><interface type='network'><mac address='01:00:5e:00:00:01'/>\
             <source network='default'/></interface></devices></domain>",
        )
        .unwrap_err();
    assert_eq!(
        err.message(),
        "XML error: expected unicast mac address, found multicast '01:00:5e:00:00:01'"
    );
    let (inv, problems) = hv.inventory_report().await.unwrap();
    assert_eq!((inv.vms().len(), problems.len()), (5, 0));
}

#[tokio::test]
async fn unreachable_and_unknown_uris_are_precise_errors() {
    let uri = "qemu+unix:///system?socket=/nonexistent/macpool-test/libvirt-sock";
    let err = LibvirtHypervisor::connect(uri).err().expect("unreachable");
    let HvError::Unavailable(message) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        message,
        "cannot reach libvirt at qemu+unix:///system?socket=/nonexistent/macpool-test/libvirt-sock: \
         Failed to connect socket to '/nonexistent/macpool-test/libvirt-sock': No such file or directory"
    );
    // a scheme no in-process driver knows goes to the daemon (which would then say "no
    // connection driver available"); with no daemon that is unreachable, and says where
    let err = LibvirtHypervisor::connect("nosuchdriver:///x")
        .err()
        .expect("unknown scheme");
    assert!(
        matches!(&err, HvError::Unavailable(m) if m.starts_with("cannot reach libvirt at nosuchdriver:///x: Failed to connect socket to")),
        "{err:?}"
    );
    let err = LibvirtHypervisor::connect("test:///nonexistent/macpool-node.xml")
        .err()
        .expect("missing node file");
    assert_eq!(
        err,
        HvError::Failed {
            command: "connect test:///nonexistent/macpool-node.xml".into(),
            message: "XML error: failed to parse xml document '/nonexistent/macpool-node.xml'"
                .into(),
        },
        "a missing node file is a configuration error, not an unreachable daemon"
    );
}

// ---- a real libvirt daemon (libvirtd, Debian's libvirt-daemon) serving its test driver -------

/// A private `libvirtd` on a socket in a temporary directory, serving `test:///default` over
/// the remote protocol (`test+unix:///default?socket=…`): the one way to lose a libvirt
/// connection for real. As root it runs as `nobody` (the qemu driver of a root daemon wants
/// Debian's `libvirt-qemu` user). `None`, with a notice, where `libvirtd` is not installed.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

const LIBVIRTD: &str = "/usr/sbin/libvirtd";

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Daemon {
    fn start(extra_conf: &str) -> Option<Daemon> {
        if !std::path::Path::new(LIBVIRTD).exists() {
            // scripts/setup installs it, so the suite run by scripts/test (which sets this)
            // must not pass without these tests
            assert!(
                std::env::var_os("MACPOOL_TEST_REQUIRE_LIBVIRTD").is_none(),
                "{LIBVIRTD} is not installed (Debian: libvirt-daemon), and scripts/test requires it"
            );
            eprintln!("NOTICE: {LIBVIRTD} is not installed (Debian: libvirt-daemon); skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.path().to_path_buf(), dir.path().join("run")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let conf = dir.path().join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!(
                "unix_sock_dir = \"{}\"\nlog_outputs = \"3:file:{}\"\n{extra_conf}",
                dir.path().join("run").display(),
                dir.path().join("libvirtd.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut d = Daemon { dir, child: None };
        d.restart();
        Some(d)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/libvirt-sock")
    }

    fn uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket().display())
    }

    /// Starts the daemon (again) and waits for its socket.
    fn restart(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let home = self.dir.path();
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("setpriv");
            c.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                LIBVIRTD,
            ]);
            c
        } else {
            std::process::Command::new(LIBVIRTD)
        };
        cmd.arg("-f")
            .arg(home.join("libvirtd.conf"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(
                [
                    "HOME",
                    "XDG_RUNTIME_DIR",
                    "XDG_CONFIG_HOME",
                    "XDG_CACHE_HOME",
                ]
                .map(|v| (v, home)),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.child = Some(cmd.spawn().expect("start libvirtd"));
        for _ in 0..200 {
            if self.socket().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "libvirtd did not create {} within 10 s; its log: {}",
            self.socket().display(),
            std::fs::read_to_string(home.join("libvirtd.log")).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

const DEFAULT_TEST: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

#[tokio::test]
async fn a_lost_connection_is_reconnected_and_what_changed_meanwhile_is_reported() {
    let Some(mut daemon) = Daemon::start("auth_unix_rw = \"none\"\n") else {
        return;
    };
    let opts = macpool_agent::libvirt::LibvirtOptions {
        host: Some("kvm-test-host".into()),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
    };
    let hv = LibvirtHypervisor::connect_with(&daemon.uri(), opts).unwrap();
    assert_eq!(hv.inventory().await.unwrap().host(), "kvm-test-host");
    hv.watch(&Bookmarks::new()).await.unwrap();
    // state only this daemon process knows: the default domain's MAC, and one more domain
    redefine(&hv, DEFAULT_TEST, mac("52:54:00:aa:00:41")).await;
    let conn = hv.connection().unwrap();
    let extra = conn
        .define_domain_xml(
            "<domain type='test'><name>extra</name><memory>65536</memory><os><type>hvm</type></os></domain>",
        )
        .unwrap()
        .uuid_string()
        .unwrap();
    drop(conn);
    let mut kinds = Vec::new();
    while let Some(e) = hv.next_event(Duration::from_millis(500)).await.unwrap() {
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds,
        [EventKind::Stopped, EventKind::Started, EventKind::Created],
        "events arrive over the remote protocol too"
    );

    daemon.stop();
    for _ in 0..100 {
        if hv.is_reconnecting() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hv.is_reconnecting(), "the close callback saw the daemon go");
    let err = hv.inventory().await.unwrap_err();
    assert!(matches!(err, HvError::Unavailable(_)), "{err:?}");
    // a few failed reconnects (backoff), then the daemon is back with a fresh test driver
    tokio::time::sleep(Duration::from_millis(700)).await;
    daemon.restart();

    let mut resynced = Vec::new();
    while let Some(e) = hv.next_event(Duration::from_secs(5)).await.unwrap() {
        assert!(e.raw.starts_with("resync after reconnecting"), "{}", e.raw);
        resynced.push((e.kind, e.vm_id));
        if resynced.len() == 2 {
            break;
        }
    }
    assert_eq!(
        resynced,
        [
            (EventKind::Restored, DEFAULT_TEST.to_string()),
            (EventKind::Deleted, extra)
        ],
        "the new daemon's domain has its original MAC again; 'extra' is gone"
    );
    assert!(!hv.is_reconnecting());
    let inv = hv.inventory().await.unwrap();
    assert_eq!(
        live(&inv, DEFAULT_TEST),
        [("net0".into(), mac("aa:bb:cc:dd:ee:ff"))]
    );
}

#[tokio::test]
async fn a_socket_the_user_may_not_open_is_permission_denied() {
    // the child: this same test, run as an unprivileged user, connects and reports
    if let Ok(uri) = std::env::var("MACPOOL_LIBVIRT_CHILD_URI") {
        let err = LibvirtHypervisor::connect(&uri).err();
        println!("CHILD-RESULT: {err:?}");
        return;
    }
    if !is_root() {
        eprintln!("NOTICE: needs root to run a client as another user; skipped");
        return;
    }
    let Some(daemon) = Daemon::start("auth_unix_rw = \"none\"\nunix_sock_rw_perms = \"0700\"\n")
    else {
        return;
    };
    // uid 4242 is neither the daemon's user (nobody) nor root: the 0700 socket is closed to it
    let exe = std::env::current_exe().unwrap();
    let reachable = std::process::Command::new("setpriv")
        .args([
            "--reuid=4242",
            "--regid=4242",
            "--clear-groups",
            "test",
            "-x",
        ])
        .arg(&exe)
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        eprintln!(
            "NOTICE: {} is not executable for another user (a private directory on its path); skipped",
            exe.display()
        );
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "a_socket_the_user_may_not_open_is_permission_denied",
            "--nocapture",
        ])
        .env("MACPOOL_LIBVIRT_CHILD_URI", daemon.uri())
        .env("HOME", daemon.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD-RESULT: "))
        .unwrap_or_else(|| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let want = format!(
        "CHILD-RESULT: Some(Failed {{ command: \"connect {uri}\", message: \"permission denied: \
         Failed to connect socket to '{sock}': Permission denied",
        uri = daemon.uri(),
        sock = daemon.socket().display()
    );
    assert!(line.starts_with(&want), "{line}");
}
