//! The PowerShell syntax gate: no PowerShell runs on the build machines, so every script macpool
//! ships or generates is parsed here with a maintained PowerShell grammar (`tree-sitter-pwsh`)
//! and any ERROR or MISSING node fails the test.
//!
//! To gate a new script: add it to [`library_scripts`] (a builder you can call) or to
//! [`COMMANDS`] (a `macpool` command whose standard output is PowerShell), or call
//! [`assert_parses`] from your own test. The grammar does not model PowerShell's typographic
//! quotes (U+2018..U+201B end a `'…'` string there); `quote.rs`'s own tests keep those.

use std::process::Command as Proc;

use macpool_agent::decide::{Plan, Step};
use macpool_agent::events::{VMMS_ADMIN, WORKER_ADMIN};
use macpool_agent::powershell::{Command, SelfCheck, Subscription, bootstrap, plan_scripts};
use macpool_agent::{AdapterRef, MacSetting};

/// Where in `script` the grammar found errors: one line per ERROR or MISSING node, with its
/// position and the text around it. Empty when the script parses.
pub fn syntax_errors(script: &str) -> Vec<String> {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_pwsh::LANGUAGE.into())
        .expect("the PowerShell grammar loads");
    let tree = parser
        .parse(script, None)
        .expect("the parser returns a tree");
    let mut out = Vec::new();
    let mut cursor = tree.walk();
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            let p = node.start_position();
            let around: String = script[node.start_byte()..]
                .chars()
                .take(60)
                .collect::<String>()
                .replace('\n', "⏎");
            out.push(format!(
                "{} at line {}, column {}: {around}",
                if node.is_missing() {
                    format!("MISSING {}", node.kind())
                } else {
                    "ERROR".to_string()
                },
                p.row + 1,
                p.column + 1
            ));
        }
        if node.has_error() {
            stack.extend(node.children(&mut cursor));
        }
    }
    out
}

/// Fails the test, naming `name` and every error, unless `script` parses as PowerShell.
#[track_caller]
pub fn assert_parses(name: &str, script: &str) {
    let errors = syntax_errors(script);
    assert!(
        errors.is_empty(),
        "{name} is not valid PowerShell:\n  {}\n--- script ---\n{script}",
        errors.join("\n  ")
    );
}

const VM: &str = "5f0e6c3a-1b2c-4d5e-8f90-0123456789ab";
const CP: &str = "9a8b7c6d-0000-4000-8000-00000000cafe";
/// A hostile adapter name (no typographic quotes: the grammar does not model them).
const HOSTILE: &str = "NIC 'prod' $x `t \"q\" Ü; Remove-Item C:\\";

fn adapter(id: Option<&str>, checkpoint: Option<&str>) -> AdapterRef {
    AdapterRef {
        vm_id: VM.into(),
        adapter: HOSTILE.into(),
        id: id.map(Into::into),
        checkpoint_id: checkpoint.map(Into::into),
    }
}

/// Every script builder's output, with the values the golden tests use.
fn library_scripts() -> Vec<(String, String)> {
    let mac = MacSetting::Static("00:15:5d:0a:0b:0c".parse().unwrap());
    let nic = "Microsoft:5F0E6C3A-1B2C-4D5E-8F90-0123456789AB\\2";
    let mut commands = vec![
        Command::Inventory { vm_id: None },
        Command::Inventory {
            vm_id: Some("it's $me".into()),
        },
        Command::HostRange,
        Command::SetHostRange {
            range: "00155D020600-00155D0206FF".parse().unwrap(),
        },
        Command::TurnOff { vm_id: VM.into() },
        Command::Start { vm_id: VM.into() },
        Command::Watch {
            subscriptions: vec![
                Subscription {
                    channel: WORKER_ADMIN.into(),
                    event_ids: vec![18596, 18500],
                    after: Some(4711),
                },
                Subscription {
                    channel: VMMS_ADMIN.into(),
                    event_ids: vec![13002, 18304, 13003],
                    after: None,
                },
            ],
        },
        Command::Watch {
            subscriptions: vec![],
        },
        Command::GetEvent {
            channel: WORKER_ADMIN.into(),
            record_id: 42,
        },
    ];
    for (id, cp) in [
        (Some(nic), None),
        (None, None),
        (Some(nic), Some(CP)),
        (None, Some(CP)),
    ] {
        for setting in [mac, MacSetting::Dynamic] {
            commands.push(Command::SetAdapterMac {
                adapter: adapter(id, cp),
                setting,
            });
        }
    }
    for check in SelfCheck::ALL {
        commands.push(Command::Check {
            check,
            channel: WORKER_ADMIN.into(),
        });
    }
    let mut out: Vec<(String, String)> = commands
        .iter()
        .map(|c| (format!("script of {c:?}"), c.script()))
        .collect();
    out.push(("the bootstrap".into(), bootstrap::bootstrap().into()));
    out.push(("the bootstrap loader line".into(), bootstrap::loader_line()));
    out.push((
        "the inventory collector (inventory.ps1)".into(),
        macpool_audit::script::INVENTORY_PS1.into(),
    ));
    for cluster in [false, true] {
        out.push((
            format!("export-script (cluster: {cluster})"),
            macpool_audit::export_script(cluster),
        ));
    }
    // a dry run's printed plan: every kind of step
    let plan = Plan {
        vm_id: VM.into(),
        vm_name: HOSTILE.into(),
        steps: vec![
            Step::TurnOff { vm_id: VM.into() },
            Step::SetMac {
                adapter: adapter(Some(nic), None),
                old: None,
                new: mac,
            },
            Step::SetMac {
                adapter: adapter(None, Some(CP)),
                old: None,
                new: MacSetting::Dynamic,
            },
            Step::Wait { seconds: 5 },
            Step::Start { vm_id: VM.into() },
        ],
    };
    out.push(("a dry run's plan".into(), plan_scripts(&plan).join("\n")));
    out
}

/// `macpool` commands whose standard output is (or ends with) PowerShell: name, arguments, and
/// the marker where the PowerShell starts (`None`: all of it).
const COMMANDS: &[(&str, &[&str], Option<&str>)] = &[
    ("hyperv export-script", &["hyperv", "export-script"], None),
    (
        "hyperv export-script --cluster",
        &["hyperv", "export-script", "--cluster"],
        None,
    ),
    (
        "hyperv ranges (the printed Set-VMHost plan)",
        &[
            "hyperv",
            "ranges",
            "--host",
            "HV1=10.0.1.5",
            "--host",
            "HV-2.corp=10.1.1.5",
            "--host",
            "HV3=10.2.2.9",
            "--base",
            "020000000000-0200000FFFFF",
        ],
        Some("# Proposed plan"),
    ),
    (
        "hyperv bootstrap-script",
        &["hyperv", "bootstrap-script"],
        None,
    ),
    (
        "hyperv cluster-role-script (store on a Cluster Shared Volume)",
        &[
            "hyperv",
            "cluster-role-script",
            "--address",
            "10.0.0.50",
            "--csv",
            r"C:\ClusterStorage\Volume1\macpool",
        ],
        None,
    ),
];

/// The cluster role's golden scripts, one per kind of store (`macpool_agent::clusterrole`).
#[test]
fn every_cluster_role_script_parses() {
    for kind in ["csv", "disk", "postgres"] {
        let path = format!(
            "{}/../macpool-agent/tests/data/cluster-role-{kind}.ps1",
            env!("CARGO_MANIFEST_DIR")
        );
        let script = std::fs::read_to_string(&path).expect("the golden script");
        assert_parses(&path, &script);
    }
}

#[test]
fn every_library_script_parses() {
    let scripts = library_scripts();
    assert!(scripts.len() > 20, "{}", scripts.len());
    for (name, script) in &scripts {
        assert_parses(name, script);
    }
}

#[test]
fn every_printed_script_parses() {
    for (name, args, marker) in COMMANDS {
        let out = Proc::new(env!("CARGO_BIN_EXE_macpool"))
            .args(*args)
            .output()
            .expect("macpool runs");
        // `hyperv ranges` exits 1 when it found collisions (and prints the plan that fixes them)
        assert!(matches!(out.status.code(), Some(0 | 1)), "{name}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let text = text.trim_start_matches('\u{feff}');
        let script = match marker {
            None => text,
            Some(m) => {
                &text[text
                    .find(m)
                    .unwrap_or_else(|| panic!("{name}: no '{m}' in {text}"))..]
            }
        };
        assert!(!script.trim().is_empty(), "{name} printed nothing");
        assert_parses(name, script);
    }
}

/// The gate itself: it must fail on broken scripts, each kind of break.
#[test]
fn the_gate_rejects_broken_scripts() {
    for broken in [
        // an unclosed script block
        "$a = @(Get-VM -Id 'x' | Where-Object { $_.Name -eq 'y' ); $a",
        // an unterminated string
        "Set-VMHost -MacAddressMinimum '00155D020600",
        // a missing closing parenthesis
        "if ($a.Count -ne 1 { throw 'x' }",
        // a here-string that never ends
        "$s = @'\nusing System;\n",
    ] {
        assert!(
            !syntax_errors(broken).is_empty(),
            "the gate accepted: {broken}"
        );
    }
    assert!(syntax_errors("Get-VM -Id 'x' | Start-VM").is_empty());
    let caught = std::panic::catch_unwind(|| assert_parses("broken", "if ($x { }"));
    assert!(caught.is_err());
}
