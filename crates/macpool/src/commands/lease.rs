use macpool_api::dto::{
    AllocateBody, HoldBody, HoldInfo, LeaseInfo, LeaseQuery, ReleaseBody, UnholdBody,
};

use super::Ctx;
use crate::cli::LeaseCommand;
use crate::exit::{CmdResult, Failure, NO, OK};
use crate::output::{fields, opt, table};

pub async fn run(ctx: &Ctx, cmd: LeaseCommand) -> CmdResult {
    match cmd {
        LeaseCommand::Allocate {
            pool,
            vm_id,
            vm_name,
            adapter_id,
            host,
            cluster,
            mac,
            count,
        } => {
            let body = AllocateBody {
                pool: Some(pool),
                vm_id,
                adapter_id,
                vm_name,
                host,
                cluster,
                mac,
                count,
                reason: None,
            };
            let r = ctx.client.allocate(&body).await?;
            if ctx.out.json {
                ctx.out.print_json(&r);
            } else {
                for a in &r.allocations {
                    let note = if a.existing {
                        "  (already leased to this owner)"
                    } else {
                        ""
                    };
                    let dup = if a.lease.duplicate {
                        "  DUPLICATE (flagged)"
                    } else {
                        ""
                    };
                    println!("{}{note}{dup}", ctx.out.mac(&a.lease.mac));
                }
                if r.pool_low {
                    eprintln!("warning: the pool is below its low-water mark");
                }
            }
        }
        LeaseCommand::Release {
            mac,
            vm_id,
            adapter_id,
        } => {
            if mac.is_none() && vm_id.is_none() {
                return Err(Failure::usage("give a MAC or --vm ID"));
            }
            let released = ctx
                .client
                .release(&ReleaseBody {
                    mac,
                    vm_id,
                    adapter_id,
                })
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&released);
            } else {
                for r in &released {
                    let until = match &r.cooling_until {
                        Some(t) => format!("cooling until {t}"),
                        None => "still kept by a hold or another lease".into(),
                    };
                    println!(
                        "released {} from {}: {until}",
                        ctx.out.mac(&r.lease.mac),
                        owner(&r.lease)
                    );
                }
            }
        }
        LeaseCommand::Show {
            mac: Some(mac),
            vm_id: None,
        } => {
            let info = ctx.client.mac(&mac).await?;
            if ctx.out.json {
                ctx.out.print_json(&info);
            } else {
                let mut pairs = vec![
                    ("mac", ctx.out.mac(&info.mac)),
                    ("state", info.state.clone()),
                    ("pool", opt(&info.pool)),
                ];
                for l in &info.leases {
                    let dup = if l.duplicate { " DUPLICATE" } else { "" };
                    pairs.push((
                        "lease",
                        format!("{} ({}, since {}){dup}", owner(l), l.state, l.created),
                    ));
                }
                for h in &info.holds {
                    pairs.push(("hold", hold_text(h)));
                }
                if let Some(t) = &info.cooling_until {
                    pairs.push(("cooling until", t.clone()));
                }
                print!("{}", fields(&pairs));
            }
        }
        LeaseCommand::Show {
            mac: None,
            vm_id: Some(vm),
        } => {
            let leases = ctx
                .client
                .leases(&LeaseQuery {
                    vm: Some(vm.clone()),
                    ..LeaseQuery::default()
                })
                .await?;
            print_leases(ctx, &leases);
            if leases.is_empty() {
                if !ctx.out.json {
                    eprintln!("VM {vm} has no lease");
                }
                return Ok(NO);
            }
        }
        LeaseCommand::Show { .. } => return Err(Failure::usage("give either a MAC or --vm ID")),
        LeaseCommand::List { pool, host, vm_id } => {
            let leases = ctx
                .client
                .leases(&LeaseQuery {
                    pool,
                    host,
                    vm: vm_id,
                    ..LeaseQuery::default()
                })
                .await?;
            print_leases(ctx, &leases);
        }
        LeaseCommand::Hold {
            mac,
            vm_id,
            reason,
            reference,
        } => {
            let h = ctx
                .client
                .hold(&HoldBody {
                    mac,
                    vm_id,
                    reason,
                    reference,
                })
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&h);
            } else {
                println!("held {}", hold_text(&h));
            }
        }
        LeaseCommand::Unhold {
            mac,
            vm_id,
            reason,
            reference,
        } => {
            let removed = ctx
                .client
                .unhold(&UnholdBody {
                    mac,
                    vm_id,
                    reason,
                    reference,
                })
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&removed);
            } else {
                for h in &removed {
                    println!("removed hold {}", hold_text(h));
                }
            }
        }
        LeaseCommand::Holds { vm_id } => {
            let holds = ctx.client.holds(vm_id.as_deref()).await?;
            if ctx.out.json {
                ctx.out.print_json(&holds);
            } else {
                let rows: Vec<Vec<String>> = holds
                    .iter()
                    .map(|h| {
                        vec![
                            ctx.out.mac(&h.mac),
                            h.vm_id.clone(),
                            h.reason.clone(),
                            h.reference.clone(),
                            h.created.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["MAC", "VM", "REASON", "REF", "SINCE"], &rows));
            }
        }
    }
    Ok(OK)
}

fn owner(l: &LeaseInfo) -> String {
    let mut s = format!("VM {}", l.vm_id);
    if let Some(n) = &l.vm_name {
        s.push_str(&format!(" ({n})"));
    }
    if !l.adapter_id.is_empty() {
        s.push_str(&format!(" adapter {}", l.adapter_id));
    }
    if let Some(h) = &l.host {
        s.push_str(&format!(" on {h}"));
    }
    s
}

fn hold_text(h: &HoldInfo) -> String {
    let r = if h.reference.is_empty() {
        String::new()
    } else {
        format!(" {}", h.reference)
    };
    format!(
        "{} for VM {} ({}{r}, since {})",
        h.mac, h.vm_id, h.reason, h.created
    )
}

fn print_leases(ctx: &Ctx, leases: &[LeaseInfo]) {
    if ctx.out.json {
        ctx.out.print_json(&leases);
        return;
    }
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                ctx.out.mac(&l.mac),
                l.pool.clone(),
                l.vm_id.clone(),
                opt(&l.vm_name),
                if l.adapter_id.is_empty() {
                    "-".into()
                } else {
                    l.adapter_id.clone()
                },
                opt(&l.host),
                if l.duplicate {
                    format!("{} DUP", l.state)
                } else {
                    l.state.clone()
                },
                l.created.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "MAC", "POOL", "VM", "NAME", "ADAPTER", "HOST", "STATE", "SINCE"
            ],
            &rows
        )
    );
}
