//! `macpool host list`: the hosts that report inventories, as the dashboard's Hosts page
//! shows them.

use macpool_api::dto::HostInfo;

use super::Ctx;
use crate::cli::HostCommand;
use crate::exit::{CmdResult, OK};
use crate::output::table;

pub async fn run(ctx: &Ctx, cmd: HostCommand) -> CmdResult {
    let HostCommand::List = cmd;
    let hosts = ctx.client.hosts().await?;
    if ctx.out.json {
        ctx.out.print_json(&hosts);
        return Ok(OK);
    }
    print!("{}", render(ctx, &hosts));
    Ok(OK)
}

fn render(ctx: &Ctx, hosts: &[HostInfo]) -> String {
    if hosts.is_empty() {
        return "no host has reported an inventory yet (the agent reports at start and every \
                minute; `macpool inventory push` sends an export)\n"
            .into();
    }
    let dash = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let range = match (&h.range_min, &h.range_max) {
                (Some(a), Some(b)) => format!("{} - {}", ctx.out.mac(a), ctx.out.mac(b)),
                _ => "-".into(),
            };
            let cursor = match (&h.cursor, h.cursor_estimated) {
                (Some(c), false) => ctx.out.mac(c),
                (Some(c), true) => format!("{} (estimated)", ctx.out.mac(c)),
                (None, true) => "estimated".into(),
                (None, false) => "unknown".into(),
            };
            vec![
                h.host.clone(),
                h.cluster.clone().unwrap_or_else(|| "-".into()),
                range,
                dash(h.overlaps.clone()),
                cursor,
                dash(
                    h.blocks
                        .iter()
                        .map(|b| format!("#{} {}", b.id, b.state))
                        .collect(),
                ),
                h.vms.to_string(),
                format!(
                    "{}/{}/{}",
                    h.live_adapters, h.checkpoint_adapters, h.management_adapters
                ),
                h.received.clone(),
                h.generation.to_string(),
                h.strategy.clone().unwrap_or_else(|| "unknown".into()),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "CLUSTER",
            "DYNAMIC RANGE",
            "OVERLAPS",
            "CURSOR",
            "BLOCKS",
            "VMS",
            "ADAPTERS (LIVE/CHECKPOINT/MGMT OS)",
            "LAST REPORT",
            "GENERATION",
            "STRATEGY",
        ],
        &rows,
    )
}
