//! `macpool inventory push FILE --host H --generation N`: sends one host's inventory from a
//! Hyper-V PowerShell export (the same JSON `macpool audit` reads) to the authority, so the
//! server side works without an agent.

use std::path::Path;

use macpool_api::convert;
use macpool_audit::hyperv_json;
use macpool_core::inventory::HostInventory;

use super::Ctx;
use crate::cli::InventoryCommand;
use crate::exit::{CmdResult, Failure, OK};
use crate::output::table;

/// Most file problems reported before the rest are dropped.
const MAX_DIAGNOSTICS: usize = 20;

pub async fn run(ctx: &Ctx, cmd: InventoryCommand) -> CmdResult {
    match cmd {
        InventoryCommand::Push {
            file,
            host,
            generation,
        } => push(ctx, &file, &host, generation).await,
    }
}

/// The inventory of `host` in the export, renamed to `host`'s spelling. An export without any
/// host name (its adapters land under `unknown-host`) is taken as `host`'s when it is all there is.
pub fn pick_host(file: &Path, host: &str) -> Result<HostInventory, Failure> {
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let (hosts, diagnostics) = hyperv_json::inventories(&bytes, MAX_DIAGNOSTICS);
    for d in &diagnostics {
        match &d.location {
            Some(at) => eprintln!("warning: {}: {at}: {}", file.display(), d.message),
            None => eprintln!("warning: {}: {}", file.display(), d.message),
        }
    }
    let found = hosts
        .iter()
        .find(|h| h.host().eq_ignore_ascii_case(host))
        .or_else(|| match hosts.as_slice() {
            [only] if only.host() == "unknown-host" => Some(only),
            _ => None,
        })
        .ok_or_else(|| {
            let names: Vec<&str> = hosts.iter().map(HostInventory::host).collect();
            Failure::usage(format!(
                "{} has no inventory of host '{host}' (hosts in it: {})",
                file.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
    let mut inv = HostInventory::new(host).map_err(|e| Failure::usage(e.to_string()))?;
    inv.cluster = found.cluster.clone();
    inv.ipv4 = found.ipv4.clone();
    inv.management_adapters = found.management_adapters.clone();
    inv.set_dynamic_range(found.dynamic_range(), found.cursor())
        .map_err(|e| Failure::usage(e.to_string()))?;
    for vm in found.vms() {
        inv.add_vm(vm.clone())
            .map_err(|e| Failure::usage(e.to_string()))?;
    }
    Ok(inv)
}

async fn push(ctx: &Ctx, file: &Path, host: &str, generation: u64) -> CmdResult {
    let inv = pick_host(file, host)?;
    let body = convert::inventory_body(&inv, generation);
    let result = ctx.client.put_inventory(host, &body).await?;
    if ctx.out.json {
        ctx.out.print_json(&result);
        return Ok(OK);
    }
    let rows = vec![
        vec!["bound".to_string(), result.bound.len().to_string()],
        vec!["released".to_string(), result.released.len().to_string()],
        vec!["held".to_string(), result.held.len().to_string()],
        vec!["unheld".to_string(), result.unheld.len().to_string()],
        vec!["unmanaged".to_string(), result.unmanaged.len().to_string()],
    ];
    println!(
        "inventory of host {} generation {} accepted ({} VMs)",
        result.host,
        result.generation,
        body.vms.len()
    );
    print!("{}", table(&["WHAT", "COUNT"], &rows));
    for m in &result.unmanaged {
        println!(
            "unmanaged: {} (in a pool, no lease or hold)",
            ctx.out.mac(m)
        );
    }
    for n in &result.notes {
        println!("note: {n}");
    }
    Ok(OK)
}
