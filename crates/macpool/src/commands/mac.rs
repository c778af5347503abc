use macpool_core::Mac;
use macpool_core::explain::explain;

use crate::cli::MacCommand;
use crate::exit::{CmdResult, Failure, OK};
use crate::output::{Output, fields};

pub fn run(out: Output, cmd: MacCommand) -> CmdResult {
    let MacCommand::Explain { mac } = cmd;
    let mac = Mac::parse(&mac).map_err(|e| Failure::usage(e.to_string()))?;
    let e = explain(mac);
    let oui = format!("{:02X}-{:02X}-{:02X}", e.oui[0], e.oui[1], e.oui[2]);
    if out.json {
        let spellings: serde_json::Map<String, serde_json::Value> = e
            .spellings
            .iter()
            .map(|(f, s)| (f.name().to_string(), s.clone().into()))
            .collect();
        out.print_json(&serde_json::json!({
            "mac": mac.to_string(),
            "spellings": spellings,
            "multicast": e.multicast,
            "locally_administered": e.locally_administered,
            "zero": e.zero,
            "broadcast": e.broadcast,
            "oui": oui,
            "prefix_owner": e.prefix_owner,
            "hyperv_default_host_ipv4_suffix": e.hyperv_default.map(|((a, b), _)| format!("*.{a}.{b}")),
            "hyperv_default_range": e.hyperv_default.map(|(_, r)| serde_json::json!({"first": r.first().to_string(), "last": r.last().to_string()})),
            "valid_adapter_address": e.invalid_reason.is_none(),
            "invalid_reason": e.invalid_reason,
        }));
        return Ok(OK);
    }
    let mut pairs: Vec<(&str, String)> = e
        .spellings
        .iter()
        .map(|(f, s)| (f.name(), s.clone()))
        .collect();
    pairs.push((
        "cast",
        if e.multicast {
            "multicast (group)"
        } else {
            "unicast"
        }
        .into(),
    ));
    pairs.push((
        "administered",
        if e.locally_administered {
            "locally (no vendor OUI)"
        } else {
            "universally (vendor OUI)"
        }
        .into(),
    ));
    let special = if e.zero {
        "all-zero address"
    } else if e.broadcast {
        "broadcast address"
    } else {
        "-"
    };
    pairs.push(("special", special.into()));
    pairs.push((
        "oui",
        format!(
            "{oui}{}",
            e.prefix_owner.map(|w| format!("  {w}")).unwrap_or_default()
        ),
    ));
    if let Some(((a, b), r)) = e.hyperv_default {
        pairs.push((
            "hyper-v",
            format!(
                "default range of a host whose IPv4 address ends in .{a}.{b} ({} … {})",
                r.first().display(out.mac_format),
                r.last().display(out.mac_format)
            ),
        ));
    }
    pairs.push((
        "adapter use",
        e.invalid_reason
            .map(str::to_string)
            .unwrap_or_else(|| "valid".into()),
    ));
    print!("{}", fields(&pairs));
    Ok(OK)
}
