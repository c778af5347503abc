//! The agent's decisions, written once against [`Hypervisor`] and [`Authority`].
//!
//! - **guard**: on a restore (18596) of a VM whose current checkpoint matches the rollback
//!   pattern, ask the authority about each live adapter's MAC. A MAC leased to another VM, or
//!   held by another VM (e.g. its checkpoint), is a conflict. Only then: turn off, give the
//!   adapter a fresh pool MAC (static) or make it dynamic, start; record old → new with the
//!   event record id. Authority unreachable → [`Outcome::Deferred`], nothing touched.
//! - **blog-compatible**: the published workaround exactly: every checkpoint adapter of the VM
//!   set to dynamic, then turn off (always), wait, start, after every rollback restore. No
//!   authority.
//! - **observe** (and `dry_run` for any strategy): the same decision, returned as a
//!   [`Plan`] and not executed; [`crate::powershell::plan_scripts`] prints its PowerShell.
//!
//! What the agent cannot explain (VM not on this host, a saved/paused VM, an adapter the
//! authority gives the same MAC back for) is [`Outcome::Unknown`]: reported, not fixed.

use std::future::Future;
use std::time::Duration;

use macpool_api::dto::{AllocateBody, BlockInfo, ClaimBlockBody, InventoryBody, MacInfo};
use macpool_client::{Client, ClientError};
use macpool_core::Mac;
use macpool_core::history::GUARD_REASON_PREFIX;
use macpool_core::inventory::{AdapterLocation, VmState};

use crate::hypervisor::{AdapterRef, EventKind, HvError, HvEvent, Hypervisor, MacSetting};

/// Why the authority gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// Could not be asked: the agent keeps the event and asks again later.
    #[error("authority unreachable: {0}")]
    Unreachable(String),
    /// Answered no (pool exhausted, not allowed, …).
    #[error("authority refused: {0}")]
    Refused(String),
}

/// The part of the authority the decisions need. [`ClientAuthority`] is the HTTP one; tests and
/// the simulator supply their own.
pub trait Authority: Send + Sync {
    /// Everything known about one MAC (`GET /api/v1/macs/{mac}`); `None` when unknown.
    fn mac(&self, mac: Mac)
    -> impl Future<Output = Result<Option<MacInfo>, AuthorityError>> + Send;
    /// A fresh MAC for an adapter (`POST /api/v1/leases`; idempotent per vm + adapter).
    fn allocate(
        &self,
        body: AllocateBody,
    ) -> impl Future<Output = Result<Mac, AuthorityError>> + Send;

    /// The host's blocks that are not free (`GET /api/v1/hosts/{host}/blocks`). Only the
    /// delegate strategy needs blocks; authorities without them refuse.
    fn blocks(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<BlockInfo>, AuthorityError>> + Send {
        let _ = host;
        async {
            Err(AuthorityError::Refused(
                "this authority has no blocks".into(),
            ))
        }
    }

    /// Claims a block for the host, or gets its pending one back.
    fn claim_block(
        &self,
        host: &str,
        body: ClaimBlockBody,
    ) -> impl Future<Output = Result<BlockInfo, AuthorityError>> + Send {
        let _ = (host, body);
        async {
            Err(AuthorityError::Refused(
                "this authority has no blocks".into(),
            ))
        }
    }

    /// The host applied the block: active (its previous active block drains).
    fn activate_block(
        &self,
        host: &str,
        id: u64,
    ) -> impl Future<Output = Result<BlockInfo, AuthorityError>> + Send {
        let _ = (host, id);
        async {
            Err(AuthorityError::Refused(
                "this authority has no blocks".into(),
            ))
        }
    }

    /// Reports the host's whole inventory. `body.generation` is a proposal: an authority that
    /// already has a newer one for the host answers with the generation it actually applied.
    fn put_inventory(
        &self,
        host: &str,
        body: InventoryBody,
    ) -> impl Future<Output = Result<u64, AuthorityError>> + Send {
        let _ = (host, body);
        async {
            Err(AuthorityError::Refused(
                "this authority takes no inventories".into(),
            ))
        }
    }
}

/// [`Authority`] over the typed HTTP client.
#[derive(Clone, Debug)]
pub struct ClientAuthority(pub Client);

fn from_client(e: ClientError) -> AuthorityError {
    match e {
        ClientError::Unreachable { .. } => AuthorityError::Unreachable(e.to_string()),
        // 5xx: the authority is there but cannot answer now: treat as "ask again later"
        ClientError::Problem(ref p) if p.status >= 500 => {
            AuthorityError::Unreachable(e.to_string())
        }
        other => AuthorityError::Refused(other.to_string()),
    }
}

impl Authority for ClientAuthority {
    async fn mac(&self, mac: Mac) -> Result<Option<MacInfo>, AuthorityError> {
        match self.0.mac(&mac.to_string()).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(from_client(e)),
        }
    }

    async fn allocate(&self, body: AllocateBody) -> Result<Mac, AuthorityError> {
        let r = self.0.allocate(&body).await.map_err(from_client)?;
        let lease = r
            .allocations
            .first()
            .ok_or_else(|| AuthorityError::Refused("the allocation returned no lease".into()))?;
        Mac::parse(&lease.lease.mac).map_err(|e| {
            AuthorityError::Refused(format!(
                "the authority returned MAC '{}': {e}",
                lease.lease.mac
            ))
        })
    }

    async fn blocks(&self, host: &str) -> Result<Vec<BlockInfo>, AuthorityError> {
        self.0.blocks(Some(host)).await.map_err(from_client)
    }

    async fn claim_block(
        &self,
        host: &str,
        body: ClaimBlockBody,
    ) -> Result<BlockInfo, AuthorityError> {
        self.0.claim_block(host, &body).await.map_err(from_client)
    }

    async fn activate_block(&self, host: &str, id: u64) -> Result<BlockInfo, AuthorityError> {
        self.0.activate_block(host, id).await.map_err(from_client)
    }

    /// A `stale-generation` answer (the agent's clock went back, or another agent reported
    /// this host) is resolved once: read the stored generation and send again above it.
    async fn put_inventory(
        &self,
        host: &str,
        mut body: InventoryBody,
    ) -> Result<u64, AuthorityError> {
        match self.0.put_inventory(host, &body).await {
            Ok(r) => return Ok(r.generation),
            Err(ClientError::Problem(p)) if p.slug() == "stale-generation" => {}
            Err(e) => return Err(from_client(e)),
        }
        let stored = self.0.inventory(host).await.map_err(from_client)?;
        body.generation = stored.inventory.generation + 1;
        let r = self
            .0
            .put_inventory(host, &body)
            .await
            .map_err(from_client)?;
        Ok(r.generation)
    }
}

/// Which behaviour the agent has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Guard,
    BlogCompatible,
    Observe,
}

impl Strategy {
    /// The `--strategy` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Guard => "guard",
            Strategy::BlogCompatible => "blog-compatible",
            Strategy::Observe => "observe",
        }
    }
}

/// What guard gives a conflicting adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// A fresh MAC from this pool, set static.
    FreshStatic { pool: String },
    /// Dynamic: Hyper-V takes one from this host's range at start.
    Dynamic,
}

#[derive(Clone, Debug)]
pub struct DecideConfig {
    pub strategy: Strategy,
    /// Glob (`*`, `?`, case-insensitive) on the VM's current checkpoint name; default
    /// [`DEFAULT_ROLLBACK_PATTERN`].
    pub rollback_pattern: String,
    pub remedy: Remedy,
    /// This host and cluster, as the authority should record them.
    pub host: String,
    pub cluster: Option<String>,
    /// Decide, but do not change anything: return the plan.
    pub dry_run: bool,
    /// blog-compatible: the pause between turn-off and start (the published script: 5 s).
    pub blog_wait: Duration,
}

impl DecideConfig {
    pub fn new(strategy: Strategy, host: impl Into<String>, remedy: Remedy) -> DecideConfig {
        DecideConfig {
            strategy,
            rollback_pattern: DEFAULT_ROLLBACK_PATTERN.into(),
            remedy,
            host: host.into(),
            cluster: None,
            dry_run: false,
            blog_wait: Duration::from_secs(5),
        }
    }
}

/// Microsoft's RDS guidance puts "RDV_Rollback" anywhere in the newest checkpoint's name, and the
/// published workaround matches with PowerShell's case-insensitive `-like`.
pub const DEFAULT_ROLLBACK_PATTERN: &str = "*RDV_ROLLBACK*";

/// `*` any run, `?` one character; everything else literal, compared case-insensitively like
/// PowerShell's `-like` (the RDS guidance spells the marker "RDV_Rollback", RDS writes it upper).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let fold = |s: &str| -> Vec<char> { s.chars().flat_map(char::to_lowercase).collect() };
    let p = fold(pattern);
    let t = fold(text);
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One change the agent makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    TurnOff {
        vm_id: String,
    },
    SetMac {
        adapter: AdapterRef,
        old: Option<Mac>,
        new: MacSetting,
    },
    Wait {
        seconds: u64,
    },
    Start {
        vm_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub vm_id: String,
    pub vm_name: String,
    pub steps: Vec<Step>,
}

/// One adapter's MAC change, for the history: old → new, and the event that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub vm_id: String,
    pub vm_name: String,
    pub adapter: AdapterRef,
    pub old: Option<Mac>,
    pub new: MacSetting,
    pub channel: String,
    pub record_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (not a rollback restore, no conflict, …).
    Ignored { reason: String },
    /// No answer from the authority: nothing changed; retry later.
    Deferred { reason: String },
    /// Something the agent cannot explain: reported, nothing changed.
    Unknown { reason: String },
    /// Decided but not executed (observe, dry-run).
    Planned { plan: Plan, reason: String },
    /// Executed.
    Done {
        plan: Plan,
        reason: String,
        changes: Vec<Change>,
    },
    /// A step failed; `left` says what state the VM was left in.
    Failed {
        plan: Plan,
        step: usize,
        error: String,
        left: String,
        changes: Vec<Change>,
    },
}

impl Outcome {
    /// A one-line summary for logs and the CLI.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Ignored { reason } => format!("ignored: {reason}"),
            Outcome::Deferred { reason } => format!("deferred: {reason}"),
            Outcome::Unknown { reason } => format!("unknown state, not changed: {reason}"),
            Outcome::Planned { plan, reason } => {
                format!(
                    "would change VM {} ({} steps): {reason}",
                    plan.vm_name,
                    plan.steps.len()
                )
            }
            Outcome::Done {
                changes,
                reason,
                plan,
            } => {
                let c: Vec<String> = changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}→{}",
                            c.adapter.adapter,
                            c.old.map_or("?".into(), |m| m.to_string()),
                            c.new
                        )
                    })
                    .collect();
                format!(
                    "remediated VM {}: {} ({reason})",
                    plan.vm_name,
                    c.join(", ")
                )
            }
            Outcome::Failed {
                step, error, left, ..
            } => {
                format!("failed at step {}: {error}; VM left {left}", step + 1)
            }
        }
    }
}

/// A decision about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub channel: String,
    pub record_id: u64,
    pub kind: EventKind,
    pub vm_id: String,
    pub vm_name: Option<String>,
    pub outcome: Outcome,
}

/// Who else has this MAC, according to the authority (leases, holds, and what the hosts'
/// inventories show); `None` when only `vm_id` (or nobody).
pub fn conflict_of(info: &MacInfo, vm_id: &str) -> Option<String> {
    let mut who = Vec::new();
    for l in &info.leases {
        if !l.vm_id.eq_ignore_ascii_case(vm_id) {
            who.push(format!(
                "leased to VM {} ({}) on host {}",
                l.vm_name.as_deref().unwrap_or("?"),
                l.vm_id,
                l.host.as_deref().unwrap_or("?")
            ));
        }
    }
    for h in &info.holds {
        if !h.vm_id.eq_ignore_ascii_case(vm_id) {
            who.push(format!("held for VM {} ({})", h.vm_id, h.reason));
        }
    }
    // What the hosts report, leased or not: the seed's new VM got the MAC from its host's
    // dynamic range, so no lease names it, but its host's inventory does.
    for s in &info.seen {
        let leased = info
            .leases
            .iter()
            .any(|l| l.vm_id.eq_ignore_ascii_case(&s.vm_id));
        let held = info
            .holds
            .iter()
            .any(|h| h.vm_id.eq_ignore_ascii_case(&s.vm_id));
        if s.vm_id.eq_ignore_ascii_case(vm_id) || leased || held {
            continue;
        }
        who.push(match &s.checkpoint {
            None if s.management_os => format!(
                "vNIC '{}' of the management OS of host {}",
                s.vm_name, s.host
            ),
            None => format!("live on VM {} ({}) on host {}", s.vm_name, s.vm_id, s.host),
            Some(cp) => format!(
                "in checkpoint '{cp}' of VM {} ({}) on host {}",
                s.vm_name, s.vm_id, s.host
            ),
        });
    }
    who.dedup();
    (!who.is_empty()).then(|| who.join("; "))
}

/// `text` cut to what the authority keeps in a history reason (256 bytes, on a char boundary).
fn history_reason(text: &str) -> String {
    const MAX: usize = 256;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Decides (and, unless observing / dry-run, acts on) one event.
pub async fn handle_event<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DecideConfig,
    ev: &HvEvent,
) -> Decision {
    let outcome = decide(hv, auth, cfg, ev).await;
    let outcome = match outcome {
        Ok((plan, reason)) if cfg.dry_run || cfg.strategy == Strategy::Observe => {
            Outcome::Planned { plan, reason }
        }
        Ok((plan, reason)) => execute(hv, plan, reason, ev).await,
        Err(o) => o,
    };
    Decision {
        channel: ev.channel.clone(),
        record_id: ev.record_id,
        kind: ev.kind,
        vm_id: ev.vm_id.clone(),
        vm_name: ev.vm_name.clone(),
        outcome,
    }
}

/// Task Scheduler mode: fetch one event by channel and record id, then [`handle_event`].
pub async fn handle_record<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DecideConfig,
    channel: &str,
    record_id: u64,
) -> Result<Decision, HvError> {
    match hv.event(channel, record_id).await? {
        Some(ev) => Ok(handle_event(hv, auth, cfg, &ev).await),
        None => Err(HvError::Failed {
            command: "get-event".into(),
            message: format!("no event {record_id} in {channel}"),
        }),
    }
}

fn hv_outcome(e: HvError) -> Outcome {
    match e {
        HvError::Unavailable(m) => Outcome::Deferred {
            reason: format!("hypervisor unavailable: {m}"),
        },
        other => Outcome::Unknown {
            reason: other.to_string(),
        },
    }
}

/// The plan for an event, or the outcome when there is nothing to execute.
async fn decide<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DecideConfig,
    ev: &HvEvent,
) -> Result<(Plan, String), Outcome> {
    if ev.kind != EventKind::Restored {
        return Err(Outcome::Ignored {
            reason: format!("{} events need no decision", ev.kind.name()),
        });
    }
    let status = hv
        .vm(&ev.vm_id)
        .await
        .map_err(hv_outcome)?
        .ok_or_else(|| Outcome::Unknown {
            reason: format!("VM {} is not registered on this host", ev.vm_id),
        })?;
    let vm = &status.vm;
    let Some(cp) = status.current_checkpoint.as_ref() else {
        return Err(Outcome::Ignored {
            reason: "the VM has no current checkpoint".into(),
        });
    };
    if !glob_match(&cfg.rollback_pattern, &cp.name) {
        return Err(Outcome::Ignored {
            reason: format!(
                "current checkpoint '{}' does not match '{}'",
                cp.name, cfg.rollback_pattern
            ),
        });
    }
    let live: Vec<_> = vm
        .adapters
        .iter()
        .filter(|a| a.location == AdapterLocation::Live)
        .collect();
    let mut plan = Plan {
        vm_id: vm.id().to_string(),
        vm_name: vm.name.clone(),
        steps: Vec::new(),
    };
    match cfg.strategy {
        Strategy::BlogCompatible => {
            // exactly the published script: every checkpoint adapter set dynamic (also those
            // already dynamic, and of every checkpoint), then always turn off, wait, start
            for a in &vm.adapters {
                if let AdapterLocation::Checkpoint(c) = &a.location {
                    plan.steps.push(Step::SetMac {
                        adapter: AdapterRef {
                            vm_id: vm.id().to_string(),
                            adapter: a.name.clone(),
                            id: a.id.clone(),
                            checkpoint_id: Some(c.id.clone()),
                        },
                        old: Some(a.mac),
                        new: MacSetting::Dynamic,
                    });
                }
            }
            plan.steps.push(Step::TurnOff {
                vm_id: plan.vm_id.clone(),
            });
            plan.steps.push(Step::Wait {
                seconds: cfg.blog_wait.as_secs(),
            });
            plan.steps.push(Step::Start {
                vm_id: plan.vm_id.clone(),
            });
            Ok((
                plan,
                format!("rollback to '{}' (blog-compatible restart)", cp.name),
            ))
        }
        Strategy::Guard | Strategy::Observe => {
            let mut conflicts = Vec::new();
            for a in &live {
                let info = auth.mac(a.mac).await.map_err(|e| match e {
                    AuthorityError::Unreachable(m) => Outcome::Deferred { reason: m },
                    AuthorityError::Refused(m) => Outcome::Unknown { reason: m },
                })?;
                if let Some(why) = info.as_ref().and_then(|i| conflict_of(i, vm.id())) {
                    conflicts.push((*a, why));
                }
            }
            if conflicts.is_empty() {
                return Err(Outcome::Ignored {
                    reason: format!("no conflict for the {} live adapter(s)", live.len()),
                });
            }
            // adapters with an id are addressed by it; only nameless-id duplicates are ambiguous
            let names: Vec<&str> = conflicts
                .iter()
                .filter(|(a, _)| a.id.is_none())
                .map(|(a, _)| a.name.as_str())
                .collect();
            let mut dup = names.clone();
            dup.sort_unstable();
            dup.dedup();
            if dup.len() != names.len()
                || live
                    .iter()
                    .filter(|a| a.id.is_none() && names.contains(&a.name.as_str()))
                    .count()
                    != names.len()
            {
                return Err(Outcome::Unknown {
                    reason: "two live adapters share a name: cannot address them one by one".into(),
                });
            }
            match &vm.state {
                VmState::Running | VmState::Off => {}
                other => {
                    return Err(Outcome::Unknown {
                        reason: format!(
                            "VM is {other:?}: its MAC cannot be changed without discarding that state"
                        ),
                    });
                }
            }
            let running = vm.state == VmState::Running;
            if running {
                plan.steps.push(Step::TurnOff {
                    vm_id: plan.vm_id.clone(),
                });
            }
            let mut reasons = Vec::new();
            for (a, why) in &conflicts {
                let new = match &cfg.remedy {
                    Remedy::Dynamic => MacSetting::Dynamic,
                    Remedy::FreshStatic { pool } => {
                        let body = AllocateBody {
                            pool: Some(pool.clone()),
                            vm_id: vm.id().to_string(),
                            // one lease per adapter: by id, since names repeat
                            adapter_id: Some(a.id.clone().unwrap_or_else(|| a.name.clone())),
                            vm_name: Some(vm.name.clone()),
                            host: Some(cfg.host.clone()),
                            cluster: cfg.cluster.clone(),
                            mac: None,
                            count: None,
                            reason: Some(history_reason(&format!(
                                "{GUARD_REASON_PREFIX}{} of adapter '{}' ({why}) after \
                                 rollback event {} #{}",
                                a.mac, a.name, ev.channel, ev.record_id
                            ))),
                        };
                        let fresh = if cfg.dry_run || cfg.strategy == Strategy::Observe {
                            // never allocate for a plan that will not run
                            None
                        } else {
                            Some(auth.allocate(body).await.map_err(|e| match e {
                                AuthorityError::Unreachable(m) => Outcome::Deferred { reason: m },
                                AuthorityError::Refused(m) => Outcome::Unknown {
                                    reason: format!("no fresh MAC from pool {pool}: {m}"),
                                },
                            })?)
                        };
                        match fresh {
                            Some(m) if m == a.mac => {
                                return Err(Outcome::Unknown {
                                    reason: format!(
                                        "the authority gave {m} back for adapter '{}': it is this VM's own lease and also {why}",
                                        a.name
                                    ),
                                });
                            }
                            Some(m) => MacSetting::Static(m),
                            // the placeholder a dry-run prints: the pool's next free MAC
                            None => MacSetting::Static(Mac::ZERO),
                        }
                    }
                };
                reasons.push(format!("{} {}: {why}", a.name, a.mac));
                plan.steps.push(Step::SetMac {
                    adapter: AdapterRef {
                        vm_id: vm.id().to_string(),
                        adapter: a.name.clone(),
                        id: a.id.clone(),
                        checkpoint_id: None,
                    },
                    old: Some(a.mac),
                    new,
                });
            }
            if running {
                plan.steps.push(Step::Start {
                    vm_id: plan.vm_id.clone(),
                });
            }
            Ok((
                plan,
                format!(
                    "conflict after rollback to '{}': {}",
                    cp.name,
                    reasons.join("; ")
                ),
            ))
        }
    }
}

/// Runs a plan step by step. A failed step stops it; if the VM was turned off and not yet
/// started, one start is attempted so the VM is left as it was (no retries beyond that).
pub async fn execute<H: Hypervisor>(hv: &H, plan: Plan, reason: String, ev: &HvEvent) -> Outcome {
    let mut changes = Vec::new();
    let mut off = false;
    for (i, step) in plan.steps.iter().enumerate() {
        let r = match step {
            Step::TurnOff { vm_id } => hv.turn_off(vm_id).await.map(|_| off = true),
            Step::Start { vm_id } => hv.start(vm_id).await.map(|_| off = false),
            Step::Wait { seconds } => {
                hv.pause(Duration::from_secs(*seconds)).await;
                Ok(())
            }
            Step::SetMac { adapter, old, new } => {
                hv.set_adapter_mac(adapter, *new).await.map(|_| {
                    changes.push(Change {
                        vm_id: plan.vm_id.clone(),
                        vm_name: plan.vm_name.clone(),
                        adapter: adapter.clone(),
                        old: *old,
                        new: *new,
                        channel: ev.channel.clone(),
                        record_id: ev.record_id,
                    })
                })
            }
        };
        if let Err(e) = r {
            let left = if off {
                match hv.start(&plan.vm_id).await {
                    Ok(()) => "running again (started after the failure)".to_string(),
                    Err(e2) => format!("turned off (start after the failure failed too: {e2})"),
                }
            } else {
                "as it was before this step".to_string()
            };
            tracing::error!(
                "VM {}: step {} failed: {e}; left {left}",
                plan.vm_name,
                i + 1
            );
            return Outcome::Failed {
                plan,
                step: i,
                error: e.to_string(),
                left,
                changes,
            };
        }
    }
    Outcome::Done {
        plan,
        reason,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reasons_fit_the_authority_limit() {
        assert_eq!(history_reason("short"), "short");
        let long = "é".repeat(200);
        let cut = history_reason(&long);
        assert!(cut.len() <= 256 && cut.ends_with('…'), "{}", cut.len());
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "RDV_ROLLBACK*",
            "RDV_ROLLBACK - 10/14/2015 09:12"
        ));
        assert!(glob_match("RDV_ROLLBACK - *", "RDV_ROLLBACK - x"));
        assert!(!glob_match("RDV_ROLLBACK - *", "RDV_ROLLBACK"));
        // issue 17: case-insensitive, anywhere in the name by default
        assert!(glob_match("RDV_ROLLBACK*", "rdv_rollback"));
        assert!(glob_match(
            DEFAULT_ROLLBACK_PATTERN,
            "Pool A - RDV_Rollback"
        ));
        assert!(!glob_match(DEFAULT_ROLLBACK_PATTERN, "nightly"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
    }
}
