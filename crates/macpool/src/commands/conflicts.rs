//! `macpool conflicts`: every conflict the authority derives from the hosts' latest
//! inventories. Exit 1 when there is at least one, 0 when none, so monitoring can run it.

use macpool_api::dto::ConflictInfo;

use super::Ctx;
use crate::exit::{CmdResult, NO, OK};
use crate::output::table;

pub async fn run(ctx: &Ctx) -> CmdResult {
    let conflicts = ctx.client.conflicts().await?;
    let code = if conflicts.is_empty() { OK } else { NO };
    if ctx.out.json {
        ctx.out.print_json(&conflicts);
        return Ok(code);
    }
    if conflicts.is_empty() {
        println!("no conflicts");
        return Ok(code);
    }
    for (i, c) in conflicts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", render(ctx, c));
    }
    println!("\n{} conflict(s)", conflicts.len());
    Ok(code)
}

/// One conflict: a heading (class and MAC or ranges), every owner as a table, why and fix.
fn render(ctx: &Ctx, c: &ConflictInfo) -> String {
    let subject = match (&c.mac, &c.overlap) {
        (Some(m), _) => ctx.out.mac(m),
        (None, Some(o)) => format!(
            "{} - {} ({} addresses)",
            ctx.out.mac(&o.first),
            ctx.out.mac(&o.last),
            o.size
        ),
        (None, None) => "-".into(),
    };
    let mut s = format!("{}  {subject}\n", c.class.to_uppercase());
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows: Vec<Vec<String>> = c
        .owners
        .iter()
        .map(|o| {
            let checkpoint = match (&o.checkpoint_name, &o.checkpoint_id) {
                (Some(n), Some(id)) => format!("'{n}' ({id})"),
                _ => "-".into(),
            };
            vec![
                o.seen.clone(),
                dash(&o.host),
                dash(&o.vm_name),
                dash(&o.vm_id),
                dash(&o.adapter),
                checkpoint,
            ]
        })
        .collect();
    rows.extend(c.ranges.iter().map(|r| {
        vec![
            format!("{} range", r.kind),
            r.name.clone(),
            format!("{} - {}", ctx.out.mac(&r.first), ctx.out.mac(&r.last)),
            "-".into(),
            "-".into(),
            "-".into(),
        ]
    }));
    for line in table(
        &["SEEN", "HOST", "VM", "VM ID", "ADAPTER", "CHECKPOINT"],
        &rows,
    )
    .lines()
    {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str(&format!("  why: {}\n  fix: {}\n", c.explanation, c.fix));
    s
}
