//! `macpool hyperv selftest`: read-only checks on a real host, each one PowerShell request
//! through the same child the agent uses, and a plain-text report.

use serde_json::Value;

use crate::events::WORKER_ADMIN;
use crate::powershell::{PowerShellHypervisor, SelfCheck, parse_host_range};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The checks, in order, with their names.
pub const CHECKS: [(SelfCheck, &str); 5] = [
    (SelfCheck::HyperVModule, "Hyper-V PowerShell module present"),
    (
        SelfCheck::Elevated,
        "administrator or Hyper-V Administrators",
    ),
    (SelfCheck::ChannelReadable, "event channel readable"),
    (SelfCheck::RangeReadable, "dynamic MAC range readable"),
    (SelfCheck::CursorReadable, "allocation cursor readable"),
];

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
                "no CurrentMacAddress in the registry (the delegate strategy needs it)".into(),
            ),
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
