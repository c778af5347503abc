use macpool_api::dto::HistoryQuery;

use super::Ctx;
use crate::cli::HistoryArgs;
use crate::exit::{CmdResult, OK};
use crate::output::{opt, table};

pub async fn run(ctx: &Ctx, args: HistoryArgs) -> CmdResult {
    let q = HistoryQuery {
        mac: args.mac,
        vm: args.vm_id,
        limit: Some(args.limit),
        before: args.before,
    };
    let page = ctx.client.history_page(&q).await?;
    if let Some(max) = page.capped_to {
        eprintln!("history: the server returns at most {max} entries at a time");
    }
    if let Some(before) = page.next_before {
        eprintln!("history: older entries follow; see them with --before {before}");
    }
    let rows = page.rows;
    if ctx.out.json {
        ctx.out.print_json(&rows);
        return Ok(OK);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|h| {
            vec![
                h.id.to_string(),
                h.at.clone(),
                h.actor.clone(),
                h.action.clone(),
                ctx.out.opt_mac(&h.mac),
                opt(&h.pool),
                opt(&h.vm_id),
                opt(&h.host),
                opt(&h.reason),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID", "TIME", "ACTOR", "ACTION", "MAC", "POOL", "VM", "HOST", "WHY"
            ],
            &cells
        )
    );
    Ok(OK)
}
