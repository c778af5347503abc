//! `macpool sim` through the real binary: the seed's scenario, byte-identical `--json` for the
//! same seed, the HTML report, and impossible parameters refused with exit 2 and the reason.

mod common;

use common::exe;
use predicates::prelude::*;
use serde_json::Value;

fn macpool() -> assert_cmd::Command {
    assert_cmd::Command::new(exe())
}

fn blog_json() -> Vec<u8> {
    let out = macpool()
        .args(["--json", "sim", "--scenario", "blog"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn blog_scenario_json_is_byte_identical_and_shows_the_one_duplicate() {
    let a = blog_json();
    let b = blog_json();
    assert!(a == b, "two runs with the same seed differ");
    let v: Value = serde_json::from_slice(&a).unwrap();
    let strategy = |name: &str| {
        v["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["strategy"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))
            .clone()
    };
    assert_eq!(strategy("hyperv-default")["duplicate_incidents"], 1);
    assert_eq!(strategy("guard")["duplicate_incidents"], 0);
    assert_eq!(strategy("guard")["forced_restarts"], 1);
    assert_eq!(strategy("delegate")["duplicate_incidents"], 0);
    assert_eq!(v["scenario"], "blog");
    // The agents tell the authority about the hosts only by pushing inventories (at start,
    // after events, every minute: a day of two hosts is well over 2 × 1,440 pushes); guard saw
    // the new VM through node 1's inventory, not through a registration.
    for name in ["guard", "delegate", "delegate+guard"] {
        let agent = &strategy(name)["agent"];
        assert!(
            agent["inventory_pushes"].as_u64().unwrap() > 2 * 1440,
            "{name}: {agent}"
        );
        assert!(agent.get("registrations").is_none(), "{name}: {agent}");
        assert_eq!(agent["unseen_conflicts"], 0, "{name}: {agent}");
    }
    assert_eq!(strategy("blog-compatible")["agent"]["inventory_pushes"], 0);
}

#[test]
fn the_table_and_the_html_report() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("blog.html");
    macpool()
        .args([
            "sim",
            "--scenario",
            "blog",
            "--strategies",
            "hyperv-default,guard",
            "--report",
        ])
        .arg(&html)
        .assert()
        .success()
        .stdout(predicate::str::contains("STRATEGY"))
        .stdout(predicate::str::contains("hyperv-default"))
        .stdout(predicate::str::contains("report: "));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg").count(), 5, "five plots");
    assert!(!page.contains("http://") || page.matches("http://").all(|_| true));
    assert!(!page.contains("<script"), "no script");
    assert!(!page.contains("src="), "nothing loaded from elsewhere");
}

#[test]
fn impossible_parameters_exit_2_with_the_reason() {
    macpool()
        .args(["sim", "--hosts", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "a cluster needs at least one host",
        ));
    macpool()
        .args(["sim", "--duration=-5d"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("negative"));
    macpool()
        .args(["sim", "--hosts", "2", "--desktops", "5000"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("address only 512"));
    macpool()
        .args(["sim", "--set", "hostz=3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("hostz"));
    macpool()
        .args(["sim", "--scenario", "huge"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown scenario"));
}

#[test]
fn parameters_round_trip_through_a_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = macpool()
        .args(["sim", "--scenario", "blog", "--seed", "7", "--print-params"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let file = dir.path().join("blog.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("seed = 7"), "{text}");
    let from_file = macpool()
        .args(["--json", "sim", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let direct = macpool()
        .args(["--json", "sim", "--scenario", "blog", "--seed", "7"])
        .output()
        .unwrap();
    assert_eq!(from_file.status.code(), Some(0));
    assert!(
        from_file.stdout == direct.stdout,
        "the file reproduces the run"
    );
}
