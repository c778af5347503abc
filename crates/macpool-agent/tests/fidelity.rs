//! Issue 17 ("Hyper-V fidelity"): what would break on a real Windows PowerShell 5.1 host, pinned
//! against the stand-in, which models each behaviour that hid the defect (OEM-decoded stdin,
//! warnings on stdout, an absent cursor, a record-id reset, a failing watcher, 13002).

use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::decide::{
    Authority, AuthorityError, DecideConfig, Outcome, Remedy, Step, Strategy, handle_event,
};
use macpool_agent::delegate::{self, DelegateConfig, DelegateOutcome, Position};
use macpool_agent::events::WORKER_ADMIN;
use macpool_agent::powershell::protocol::{Request, request_line};
use macpool_agent::powershell::{ChildConfig, PowerShellHypervisor};
use macpool_agent::standin::check_bootstrap;
use macpool_agent::{Bookmarks, EventKind, HvEvent, Hypervisor};
use macpool_api::dto::{AllocateBody, BlockInfo, ClaimBlockBody, MacInfo};
use macpool_core::Mac;
use serde_json::{Value, json};

fn cfg(args: &[&str]) -> ChildConfig {
    let mut c = ChildConfig::program(env!("CARGO_BIN_EXE_hyperv-standin"), args.iter().copied());
    c.request_timeout = Duration::from_secs(10);
    c.ready_timeout = Duration::from_secs(10);
    c.min_restart_interval = Duration::from_millis(50);
    c.max_restart_interval = Duration::from_millis(400);
    c
}

fn host(range: &str) -> PowerShellHypervisor {
    PowerShellHypervisor::new(cfg(&["--host", "HV-F", "--range", range]))
}

async fn control(hv: &PowerShellHypervisor, v: Value) -> Value {
    hv.child().control(v).await.expect("control request")
}

async fn next(hv: &PowerShellHypervisor) -> HvEvent {
    hv.next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an event within 5 s")
}

/// Fix 1: Add-Type on Windows PowerShell 5.1 does not reference System.Core by default.
#[test]
fn bootstrap_compiles_on_desktop_edition() {
    let text = macpool_agent::powershell::bootstrap::bootstrap();
    assert_eq!(check_bootstrap(text), Ok(true));
    let without = text.replace("ReferencedAssemblies", "Referenced");
    assert!(
        check_bootstrap(&without)
            .unwrap_err()
            .contains("'Eventing'")
    );
}

/// Fix 10: `[Console]::OutputEncoding` throws with no console.
#[test]
fn bootstrap_leaves_the_console_code_page_alone() {
    let text = macpool_agent::powershell::bootstrap::bootstrap();
    assert!(!text.contains("[Console]::OutputEncoding ="));
    let with = format!("[Console]::OutputEncoding = $utf8\n{text}");
    assert!(
        check_bootstrap(&with)
            .unwrap_err()
            .contains("handle is invalid")
    );
}

/// Fix 2: every request line is ASCII, so non-ASCII names survive an OEM-decoded stdin.
#[tokio::test]
async fn non_ascii_requests_reach_an_oem_stdin_intact() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"b1","name":"Büro-01"})).await;
    let line = request_line(&Request {
        id: 1,
        op: "inventory".into(),
        script: "Get-MacpoolInventory -VMId 'Büro-01'".into(),
        control: None,
    });
    assert!(line.is_ascii(), "{line}");
    // the whole round trip: a VM whose name has non-ASCII comes back intact
    let inv = hv.inventory().await.unwrap();
    assert_eq!(inv.vms()[0].name, "Büro-01");
    let st = control(&hv, json!({"cmd":"state"})).await;
    assert_eq!(st["vms"][0]["name"], "Büro-01");
}

/// The stand-in refuses raw UTF-8 on stdin, as an OEM code page would garble it.
#[test]
fn the_standin_refuses_non_ascii_stdin() {
    let e = macpool_agent::standin::decode_stdin_line("{\"x\":\"Ü\"}".as_bytes()).unwrap_err();
    assert!(e.contains("0xC3"), "{e}");
    assert!(macpool_agent::standin::decode_stdin_line(b"{\"x\":\"\\u00dc\"}").is_ok());
}

/// Fix 9: warnings never interleave protocol lines.
#[tokio::test]
async fn warnings_are_captured_into_the_response() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(
        &hv,
        json!({"cmd":"warn","text":"The Hyper-V module is deprecated."}),
    )
    .await;
    for _ in 0..3 {
        hv.inventory().await.unwrap();
    }
    let diags = hv.child().diagnostics();
    assert!(
        !diags.iter().any(|d| d.contains("WARNING")),
        "warnings reached stdout: {diags:?}"
    );
}

/// Fix 6: VMMS-Admin 13002 (the public tools' "VM created") is watched.
#[tokio::test]
async fn vm_created_13002_is_seen() {
    let hv = host("00155D0C0000-00155D0C00FF");
    hv.watch(&Bookmarks::new()).await.unwrap();
    control(&hv, json!({"cmd":"create-vm","id":"c1","name":"new"})).await;
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.event_id), (EventKind::Created, 13002));
    control(
        &hv,
        json!({"cmd":"create-vm","id":"c2","name":"new2","event_id":18304}),
    )
    .await;
    assert_eq!(next(&hv).await.event_id, 18304);
}

/// Fix 7: after `wevtutil cl` the bookmark is ahead of every record; re-anchored, not deaf.
#[tokio::test]
async fn a_cleared_log_reanchors_the_bookmark() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"r1","name":"one"})).await;
    hv.start("r1").await.unwrap();
    hv.turn_off("r1").await.unwrap();
    control(&hv, json!({"cmd":"clear-log","channel":WORKER_ADMIN})).await;
    // the agent's saved bookmark is from before the clear
    let mut resume = Bookmarks::new();
    resume.insert(WORKER_ADMIN.to_string(), 5000);
    hv.watch(&resume).await.unwrap();
    assert_eq!(
        hv.take_reanchored().get(WORKER_ADMIN).copied(),
        Some(0),
        "{:?}",
        hv.child().diagnostics()
    );
    hv.start("r1").await.unwrap();
    let ev = next(&hv).await;
    assert_eq!((ev.kind, ev.record_id), (EventKind::Started, 1));
}

/// Fix 8: an EventException is a distinct line and the watcher is resubscribed.
#[tokio::test]
async fn a_failed_watcher_is_resubscribed() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"w1","name":"one"})).await;
    hv.watch(&Bookmarks::new()).await.unwrap();
    control(&hv, json!({"cmd":"fail-watch","channel":WORKER_ADMIN})).await;
    // started while no watcher delivers: the resubscribe (while waiting for events) replays it
    hv.start("w1").await.unwrap();
    let ev = next(&hv).await;
    assert_eq!(ev.kind, EventKind::Started);
    assert!(
        hv.child()
            .diagnostics()
            .iter()
            .any(|d| d.contains("watcher of Microsoft-Windows-Hyper-V-Worker-Admin failed"))
    );
}

/// Blocks for one host: an active block, then fresh ones on claim.
#[derive(Default)]
struct Blocks {
    blocks: Mutex<Vec<BlockInfo>>,
}

fn block(id: u64, first: &str, last: &str, state: &str) -> BlockInfo {
    BlockInfo {
        id,
        pool: "vdi".into(),
        host: "HV-F".into(),
        first: first.into(),
        last: last.into(),
        size: 16,
        state: state.into(),
        claimed: "2026-01-01T00:00:00Z".into(),
        changed: "2026-01-01T00:00:00Z".into(),
        unused_since: None,
        existing: false,
    }
}

impl Authority for Blocks {
    async fn mac(&self, _: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        Ok(None)
    }
    async fn allocate(&self, _: AllocateBody) -> Result<Mac, AuthorityError> {
        Err(AuthorityError::Refused("no".into()))
    }
    async fn blocks(&self, _: &str) -> Result<Vec<BlockInfo>, AuthorityError> {
        Ok(self.blocks.lock().unwrap().clone())
    }
    async fn claim_block(&self, _: &str, _: ClaimBlockBody) -> Result<BlockInfo, AuthorityError> {
        let b = block(2, "00155D0C0010", "00155D0C001F", "pending");
        self.blocks.lock().unwrap().push(b.clone());
        Ok(b)
    }
    async fn activate_block(&self, _: &str, id: u64) -> Result<BlockInfo, AuthorityError> {
        let mut bs = self.blocks.lock().unwrap();
        for b in bs.iter_mut() {
            b.state = if b.id == id { "active" } else { "draining" }.into();
        }
        Ok(bs.iter().find(|b| b.id == id).unwrap().clone())
    }
}

/// Fix 3: no readable cursor is never "steady": the inventory gives a lower bound to rotate on.
#[tokio::test]
async fn delegate_without_a_cursor_rotates_on_the_inventory_bound() {
    let hv = host("00155D0C0000-00155D0C000F");
    let auth = Blocks::default();
    auth.blocks
        .lock()
        .unwrap()
        .push(block(1, "00155D0C0000", "00155D0C000F", "active"));
    control(&hv, json!({"cmd":"hide-cursor"})).await;
    let cfg = DelegateConfig::new("HV-F", "vdi");
    let o = delegate::tick(&hv, &auth, &cfg).await;
    assert!(
        matches!(
            o,
            DelegateOutcome::Steady {
                remaining: 16,
                position: Position::InventoryBound(None),
                ..
            }
        ),
        "{o:?}"
    );
    assert!(
        o.summary().contains("no readable cursor"),
        "{}",
        o.summary()
    );
    // 13 VMs take :00..:0C; the cursor stays hidden, the inventory shows how far it got
    for i in 0..13 {
        control(
            &hv,
            json!({"cmd":"create-vm","id":format!("d{i}"),"name":"d"}),
        )
        .await;
    }
    let o = delegate::tick(&hv, &auth, &cfg).await;
    let DelegateOutcome::Applied {
        block: 2, reason, ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert!(reason.contains("lower bound"), "{reason}");
}

/// An unparseable cursor is reported and treated as absent, not a failure of every tick.
#[test]
fn an_unparseable_cursor_is_absent() {
    let s = macpool_agent::powershell::parse_host_range(&json!({
        "MacAddressMinimum": "00155D0C0000", "MacAddressMaximum": "00155D0C00FF",
        "CurrentMacAddress": "System.Byte[]"
    }))
    .unwrap();
    assert_eq!(s.cursor, None);
    assert!(s.range.is_some());
}

/// Fix 11: blog-compatible is the published script: every checkpoint adapter set dynamic, always
/// turned off, then started; also for a VM that is off and adapters already dynamic.
#[tokio::test]
async fn blog_compatible_sets_every_checkpoint_adapter_and_always_turns_off() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"p1","name":"desk"})).await;
    control(
        &hv,
        json!({"cmd":"checkpoint","vm_id":"p1","name":"Pool - RDV_Rollback"}),
    )
    .await;
    control(&hv, json!({"cmd":"checkpoint","vm_id":"p1","name":"older"})).await;
    control(
        &hv,
        json!({"cmd":"restore","vm_id":"p1","name":"Pool - RDV_Rollback"}),
    )
    .await;
    hv.turn_off("p1").await.unwrap();
    let ev = HvEvent {
        kind: EventKind::Restored,
        channel: WORKER_ADMIN.into(),
        event_id: 18596,
        record_id: 1,
        time: None,
        vm_id: "p1".into(),
        vm_name: None,
        raw: String::new(),
    };
    let mut cfg = DecideConfig::new(Strategy::BlogCompatible, "HV-F", Remedy::Dynamic);
    cfg.blog_wait = Duration::ZERO;
    cfg.dry_run = true;
    let d = handle_event(&hv, &Blocks::default(), &cfg, &ev).await;
    let Outcome::Planned { plan, .. } = &d.outcome else {
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
    // fix 5 too: "Pool - RDV_Rollback" matches the default, case-insensitively, anywhere
    assert_eq!(kinds, ["set", "set", "off", "wait", "start"]);
}

/// Holds one MAC for another VM (a checkpoint elsewhere); hands out 02:00:00:00:20:xx.
struct HeldElsewhere {
    mac: Mac,
    allocated: Mutex<Vec<AllocateBody>>,
}

impl Authority for HeldElsewhere {
    async fn mac(&self, mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        Ok((mac == self.mac).then(|| MacInfo {
            mac: mac.to_string(),
            state: "held".into(),
            pool: Some("vdi".into()),
            leases: vec![],
            holds: vec![macpool_api::dto::HoldInfo {
                mac: mac.to_string(),
                vm_id: "someone-else".into(),
                reason: "checkpoint".into(),
                reference: "cp".into(),
                created: "2015-10-14T00:00:00Z".into(),
            }],
            cooling_until: None,
            seen: vec![],
        }))
    }
    async fn allocate(&self, body: AllocateBody) -> Result<Mac, AuthorityError> {
        let mut a = self.allocated.lock().unwrap();
        a.push(body);
        Ok(Mac::from_u64(0x0200_0000_2000 + a.len() as u64).unwrap())
    }
}

/// Fix 4: a VM with two adapters both called "Network Adapter" is fixed, by adapter Id.
#[tokio::test]
async fn a_multi_nic_vm_is_fixed_by_adapter_id() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(
        &hv,
        json!({"cmd":"create-vm","id":"m1","name":"two nics","nics":2}),
    )
    .await;
    hv.start("m1").await.unwrap();
    control(
        &hv,
        json!({"cmd":"checkpoint","vm_id":"m1","name":"RDV_ROLLBACK - 1"}),
    )
    .await;
    control(&hv, json!({"cmd":"restore","vm_id":"m1"})).await;
    let inv = hv.inventory().await.unwrap();
    let live: Vec<_> = inv.vms()[0]
        .adapters
        .iter()
        .filter(|a| a.location == macpool_core::inventory::AdapterLocation::Live)
        .cloned()
        .collect();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].name, live[1].name, "Hyper-V's default names repeat");
    assert_ne!(live[0].id, live[1].id);
    let auth = HeldElsewhere {
        mac: live[1].mac,
        allocated: Mutex::new(Vec::new()),
    };
    let ev = HvEvent {
        kind: EventKind::Restored,
        channel: WORKER_ADMIN.into(),
        event_id: 18596,
        record_id: 1,
        time: None,
        vm_id: "m1".into(),
        vm_name: None,
        raw: String::new(),
    };
    let cfg = DecideConfig::new(
        Strategy::Guard,
        "HV-F",
        Remedy::FreshStatic { pool: "vdi".into() },
    );
    let d = handle_event(&hv, &auth, &cfg, &ev).await;
    assert!(matches!(d.outcome, Outcome::Done { .. }), "{:?}", d.outcome);
    let after = hv.inventory().await.unwrap();
    let macs: Vec<Mac> = after.vms()[0]
        .adapters
        .iter()
        .filter(|a| a.location == macpool_core::inventory::AdapterLocation::Live)
        .map(|a| a.mac)
        .collect();
    assert_eq!(macs, [live[0].mac, "02:00:00:00:20:01".parse().unwrap()]);
    // the lease names the adapter by its Id, so the two adapters never share one
    assert_eq!(
        auth.allocated.lock().unwrap()[0].adapter_id,
        live[1].id.clone()
    );
}

/// Fix 12: the management OS's vNICs are in the agent's inventory, flagged, and count for the
/// delegate bound (they draw from the same range).
#[tokio::test]
async fn management_os_adapters_are_in_the_inventory() {
    let hv = host("00155D0C0000-00155D0C000F");
    control(&hv, json!({"cmd":"create-vm","id":"v1","name":"one"})).await;
    let m = control(
        &hv,
        json!({"cmd":"add-management-adapter","name":"vEthernet (External)"}),
    )
    .await;
    let inv = hv.inventory().await.unwrap();
    assert_eq!(inv.management_adapters.len(), 1, "{inv:?}");
    assert_eq!(inv.management_adapters[0].name, "vEthernet (External)");
    assert_eq!(
        inv.management_adapters[0].mac.to_string(),
        m["mac"]
            .as_str()
            .unwrap()
            .parse::<Mac>()
            .unwrap()
            .to_string()
    );
    assert_eq!(inv.vms().len(), 1, "not a VM");
    // the bound sees :01 (the management vNIC), above the VM's :00
    control(&hv, json!({"cmd":"hide-cursor"})).await;
    let auth = Blocks::default();
    auth.blocks
        .lock()
        .unwrap()
        .push(block(1, "00155D0C0000", "00155D0C000F", "active"));
    let o = delegate::tick(&hv, &auth, &DelegateConfig::new("HV-F", "vdi")).await;
    assert!(
        matches!(o, DelegateOutcome::Steady { remaining: 14, .. }),
        "{o:?}"
    );
}

/// Fix 13: `-File` mode runs the bootstrap from a file (no Invoke-Expression), and refuses a
/// file that is not this version's bootstrap.
#[tokio::test]
async fn file_mode_runs_the_bootstrap_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent-bootstrap.ps1");
    std::fs::write(&file, macpool_agent::powershell::bootstrap::file_bytes()).unwrap();
    let path = file.display().to_string();
    let c = cfg(&["--host", "HV-F", "-File", &path]).with_bootstrap_file(&file);
    assert!(!c.send_loader);
    let hv = PowerShellHypervisor::new(c);
    assert_eq!(hv.inventory().await.unwrap().host(), "HV-F");
    std::fs::write(&file, b"# an older bootstrap\r\n").unwrap();
    let stale = PowerShellHypervisor::new(
        cfg(&["--host", "HV-F", "-File", &path]).with_bootstrap_file(&file),
    );
    let e = stale.inventory().await.unwrap_err().to_string();
    assert!(e.contains("bootstrap-script"), "{e}");
    let real = ChildConfig::powershell_file(macpool_agent::powershell::bootstrap::DEFAULT_FILE);
    assert_eq!(
        real.args,
        [
            "-NoLogo",
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "RemoteSigned",
            "-File",
            r"C:\ProgramData\macpool\agent-bootstrap.ps1"
        ]
    );
}

/// The selftest: every check passes on a healthy (stand-in) host and says what it saw; an
/// absent cursor is reported, not hidden.
#[tokio::test]
async fn selftest_reports_what_it_saw() {
    let hv = host("00155D0C0000-00155D0C00FF");
    control(&hv, json!({"cmd":"create-vm","id":"s1","name":"one"})).await;
    hv.start("s1").await.unwrap();
    let results = macpool_agent::selftest::run(&hv).await;
    let report = macpool_agent::selftest::render(&results);
    assert!(results.iter().all(|r| r.ok), "{report}");
    for seen in [
        "compiled=true edition=Desktop",
        "FullLanguage",
        "got \"Ü\" of length 1",
        "CurrentMacAddress (Binary) = 00155D0C0000",
        "newest 13002: record",
        "cursor 00-15-5D-0C-00-00",
        "got record",
    ] {
        assert!(report.contains(seen), "{seen} not in\n{report}");
    }
    control(&hv, json!({"cmd":"hide-cursor"})).await;
    let results = macpool_agent::selftest::run(&hv).await;
    let failing: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.name).collect();
    assert_eq!(
        failing,
        [
            "allocation cursor readable",
            "allocation cursor's registry value",
            "cursor inside the range and past the MACs handed out"
        ],
        "{}",
        macpool_agent::selftest::render(&results)
    );
}
