//! `macpool hyperv selftest`: read-only checks on a real host, each one PowerShell request
//! through the same child the agent uses, and a plain-text report that says for every check what
//! was seen, so that an admin can attach it to a bug. Nothing is started, stopped or changed.

use std::time::Duration;

use macpool_core::Mac;
use serde_json::Value;

use crate::events::WORKER_ADMIN;
use crate::hypervisor::Hypervisor;
use crate::powershell::{PowerShellHypervisor, SelfCheck, Subscription, parse_host_range};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The checks, in order, with their names (the watcher check comes last, in [`run`]).
pub const CHECKS: [(SelfCheck, &str); 10] = [
    (SelfCheck::HyperVModule, "Hyper-V PowerShell module present"),
    (
        SelfCheck::Elevated,
        "administrator or Hyper-V Administrators",
    ),
    (
        SelfCheck::WatcherCompiled,
        "watcher class compiled by Add-Type",
    ),
    (SelfCheck::LanguageMode, "full language mode"),
    (
        SelfCheck::NonAscii,
        "non-ASCII round trip through the child",
    ),
    (SelfCheck::ChannelReadable, "event channel readable"),
    (SelfCheck::RangeReadable, "dynamic MAC range readable"),
    (SelfCheck::CursorReadable, "allocation cursor readable"),
    (
        SelfCheck::CursorValues,
        "allocation cursor's registry value",
    ),
    (SelfCheck::CreatedEvents, "VM created event (13002 / 18304)"),
];

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "(none)".into(),
        Some(other) => other.to_string(),
    }
}

fn judge(check: SelfCheck, v: &Value) -> (bool, String) {
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    match check {
        SelfCheck::HyperVModule => (v.as_bool() == Some(true), v.to_string()),
        SelfCheck::Elevated => (
            b("Administrator") || b("HyperVAdministrators"),
            format!(
                "Administrator={} HyperVAdministrators={}",
                b("Administrator"),
                b("HyperVAdministrators")
            ),
        ),
        SelfCheck::ChannelReadable => (
            b("IsEnabled") && b("Readable"),
            format!(
                "enabled={} readable={} records={}",
                b("IsEnabled"),
                b("Readable"),
                v.get("RecordCount").unwrap_or(&Value::Null)
            ),
        ),
        SelfCheck::RangeReadable => match parse_host_range(v) {
            Ok(s) => (
                s.range.is_some(),
                s.range.map_or("no range".into(), |r| r.to_string()),
            ),
            Err(e) => (false, e.to_string()),
        },
        SelfCheck::CursorReadable => match v.get("CurrentMacAddress") {
            Some(Value::String(s)) if !s.is_empty() => (true, s.clone()),
            // [likely] registry value: its absence is reported
            _ => (
                false,
                "no CurrentMacAddress in the registry: delegate falls back to a lower bound from the inventory".into(),
            ),
        },
        SelfCheck::WatcherCompiled => (
            b("Compiled"),
            format!(
                "compiled={} edition={} version={} clr={}",
                b("Compiled"),
                text(v, "Edition"),
                text(v, "Version"),
                text(v, "Clr")
            ),
        ),
        SelfCheck::LanguageMode => {
            let mode = text(v, "LanguageMode");
            (
                mode == "FullLanguage",
                if mode == "FullLanguage" {
                    mode
                } else {
                    format!("{mode}: Add-Type and ::new() are blocked (AppLocker/WDAC); the agent cannot run")
                },
            )
        }
        SelfCheck::NonAscii => {
            let t = text(v, "Text");
            let len = v.get("Length").and_then(Value::as_u64);
            (
                t == "\u{dc}" && len == Some(1),
                format!(
                    "sent 'U+00DC', got {t:?} of length {} (code point {}), console input encoding {}",
                    len.map_or("?".into(), |l| l.to_string()),
                    text(v, "CodePoint"),
                    text(v, "InputEncoding")
                ),
            )
        }
        SelfCheck::CursorValues => {
            let values = v.get("Values").map(crate::powershell::protocol::as_list);
            let values = values.unwrap_or_default();
            let shown: Vec<String> = values
                .iter()
                .map(|x| format!("{} ({}) = {}", text(x, "Name"), text(x, "Kind"), text(x, "Value")))
                .collect();
            let cursor = values.iter().find(|x| text(x, "Name") == "CurrentMacAddress");
            let ok = cursor.is_some_and(|x| {
                text(x, "Kind") == "Binary" && Mac::parse(&text(x, "Value")).is_ok()
            });
            (
                ok,
                format!(
                    "key exists={}; values: {}",
                    b("KeyExists"),
                    if shown.is_empty() { "none".to_string() } else { shown.join("; ") }
                ),
            )
        }
        SelfCheck::CreatedEvents => {
            let newest = |k: &str| {
                v.get(k)
                    .map(crate::powershell::protocol::as_list)
                    .unwrap_or_default()
                    .first()
                    .and_then(|x| x.as_str().map(str::to_string))
            };
            let (a, b2) = (newest("E13002"), newest("E18304"));
            (
                a.is_some() || b2.is_some(),
                format!(
                    "newest 13002: {}; newest 18304: {} (both are watched)",
                    a.unwrap_or_else(|| "none".into()),
                    b2.unwrap_or_else(|| "none".into())
                ),
            )
        }
        SelfCheck::NewestRecord => (true, v.to_string()),
    }
}

/// Whether the cursor lies inside the range and at or past every dynamic MAC of the range in
/// use: only then does it behave like the allocation cursor (read-only; starting a VM and
/// running the selftest again shows whether it moves).
async fn cursor_in_range(hv: &PowerShellHypervisor) -> CheckResult {
    let name = "cursor inside the range and past the MACs handed out";
    let (range, inv) = match (hv.host_range().await, hv.inventory().await) {
        (Ok(r), Ok(i)) => (r, i),
        (Err(e), _) | (_, Err(e)) => {
            return CheckResult {
                name,
                ok: false,
                detail: e.to_string(),
            };
        }
    };
    let (Some(r), Some(c)) = (range.range, range.cursor) else {
        return CheckResult {
            name,
            ok: false,
            detail: format!(
                "range {}, cursor {}: nothing to compare",
                range.range.map_or("unknown".into(), |r| r.to_string()),
                range.cursor.map_or("unreadable".into(), |c| c.to_string())
            ),
        };
    };
    let highest = inv
        .vms()
        .iter()
        .flat_map(|v| &v.adapters)
        .chain(&inv.management_adapters)
        .filter(|a| a.kind == macpool_core::inventory::MacKind::Dynamic && r.contains(a.mac))
        .map(|a| a.mac)
        .max();
    let ok = r.contains(c) && highest.is_none_or(|h| h <= c);
    CheckResult {
        name,
        ok,
        detail: format!(
            "cursor {c}, range {r}, highest dynamic MAC of the range in use {}; start a VM and run again: the cursor should move",
            highest.map_or("none".into(), |h| h.to_string())
        ),
    }
}

/// Subscribes to the channel from just before its newest record and waits for that record.
async fn watcher_delivers(hv: &PowerShellHypervisor) -> CheckResult {
    let name = "a watcher subscribes and delivers";
    let newest = hv
        .check(SelfCheck::NewestRecord, WORKER_ADMIN)
        .await
        .map(|v| {
            v.get("Newest")
                .map(crate::powershell::protocol::as_list)
                .unwrap_or_default()
                .first()
                .and_then(|n| n.as_u64())
        });
    let newest = match newest {
        Ok(n) => n,
        Err(e) => {
            return CheckResult {
                name,
                ok: false,
                detail: e.to_string(),
            };
        }
    };
    let sub = Subscription {
        channel: WORKER_ADMIN.into(),
        event_ids: Vec::new(),
        after: Some(newest.map_or(0, |n| n.saturating_sub(1))),
    };
    if let Err(e) = hv.child().watch(vec![sub]).await {
        return CheckResult {
            name,
            ok: false,
            detail: format!("subscribing failed: {e}"),
        };
    }
    let Some(n) = newest else {
        return CheckResult {
            name,
            ok: true,
            detail: "subscribed; the channel is empty, so delivery was not seen".into(),
        };
    };
    match hv.child().next_event(Duration::from_secs(10)).await {
        Ok(Some(ev)) => CheckResult {
            name,
            ok: ev.record_id == n,
            detail: format!(
                "subscribed after record {}, got record {}",
                n - 1,
                ev.record_id
            ),
        },
        Ok(None) => CheckResult {
            name,
            ok: false,
            detail: format!(
                "subscribed after record {}, nothing delivered within 10 s",
                n - 1
            ),
        },
        Err(e) => CheckResult {
            name,
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// Runs every check; never changes the host.
pub async fn run(hv: &PowerShellHypervisor) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (check, name) in CHECKS {
        let r = match hv.check(check, WORKER_ADMIN).await {
            Ok(v) => {
                let (ok, detail) = judge(check, &v);
                CheckResult { name, ok, detail }
            }
            Err(e) => CheckResult {
                name,
                ok: false,
                detail: e.to_string(),
            },
        };
        out.push(r);
    }
    out.push(cursor_in_range(hv).await);
    out.push(watcher_delivers(hv).await);
    out
}

/// `[ok]` / `[FAIL]` per check and a last line with the count.
pub fn render(results: &[CheckResult]) -> String {
    let mut s = String::new();
    for r in results {
        s.push_str(&format!(
            "[{}] {}: {}\n",
            if r.ok { "ok" } else { "FAIL" },
            r.name,
            r.detail
        ));
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    s.push_str(&format!(
        "checks: {} ok, {} failing\n",
        results.len() - failed,
        failed
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_judgement() {
        let r = vec![
            CheckResult {
                name: "a",
                ok: true,
                detail: "fine".into(),
            },
            CheckResult {
                name: "b",
                ok: false,
                detail: "no".into(),
            },
        ];
        assert_eq!(
            render(&r),
            "[ok] a: fine\n[FAIL] b: no\nchecks: 1 ok, 1 failing\n"
        );
        assert!(judge(SelfCheck::HyperVModule, &Value::Bool(true)).0);
        let v = serde_json::json!({"MacAddressMinimum":"00155D020600","MacAddressMaximum":"00155D0206FF"});
        assert!(judge(SelfCheck::RangeReadable, &v).0);
        assert!(
            !judge(
                SelfCheck::CursorReadable,
                &serde_json::json!({"CurrentMacAddress": null})
            )
            .0
        );
    }
}
