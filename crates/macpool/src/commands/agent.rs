//! `macpool agent …`: the agent as a service (events, inventory, delegate), until stopped.
//!
//! `macpool agent on-event`: the guard decision for one event, as the scheduled task runs it.
//! Exit status: 0 decided (nothing to do, planned, or fixed), 1 a step failed or the state was
//! not understood (nothing was guessed), 3 the authority or the hypervisor did not answer
//! (nothing changed; the next event or a rerun retries).

use std::path::PathBuf;

use macpool_agent::Hypervisor;
use macpool_agent::agent::{AgentConfig, Report};
use macpool_agent::decide::{
    ClientAuthority, DecideConfig, Outcome, Remedy, Strategy, handle_record,
};
use macpool_agent::delegate::DelegateConfig;
use macpool_agent::powershell::{PowerShellHypervisor, plan_scripts};

use super::Ctx;
use crate::cli::{AgentArgs, AgentCommand, AgentRunArgs, OnEventArgs};
use crate::exit::{CmdResult, Failure, NO, OK, UNREACHABLE};
use crate::output::fields;

pub async fn run(ctx: &Ctx, args: AgentArgs) -> CmdResult {
    match args.command {
        Some(AgentCommand::OnEvent(a)) => on_event(ctx, a).await,
        None => service(ctx, args.run).await,
    }
}

/// The agent's configuration from its flags; usage errors name the flag to give.
fn service_config(args: &AgentRunArgs) -> Result<AgentConfig, Failure> {
    let host = args
        .host
        .clone()
        .or_else(local_host)
        .ok_or_else(|| Failure::usage("give --host: COMPUTERNAME/HOSTNAME are not set"))?;
    let (delegate, guard) = match args.strategy.as_str() {
        "delegate" => (true, None),
        "delegate+guard" => (true, Some(Strategy::Guard)),
        other => (false, Some(strategy(other)?)),
    };
    let remedy = match (&args.pool, args.dynamic) {
        (_, true) => Remedy::Dynamic,
        (Some(pool), false) => Remedy::FreshStatic { pool: pool.clone() },
        (None, false) if guard == Some(Strategy::Guard) => {
            return Err(Failure::usage(
                "guard needs --pool POOL (a fresh static MAC) or --dynamic",
            ));
        }
        (None, false) => Remedy::Dynamic,
    };
    let decide = guard.map(|s| {
        let mut d = DecideConfig::new(s, host.clone(), remedy);
        d.rollback_pattern = args.rollback_pattern.clone();
        d.dry_run = args.dry_run;
        d
    });
    let bookmark = args
        .bookmark
        .clone()
        .unwrap_or_else(|| PathBuf::from("macpool-agent.bookmark.json"));
    let mut cfg = AgentConfig::new(decide, host.clone(), bookmark);
    if delegate {
        let pool = args
            .pool
            .clone()
            .ok_or_else(|| Failure::usage("delegate needs --pool POOL to claim blocks from"))?;
        let mut d = DelegateConfig::new(host, pool);
        d.block_size = args.block_size;
        d.margin = args.rotate_margin;
        d.dry_run = args.dry_run;
        cfg.delegate = Some(d);
    }
    cfg.history = args.history.clone();
    cfg.inventory_every = args.inventory_every;
    cfg.push_inventory = !args.dry_run;
    Ok(cfg)
}

async fn service(ctx: &Ctx, args: AgentRunArgs) -> CmdResult {
    let cfg = service_config(&args)?;
    let authority = ClientAuthority(ctx.client.clone());
    match args.hypervisor.as_str() {
        "hyperv" => {
            let hv = PowerShellHypervisor::new(args.powershell.child_config());
            serve_with(ctx, &hv, &authority, &cfg, &args, true).await
        }
        "libvirt" => libvirt_service(ctx, &authority, &cfg, &args).await,
        other => Err(Failure::usage(format!(
            "unknown hypervisor '{other}': expected hyperv or libvirt"
        ))),
    }
}

#[cfg(feature = "libvirt")]
async fn libvirt_service(
    ctx: &Ctx,
    authority: &ClientAuthority,
    cfg: &AgentConfig,
    args: &AgentRunArgs,
) -> CmdResult {
    let uri = args
        .connect
        .as_deref()
        .ok_or_else(|| Failure::usage("--hypervisor libvirt needs --connect URI"))?;
    let opts = macpool_agent::libvirt::LibvirtOptions {
        host: Some(cfg.host.clone()),
        ..Default::default()
    };
    let target = uri.to_string();
    // connecting blocks (libvirt's C library); keep it off the async workers
    let hv = tokio::task::spawn_blocking(move || {
        macpool_agent::libvirt::LibvirtHypervisor::connect_with(&target, opts)
    })
    .await
    .map_err(|e| Failure::usage(format!("libvirt connect: {e}")))?
    .map_err(|e| Failure {
        code: match e {
            macpool_agent::HvError::Unavailable(_) => UNREACHABLE,
            _ => NO,
        },
        message: format!("libvirt at {uri}: {e}"),
    })?;
    serve_with(ctx, &hv, authority, cfg, args, false).await
}

#[cfg(not(feature = "libvirt"))]
async fn libvirt_service(
    _ctx: &Ctx,
    _authority: &ClientAuthority,
    _cfg: &AgentConfig,
    _args: &AgentRunArgs,
) -> CmdResult {
    Err(Failure::usage(
        "libvirt support is not compiled into this macpool; it needs libvirt's C library \
         (Debian: apt-get install libvirt-dev), then: \
         cargo install --path crates/macpool --features libvirt (see docs/agent-libvirt.md)",
    ))
}

async fn serve_with<H: Hypervisor>(
    ctx: &Ctx,
    hv: &H,
    authority: &ClientAuthority,
    cfg: &AgentConfig,
    args: &AgentRunArgs,
    powershell: bool,
) -> CmdResult {
    let json = ctx.out.json;
    let print = |r: &Report| {
        let (kind, text, scripts) = match r {
            Report::Decision(d) => {
                let scripts = match &d.outcome {
                    Outcome::Planned { plan, .. } if powershell => plan_scripts(plan),
                    _ => Vec::new(),
                };
                let vm = d.vm_name.as_deref().unwrap_or(&d.vm_id);
                let text = format!(
                    "event {} #{} ({}, VM {vm}): {}",
                    d.channel,
                    d.record_id,
                    d.kind.name(),
                    d.outcome.summary()
                );
                ("decision", text, scripts)
            }
            Report::Delegate(o) => ("delegate", o.summary(), Vec::new()),
            Report::Inventory(Ok(g)) => ("inventory", format!("accepted, generation {g}"), vec![]),
            Report::Inventory(Err(e)) => ("inventory", e.clone(), Vec::new()),
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"kind": kind, "summary": text, "scripts": scripts})
            );
        } else {
            println!("{kind}: {text}");
            for s in scripts {
                println!("{s}");
            }
        }
    };
    let stop = async {
        match args.run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => macpool_server::serve::shutdown_signal().await,
        }
    };
    macpool_agent::agent::run(hv, authority, cfg, print, stop)
        .await
        .map_err(Failure::usage)?;
    Ok(OK)
}

fn strategy(s: &str) -> Result<Strategy, Failure> {
    match s {
        "guard" => Ok(Strategy::Guard),
        "blog-compatible" => Ok(Strategy::BlogCompatible),
        "observe" => Ok(Strategy::Observe),
        other => Err(Failure::usage(format!(
            "unknown strategy '{other}': expected delegate, guard, delegate+guard, \
             blog-compatible or observe"
        ))),
    }
}

/// This host's name: Windows sets COMPUTERNAME, most Unix shells HOSTNAME.
fn local_host() -> Option<String> {
    ["COMPUTERNAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|h| !h.is_empty()))
}

async fn on_event(ctx: &Ctx, args: OnEventArgs) -> CmdResult {
    let strategy = strategy(&args.strategy)?;
    let remedy = match (&args.pool, args.dynamic) {
        (Some(pool), false) => Remedy::FreshStatic { pool: pool.clone() },
        (None, true) => Remedy::Dynamic,
        _ if strategy != Strategy::Guard => Remedy::Dynamic,
        _ => {
            return Err(Failure::usage(
                "guard needs --pool POOL (a fresh static MAC) or --dynamic",
            ));
        }
    };
    let host = args
        .host
        .clone()
        .or_else(local_host)
        .ok_or_else(|| Failure::usage("give --host: COMPUTERNAME/HOSTNAME are not set"))?;
    let mut cfg = DecideConfig::new(strategy, host, remedy);
    cfg.rollback_pattern = args.rollback_pattern.clone();
    cfg.dry_run = args.dry_run;
    let hv = PowerShellHypervisor::new(args.powershell.child_config());
    let authority = ClientAuthority(ctx.client.clone());
    let decision = handle_record(&hv, &authority, &cfg, &args.channel, args.record_id)
        .await
        .map_err(|e| Failure {
            code: UNREACHABLE,
            message: format!(
                "cannot read event {} of {}: {e}",
                args.record_id, args.channel
            ),
        })?;
    let code = match &decision.outcome {
        Outcome::Ignored { .. } | Outcome::Planned { .. } | Outcome::Done { .. } => OK,
        Outcome::Deferred { .. } => UNREACHABLE,
        Outcome::Unknown { .. } | Outcome::Failed { .. } => NO,
    };
    let scripts = match &decision.outcome {
        Outcome::Planned { plan, .. } => plan_scripts(plan),
        _ => Vec::new(),
    };
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "channel": decision.channel,
            "record_id": decision.record_id,
            "vm_id": decision.vm_id,
            "vm_name": decision.vm_name,
            "outcome": decision.outcome.summary(),
            "scripts": scripts,
        }));
    } else {
        print!(
            "{}",
            fields(&[
                (
                    "event",
                    format!("{} #{}", decision.channel, decision.record_id)
                ),
                (
                    "vm",
                    format!(
                        "{} ({})",
                        decision.vm_name.as_deref().unwrap_or("?"),
                        decision.vm_id
                    )
                ),
                ("outcome", decision.outcome.summary()),
            ])
        );
        for s in &scripts {
            println!("{s}");
        }
    }
    Ok(code)
}
