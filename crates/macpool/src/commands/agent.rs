//! `macpool agent on-event`: the guard decision for one event, as the scheduled task runs it.
//! Exit status: 0 decided (nothing to do, planned, or fixed), 1 a step failed or the state was
//! not understood (nothing was guessed), 3 the authority or the hypervisor did not answer
//! (nothing changed; the next event or a rerun retries).

use macpool_agent::decide::{
    ClientAuthority, DecideConfig, Outcome, Remedy, Strategy, handle_record,
};
use macpool_agent::powershell::{PowerShellHypervisor, plan_scripts};

use super::Ctx;
use crate::cli::{AgentCommand, OnEventArgs};
use crate::exit::{CmdResult, Failure, NO, OK, UNREACHABLE};
use crate::output::fields;

pub async fn run(ctx: &Ctx, cmd: AgentCommand) -> CmdResult {
    let AgentCommand::OnEvent(args) = cmd;
    on_event(ctx, args).await
}

fn strategy(s: &str) -> Result<Strategy, Failure> {
    match s {
        "guard" => Ok(Strategy::Guard),
        "blog-compatible" => Ok(Strategy::BlogCompatible),
        "observe" => Ok(Strategy::Observe),
        other => Err(Failure::usage(format!(
            "unknown strategy '{other}': expected guard, blog-compatible or observe \
             (delegate runs as a service, not per event)"
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
