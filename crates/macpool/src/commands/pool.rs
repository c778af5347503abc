use macpool_api::dto::{AvailableInfo, PoolCreate, PoolEditBody, PoolInfo};

use super::Ctx;
use crate::cli::{PolicyArgs, PoolCommand};
use crate::exit::{CmdResult, OK};
use crate::output::{fields, table};

pub async fn run(ctx: &Ctx, cmd: PoolCommand) -> CmdResult {
    match cmd {
        PoolCommand::Create {
            name,
            ranges,
            policy,
        } => {
            let PolicyArgs {
                order,
                cooldown,
                duplicates,
                low_water,
            } = policy;
            let body = PoolCreate {
                name,
                ranges,
                order,
                cooldown,
                duplicates,
                low_water,
            };
            let p = ctx.client.create_pool(&body).await?;
            show(ctx, &p);
        }
        PoolCommand::List => {
            let pools = ctx.client.pools().await?;
            if ctx.out.json {
                ctx.out.print_json(&pools);
            } else if pools.is_empty() {
                println!(
                    "no pools yet: create one with `macpool pool create NAME --range FIRST-LAST`"
                );
            } else {
                let rows: Vec<Vec<String>> = pools
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            ranges(ctx, p),
                            p.size.to_string(),
                            p.leased.to_string(),
                            p.held.to_string(),
                            p.cooling.to_string(),
                            p.free.to_string(),
                            format!("{:.1}%", p.percent_used),
                            if p.low { "LOW".into() } else { String::new() },
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "NAME", "RANGES", "SIZE", "LEASED", "HELD", "COOLING", "FREE", "USED",
                            ""
                        ],
                        &rows
                    )
                );
            }
        }
        PoolCommand::Show { name } => {
            let p = ctx.client.pool(&name).await?;
            show(ctx, &p);
        }
        PoolCommand::Edit {
            name,
            ranges,
            add_ranges,
            remove_ranges,
            policy,
        } => {
            let PolicyArgs {
                order,
                cooldown,
                duplicates,
                low_water,
            } = policy;
            let body = PoolEditBody {
                ranges: (!ranges.is_empty()).then_some(ranges),
                add_ranges,
                remove_ranges,
                order,
                cooldown,
                duplicates,
                low_water,
            };
            let p = ctx.client.edit_pool(&name, &body).await?;
            show(ctx, &p);
        }
        PoolCommand::Delete { name } => {
            ctx.client.delete_pool(&name).await?;
            if ctx.out.json {
                ctx.out.print_json(&serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted pool {name}");
            }
        }
        PoolCommand::Available { name, limit } => {
            let a = ctx.client.available(&name, limit).await?;
            available(ctx, &a);
        }
    }
    Ok(OK)
}

fn ranges(ctx: &Ctx, p: &PoolInfo) -> String {
    p.ranges
        .iter()
        .map(|r| format!("{} … {}", ctx.out.mac(&r.first), ctx.out.mac(&r.last)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(ctx: &Ctx, p: &PoolInfo) {
    if ctx.out.json {
        ctx.out.print_json(p);
        return;
    }
    let mut pairs = vec![("pool", p.name.clone())];
    for r in &p.ranges {
        pairs.push((
            "range",
            format!(
                "{} … {}  ({})",
                ctx.out.mac(&r.first),
                ctx.out.mac(&r.last),
                r.size
            ),
        ));
    }
    pairs.extend([
        ("order", p.order.clone()),
        ("cooldown", p.cooldown.clone()),
        ("duplicates", p.duplicates.clone()),
        (
            "low-water",
            format!(
                "{}{}",
                p.low_water,
                if p.low { "  (LOW: below the mark)" } else { "" }
            ),
        ),
        ("size", p.size.to_string()),
        ("leased", p.leased.to_string()),
        ("held", p.held.to_string()),
        ("cooling", p.cooling.to_string()),
        ("free", p.free.to_string()),
        ("used", format!("{:.1}%", p.percent_used)),
    ]);
    print!("{}", fields(&pairs));
}

fn available(ctx: &Ctx, a: &AvailableInfo) {
    if ctx.out.json {
        ctx.out.print_json(a);
        return;
    }
    let rows: Vec<Vec<String>> = a
        .runs
        .iter()
        .map(|r| {
            let span = if r.count == 1 {
                ctx.out.mac(&r.first)
            } else {
                format!("{} … {}", ctx.out.mac(&r.first), ctx.out.mac(&r.last))
            };
            vec![span, format!("({})", r.count)]
        })
        .collect();
    for r in &rows {
        println!("{}  {}", r[0], r[1]);
    }
    let more = if a.truncated {
        format!(" (listed {}; raise --limit for more)", a.listed)
    } else {
        String::new()
    };
    println!(
        "{} free of {} in pool {} in {} runs{more}",
        a.free,
        a.size,
        a.pool,
        a.runs.len()
    );
}
