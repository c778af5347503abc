//! What happens in the cluster, independent of the strategy: provisioning, logoffs, cold
//! starts, load-balancing migrations, rolling host patches, collection re-creation — or the
//! blog's fixed script.
//!
//! The workload is generated once per run from its own random stream and replayed against each
//! strategy, so every strategy sees exactly the same users and admins. It refers to desktops by
//! *slot* (the collection's desktop number), never to a VM: re-creation gives a slot a new VM.
//! Strategies never move VMs, so the generator's placement is every strategy's placement.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::params::{BLOG_CHURN, Checked, DAY, HOUR, MINUTE, SECOND, Scenario};

/// One thing that happens to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// RDS creates a pooled desktop from the template on `host`, starts it and takes its
    /// `RDV_ROLLBACK` checkpoint.
    Provision { slot: u32, host: u32 },
    /// The collection is re-created from an updated template: the slot's VM is deleted and a
    /// new one provisioned on `host`.
    Recreate { slot: u32, host: u32 },
    /// An ordinary VM (no checkpoint) is created on `host` and started.
    CreateOther { slot: u32, host: u32 },
    /// The slot's VM is deleted.
    Delete { slot: u32 },
    /// The desktop's user logs off: RDS rolls it back to `RDV_ROLLBACK`.
    Logoff { slot: u32 },
    /// Live migration.
    Migrate { slot: u32, to: u32 },
    /// Turned off (first half of a cold start).
    Shutdown { slot: u32 },
    /// Turned on (second half of a cold start).
    Start { slot: u32 },
    /// The cluster restarts a VM of a failed host on another node: it was running there (the
    /// crash turned it off), moves, and is started — a cold start on `to`.
    Failover { slot: u32, to: u32 },
    /// A host goes down: drained for its reboot, or failed (its VMs are failed over first).
    HostDown { host: u32 },
    /// It is back.
    HostUp { host: u32 },
}

impl Action {
    /// What an incident this action started is attributed to.
    pub(crate) fn cause(self) -> &'static str {
        match self {
            Action::Logoff { .. } => "rollback",
            Action::Provision { .. } | Action::Recreate { .. } | Action::CreateOther { .. } => {
                "new VM"
            }
            Action::Start { .. } | Action::Shutdown { .. } => "cold start",
            Action::Failover { .. } => "failover",
            Action::Migrate { .. } => "live migration",
            Action::Delete { .. } | Action::HostDown { .. } | Action::HostUp { .. } => "other",
        }
    }
}

/// An action at a time (milliseconds since the start of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timed {
    pub at: u64,
    pub action: Action,
}

/// How much of each kind of thing happened; the same for every strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadCounts {
    pub desktops_provisioned: u64,
    pub desktops_recreated: u64,
    pub other_vms_created: u64,
    pub logoffs: u64,
    pub live_migrations: u64,
    pub cold_starts: u64,
    pub host_reboots: u64,
    pub host_failures: u64,
    pub vms_failed_over: u64,
}

/// The generated (or scripted) sequence of actions, in time order.
pub struct Workload {
    pub(crate) actions: Vec<Timed>,
    /// Slots used (desktops plus other VMs).
    pub(crate) slots: u32,
    pub counts: WorkloadCounts,
}

/// A discrete-event queue ordered by (time, sequence): equal times come out in the order they
/// went in, so a run never depends on how a heap breaks ties.
pub(crate) struct EventQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl<T> EventQueue<T> {
    pub fn new() -> EventQueue<T> {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    pub fn pop(&mut self) -> Option<(u64, T)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }
}

/// The generator's recurring processes.
#[derive(Clone, Copy, Debug)]
enum Proc {
    Provision(u32),
    Logoff(u32),
    ColdStart(u32),
    ColdStartEnd(u32),
    Balance,
    PatchRun,
    DrainStart(u32),
    DrainMove(u32, u32),
    HostBack(u32),
    FailbackMove(u32, u32),
    RecreateRun,
    RecreateStep(u32),
    OtherVm(u32),
    OtherGone(u32),
    Failure(u32),
    Repaired(u32),
}

struct Gen<'a> {
    c: &'a Checked,
    rng: &'a mut ChaCha8Rng,
    q: EventQueue<Proc>,
    out: Vec<Timed>,
    counts: WorkloadCounts,
    end: u64,
    hosts: u32,
    host_of: Vec<u32>,
    pos: Vec<u32>,
    /// Whether the slot has a VM (ordinary VMs are deleted at the end of their life).
    alive: Vec<bool>,
    host_vms: Vec<Vec<u32>>,
    up: Vec<bool>,
    draining: Option<u32>,
    drain_list: Vec<u32>,
}

impl Gen<'_> {
    /// An exponential gap for a Poisson process of `per_day` events per day; `None` when the
    /// rate is zero.
    fn gap(&mut self, per_day: f64) -> Option<u64> {
        if per_day <= 0.0 {
            return None;
        }
        let u: f64 = self.rng.random::<f64>();
        let days = -(1.0 - u).ln() / per_day;
        Some(((days * DAY as f64).ceil() as u64).max(1))
    }

    fn schedule_in(&mut self, now: u64, gap: Option<u64>, p: Proc) {
        if let Some(g) = gap {
            let at = now.saturating_add(g);
            if at < self.end {
                self.q.push(at, p);
            }
        }
    }

    fn emit(&mut self, at: u64, action: Action) {
        self.out.push(Timed { at, action });
    }

    fn place(&mut self, slot: u32, host: u32) {
        self.alive[slot as usize] = true;
        self.host_of[slot as usize] = host;
        self.pos[slot as usize] = self.host_vms[host as usize].len() as u32;
        self.host_vms[host as usize].push(slot);
    }

    fn unplace(&mut self, slot: u32) {
        self.alive[slot as usize] = false;
        let h = self.host_of[slot as usize] as usize;
        let p = self.pos[slot as usize] as usize;
        self.host_vms[h].swap_remove(p);
        if let Some(&moved) = self.host_vms[h].get(p) {
            self.pos[moved as usize] = p as u32;
        }
    }

    fn migrate(&mut self, at: u64, slot: u32, to: u32) {
        self.unplace(slot);
        self.place(slot, to);
        self.counts.live_migrations += 1;
        self.emit(at, Action::Migrate { slot, to });
    }

    fn eligible(&self, h: u32) -> bool {
        self.up[h as usize] && self.draining != Some(h)
    }

    /// The host with the fewest VMs among those that may take one (ties: the lowest number).
    fn least_loaded(&self, except: Option<u32>) -> Option<u32> {
        (0..self.hosts)
            .filter(|h| self.eligible(*h) && Some(*h) != except)
            .min_by_key(|h| (self.host_vms[*h as usize].len(), *h))
    }

    fn run(&mut self) {
        while let Some((t, p)) = self.q.pop() {
            self.step(t, p);
        }
    }

    fn step(&mut self, t: u64, p: Proc) {
        let w = self.c.params.clone();
        match p {
            Proc::Provision(slot) => {
                let host = slot % self.hosts;
                self.place(slot, host);
                self.counts.desktops_provisioned += 1;
                self.emit(t, Action::Provision { slot, host });
                let g = self.gap(w.logoffs_per_desktop_per_day);
                self.schedule_in(t, g, Proc::Logoff(slot));
                let g = self.gap(w.cold_starts_per_desktop_per_day);
                self.schedule_in(t, g, Proc::ColdStart(slot));
            }
            Proc::Logoff(slot) => {
                self.counts.logoffs += 1;
                self.emit(t, Action::Logoff { slot });
                let g = self.gap(w.logoffs_per_desktop_per_day);
                self.schedule_in(t, g, Proc::Logoff(slot));
            }
            Proc::ColdStart(slot) => {
                self.counts.cold_starts += 1;
                self.emit(t, Action::Shutdown { slot });
                self.schedule_in(
                    t,
                    Some(w.cold_start_off.ms().max(1)),
                    Proc::ColdStartEnd(slot),
                );
                let g = self.gap(w.cold_starts_per_desktop_per_day);
                self.schedule_in(t, g, Proc::ColdStart(slot));
            }
            Proc::ColdStartEnd(slot) => self.emit(t, Action::Start { slot }),
            Proc::Balance => {
                let sources: Vec<u32> = (0..self.hosts)
                    .filter(|h| self.eligible(*h) && !self.host_vms[*h as usize].is_empty())
                    .collect();
                if !sources.is_empty() {
                    let src = sources[self.rng.random_range(0..sources.len())];
                    let vms = &self.host_vms[src as usize];
                    let slot = vms[self.rng.random_range(0..vms.len())];
                    let targets: Vec<u32> = (0..self.hosts)
                        .filter(|h| *h != src && self.eligible(*h))
                        .collect();
                    if !targets.is_empty() {
                        let to = targets[self.rng.random_range(0..targets.len())];
                        self.migrate(t, slot, to);
                    }
                }
                let g = self.gap(w.balance_migrations_per_host_per_day * f64::from(self.hosts));
                self.schedule_in(t, g, Proc::Balance);
            }
            Proc::PatchRun => {
                self.q.push(t, Proc::DrainStart(0));
                if w.patch_every.ms() > 0 {
                    self.schedule_in(t, Some(w.patch_every.ms()), Proc::PatchRun);
                }
            }
            Proc::DrainStart(h) if !self.up[h as usize] => {
                // down after a failure: nothing to drain, patch the next host
                if h + 1 < self.hosts {
                    self.q
                        .push(t + w.migration_gap.ms(), Proc::DrainStart(h + 1));
                }
            }
            Proc::DrainStart(h) => {
                self.draining = Some(h);
                let mut list = self.host_vms[h as usize].clone();
                list.sort_unstable();
                self.drain_list = list;
                self.q.push(t, Proc::DrainMove(h, 0));
            }
            Proc::DrainMove(h, i) => {
                if let Some(&slot) = self.drain_list.get(i as usize) {
                    if self.alive[slot as usize]
                        && self.host_of[slot as usize] == h
                        && let Some(to) = self.least_loaded(Some(h))
                    {
                        self.migrate(t, slot, to);
                    }
                    self.q
                        .push(t + w.migration_gap.ms(), Proc::DrainMove(h, i + 1));
                } else {
                    // anything that arrived meanwhile (nothing should) leaves too
                    let left: Vec<u32> = self.host_vms[h as usize].clone();
                    for slot in left {
                        if let Some(to) = self.least_loaded(Some(h)) {
                            self.migrate(t, slot, to);
                        }
                    }
                    self.up[h as usize] = false;
                    self.counts.host_reboots += 1;
                    self.emit(t, Action::HostDown { host: h });
                    self.q.push(t + w.reboot.ms().max(1), Proc::HostBack(h));
                }
            }
            Proc::HostBack(h) => {
                self.up[h as usize] = true;
                self.emit(t, Action::HostUp { host: h });
                self.q.push(t, Proc::FailbackMove(h, 0));
            }
            Proc::FailbackMove(h, i) => {
                if let Some(&slot) = self.drain_list.get(i as usize) {
                    if self.alive[slot as usize] && self.host_of[slot as usize] != h {
                        self.migrate(t, slot, h);
                    }
                    self.q
                        .push(t + w.migration_gap.ms(), Proc::FailbackMove(h, i + 1));
                } else {
                    self.draining = None;
                    if h + 1 < self.hosts {
                        self.q
                            .push(t + w.migration_gap.ms(), Proc::DrainStart(h + 1));
                    }
                }
            }
            Proc::RecreateRun => {
                self.q.push(t, Proc::RecreateStep(0));
                if w.recreate_every.ms() > 0 {
                    self.schedule_in(t, Some(w.recreate_every.ms()), Proc::RecreateRun);
                }
            }
            Proc::OtherVm(host) => {
                // created on its host when that host takes VMs; a drained host does not
                if self.eligible(host) {
                    let slot = self.host_of.len() as u32;
                    self.host_of.push(0);
                    self.pos.push(0);
                    self.alive.push(false);
                    self.place(slot, host);
                    self.counts.other_vms_created += 1;
                    self.emit(t, Action::CreateOther { slot, host });
                    self.schedule_in(t, Some(w.other_vm_lifetime.ms()), Proc::OtherGone(slot));
                }
                let g = self.gap(w.other_vms_per_host_per_day);
                self.schedule_in(t, g, Proc::OtherVm(host));
            }
            Proc::Failure(h) => {
                if self.eligible(h) && (0..self.hosts).any(|o| o != h && self.eligible(o)) {
                    self.up[h as usize] = false;
                    self.counts.host_failures += 1;
                    self.emit(t, Action::HostDown { host: h });
                    let mut victims = self.host_vms[h as usize].clone();
                    victims.sort_unstable();
                    for (i, slot) in victims.into_iter().enumerate() {
                        let Some(to) = self.least_loaded(Some(h)) else {
                            break;
                        };
                        self.unplace(slot);
                        self.place(slot, to);
                        self.counts.vms_failed_over += 1;
                        let at = t + (i as u64 + 1) * w.failover_gap.ms();
                        self.out.push(Timed {
                            at,
                            action: Action::Failover { slot, to },
                        });
                    }
                    self.q
                        .push(t + w.failure_repair.ms().max(1), Proc::Repaired(h));
                }
                let g = self.gap(w.host_failures_per_host_per_year / 365.0);
                self.schedule_in(t, g, Proc::Failure(h));
            }
            Proc::Repaired(h) => {
                self.up[h as usize] = true;
                self.emit(t, Action::HostUp { host: h });
            }
            Proc::OtherGone(slot) => {
                self.unplace(slot);
                self.emit(t, Action::Delete { slot });
            }
            Proc::RecreateStep(slot) => {
                self.unplace(slot);
                let host = self
                    .least_loaded(None)
                    .unwrap_or(self.host_of[slot as usize]);
                self.place(slot, host);
                self.counts.desktops_recreated += 1;
                self.emit(t, Action::Recreate { slot, host });
                if slot + 1 < w.desktops as u32 {
                    self.q
                        .push(t + w.recreate_gap.ms(), Proc::RecreateStep(slot + 1));
                }
            }
        }
    }
}

/// The workload of a run: the blog's script, or generated from the parameters.
pub fn generate(c: &Checked, rng: &mut ChaCha8Rng) -> Workload {
    if c.params.scenario == Scenario::Blog {
        return blog();
    }
    let p = &c.params;
    let hosts = c.hosts.len() as u32;
    let desktops = p.desktops as u32;
    let end = p.duration.ms();
    let mut g = Gen {
        c,
        rng,
        q: EventQueue::new(),
        out: Vec::new(),
        counts: WorkloadCounts::default(),
        end,
        hosts,
        host_of: vec![0; desktops as usize],
        pos: vec![0; desktops as usize],
        alive: vec![false; desktops as usize],
        host_vms: vec![Vec::new(); hosts as usize],
        up: vec![true; hosts as usize],
        draining: None,
        drain_list: Vec::new(),
    };
    // RDS provisions the collection during the first hour, round-robin over the hosts.
    let window = HOUR.min(end / 2).max(1);
    for slot in 0..desktops {
        g.q.push(
            u64::from(slot) * window / u64::from(desktops),
            Proc::Provision(slot),
        );
    }
    if hosts > 1 {
        let gap = g.gap(p.balance_migrations_per_host_per_day * f64::from(hosts));
        g.schedule_in(window, gap, Proc::Balance);
        if p.patch_every.ms() > 0 && p.patch_first.ms() < end {
            g.q.push(p.patch_first.ms().max(window), Proc::PatchRun);
        }
    }
    for h in 0..hosts {
        let gap = g.gap(p.other_vms_per_host_per_day);
        g.schedule_in(window, gap, Proc::OtherVm(h));
    }
    if hosts > 1 {
        for h in 0..hosts {
            let gap = g.gap(p.host_failures_per_host_per_year / 365.0);
            g.schedule_in(window, gap, Proc::Failure(h));
        }
    }
    if p.recreate_every.ms() > 0 && p.recreate_first.ms() < end {
        g.q.push(p.recreate_first.ms().max(window), Proc::RecreateRun);
    }
    g.run();
    let slots = g.host_of.len() as u32;
    let counts = g.counts;
    let mut actions = g.out;
    // Failovers are emitted ahead of their time (a few seconds each); a stable sort by time
    // keeps everything else in emission order.
    actions.sort_by_key(|a| a.at);
    actions.retain(|a| a.at < end);
    Workload {
        actions,
        slots,
        counts,
    }
}

/// The seed's sequence on two hosts (node 1 = host 0, node 2 = host 1):
///
/// 1. 00:00 node 1 provisions the desktop: it gets node 1's first dynamic MAC, and its
///    `RDV_ROLLBACK` checkpoint freezes that MAC ("A desktop that is created on the first node
///    of the cluster gets a MAC address from that node's dynamic MAC pool").
/// 2. 01:00 the desktop live-migrates to node 2 and keeps its MAC.
/// 3. 02:00 it is turned off and, 02:01, on again: node 2 re-checks the MAC and gives it one of
///    its own ("as soon as that VM is rebooted, it will grab a new MAC address from the node
///    it's currently on"). Node 1's first MAC is now used by no VM on node 1.
/// 4. 03:00 onwards node 1 creates and deletes 255 VMs, walking its round-robin cursor once
///    around its 256-address range.
/// 5. 04:00 node 1 creates a new VM; wrapping around, it gets the desktop's original MAC
///    ("the first node will give that MAC address to a new VM").
/// 6. 05:00 the desktop's user logs off; RDS rolls it back to `RDV_ROLLBACK` and it comes back
///    with the frozen MAC ("the pooled desktop on the second node will revert to that same MAC
///    address when performing the rollback") — two powered-on VMs with one MAC.
pub fn blog() -> Workload {
    let mut actions = vec![
        Timed {
            at: 0,
            action: Action::Provision { slot: 0, host: 0 },
        },
        Timed {
            at: HOUR,
            action: Action::Migrate { slot: 0, to: 1 },
        },
        Timed {
            at: 2 * HOUR,
            action: Action::Shutdown { slot: 0 },
        },
        Timed {
            at: 2 * HOUR + MINUTE,
            action: Action::Start { slot: 0 },
        },
    ];
    for i in 0..BLOG_CHURN as u32 {
        let at = 3 * HOUR + u64::from(i) * 10 * SECOND;
        actions.push(Timed {
            at,
            action: Action::CreateOther {
                slot: 1 + i,
                host: 0,
            },
        });
        actions.push(Timed {
            at: at + 5 * SECOND,
            action: Action::Delete { slot: 1 + i },
        });
    }
    let x = 1 + BLOG_CHURN as u32;
    actions.push(Timed {
        at: 4 * HOUR,
        action: Action::CreateOther { slot: x, host: 0 },
    });
    actions.push(Timed {
        at: 5 * HOUR,
        action: Action::Logoff { slot: 0 },
    });
    Workload {
        actions,
        slots: x + 1,
        counts: WorkloadCounts {
            desktops_provisioned: 1,
            other_vms_created: BLOG_CHURN + 1,
            logoffs: 1,
            live_migrations: 1,
            cold_starts: 1,
            ..WorkloadCounts::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_orders_by_time_then_insertion() {
        let mut q = EventQueue::new();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        q.push(5, "d");
        let out: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(out, vec![(1, "a"), (5, "b"), (5, "c"), (5, "d")]);
    }
}
