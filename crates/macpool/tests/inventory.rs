//! Inventories end to end through the real binary: the seed's scenario pushed with
//! `macpool inventory push` from Hyper-V exports, seen by `macpool conflicts` and /metrics.

mod common;

use common::{Server, TOKEN};
use predicates::prelude::*;
use serde_json::{Value, json};

const DESK: &str = "5f0e3c1a-0000-4000-8000-00000000d001";
const NEW_VM: &str = "5f0e3c1a-0000-4000-8000-00000000d002";
const RDV: &str = "5f0e3c1a-0000-4000-8000-0000000000c1";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// One `Get-VMNetworkAdapter | ConvertTo-Json` object; `snapshot` makes it a checkpoint adapter.
fn adapter(host: &str, vm_id: &str, vm: &str, mac: &str, snapshot: Option<(&str, &str)>) -> Value {
    let (sid, sname) = snapshot.unwrap_or((NIL, ""));
    json!({
        "Name": "Network Adapter", "IsManagementOs": false, "IsDeleted": false,
        "ComputerName": host, "VMName": vm, "VMId": vm_id,
        "VMSnapshotId": sid, "VMSnapshotName": sname,
        "MacAddress": mac, "DynamicMacAddressEnabled": true
    })
}

fn push(s: &Server, dir: &std::path::Path, host: &str, generation: u64, adapters: Vec<Value>) {
    let file = dir.join(format!("{host}-{generation}.json"));
    std::fs::write(&file, serde_json::to_vec(&adapters).unwrap()).unwrap();
    s.cli()
        .args(["inventory", "push", "--host", host, "--generation"])
        .arg(generation.to_string())
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "inventory of host {host} generation {generation} accepted"
        )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_pushed_from_hyperv_exports_is_a_latent_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.cli()
        .args([
            "pool",
            "create",
            "rds",
            "--range",
            "00155DF00000-00155DF000FF",
            "--order",
            "lowest",
        ])
        .assert()
        .success();
    s.cli()
        .args([
            "lease", "allocate", "--pool", "rds", "--vm-id", DESK, "--host", "host1",
        ])
        .assert()
        .success();
    // desk-01 on host1, live and frozen in its RDV_ROLLBACK checkpoint with the leased MAC
    push(
        &s,
        dir.path(),
        "host1",
        1,
        vec![
            adapter("host1", DESK, "desk-01", "00155DF00000", None),
            adapter(
                "host1",
                DESK,
                "desk-01",
                "00155DF00000",
                Some((RDV, "RDV_ROLLBACK")),
            ),
        ],
    );
    s.cli()
        .args(["conflicts"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("no conflicts"));
    let leases: Value = serde_json::from_slice(
        &s.cli()
            .args(["--json", "lease", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases[0]["state"], "bound");
    // it migrates to host2 and gets a host2-native MAC; the checkpoint keeps the old one
    push(
        &s,
        dir.path(),
        "host2",
        1,
        vec![
            adapter("host2", DESK, "desk-01", "00155D990022", None),
            adapter(
                "host2",
                DESK,
                "desk-01",
                "00155DF00000",
                Some((RDV, "RDV_ROLLBACK")),
            ),
        ],
    );
    // host1 hands the same MAC to a new VM
    push(
        &s,
        dir.path(),
        "host1",
        2,
        vec![adapter("host1", NEW_VM, "new-vm", "00155DF00000", None)],
    );

    let out = s.cli().args(["--json", "conflicts"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "conflicts exist: exit 1");
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = c.as_array().unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["class"], "latent");
    assert_eq!(c[0]["mac"], "00-15-5D-F0-00-00");
    let hosts: Vec<&str> = c[0]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["host1", "host2"]);

    s.cli()
        .args(["conflicts"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("LATENT  00-15-5D-F0-00-00"))
        .stdout(predicate::str::contains("new-vm"))
        .stdout(predicate::str::contains("'RDV_ROLLBACK'"));

    let metrics = s
        .client()
        .get(format!("{}/metrics", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "macpool_conflicts{class=\"latent\"} 1",
        "macpool_conflicts{class=\"live-duplicate\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }

    // a stale generation is refused: exit 1 (a "no"), and nothing changes
    let file = dir.path().join("host1-1.json");
    s.cli()
        .args(["inventory", "push", "--host", "host1", "--generation", "2"])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stale-generation"));
    s.cli().args(["conflicts"]).assert().code(1);
    // a host that is not in the file is a usage error
    s.cli()
        .args(["inventory", "push", "--host", "host9", "--generation", "1"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no inventory of host 'host9'"));
}
