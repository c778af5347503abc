//! `macpool block list|drain`: which host's allocator has which part of which pool.

use macpool_api::dto::BlockInfo;

use super::Ctx;
use crate::cli::BlockCommand;
use crate::exit::{CmdResult, OK};
use crate::output::table;

pub async fn run(ctx: &Ctx, cmd: BlockCommand) -> CmdResult {
    let blocks = match cmd {
        BlockCommand::List { host } => ctx.client.blocks(host.as_deref()).await?,
        BlockCommand::Drain { host, id } => vec![ctx.client.drain_block(&host, id).await?],
    };
    if ctx.out.json {
        ctx.out.print_json(&blocks);
        return Ok(OK);
    }
    print!("{}", render(ctx, &blocks));
    Ok(OK)
}

fn render(ctx: &Ctx, blocks: &[BlockInfo]) -> String {
    if blocks.is_empty() {
        return "no blocks\n".into();
    }
    let rows: Vec<Vec<String>> = blocks
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.host.clone(),
                b.pool.clone(),
                format!("{} - {}", ctx.out.mac(&b.first), ctx.out.mac(&b.last)),
                b.size.to_string(),
                b.state.clone(),
                b.unused_since.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "HOST",
            "POOL",
            "RANGE",
            "SIZE",
            "STATE",
            "UNUSED SINCE",
        ],
        &rows,
    )
}
