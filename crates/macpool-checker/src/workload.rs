//! The clients: each one a sequential task with its own VMs and its own host, talking to a
//! random live replica per request, logging every request with its outcome.
//!
//! Outcomes are three-valued. `ok` and `refused` (a 4xx problem: nothing changed) are known;
//! anything else — a connection error, a reset by a killed replica, a timeout, a 5xx — is
//! `unknown`: the request may or may not have been applied, and it is never counted as
//! acknowledged. The client retries an unknown request on another replica; every request the
//! API offers is safe to resend (allocate returns the same lease for the same VM, a second
//! release or unhold answers `not-found`, a resent inventory generation is recognised).
//!
//! From the acknowledged answers each client keeps a model of its own VMs (leased with MAC m,
//! not leased, or unknown after an unknown outcome) and records:
//! - owner intervals: from the acknowledgement of a lease or hold to the *start* of the first
//!   later request that might have ended it — the time during which it was certainly live;
//! - acknowledged allocations and releases with their request times, for the cooldown check;
//! - the final model, for "every acknowledged lease is present".

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use macpool_api::dto::*;
use macpool_client::{Client, ClientError};
use macpool_core::Mac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::checks::{self, AllocAck, Holding, Interval, ReleaseAck, Violation};
use crate::replicas::Cluster;

/// How long one operation keeps retrying unknown outcomes before it is left unknown.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Most manual holds a client keeps at once.
const MAX_HOLDS: usize = 6;
/// MACs a client remembers having leased, to hold after their release.
const RECENT_MACS: usize = 16;
/// Leases a client keeps rather than releasing them (inventories may still release them).
const KEEP_LEASED: usize = 2;
/// After an allocation refused because the pool is exhausted.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(25);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Allocate,
    Release,
    Hold,
    Unhold,
    Inventory,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Allocate,
        Kind::Release,
        Kind::Hold,
        Kind::Unhold,
        Kind::Inventory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Allocate => "allocate",
            Kind::Release => "release",
            Kind::Hold => "hold",
            Kind::Unhold => "unhold",
            Kind::Inventory => "inventory",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// A problem+json with a 4xx status: the request changed nothing.
    Refused {
        status: u16,
        problem: String,
    },
    /// No answer, or a 5xx: applied or not, nobody knows.
    Unknown {
        reason: String,
    },
}

/// One HTTP request and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub client: usize,
    /// The client's operation number; retries of one operation share it.
    pub op: u64,
    pub attempt: u32,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub replica: String,
    /// Microseconds since the workload started.
    pub start_us: u64,
    pub end_us: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A VM as its client last knew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Certainly no lease (acknowledged release, or `not-found`).
    Free,
    /// Certainly leased with this MAC (acknowledged).
    Leased(Mac),
    /// An operation on it ended with an unknown outcome.
    Unknown,
}

#[derive(Clone, Debug)]
struct Vm {
    id: String,
    state: VmState,
    /// While leased: since when certainly (µs).
    live_since: Option<u64>,
    /// The MAC an inventory released (the authority remembers it as departed).
    departed: Option<Mac>,
}

#[derive(Clone, Debug)]
struct ManualHold {
    vm: usize,
    mac: Mac,
    reference: String,
    /// Since when certainly placed; `None` after an unknown outcome.
    since: Option<u64>,
}

/// Everything one client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub requests: Vec<RequestRecord>,
    /// Operations (retries of one count once) and how many got a definite answer (ok or a
    /// refusal) rather than ending unknown.
    pub operations: u64,
    pub answered: u64,
    pub intervals: Vec<Interval>,
    pub allocs: Vec<AllocAck>,
    pub releases: Vec<ReleaseAck>,
    /// (VM, what the client last knew for certain).
    pub final_vms: Vec<(String, VmState)>,
    pub violations: Vec<Violation>,
}

enum Req {
    Allocate(AllocateBody),
    Release(ReleaseBody),
    Hold(HoldBody),
    Unhold(UnholdBody),
    Inventory(InventoryBody),
}

enum Resp {
    Allocate(AllocationResult),
    Release(Vec<ReleasedInfo>),
    Hold,
    Unhold,
    Inventory(InventoryResult),
}

enum Answer {
    Ok(Resp),
    Refused { status: u16 },
    Unknown,
}

struct Op {
    start: u64,
    end: u64,
    /// Some attempt had an unknown outcome (an earlier attempt may have been applied).
    uncertain: bool,
    answer: Answer,
}

pub struct Worker {
    id: usize,
    rng: StdRng,
    cluster: Arc<Cluster>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    pool: String,
    host: String,
    vms: Vec<Vm>,
    holds: Vec<ManualHold>,
    recent: VecDeque<(usize, Mac)>,
    generation: u64,
    next_ref: u64,
    log: ClientLog,
}

fn parse_mac(s: &str) -> Option<Mac> {
    Mac::parse(s).ok()
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        seed: u64,
        vms: usize,
        pool: String,
        cluster: Arc<Cluster>,
        t0: Instant,
        stop: Arc<AtomicBool>,
    ) -> Worker {
        Worker {
            id,
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            cluster,
            t0,
            stop,
            pool,
            host: format!("checker-host-{id}"),
            vms: (0..vms)
                .map(|k| Vm {
                    id: format!("checker-c{id}-vm{k}"),
                    state: VmState::Free,
                    live_since: None,
                    departed: None,
                })
                .collect(),
            holds: Vec::new(),
            recent: VecDeque::new(),
            generation: 0,
            next_ref: 0,
            log: ClientLog::default(),
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Runs operations until told to stop, then hands back the log.
    pub async fn run(mut self) -> ClientLog {
        while !self.stop.load(Ordering::Relaxed) {
            self.step().await;
        }
        for i in 0..self.vms.len() {
            if let (VmState::Leased(mac), Some(since)) =
                (&self.vms[i].state, self.vms[i].live_since)
            {
                let mac = *mac;
                self.log.intervals.push(Interval {
                    mac,
                    vm: self.vms[i].id.clone(),
                    holding: Holding::Lease,
                    from_us: since,
                    to_us: None,
                });
            }
        }
        for h in std::mem::take(&mut self.holds) {
            if let Some(since) = h.since {
                self.log.intervals.push(Interval {
                    mac: h.mac,
                    vm: self.vms[h.vm].id.clone(),
                    holding: Holding::Hold,
                    from_us: since,
                    to_us: None,
                });
            }
        }
        self.log.final_vms = self
            .vms
            .iter()
            .map(|v| (v.id.clone(), v.state.clone()))
            .collect();
        self.log
    }

    async fn step(&mut self) {
        let can_alloc = self
            .vms
            .iter()
            .any(|v| !matches!(v.state, VmState::Leased(_)));
        let can_release = self.vms.iter().any(|v| self.may_release(v));
        let can_hold = self.holds.len() < MAX_HOLDS && (!self.recent.is_empty());
        let can_unhold = !self.holds.is_empty();
        let roll = self.rng.random_range(0..100);
        let kind = match roll {
            0..35 if can_alloc => Kind::Allocate,
            35..60 if can_release => Kind::Release,
            60..72 if can_hold => Kind::Hold,
            72..84 if can_unhold => Kind::Unhold,
            84..100 => Kind::Inventory,
            _ if can_alloc => Kind::Allocate,
            _ => Kind::Release,
        };
        self.log.operations += 1;
        match kind {
            Kind::Allocate => self.allocate().await,
            Kind::Release => self.release().await,
            Kind::Hold => self.hold().await,
            Kind::Unhold => self.unhold().await,
            Kind::Inventory => self.inventory().await,
        }
    }

    fn pick_vm(&mut self, want: impl Fn(&Vm) -> bool) -> Option<usize> {
        let idx: Vec<usize> = (0..self.vms.len())
            .filter(|&i| want(&self.vms[i]))
            .collect();
        (!idx.is_empty()).then(|| idx[self.rng.random_range(0..idx.len())])
    }

    /// Ends the certain-live interval of VM `i`'s lease at `at` (the start of a request that may
    /// have ended it).
    fn end_lease(&mut self, i: usize, at: u64) {
        if let (VmState::Leased(mac), Some(since)) = (&self.vms[i].state, self.vms[i].live_since) {
            self.log.intervals.push(Interval {
                mac: *mac,
                vm: self.vms[i].id.clone(),
                holding: Holding::Lease,
                from_us: since,
                to_us: Some(at),
            });
        }
        self.vms[i].live_since = None;
    }

    fn set_leased(&mut self, i: usize, mac: Mac, since: u64) {
        self.vms[i].state = VmState::Leased(mac);
        self.vms[i].live_since = Some(since);
        self.vms[i].departed = None;
        self.recent.retain(|&(v, m)| !(v == i && m == mac));
        self.recent.push_back((i, mac));
        if self.recent.len() > RECENT_MACS {
            self.recent.pop_front();
        }
    }

    fn violation(&mut self, check: &'static str, detail: String) {
        self.log.violations.push(Violation {
            check: check.into(),
            detail,
        });
    }

    async fn allocate(&mut self) {
        let Some(i) = self.pick_vm(|v| !matches!(v.state, VmState::Leased(_))) else {
            return;
        };
        let vm = self.vms[i].id.clone();
        let before = self.vms[i].state.clone();
        let body = AllocateBody {
            pool: Some(self.pool.clone()),
            vm_id: vm.clone(),
            vm_name: Some(format!("checker vm {vm}")),
            host: Some(self.host.clone()),
            ..AllocateBody::default()
        };
        let op = self
            .execute(Kind::Allocate, Some(&vm), Req::Allocate(body))
            .await;
        match op.answer {
            Answer::Ok(Resp::Allocate(res)) => {
                let Some(a) = res.allocations.first() else {
                    self.violation(
                        "workload",
                        format!("allocate {vm}: no allocation in the answer"),
                    );
                    self.vms[i].state = VmState::Unknown;
                    return;
                };
                let Some(mac) = parse_mac(&a.lease.mac) else {
                    self.violation(
                        "workload",
                        format!("allocate {vm}: bad MAC {}", a.lease.mac),
                    );
                    self.vms[i].state = VmState::Unknown;
                    return;
                };
                if before == VmState::Free && a.existing && !op.uncertain {
                    self.violation(
                        checks::RELEASE_KEPT,
                        format!(
                            "VM {vm}: its lease was released (acknowledged) and nothing leased it \
                             since, but allocate answered {mac} as its existing lease: the \
                             release was lost"
                        ),
                    );
                }
                self.log.allocs.push(AllocAck {
                    vm: vm.clone(),
                    mac,
                    start_us: op.start,
                    end_us: op.end,
                    existing: a.existing,
                });
                self.set_leased(i, mac, op.end);
            }
            Answer::Refused { .. } if !op.uncertain => {
                // The pool is exhausted (everything leased, held or cooling): wait a little
                // for cooldowns to end instead of asking in a tight loop.
                tokio::time::sleep(EXHAUSTED_PAUSE).await;
            }
            _ => self.vms[i].state = VmState::Unknown,
        }
    }

    fn leased(&self) -> usize {
        self.vms
            .iter()
            .filter(|v| matches!(v.state, VmState::Leased(_)))
            .count()
    }

    /// Whether `v` is a candidate for a release. Each client keeps a few leases, so that
    /// "every acknowledged lease is present" has something to look for even when the pool is
    /// exhausted and most allocations are refused.
    fn may_release(&self, v: &Vm) -> bool {
        match v.state {
            VmState::Free => false,
            VmState::Leased(_) => self.leased() > KEEP_LEASED,
            VmState::Unknown => true,
        }
    }

    async fn release(&mut self) {
        let keep = self.leased() <= KEEP_LEASED;
        let Some(i) = self.pick_vm(|v| match v.state {
            VmState::Free => false,
            VmState::Leased(_) => !keep,
            VmState::Unknown => true,
        }) else {
            return;
        };
        let vm = self.vms[i].id.clone();
        let before = self.vms[i].state.clone();
        let body = ReleaseBody {
            vm_id: Some(vm.clone()),
            ..ReleaseBody::default()
        };
        let op = self
            .execute(Kind::Release, Some(&vm), Req::Release(body))
            .await;
        self.end_lease(i, op.start);
        match op.answer {
            Answer::Ok(Resp::Release(released)) => {
                for r in &released {
                    if let Some(mac) = parse_mac(&r.lease.mac) {
                        self.log.releases.push(ReleaseAck {
                            vm: vm.clone(),
                            mac,
                            start_us: op.start,
                            end_us: op.end,
                        });
                        if let VmState::Leased(m) = before
                            && m != mac
                        {
                            self.violation(
                                checks::LEASE_PRESENT,
                                format!(
                                    "VM {vm} was acknowledged {m} but its release released {mac}"
                                ),
                            );
                        }
                    }
                }
                self.vms[i].state = VmState::Free;
                self.vms[i].departed = None;
            }
            Answer::Refused { status: 404, .. } => {
                if let (VmState::Leased(m), false) = (&before, op.uncertain) {
                    let m = *m;
                    self.violation(
                        checks::LEASE_PRESENT,
                        format!(
                            "VM {vm} was acknowledged {m} and nothing released it, but its \
                             release (op {} of client {}) answered not-found",
                            self.log.operations, self.id
                        ),
                    );
                }
                self.vms[i].state = VmState::Free;
            }
            Answer::Refused { .. } if !op.uncertain => {
                if let VmState::Leased(_) = before {
                    // Nothing changed: the lease is still certainly live, from now on.
                    self.vms[i].live_since = Some(op.end);
                }
            }
            _ => self.vms[i].state = VmState::Unknown,
        }
    }

    async fn hold(&mut self) {
        let (i, mac) = self.recent[self.rng.random_range(0..self.recent.len())];
        self.next_ref += 1;
        let reference = format!("chk-{}-{}", self.id, self.next_ref);
        let vm = self.vms[i].id.clone();
        let body = HoldBody {
            mac: mac.to_string(),
            vm_id: vm.clone(),
            reason: "checkpoint".into(),
            reference: Some(reference.clone()),
        };
        let op = self.execute(Kind::Hold, Some(&vm), Req::Hold(body)).await;
        match op.answer {
            Answer::Ok(_) => {
                self.holds.push(ManualHold {
                    vm: i,
                    mac,
                    reference,
                    since: Some(op.end),
                });
            }
            Answer::Refused { .. } if !op.uncertain => {
                // Another VM has the MAC now: refused, and rightly so.
            }
            _ => self.holds.push(ManualHold {
                vm: i,
                mac,
                reference,
                since: None,
            }),
        }
    }

    async fn unhold(&mut self) {
        let k = self.rng.random_range(0..self.holds.len());
        let h = self.holds[k].clone();
        let vm = self.vms[h.vm].id.clone();
        let body = UnholdBody {
            mac: h.mac.to_string(),
            vm_id: vm.clone(),
            reason: Some("checkpoint".into()),
            reference: Some(h.reference.clone()),
        };
        let op = self
            .execute(Kind::Unhold, Some(&vm), Req::Unhold(body))
            .await;
        if let Some(since) = h.since {
            self.log.intervals.push(Interval {
                mac: h.mac,
                vm: vm.clone(),
                holding: Holding::Hold,
                from_us: since,
                to_us: Some(op.start),
            });
        }
        match op.answer {
            Answer::Ok(_) => {
                self.holds.remove(k);
            }
            Answer::Refused { status: 404, .. } => {
                if h.since.is_some() && !op.uncertain {
                    self.violation(
                        checks::ONE_OWNER,
                        format!(
                            "VM {vm}'s acknowledged hold {} on {} vanished: unhold answered \
                             not-found",
                            h.reference, h.mac
                        ),
                    );
                }
                self.holds.remove(k);
            }
            Answer::Refused { .. } if !op.uncertain => {
                self.holds[k].since = h.since.map(|_| op.end);
            }
            _ => self.holds[k].since = None,
        }
    }

    async fn inventory(&mut self) {
        self.generation += 1;
        let mut listed: Vec<usize> = Vec::new();
        let mut vms = Vec::new();
        for i in 0..self.vms.len() {
            let VmState::Leased(mac) = self.vms[i].state else {
                continue;
            };
            if !self.rng.random_bool(0.75) {
                continue;
            }
            listed.push(i);
            vms.push(self.inventory_vm(i, mac));
        }
        // Now and then a VM an earlier inventory released comes back live with its MAC (a
        // migration seen in the wrong order): the authority restores its lease.
        let restore = if self.rng.random_bool(0.3) {
            self.pick_vm(|v| v.state == VmState::Free && v.departed.is_some())
        } else {
            None
        };
        if let Some(i) = restore {
            let mac = self.vms[i].departed.unwrap();
            listed.push(i);
            vms.push(self.inventory_vm(i, mac));
        }
        let body = InventoryBody {
            generation: self.generation,
            vms,
            ..InventoryBody::default()
        };
        let op = self
            .execute(Kind::Inventory, None, Req::Inventory(body))
            .await;
        let mut certain = !op.uncertain;
        match &op.answer {
            Answer::Ok(Resp::Inventory(res)) => {
                if res.notes.iter().any(|n| n.contains("already applied")) {
                    certain = false;
                }
                for r in &res.released {
                    let (Some(i), Some(mac)) =
                        (self.vm_index(&r.lease.vm_id), parse_mac(&r.lease.mac))
                    else {
                        continue;
                    };
                    self.end_lease(i, op.start);
                    self.log.releases.push(ReleaseAck {
                        vm: r.lease.vm_id.clone(),
                        mac,
                        start_us: op.start,
                        end_us: op.end,
                    });
                    self.vms[i].state = VmState::Free;
                    self.vms[i].departed = Some(mac);
                }
                for b in &res.bound {
                    let (Some(i), Some(mac)) = (self.vm_index(&b.vm_id), parse_mac(&b.mac)) else {
                        continue;
                    };
                    match self.vms[i].state {
                        VmState::Leased(m) if m == mac => {}
                        VmState::Leased(m) => self.violation(
                            checks::LEASE_PRESENT,
                            format!(
                                "VM {} leased {m} was bound to {mac} by an inventory",
                                b.vm_id
                            ),
                        ),
                        _ => self.set_leased(i, mac, op.end),
                    }
                }
            }
            Answer::Refused { .. } if certain => return,
            _ => certain = false,
        }
        if certain {
            return;
        }
        // What this inventory did is not known for sure: a bound lease of a VM it did not list
        // may have been released, the VM brought back may have its lease again. (A listed VM's
        // lease is never released by it, and one the answer bound is certainly there.)
        for i in 0..self.vms.len() {
            if matches!(self.vms[i].state, VmState::Leased(_)) && !listed.contains(&i) {
                self.end_lease(i, op.start);
                self.vms[i].state = VmState::Unknown;
            }
        }
        if let Some(i) = restore
            && self.vms[i].state == VmState::Free
        {
            self.vms[i].state = VmState::Unknown;
        }
    }

    fn vm_index(&self, id: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.id.eq_ignore_ascii_case(id))
    }

    fn inventory_vm(&mut self, i: usize, mac: Mac) -> InventoryVm {
        let id = self.vms[i].id.clone();
        let mut adapters = vec![InventoryAdapter {
            name: "eth0".into(),
            mac: mac.to_string(),
            dynamic: false,
            checkpoint: None,
        }];
        if self.rng.random_bool(0.3) {
            adapters.push(InventoryAdapter {
                name: "eth0".into(),
                mac: mac.to_string(),
                dynamic: false,
                checkpoint: Some(InventoryCheckpoint {
                    id: format!("cp-{id}"),
                    name: "before upgrade".into(),
                    ..InventoryCheckpoint::default()
                }),
            });
        }
        InventoryVm {
            name: format!("checker vm {id}"),
            id,
            state: Some("running".into()),
            adapters,
        }
    }

    /// Sends one operation, retrying unknown outcomes on another replica; logs every request.
    async fn execute(&mut self, kind: Kind, vm: Option<&str>, req: Req) -> Op {
        let op_no = self.log.operations;
        let start = self.now();
        let give_up = Instant::now() + GIVE_UP_AFTER;
        let mut attempt = 0;
        let mut uncertain = false;
        let mut avoid = None;
        let mut backoff = Duration::from_millis(20);
        loop {
            let Some(ep) = self.cluster.pick(&mut self.rng, avoid) else {
                if Instant::now() > give_up {
                    return Op {
                        start,
                        end: self.now(),
                        uncertain,
                        answer: Answer::Unknown,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            attempt += 1;
            let s = self.now();
            let result = send(&ep.client, &self.host, &req).await;
            let e = self.now();
            let (outcome, answer) = match result {
                Ok(resp) => (Outcome::Ok, Some(Answer::Ok(resp))),
                Err(ClientError::Problem(p)) if p.status < 500 => (
                    Outcome::Refused {
                        status: p.status,
                        problem: p.slug().to_string(),
                    },
                    Some(Answer::Refused { status: p.status }),
                ),
                Err(ClientError::Problem(p)) => (
                    Outcome::Unknown {
                        reason: format!("{} {}: {}", p.status, p.slug(), p.detail),
                    },
                    None,
                ),
                Err(err) => (
                    Outcome::Unknown {
                        reason: err.to_string(),
                    },
                    None,
                ),
            };
            let mac = match (&answer, &req) {
                (Some(Answer::Ok(Resp::Allocate(r))), _) => {
                    r.allocations.first().map(|a| a.lease.mac.clone())
                }
                (Some(Answer::Ok(Resp::Release(r))), _) => r.first().map(|x| x.lease.mac.clone()),
                (_, Req::Hold(b)) => Some(b.mac.clone()),
                (_, Req::Unhold(b)) => Some(b.mac.clone()),
                _ => None,
            };
            self.log.requests.push(RequestRecord {
                client: self.id,
                op: op_no,
                attempt,
                kind,
                vm: vm.map(str::to_string),
                mac,
                replica: ep.name(),
                start_us: s,
                end_us: e,
                outcome,
            });
            if let Some(answer) = answer {
                self.log.answered += 1;
                return Op {
                    start,
                    end: e,
                    uncertain,
                    answer,
                };
            }
            uncertain = true;
            if Instant::now() > give_up {
                return Op {
                    start,
                    end: e,
                    uncertain,
                    answer: Answer::Unknown,
                };
            }
            avoid = Some((ep.slot, ep.incarnation));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

async fn send(c: &Client, host: &str, req: &Req) -> Result<Resp, ClientError> {
    Ok(match req {
        Req::Allocate(b) => Resp::Allocate(c.allocate(b).await?),
        Req::Release(b) => Resp::Release(c.release(b).await?),
        Req::Hold(b) => {
            c.hold(b).await?;
            Resp::Hold
        }
        Req::Unhold(b) => {
            c.unhold(b).await?;
            Resp::Unhold
        }
        Req::Inventory(b) => Resp::Inventory(c.put_inventory(host, b).await?),
    })
}
