//! The real child manager, protocol and parsers against the real `hyperv-standin` process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::decide::{
    Authority, AuthorityError, DecideConfig, Outcome, Remedy, Step, Strategy, handle_event,
    handle_record,
};
use macpool_agent::events::WORKER_ADMIN;
use macpool_agent::powershell::{ChildConfig, PowerShellHypervisor, plan_scripts};
use macpool_agent::{Bookmarks, EventKind, HvEvent, Hypervisor, MacSetting};
use macpool_api::dto::{AllocateBody, HoldInfo, LeaseInfo, MacInfo};
use macpool_core::Mac;
use macpool_core::inventory::{AdapterLocation, HostInventory, MacKind, VmState};
use serde_json::{Value, json};

const DESK: &str = "RDS Desk 'Sales' $07 `n ‘x’ Ü";
const DESK_ID: &str = "5f0e6c3a-1b2c-4d5e-8f90-0123456789ab";

fn cfg(args: &[&str]) -> ChildConfig {
    let mut c = ChildConfig::program(env!("CARGO_BIN_EXE_hyperv-standin"), args.iter().copied());
    c.request_timeout = Duration::from_secs(10);
    c.ready_timeout = Duration::from_secs(10);
    c.min_restart_interval = Duration::from_millis(50);
    c.max_restart_interval = Duration::from_millis(400);
    c
}

fn host(name: &str, range: &str) -> PowerShellHypervisor {
    PowerShellHypervisor::new(cfg(&["--host", name, "--range", range]))
}

async fn control(hv: &PowerShellHypervisor, v: Value) -> Value {
    hv.child().control(v).await.expect("control request")
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn live_macs(inv: &HostInventory, vm_id: &str) -> Vec<(Mac, MacKind)> {
    inv.vms()
        .iter()
        .find(|v| v.id().eq_ignore_ascii_case(vm_id))
        .map(|v| {
            v.adapters
                .iter()
                .filter(|a| a.location == AdapterLocation::Live)
                .map(|a| (a.mac, a.kind))
                .collect()
        })
        .unwrap_or_default()
}

/// The authority's view, built from inventories: live adapters are leases, checkpoint
/// adapters holds. Allocation hands out 02:00:00:00:10:xx, idempotent per vm + adapter.
#[derive(Default)]
struct FakeAuthority {
    macs: HashMap<Mac, MacInfo>,
    unreachable: bool,
    allocated: Mutex<HashMap<(String, String), Mac>>,
    asked: Mutex<Vec<Mac>>,
}

impl FakeAuthority {
    fn from(invs: &[&HostInventory]) -> FakeAuthority {
        let mut macs: HashMap<Mac, MacInfo> = HashMap::new();
        for inv in invs {
            for vm in inv.vms() {
                for a in &vm.adapters {
                    let e = macs.entry(a.mac).or_insert_with(|| MacInfo {
                        mac: a.mac.to_string(),
                        state: "leased".into(),
                        pool: Some("vdi".into()),
                        leases: vec![],
                        holds: vec![],
                        cooling_until: None,
                        seen: vec![],
                    });
                    match &a.location {
                        AdapterLocation::Live => e.leases.push(LeaseInfo {
                            mac: a.mac.to_string(),
                            pool: "vdi".into(),
                            vm_id: vm.id().into(),
                            adapter_id: a.name.clone(),
                            vm_name: Some(vm.name.clone()),
                            host: Some(inv.host().into()),
                            cluster: None,
                            state: "bound".into(),
                            created: "2015-10-14T00:00:00Z".into(),
                            duplicate: false,
                        }),
                        AdapterLocation::Checkpoint(c) => e.holds.push(HoldInfo {
                            mac: a.mac.to_string(),
                            vm_id: vm.id().into(),
                            reason: "checkpoint".into(),
                            reference: c.id.clone(),
                            created: "2015-10-14T00:00:00Z".into(),
                        }),
                    }
                }
            }
        }
        FakeAuthority {
            macs,
            ..FakeAuthority::default()
        }
    }
}

impl Authority for FakeAuthority {
    async fn mac(&self, mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        if self.unreachable {
            return Err(AuthorityError::Unreachable("connection refused".into()));
        }
        self.asked.lock().unwrap().push(mac);
        Ok(self.macs.get(&mac).cloned())
    }

    async fn allocate(&self, body: AllocateBody) -> Result<Mac, AuthorityError> {
        if self.unreachable {
            return Err(AuthorityError::Unreachable("connection refused".into()));
        }
        let mut a = self.allocated.lock().unwrap();
        let n = a.len() as u64;
        let key = (body.vm_id, body.adapter_id.unwrap_or_default());
        Ok(*a
            .entry(key)
            .or_insert_with(|| Mac::from_u64(0x0200_0000_1000 + n).unwrap()))
    }
}

fn guard(host: &str) -> DecideConfig {
    DecideConfig::new(
        Strategy::Guard,
        host,
        Remedy::FreshStatic { pool: "vdi".into() },
    )
}

async fn next(hv: &PowerShellHypervisor) -> HvEvent {
    hv.next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an event within 5 s")
}

#[tokio::test]
async fn protocol_round_trips_with_hostile_names() {
    let hv = host("HV-A", "00155D0A0000-00155D0A00FF");
    control(
        &hv,
        json!({"cmd":"create-vm","id":DESK_ID,"name":DESK,"adapters":["NIC 'prod' $x"]}),
    )
    .await;
    let inv = hv.inventory().await.unwrap();
    assert_eq!(inv.host(), "HV-A");
    assert_eq!(
        inv.vms().len(),
        1,
        "one VM comes back as an object, not an array"
    );
    assert_eq!(inv.vms()[0].name, DESK);
    assert_eq!(inv.vms()[0].state, VmState::Off, "State 3 as an integer");
    assert_eq!(
        live_macs(&inv, DESK_ID),
        vec![(mac("00155D0A0000"), MacKind::Dynamic)]
    );
    let range = hv.host_range().await.unwrap();
    assert_eq!(range.cursor, Some(mac("00155D0A0000")));
    // the adapter is found by its hostile name, through the quoted script
    let a = macpool_agent::AdapterRef {
        vm_id: DESK_ID.into(),
        adapter: "NIC 'prod' $x".into(),
        id: None,
        checkpoint_id: None,
    };
    hv.set_adapter_mac(&a, MacSetting::Static(mac("02:00:00:00:00:42")))
        .await
        .unwrap();
    let inv = hv.inventory().await.unwrap();
    assert_eq!(
        live_macs(&inv, DESK_ID),
        vec![(mac("020000000042"), MacKind::Static)]
    );
    // a running VM refuses, and the failure changes nothing
    hv.start(DESK_ID).await.unwrap();
    let err = hv
        .set_adapter_mac(&a, MacSetting::Dynamic)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("current state"), "{err}");
    let st = hv.vm(DESK_ID).await.unwrap().unwrap();
    assert_eq!(st.vm.state, VmState::Running);
    assert_eq!(st.current_checkpoint, None);
    hv.set_host_range("00155D0C0000-00155D0C00FF".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        hv.host_range().await.unwrap().range.unwrap().to_string(),
        "00-15-5D-0C-00-00 - 00-15-5D-0C-00-FF"
    );
    assert_eq!(
        hv.child().spawn_count().await,
        1,
        "one process for every command"
    );
}

/// The seed's story: desktop D created on A gets A:00 and its RDV_ROLLBACK checkpoint freezes
/// it; D migrates to B and reboots there (B:xx); A wraps around and hands A:00 to X4; D on B
/// rolls back to A:00 → two VMs with one MAC. Guard sees 18596, asks the authority, and fixes D.
#[tokio::test]
async fn seed_scenario_guard_remediates_the_duplicate() {
    let a = host("HV-A", "00155D0A0000-00155D0A0003");
    let b = host("HV-B", "00155D0B0000-00155D0B00FF");
    control(&a, json!({"cmd":"create-vm","id":DESK_ID,"name":DESK})).await;
    a.start(DESK_ID).await.unwrap();
    let cp = control(
        &a,
        json!({"cmd":"checkpoint","vm_id":DESK_ID,"name":"RDV_ROLLBACK - 10/14/2015 09:00"}),
    )
    .await;
    let moved = control(&a, json!({"cmd":"migrate-out","vm_id":DESK_ID})).await;
    control(&b, json!({"cmd":"migrate-in","vm":moved})).await;
    assert_eq!(
        live_macs(&b.inventory().await.unwrap(), DESK_ID)[0].0,
        mac("00155D0A0000"),
        "migration keeps the MAC"
    );
    b.turn_off(DESK_ID).await.unwrap();
    b.start(DESK_ID).await.unwrap();
    assert_eq!(
        live_macs(&b.inventory().await.unwrap(), DESK_ID)[0].0,
        mac("00155D0B0000"),
        "a start on B re-checks the MAC"
    );
    for i in 1..=4 {
        control(
            &a,
            json!({"cmd":"create-vm","id":format!("x{i}"),"name":format!("X{i}")}),
        )
        .await;
    }
    assert_eq!(
        live_macs(&a.inventory().await.unwrap(), "x4")[0].0,
        mac("00155D0A0000"),
        "A wrapped around"
    );
    b.watch(&Bookmarks::new()).await.unwrap();
    control(
        &b,
        json!({"cmd":"restore","vm_id":DESK_ID,"checkpoint_id":cp["id"]}),
    )
    .await;
    let ev = next(&b).await;
    assert_eq!(ev.kind, EventKind::Restored);
    assert_eq!(ev.vm_id, DESK_ID);
    assert_eq!(ev.vm_name.as_deref(), Some(DESK));
    let (ia, ib) = (a.inventory().await.unwrap(), b.inventory().await.unwrap());
    assert_eq!(
        live_macs(&ib, DESK_ID)[0].0,
        mac("00155D0A0000"),
        "rolled back to the checkpoint's MAC"
    );
    let auth = FakeAuthority::from(&[&ia, &ib]);

    // observe / dry-run: the same decision, not executed, with its exact PowerShell
    let mut dry = guard("HV-B");
    dry.dry_run = true;
    let d = handle_event(&b, &auth, &dry, &ev).await;
    let Outcome::Planned { plan, reason } = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert!(reason.contains("leased to VM X4"), "{reason}");
    let scripts = plan_scripts(plan);
    assert_eq!(
        scripts[0],
        format!("Get-VM -Id '{DESK_ID}' | Stop-VM -TurnOff -Force -Confirm:$false")
    );
    assert!(
        scripts[1].ends_with("-StaticMacAddress '000000000000'"),
        "{}",
        scripts[1]
    );
    assert_eq!(scripts[2], format!("Get-VM -Id '{DESK_ID}' | Start-VM"));
    assert_eq!(
        b.vm(DESK_ID).await.unwrap().unwrap().vm.state,
        VmState::Running
    );
    assert_eq!(
        live_macs(&b.inventory().await.unwrap(), DESK_ID)[0].0,
        mac("00155D0A0000"),
        "dry-run changed nothing"
    );

    let d = handle_event(&b, &auth, &guard("HV-B"), &ev).await;
    let Outcome::Done { changes, plan, .. } = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert_eq!(plan.steps.len(), 3);
    assert!(matches!(plan.steps[0], Step::TurnOff { .. }));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].old, Some(mac("00155D0A0000")));
    assert_eq!(changes[0].new, MacSetting::Static(mac("020000001000")));
    assert_eq!(changes[0].record_id, ev.record_id);
    let st = b.vm(DESK_ID).await.unwrap().unwrap();
    assert_eq!(st.vm.state, VmState::Running);
    assert_eq!(
        live_macs(&b.inventory().await.unwrap(), DESK_ID),
        vec![(mac("020000001000"), MacKind::Static)]
    );
    assert_eq!(
        st.current_checkpoint.unwrap().name,
        "RDV_ROLLBACK - 10/14/2015 09:00"
    );
    // the start after the fix is pushed as 18500; the agent ignores it
    let started = next(&b).await;
    assert_eq!(started.kind, EventKind::Started);
    let d = handle_event(&b, &auth, &guard("HV-B"), &started).await;
    assert!(matches!(d.outcome, Outcome::Ignored { .. }));

    // Task Scheduler mode: the same event by channel + record id
    let d = handle_record(&b, &auth, &guard("HV-B"), WORKER_ADMIN, ev.record_id)
        .await
        .unwrap();
    // the VM's live MAC is now the fresh one: nobody else has it
    assert!(
        matches!(d.outcome, Outcome::Ignored { .. }),
        "{:?}",
        d.outcome
    );
}

#[tokio::test]
async fn no_conflict_no_action_and_unreachable_authority_changes_nothing() {
    let b = host("HV-B", "00155D0B0000-00155D0B00FF");
    control(&b, json!({"cmd":"create-vm","id":DESK_ID,"name":DESK})).await;
    b.start(DESK_ID).await.unwrap();
    control(
        &b,
        json!({"cmd":"checkpoint","vm_id":DESK_ID,"name":"RDV_ROLLBACK - a"}),
    )
    .await;
    control(&b, json!({"cmd":"create-vm","id":"other","name":"Other"})).await;
    control(
        &b,
        json!({"cmd":"checkpoint","vm_id":"other","name":"Nightly"}),
    )
    .await;
    b.watch(&Bookmarks::new()).await.unwrap();
    control(&b, json!({"cmd":"restore","vm_id":DESK_ID})).await;
    control(&b, json!({"cmd":"restore","vm_id":"other"})).await;
    let ev = next(&b).await;
    let other = next(&b).await;
    let before = b.inventory().await.unwrap();
    let auth = FakeAuthority::from(&[&before]);
    let d = handle_event(&b, &auth, &guard("HV-B"), &ev).await;
    assert!(
        matches!(&d.outcome, Outcome::Ignored { reason } if reason.contains("no conflict")),
        "{:?}",
        d.outcome
    );
    let d = handle_event(&b, &auth, &guard("HV-B"), &other).await;
    assert!(
        matches!(&d.outcome, Outcome::Ignored { reason } if reason.contains("does not match")),
        "{:?}",
        d.outcome
    );
    // authority down: deferred, never acted on
    let down = FakeAuthority {
        unreachable: true,
        ..FakeAuthority::default()
    };
    let d = handle_event(&b, &down, &guard("HV-B"), &ev).await;
    assert!(
        matches!(d.outcome, Outcome::Deferred { .. }),
        "{:?}",
        d.outcome
    );
    assert_eq!(b.inventory().await.unwrap(), before);
    // a configurable pattern
    let mut g = guard("HV-B");
    g.rollback_pattern = "Night*".into();
    let d = handle_event(&b, &auth, &g, &other).await;
    assert!(matches!(&d.outcome, Outcome::Ignored { reason } if reason.contains("no conflict")));
}

#[tokio::test]
async fn blog_compatible_is_the_published_workaround() {
    let b = host("HV-B", "00155D0B0000-00155D0B00FF");
    control(&b, json!({"cmd":"create-vm","id":DESK_ID,"name":DESK})).await;
    b.start(DESK_ID).await.unwrap();
    let cp = control(
        &b,
        json!({"cmd":"checkpoint","vm_id":DESK_ID,"name":"RDV_ROLLBACK - a"}),
    )
    .await;
    // make the checkpoint adapter static first: the workaround sets it dynamic
    let cpa = macpool_agent::AdapterRef {
        vm_id: DESK_ID.into(),
        adapter: "Network Adapter".into(),
        id: None,
        checkpoint_id: Some(cp["id"].as_str().unwrap().into()),
    };
    b.set_adapter_mac(&cpa, MacSetting::Static(mac("00155D0A0011")))
        .await
        .unwrap();
    b.watch(&Bookmarks::new()).await.unwrap();
    control(&b, json!({"cmd":"restore","vm_id":DESK_ID})).await;
    let ev = next(&b).await;
    let mut cfg = DecideConfig::new(Strategy::BlogCompatible, "HV-B", Remedy::Dynamic);
    cfg.blog_wait = Duration::ZERO;
    let down = FakeAuthority {
        unreachable: true,
        ..FakeAuthority::default()
    };
    let d = handle_event(&b, &down, &cfg, &ev).await;
    let Outcome::Done { plan, .. } = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::SetMac { .. } => "set",
            Step::TurnOff { .. } => "off",
            Step::Wait { .. } => "wait",
            Step::Start { .. } => "start",
        })
        .collect();
    assert_eq!(kinds, ["set", "off", "wait", "start"]);
    let inv = b.inventory().await.unwrap();
    let vm = &inv.vms()[0];
    assert_eq!(vm.state, VmState::Running);
    let cp_adapter = vm
        .adapters
        .iter()
        .find(|a| a.location != AdapterLocation::Live)
        .unwrap();
    assert_eq!(cp_adapter.kind, MacKind::Dynamic);
    // the restored static A-range MAC stays (it was static when restored); the restart is forced
    assert_eq!(next(&b).await.kind, EventKind::Started);
}

#[tokio::test]
async fn child_death_restarts_and_resumes_after_the_bookmark() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host.json");
    let state = state.to_str().unwrap();
    let hv = PowerShellHypervisor::new(cfg(&[
        "--state",
        state,
        "--host",
        "HV-B",
        "--range",
        "00155D0B0000-00155D0B00FF",
    ]));
    control(&hv, json!({"cmd":"create-vm","id":"v1","name":"one"})).await;
    control(
        &hv,
        json!({"cmd":"checkpoint","vm_id":"v1","name":"RDV_ROLLBACK"}),
    )
    .await;
    control(&hv, json!({"cmd":"restore","vm_id":"v1"})).await; // record 1001, before the watch
    let mut resume = Bookmarks::new();
    resume.insert(WORKER_ADMIN.into(), 1000);
    hv.watch(&resume).await.unwrap();
    let e1 = next(&hv).await;
    assert_eq!(e1.record_id, 1001, "catch-up after the bookmark");
    let pid = hv.child().pid().await.unwrap();
    // the child dies; the next event comes from its replacement, resumed after 1001
    control(&hv, json!({"cmd":"exit","code":9})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hv.next_event(Duration::from_millis(600)).await.unwrap(),
        None
    );
    assert_eq!(
        hv.child().spawn_count().await,
        2,
        "restarted while waiting for events"
    );
    assert_ne!(hv.child().pid().await.unwrap(), pid);
    hv.turn_off("v1").await.unwrap();
    hv.start("v1").await.unwrap(); // 1002 (18500)
    control(&hv, json!({"cmd":"restore","vm_id":"v1"})).await; // 1003
    let e2 = next(&hv).await;
    let e3 = next(&hv).await;
    assert_eq!((e2.record_id, e2.kind), (1002, EventKind::Started));
    assert_eq!((e3.record_id, e3.kind), (1003, EventKind::Restored));
    assert_eq!(
        hv.next_event(Duration::from_millis(300)).await.unwrap(),
        None,
        "nothing twice"
    );
    assert_eq!(hv.child().delivered()[WORKER_ADMIN], 1003);
}

#[tokio::test]
async fn malformed_lines_are_logged_and_skipped() {
    let hv = host("HV-B", "00155D0B0000-00155D0B00FF");
    hv.watch(&Bookmarks::new()).await.unwrap();
    control(&hv, json!({"cmd":"emit-raw","line":"{not json"})).await;
    control(&hv, json!({"cmd":"emit-raw","line":"{\"event\":{\"channel\":\"Microsoft-Windows-Hyper-V-Worker-Admin\",\"record_id\":5,\"xml\":\"<Event><broken\"}}"})).await;
    control(&hv, json!({"cmd":"create-vm","id":"v1","name":"one"})).await; // 18304, well-formed
    let ev = next(&hv).await;
    assert_eq!(ev.kind, EventKind::Created);
    let diags = hv.child().diagnostics();
    assert!(diags.iter().any(|d| d.contains("{not json")), "{diags:?}");
    // the bad event is skipped by the hypervisor layer (logged with its raw XML)
    assert!(hv.inventory().await.is_ok(), "the child keeps running");
}

#[tokio::test]
async fn a_missing_program_is_unavailable_not_a_panic() {
    let hv = PowerShellHypervisor::new(ChildConfig::program(
        "/nonexistent/powershell.exe",
        ["-Command", "-"],
    ));
    let e = hv.inventory().await.unwrap_err();
    assert!(matches!(e, macpool_agent::HvError::Unavailable(_)), "{e}");
}

/// An authority that is down until `up` is set, and records every inventory it accepted.
#[derive(Default)]
struct FlakyAuthority {
    up: std::sync::atomic::AtomicBool,
    attempts: std::sync::atomic::AtomicU32,
    accepted: Mutex<Vec<(String, u64, usize)>>,
}

impl Authority for FlakyAuthority {
    async fn mac(&self, _mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        Err(AuthorityError::Unreachable("down".into()))
    }

    async fn allocate(&self, _body: AllocateBody) -> Result<Mac, AuthorityError> {
        Err(AuthorityError::Unreachable("down".into()))
    }

    async fn put_inventory(
        &self,
        host: &str,
        body: macpool_api::dto::InventoryBody,
    ) -> Result<u64, AuthorityError> {
        use std::sync::atomic::Ordering;
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if !self.up.load(Ordering::SeqCst) {
            return Err(AuthorityError::Unreachable("connection refused".into()));
        }
        self.accepted
            .lock()
            .unwrap()
            .push((host.to_string(), body.generation, body.vms.len()));
        Ok(body.generation)
    }
}

/// The service loop keeps the inventory while the authority is down, retries with backoff (not
/// in a storm), delivers it once the authority is back, and pushes again after a VM event.
#[tokio::test]
async fn the_inventory_waits_for_the_authority_and_follows_events() {
    use macpool_agent::agent::{AgentConfig, run};
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let hv = host("HV-Q", "00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"q1","name":"Q one"})).await;
    let auth = FlakyAuthority::default();
    let mut cfg = AgentConfig::new(None, "HV-Q", dir.path().join("bookmark.json"));
    cfg.poll = Duration::from_millis(20);
    cfg.retry_min = Duration::from_millis(40);
    cfg.retry_max = Duration::from_millis(160);
    cfg.inventory_every = Duration::from_secs(3600);
    cfg.inventory_debounce = Duration::from_millis(10);
    let reports = Mutex::new(Vec::new());
    let scenario = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let while_down = auth.attempts.load(Ordering::SeqCst);
        auth.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // a VM event makes the agent report again
        control(&hv, json!({"cmd":"create-vm","id":"q2","name":"Q two"})).await;
        while_down
    };
    let (while_down, done) = tokio::join!(scenario, async {
        run(
            &hv,
            &auth,
            &cfg,
            |r| reports.lock().unwrap().push(format!("{r:?}")),
            tokio::time::sleep(Duration::from_millis(2500)),
        )
        .await
    });
    done.unwrap();
    // 600 ms down with 40 ms doubling to 160 ms: a handful of tries, not hundreds
    assert!(
        (2..=8).contains(&while_down),
        "{while_down} attempts while down"
    );
    let accepted = auth.accepted.lock().unwrap().clone();
    assert_eq!(
        accepted.len(),
        2,
        "{accepted:?} {:?}",
        reports.lock().unwrap()
    );
    assert_eq!((accepted[0].0.as_str(), accepted[0].2), ("HV-Q", 1));
    assert_eq!(accepted[1].2, 2, "the second push has the new VM");
    assert!(accepted[1].1 > accepted[0].1, "generations only grow");
    assert!(
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("kept for later")),
        "the failed pushes are reported"
    );
}

/// An authority that takes every inventory and keeps its body.
#[derive(Default)]
struct RecordingAuthority {
    bodies: Mutex<Vec<macpool_api::dto::InventoryBody>>,
}

impl Authority for RecordingAuthority {
    async fn mac(&self, _mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        Ok(None)
    }

    async fn allocate(&self, _body: AllocateBody) -> Result<Mac, AuthorityError> {
        Err(AuthorityError::Refused("not in this test".into()))
    }

    async fn put_inventory(
        &self,
        _host: &str,
        body: macpool_api::dto::InventoryBody,
    ) -> Result<u64, AuthorityError> {
        let g = body.generation;
        self.bodies.lock().unwrap().push(body);
        Ok(g)
    }
}

/// Issue 17 fixes 12 and 3: the agent's push carries the management OS's vNICs, its strategy
/// and how it knows the cursor — `registry` while the host shows one, `inventory-bound` (what
/// delegate then rotates on) once it does not.
#[tokio::test]
async fn the_push_carries_management_vnics_strategy_and_cursor_source() {
    use macpool_agent::agent::{AgentConfig, run};
    use macpool_agent::delegate::DelegateConfig;
    let dir = tempfile::tempdir().unwrap();
    let hv = host("HV-M", "00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"m1","name":"M one"})).await;
    let vnic = control(
        &hv,
        json!({"cmd":"add-management-adapter","name":"vEthernet (External)"}),
    )
    .await;
    let auth = RecordingAuthority::default();
    let mut cfg = AgentConfig::new(None, "HV-M", dir.path().join("bookmark.json"));
    cfg.delegate = Some(DelegateConfig::new("HV-M", "p"));
    cfg.poll = Duration::from_millis(20);
    cfg.inventory_every = Duration::from_secs(3600);
    let once = || {
        run(
            &hv,
            &auth,
            &cfg,
            |_| {},
            tokio::time::sleep(Duration::from_millis(300)),
        )
    };
    once().await.unwrap();
    control(&hv, json!({"cmd":"hide-cursor"})).await;
    once().await.unwrap();
    let bodies = auth.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 2, "{bodies:?}");
    let (first, last) = (&bodies[0], bodies.last().unwrap());
    assert_eq!(first.management_adapters.len(), 1, "{first:?}");
    assert_eq!(first.management_adapters[0].name, "vEthernet (External)");
    assert_eq!(
        mac(&first.management_adapters[0].mac),
        mac(vnic["mac"].as_str().unwrap())
    );
    assert!(first.management_adapters[0].dynamic);
    assert_eq!(first.strategy.as_deref(), Some("delegate"));
    assert_eq!(first.cursor_source.as_deref(), Some("registry"));
    assert_eq!(last.cursor_source.as_deref(), Some("inventory-bound"));
    assert_eq!(last.cursor, None);
}
