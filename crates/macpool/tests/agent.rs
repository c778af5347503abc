//! `macpool agent on-event` end to end: the real binary, a real authority, and the Hyper-V
//! stand-in (`macpool hyperv standin`, the same process the agent's own tests use) as its
//! PowerShell. The seed's duplicate on one host: the desktop rolls back to a checkpoint whose MAC
//! the authority has since leased to another VM.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, exe};
use macpool_agent::events::WORKER_ADMIN;
use macpool_agent::powershell::{ChildConfig, PowerShellHypervisor};
use macpool_agent::{EventKind, Hypervisor};
use predicates::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

const DESK_ID: &str = "5f0e6c3a-1b2c-4d5e-8f90-0123456789ab";

fn standin_args(state: &Path) -> Vec<String> {
    vec![
        "hyperv".into(),
        "standin".into(),
        "--host".into(),
        "HV-A".into(),
        "--range".into(),
        "00155D0A0000-00155D0A0003".into(),
        "--state".into(),
        state.display().to_string(),
    ]
}

/// A stand-in Hyper-V host driven from the test (its state persists in the `--state` file
/// that the agent's own stand-in then loads).
fn standin(args: Vec<String>) -> PowerShellHypervisor {
    let mut cfg = ChildConfig::program(exe(), args);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.ready_timeout = Duration::from_secs(10);
    PowerShellHypervisor::new(cfg)
}

/// Creates the desktop (it gets 00-15-5D-0A-00-00), its RDV_ROLLBACK checkpoint, and rolls it
/// back; returns the record id of the 18596 event.
async fn roll_back_desktop(state: &Path) -> u64 {
    let hv = standin(standin_args(state));
    let control = |v: Value| {
        let hv = &hv;
        async move { hv.child().control(v).await.expect("stand-in control") }
    };
    control(json!({"cmd": "create-vm", "id": DESK_ID, "name": "RDS Desk 01"})).await;
    hv.start(DESK_ID).await.unwrap();
    let cp = control(
        json!({"cmd": "checkpoint", "vm_id": DESK_ID, "name": "RDV_ROLLBACK - 10/14/2015 09:00"}),
    )
    .await;
    control(json!({"cmd": "restore", "vm_id": DESK_ID, "checkpoint_id": cp["id"]})).await;
    // The stand-in persists its state (events included) after every request.
    let saved: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let record = saved["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == 18596)
        .and_then(|e| e["record_id"].as_u64());
    if let Some(id) = record {
        let ev = hv
            .event(WORKER_ADMIN, id)
            .await
            .unwrap()
            .expect("the event by record id");
        assert_eq!(ev.kind, EventKind::Restored);
        assert_eq!(ev.vm_id, DESK_ID);
        return id;
    }
    panic!("the stand-in logged no restore event");
}

fn on_event(s: &Server, state: &Path, record: u64, extra: &[&str]) -> assert_cmd::Command {
    let mut c = s.cli();
    c.args([
        "agent",
        "on-event",
        "--channel",
        WORKER_ADMIN,
        "--record-id",
        &record.to_string(),
    ])
    .args(["--pool", "rds", "--host", "HV-A", "--powershell"])
    .arg(exe());
    for a in standin_args(state) {
        c.arg(format!("--powershell-arg={a}"));
    }
    c.args(extra);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_fixes_a_rollback_onto_a_mac_leased_to_another_vm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("standin.json");
    let record = roll_back_desktop(&state).await;
    let s = Server::start(&dir.path().join("data"));
    s.cli()
        .args([
            "pool",
            "create",
            "rds",
            "--range",
            "00155D0A0000-00155D0A00FF",
            "--order",
            "lowest",
        ])
        .assert()
        .success();
    // Meanwhile the MAC frozen in the checkpoint went to another VM.
    s.cli()
        .args([
            "lease",
            "allocate",
            "--pool",
            "rds",
            "--vm-id",
            "x4",
            "--mac",
            "00155D0A0000",
        ])
        .assert()
        .success();

    // Authority unreachable: nothing changes, exit 3.
    on_event(&s, &state, record, &[])
        .env("MACPOOL_SERVER", "http://127.0.0.1:9")
        .assert()
        .code(3)
        .stdout(predicate::str::contains("deferred"));
    // Dry run: the exact PowerShell, nothing changed.
    on_event(&s, &state, record, &["--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would change VM RDS Desk 01"))
        .stdout(predicate::str::contains("Set-VMNetworkAdapter"));
    s.cli()
        .args(["lease", "show", "--vm", DESK_ID])
        .assert()
        .code(1);

    // For real: a fresh pool MAC, set static while the VM is off, started again.
    on_event(&s, &state, record, &[])
        .assert()
        .success()
        .stdout(predicate::str::contains("remediated VM RDS Desk 01"))
        .stdout(predicate::str::contains("00-15-5D-0A-00-00→"));
    let out = s
        .cli()
        .args(["--json", "lease", "list", "--vm", DESK_ID])
        .output()
        .unwrap();
    let leases: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fresh = leases[0]["mac"]
        .as_str()
        .expect("the desktop now has a lease")
        .to_string();
    assert_ne!(fresh, "00-15-5D-0A-00-00");
    // The authority's history says what the fresh MAC replaced, and which event caused it.
    s.cli()
        .args(["history", "--vm", DESK_ID])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "guard: replaces 00-15-5D-0A-00-00 of adapter 'Network Adapter'",
        ))
        .stdout(predicate::str::contains(format!(
            "{WORKER_ADMIN} #{record}"
        )));

    // The same event again: the fix is in place, nothing to do.
    on_event(&s, &state, record, &[])
        .assert()
        .success()
        .stdout(predicate::str::contains("ignored"));
}

#[test]
fn selftest_reports_every_check_against_the_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::new(exe());
    c.args(["--json", "hyperv", "selftest", "--powershell"])
        .arg(exe());
    for a in standin_args(&dir.path().join("state.json")) {
        c.arg(format!("--powershell-arg={a}"));
    }
    let out = c.output().unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    // issue 17: ten scripted checks, the cursor's position, and a watcher's delivery
    assert_eq!(rows.len(), 12, "{rows:?}");
    let range = rows
        .iter()
        .find(|r| r["check"] == "dynamic MAC range readable")
        .unwrap();
    assert_eq!(range["ok"], true);
    assert_eq!(range["detail"], "00-15-5D-0A-00-00 - 00-15-5D-0A-00-03");
    let all_ok = rows.iter().all(|r| r["ok"] == true);
    assert_eq!(
        out.status.code(),
        Some(if all_ok { 0 } else { 1 }),
        "exit 1 exactly when a check fails"
    );
}

/// `macpool agent --strategy delegate` as a service: the host's range is on block 1 with its
/// cursor two addresses from the end; the agent rotates to a fresh block before Hyper-V would
/// wrap, the authority drains block 1 (its MACs are still on VMs), and the inventory arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_rotates_the_host_onto_a_fresh_block_and_reports_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("standin.json");
    let s = Server::start(&dir.path().join("data"));
    s.cli()
        .args([
            "pool",
            "create",
            "rds",
            "--range",
            "00155D0B0000-00155D0B00FF",
        ])
        .assert()
        .success();
    let b1 = s
        .api(
            Method::POST,
            "/hosts/HV-A/blocks",
            Some(json!({"pool": "rds", "size": 8})),
        )
        .await;
    assert_eq!(b1["first"], "00-15-5D-0B-00-00");
    s.api(Method::POST, "/hosts/HV-A/blocks/1/activate", None)
        .await;

    // The host on block 1; six desktops started took 0000..0005: two addresses left.
    {
        let mut args = standin_args(&state);
        args[5] = "00155D0B0000-00155D0B0007".into();
        let hv = standin(args);
        for i in 0..6 {
            let id = format!("desk-{i}");
            hv.child()
                .control(json!({"cmd": "create-vm", "id": id, "name": format!("Desk {i}")}))
                .await
                .unwrap();
            hv.start(&id).await.unwrap();
        }
        let range = hv.host_range().await.unwrap();
        assert_eq!(range.cursor, Some("00155D0B0005".parse().unwrap()));
    }

    let mut agent = s.cli();
    agent
        .args([
            "agent",
            "--strategy",
            "delegate",
            "--pool",
            "rds",
            "--block-size",
            "8",
            "--rotate-margin",
            "2",
            "--host",
            "HV-A",
            "--inventory-every",
            "1s",
            "--run-for",
            "3s",
            "--bookmark",
        ])
        .arg(dir.path().join("bookmark.json"))
        .arg("--powershell")
        .arg(exe());
    for a in standin_args(&state) {
        agent.arg(format!("--powershell-arg={a}"));
    }
    agent
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "delegate: applied block 2 (00-15-5D-0B-00-08 - 00-15-5D-0B-00-0F): cursor 00-15-5D-0B-00-05 leaves 2 of 8",
        ))
        .stdout(predicate::str::contains("inventory: accepted, generation"));

    // Hyper-V's range is block 2 now.
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        (saved["range_min"].as_str(), saved["range_max"].as_str()),
        (Some("00155D0B0008"), Some("00155D0B000F"))
    );
    let blocks = s.api(Method::GET, "/hosts/HV-A/blocks", None).await;
    let states: Vec<(u64, &str)> = blocks
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_u64().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "draining"), (2, "active")]);
    // The inventory arrived: six desktops, their MACs explained by block 1, no conflict.
    let inv = s.api(Method::GET, "/hosts/HV-A/inventory", None).await;
    assert_eq!(inv["inventory"]["vms"].as_array().map(Vec::len), Some(6));
    assert_eq!(inv["inventory"]["range_min"], "00-15-5D-0B-00-08");
    s.cli().arg("conflicts").assert().success();

    // What an admin sees, and retiring the host's block by hand.
    s.cli()
        .args(["block", "list", "--host", "HV-A"])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(
                r"1\s+HV-A\s+rds\s+00-15-5D-0B-00-00 - 00-15-5D-0B-00-07\s+8\s+draining",
            )
            .unwrap(),
        )
        .stdout(
            predicate::str::is_match(
                r"2\s+HV-A\s+rds\s+00-15-5D-0B-00-08 - 00-15-5D-0B-00-0F\s+8\s+active",
            )
            .unwrap(),
        );
    s.cli()
        .args(["--json", "block", "drain", "HV-A", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"state\": \"draining\""));
    s.cli()
        .args(["block", "drain", "HV-A", "99"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("host 'HV-A' has no block 99"));
}

#[test]
fn agent_flags_are_checked_before_anything_runs() {
    let run = |args: &[&str]| {
        let mut c = assert_cmd::Command::new(exe());
        c.arg("agent")
            .args(args)
            .env("MACPOOL_SERVER", "http://127.0.0.1:9");
        c.assert()
    };
    run(&["--strategy", "delegate", "--host", "h"])
        .code(2)
        .stderr(predicate::str::contains("delegate needs --pool POOL"));
    run(&["--strategy", "guard", "--host", "h"])
        .code(2)
        .stderr(predicate::str::contains("guard needs --pool POOL"));
    run(&["--strategy", "sometimes", "--host", "h"])
        .code(2)
        .stderr(predicate::str::contains("unknown strategy 'sometimes'"));
    run(&["--hypervisor", "vmware", "--pool", "p", "--host", "h"])
        .code(2)
        .stderr(predicate::str::contains("unknown hypervisor 'vmware'"));
}

/// The same agent on libvirt's test driver: it reports the domains and says that delegate does
/// not apply there (libvirt has no host-wide dynamic range) instead of pretending.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_on_libvirt_and_delegate_reports_not_applicable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.cli()
        .args([
            "pool",
            "create",
            "kvm",
            "--range",
            "525400000000-5254000000FF",
        ])
        .assert()
        .success();
    s.cli()
        .args([
            "agent",
            "--hypervisor",
            "libvirt",
            "--connect",
            "test:///default",
            "--strategy",
            "delegate+guard",
            "--pool",
            "kvm",
            "--host",
            "kvm1",
            "--run-for",
            "2s",
            "--bookmark",
        ])
        .arg(dir.path().join("bookmark.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("delegate: not applicable"))
        .stdout(predicate::str::contains("inventory: accepted, generation"));
    let inv = s.api(Method::GET, "/hosts/kvm1/inventory", None).await;
    let names: Vec<&str> = inv["inventory"]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test"], "the test driver's one domain");
    // an unreachable libvirt is a precise error and exit 3
    s.cli()
        .args([
            "agent",
            "--hypervisor",
            "libvirt",
            "--connect",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            "--strategy",
            "observe",
            "--host",
            "kvm1",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("libvirt at qemu+unix:///system"));
}

/// The seed exactly: nobody leased the MAC to the new VM — HV-B's own allocator gave it out —
/// yet guard sees the conflict, because HV-B's inventory shows it live there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_sees_a_conflict_with_a_mac_no_lease_explains() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("standin.json");
    let record = roll_back_desktop(&state).await;
    let s = Server::start(&dir.path().join("data"));
    s.cli()
        .args([
            "pool",
            "create",
            "rds",
            "--range",
            "00155D0A0000-00155D0A00FF",
        ])
        .assert()
        .success();
    let inv = json!({"generation": 1, "vms": [{"id": "new-vm", "name": "New VM", "adapters": [
        {"name": "Network Adapter", "mac": "00155D0A0000", "dynamic": true}]}]});
    s.api(Method::PUT, "/hosts/HV-B/inventory", Some(inv)).await;
    on_event(&s, &state, record, &[])
        .assert()
        .success()
        .stdout(predicate::str::contains("remediated VM RDS Desk 01"))
        .stdout(predicate::str::contains(
            "live on VM New VM (new-vm) on host HV-B",
        ));
}
