//! `macpool sim`: a seeded discrete-event simulation of a Hyper-V failover cluster running RDS
//! pooled desktops, replayed under each strategy, with the real agent and the real authority
//! core in the loop.
//!
//! ```text
//!  workload (seeded, once) ──▶ per strategy: Cluster ◀── HostView (agent's Hypervisor trait)
//!                                  │ events                 ▲
//!                                  ▼                        │ plans
//!                         Agents ── decide::handle_event ───┘
//!                            │ AuthorityView (decide::Authority) / inventory pushes
//!                            ▼
//!                  macpool_core::authority::Authority (in memory, simulated clock)
//! ```
//!
//! - [`params`]: every knob, the `blog` / `campus` / `large` presets, and the up-front checks.
//! - [`workload`]: what users and admins do (strategy-independent), or the blog's script.
//! - [`cluster`]: the Hyper-V model and the network's view of it (duplicates, addresses).
//! - [`hv`]: the cluster as the agent's [`macpool_agent::Hypervisor`], one view per host.
//! - [`authority`]: the core authority behind the agent's `decide::Authority`.
//! - [`agent`]: the agents' reactions to events; the only place the simulator calls macpool.
//! - [`engine`]: the event loop and the measurements; [`report`] and `html` render them.
//!
//! # Determinism
//!
//! Everything random comes from ChaCha8 streams (`rand_chacha`, whose output is fixed by its
//! algorithm, unlike `StdRng`) seeded from `seed`: stream 0 generates the workload, each
//! strategy draws from a stream named after it. Events are ordered by (time, sequence). Nothing
//! reads a clock. The same seed and parameters give byte-identical `--json`.
//!
//! # The agent in the loop, and one choice about time
//!
//! `decide::execute` pauses `blog_wait` (5 s, the published script's pause) between turn-off
//! and start, through `Hypervisor::pause`; the simulated hosts' pause completes at once, so the
//! agents' futures run on a current-thread Tokio runtime without timers (no paused clock, no
//! tokio `test-util` in the shipped binary; `tests/no_test_util.rs`). A forced restart's whole
//! user-visible outage, the wait included, is accounted as one draw from
//! `[restart_outage_min, restart_outage_max]` (default 15–30 s, the seed's "This entire
//! procedure occurs over the course of 15-30 seconds"); agents react within the simulated
//! instant of the event.
//!
//! # The simulated deployment
//!
//! One agent per host, driven as `macpool agent`'s service loop drives it
//! (`macpool_agent::agent::run`, timing from its `AgentConfig::new`), pass by pass on the
//! simulated clock: [`macpool_agent::decide::handle_event`] on every restore (guard,
//! blog-compatible); [`macpool_agent::delegate::tick`] at start, after created/started events
//! and on the timer (delegate); and the host's **whole inventory** pushed at start, half a
//! second after a VM event (debounced: the first event of a burst sets the time, as the agent's
//! report queue does; the push goes out at the loop's next pass, after that event's decision)
//! and every `inventory_interval` (the agent's `--inventory-every`, 60 s). See [`agent`].
//!
//! That is all the authority learns about the hosts: nothing registers the MACs Hyper-V hands
//! out. The authority is the core in memory with the pools the README's deployment creates
//! (see [`authority`]): guard's `rds-static`, delegate's `host-blocks`; the hosts' own ranges
//! are in no pool. Guard's question about a restored MAC is answered with every VM the hosts'
//! latest inventories show with it (`seen`: live or in a checkpoint) and the checkpoint holds
//! those inventories placed — so a VM whose host has not pushed since it got the MAC is not
//! seen yet, as with the real agent (`unseen_conflicts` counts such restores).
//!
//! Most pushes resend the host's last document (the timer's; a rollback's, whose desktop
//! comes back running with the MAC it had). The simulator hands those to the core only when
//! the core could do something with them, and counts the others as sent: a resend changes
//! nothing but the stored generation and receive time unless what kept one of its checkpoint
//! holds out (another VM's lease or hold of that MAC) was removed since, or a draining block
//! could be freed or waits for the host's report (`SimAuthority::resend_is_void` has the
//! whole argument). The property tests hand every
//! push to the core, check that each resend judged void changed nothing, and compare the
//! results with the normal run's: identical.
//!
//! # Modelled rules and their sources
//!
//! `hyperv.md` is `shared/reference/hyperv.md`; "seed" is the blog post the project started
//! from (`shared/seed/`); `\[likely\]` marks what hyperv.md itself rates as likely.
//!
//! | rule | source | where |
//! |---|---|---|
//! | Each host has its own dynamic range; by default `00-15-5D-<ip3>-<ip4>-00..FF`, 256 addresses, from the host's IPv4 address (`macpool_core::hyperv::default_range_for_ip`) | hyperv.md "Dynamic MAC ranges" \[sure\] | `params::Params::check` |
//! | Hosts whose IPs share the last two octets get the same range | hyperv.md \[sure\] | `params` (`host_ips`) |
//! | A range can be set explicitly (`Set-VMHost -MacAddressMinimum/-Maximum`); existing VMs keep their MACs | hyperv.md \[sure\] | `host_ranges`; `HostView::set_host_range` |
//! | Allocation is round-robin from the last address handed out, wrapping around to the start | hyperv.md \[sure\] | `Cluster::allocate` |
//! | The in-use check sees only the live adapters of VMs registered on the same host | hyperv.md \[sure\]; checkpoints not counted, as in the agent's stand-in | `Cluster::allocate` |
//! | An exhausted range makes the start fail ("Attempt to access invalid address") — counted, not a crash | hyperv.md \[sure\] | `Cluster::start` |
//! | A new VM's dynamic MAC is assigned at creation | the agent's stand-in (`standin.rs`) | `Cluster::create_vm` |
//! | A dynamic MAC is re-checked only when the VM is started: outside the host's range → a new one from it; not after live migration, not on restore | hyperv.md \[sure\]; seed ("as soon as that VM is rebooted, it will grab a new MAC address") | `Cluster::start` |
//! | Live migration keeps the MAC | seed; hyperv.md | `Cluster::migrate` |
//! | A checkpoint freezes the MAC the adapter had | DESIGN.md; seed ("it stores the MAC address of the desktop in the checkpoint") | `Cluster::checkpoint` |
//! | RDS takes `RDV_ROLLBACK` shortly after a pooled desktop's first start | seed | `engine::apply` (`Provision`) |
//! | Logoff → restore to `RDV_ROLLBACK`: a restore with memory keeps the checkpoint's MAC, the desktop runs afterwards; event 18596 | seed; hyperv.md "Events", "restore … keeps the checkpoint's MAC" | `Cluster::restore` |
//! | A live adapter's MAC changes only while the VM is off; a checkpoint's adapter any time | hyperv.md "Changing MACs" \[likely\] | `Cluster::set_mac` |
//! | Setting an adapter dynamic keeps its MAC until the next start re-checks it | the agent's stand-in | `Cluster::set_mac` |
//! | RDS templates must use dynamic MACs, so every desktop's adapter is dynamic | seed ("it forces you to use dynamic MAC addresses") | `Cluster::create_vm` |
//! | Pool re-creation from an updated template: each desktop deleted and provisioned anew (new VM id, new MAC from its host, new checkpoint), placed on the least-loaded host | seed (RDS "update the pooled template"); placement: modelling choice | `workload` (`Recreate`) |
//! | Host patching: drain (live-migrate every VM away, least-loaded target), reboot, fail back, host after host | failover-cluster practice (cluster-aware updating); modelling choice | `workload` (`DrainStart` …) |
//! | Load-balancing live migrations, source and target uniform | modelling choice | `workload` (`Balance`) |
//! | Cold starts (turned off, on again later): the moment a dynamic MAC is re-checked | hyperv.md; seed | `workload` (`ColdStart`) |
//! | All hosts share one L2 segment: two powered-on VMs with one MAC anywhere in the cluster are a duplicate | seed ("a duplicate MAC address in your environment … layer two switching, as well as DHCP") | `cluster::Network` |
//! | A forced restart costs 15–30 s of user-visible outage | seed | `engine` |
//! | The agent watches 18596 restored, 18500 started (Worker) and 18304 created, 13003 deleted (VMMS) only: a live migration, a turn-off (18502) or a new checkpoint reaches the authority with the host's next push (another event's, or the timer's) | `macpool_agent::events` (`kind`); hyperv.md "Events" | `Cluster::emit`; `agent` |
//! | The agent pushes the whole inventory at start, 0.5 s after a VM event (the first of a burst sets the time; out at the loop's next pass, its wait for events lasting 1 s), and every 60 s; an event's decision comes before its push | `macpool_agent::agent::run`, `AgentConfig::new` | `agent` |
//!
//! Not modelled: saved state, other checkpoint types, several adapters or switches per VM,
//! the registry, VM placement by resources, RDS's own retries.
//!
//! # Measurements
//!
//! Per strategy: duplicate-MAC incidents (a powered-on VM comes to share its MAC with another
//! powered-on VM and still does after the agents reacted), duplicate-minutes (time with such a
//! sharing, per extra VM), forced restarts, outage seconds, DHCP conflicts (the joining VM's
//! request at each incident plus one renewal per `dhcp_renew` of duplicated time), macpool pool
//! addresses consumed (peak leased + held + cooling in the pools macpool hands out from), blocks
//! claimed, duplicates averted by a forced restart, starts refused for a full range.

pub mod agent;
pub mod authority;
pub mod cluster;
pub mod delegate;
pub mod engine;
mod html;
pub mod hv;
pub mod params;
pub mod report;
pub mod strategy;
pub mod workload;

pub use engine::simulate;
pub use params::{Checked, Dur, ParamError, Params, Scenario};
pub use report::Report;
pub use strategy::Strategy;
