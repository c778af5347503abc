//! The CLI as an admin uses it: tables, --json, and the documented exit codes.

mod common;

use common::{Server, exe};
use predicates::prelude::*;
use serde_json::Value;

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn walkthrough_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.cli()
        .args([
            "pool",
            "create",
            "rds",
            "--range",
            "00-15-5D-F0-00-00-00-15-5D-F0-00-FF",
            "--cooldown",
            "1h",
            "--order",
            "lowest",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("size        256"));
    let out = s
        .cli()
        .args([
            "--json",
            "lease",
            "allocate",
            "--pool",
            "rds",
            "--vm-id",
            "vm-1",
            "--vm-name",
            "Desktop 1",
            "--host",
            "hv1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mac = json(&out.stdout)["allocations"][0]["lease"]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        mac, "00-15-5D-F0-00-00",
        "lowest order takes the first address"
    );
    s.cli()
        .args([
            "--mac-format",
            "hyperv",
            "lease",
            "allocate",
            "--pool",
            "rds",
            "--vm-id",
            "vm-1",
        ])
        .assert()
        .success()
        .stdout("00155DF00000  (already leased to this owner)\n");
    s.cli()
        .args(["pool", "available", "rds"])
        .assert()
        .success()
        .stdout(
            "00-15-5D-F0-00-01 … 00-15-5D-F0-00-FF  (255)\n255 free of 256 in pool rds in 1 runs\n",
        );
    s.cli()
        .args(["pool", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("rds"));
    // "No": a taken MAC, an unknown pool.
    s.cli()
        .args([
            "lease", "allocate", "--pool", "rds", "--vm-id", "vm-2", "--mac", &mac,
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "already in use: leased to VM vm-1",
        ));
    s.cli()
        .args(["pool", "show", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no pool named 'nope'"));
    // Usage: a malformed MAC, a missing argument.
    s.cli()
        .args([
            "lease",
            "allocate",
            "--pool",
            "rds",
            "--vm-id",
            "vm-2",
            "--mac",
            "00:15:5d:f0:00",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wrong length"));
    s.cli()
        .args(["lease", "allocate", "--pool", "rds"])
        .assert()
        .code(2);
    // Refused: wrong token; unreachable: nothing listening.
    s.cli()
        .env("MACPOOL_TOKEN", "nope-nope")
        .args(["pool", "list"])
        .assert()
        .code(3);
    assert_cmd::Command::new(exe())
        .args(["--server", "http://127.0.0.1:9", "pool", "list"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot reach the macpool server"));
    // Release, then the history tells the story.
    s.cli()
        .args(["lease", "release", "--vm", "vm-1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("cooling until"));
    let out = s.cli().args(["--json", "history", &mac]).output().unwrap();
    let actions: Vec<String> = json(&out.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["released", "allocated"]);
    let newest = json(&out.stdout)[0]["id"].as_u64().unwrap().to_string();
    s.cli()
        .args(["history", &mac, "--before", &newest])
        .assert()
        .success()
        .stdout(predicate::str::contains("allocated"))
        .stdout(predicate::str::contains("released").not());
    s.cli()
        .args(["lease", "show", "--vm", "vm-1"])
        .assert()
        .code(1);
    // Holds keep a MAC out of circulation.
    s.cli()
        .args([
            "lease",
            "hold",
            "--mac",
            "00155DF00010",
            "--vm-id",
            "tmpl",
            "--reason",
            "template",
            "--ref",
            "gold",
        ])
        .assert()
        .success();
    let out = s
        .cli()
        .args(["--json", "lease", "show", "00:15:5d:f0:00:10"])
        .output()
        .unwrap();
    assert_eq!(json(&out.stdout)["state"], "held");
    s.cli()
        .args(["pool", "delete", "rds"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("held"));
}

#[test]
fn tokens_from_the_cli_carry_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let out = s
        .cli()
        .args(["--json", "token", "create", "--role", "reader"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let reader = json(&out.stdout)["token"].as_str().unwrap().to_string();
    s.cli()
        .env("MACPOOL_TOKEN", &reader)
        .args(["pool", "list"])
        .assert()
        .success();
    s.cli()
        .env("MACPOOL_TOKEN", &reader)
        .args([
            "pool",
            "create",
            "x",
            "--range",
            "00155D000000-00155D0000FF",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("needs an admin token"));
    s.cli()
        .args(["token", "create", "--role", "agent"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("needs the host"));
    let out = s.cli().args(["--json", "token", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&reader),
        "secrets never listed"
    );
}

#[test]
fn mac_explain_needs_no_server() {
    let out = assert_cmd::Command::new(exe())
        .args(["--json", "mac", "explain", "0015.5d0a.0b0c"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["spellings"]["ieee"], "00-15-5D-0A-0B-0C");
    assert_eq!(v["spellings"]["cisco"], "0015.5d0a.0b0c");
    assert_eq!(v["hyperv_default_host_ipv4_suffix"], "*.10.11");
    assert_eq!(v["locally_administered"], false);
    assert_cmd::Command::new(exe())
        .args(["mac", "explain", "01:00:5e:00:00:01"])
        .assert()
        .success()
        .stdout(predicate::str::contains("multicast (group)"));
    assert_cmd::Command::new(exe())
        .args(["mac", "explain", "00-15-5D-0A-0B"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wrong length"));
}

/// The benchmarks and load generators live in the `macpool-bench` tool (issue 20): the shipped
/// binary has no `bench` command, neither to run nor in its help.
#[test]
fn the_shipped_binary_has_no_bench_command() {
    assert_cmd::Command::new(exe())
        .args(["bench", "allocate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand 'bench'"));
    let out = assert_cmd::Command::new(exe())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("  serve"), "{help}");
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("bench")),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_list_shows_each_reporting_host_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.cli()
        .args(["host", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "no host has reported an inventory yet",
        ));
    s.cli()
        .args(["--json", "host", "list"])
        .assert()
        .success()
        .stdout("[]\n");
    let put = reqwest::Method::PUT;
    s.api(
        put.clone(),
        "/hosts/hv1/inventory",
        Some(serde_json::json!({
            "generation": 4, "cluster": "c1",
            "range_min": "00155D100000", "range_max": "00155D1000FF",
            "cursor_source": "inventory-bound", "strategy": "delegate",
            "vms": [{"id": "vm1", "name": "Desktop 1", "adapters": [
                {"mac": "00155D100001", "dynamic": true}]}]
        })),
    )
    .await;
    s.api(
        put,
        "/hosts/hv2/inventory",
        Some(serde_json::json!({
            "generation": 1,
            "range_min": "00155D100080", "range_max": "00155D10017F",
            "cursor": "00155D100090", "cursor_source": "registry"
        })),
    )
    .await;

    let out = s.cli().args(["--json", "host", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let hosts = json(&out.stdout);
    let rows: Vec<(&str, &Value, &Value, &Value)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap(),
                &h["overlaps"],
                &h["cursor_estimated"],
                &h["generation"],
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "hv1",
                &serde_json::json!(["hv2"]),
                &Value::Bool(true),
                &serde_json::json!(4)
            ),
            (
                "hv2",
                &serde_json::json!(["hv1"]),
                &Value::Bool(false),
                &serde_json::json!(1)
            ),
        ]
    );

    let out = s
        .cli()
        .args(["--mac-format", "hyperv", "host", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("HOST"), "{text}");
    for want in [
        "hv1",
        "c1",
        "00155D100000 - 00155D1000FF",
        "hv2",
        "estimated",
        "1/0/0",
        "delegate",
    ] {
        assert!(lines[1].contains(want), "{want} in {}", lines[1]);
    }
    for want in ["hv2", "00155D100090", "hv1", "unknown"] {
        assert!(lines[2].contains(want), "{want} in {}", lines[2]);
    }
}
