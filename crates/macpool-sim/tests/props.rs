//! Property tests over small random clusters: the same seed gives the same bytes; the model's
//! bookkeeping (and the core's) holds after every action of every strategy; and handing every
//! inventory push to the core gives exactly the results of the normal run, which skips the
//! resends it judges void (each of those checked to change nothing).

use macpool_sim::engine::run_checked;
use macpool_sim::params::{Dur, Params, Scenario};
use macpool_sim::{Strategy as Sim, simulate};
use proptest::prelude::*;

const HOUR: u64 = 3_600_000;

/// A small, busy cluster: few hosts, small ranges so that they wrap around within the run, and
/// every kind of event (failures, drains, re-creation) in a day or two.
fn small() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        2i64..=4,
        4i64..=40,
        1u64..=2,
        (0.5f64..6.0, 0.0f64..2.0, 0.0f64..20.0, 0.0f64..20.0),
        (0.0f64..200.0, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                seed,
                hosts,
                desktops,
                days,
                (logoffs, cold, balance, others),
                (fail, patch, shared),
            )| {
                let mut p = Scenario::Campus.params();
                p.seed = seed;
                p.hosts = hosts;
                p.desktops = desktops;
                p.duration = Dur(days * 24 * HOUR);
                // 32-address ranges: wrap-around within hours
                p.host_ranges = (0..hosts)
                    .map(|i| {
                        // shared: the last host reuses the first host's range (as two hosts
                        // whose IPs share the last two octets would)
                        let j = if shared && i == hosts - 1 { 0 } else { i };
                        format!("00155D0A{:02X}00-00155D0A{:02X}1F", j, j)
                    })
                    .collect();
                p.logoffs_per_desktop_per_day = logoffs;
                p.cold_starts_per_desktop_per_day = cold;
                p.balance_migrations_per_host_per_day = balance;
                p.other_vms_per_host_per_day = others;
                p.other_vm_lifetime = Dur(6 * HOUR);
                p.host_failures_per_host_per_year = fail;
                p.failure_repair = Dur(HOUR);
                p.patch_every = Dur(if patch { 20 * HOUR } else { 0 });
                p.patch_first = Dur(2 * HOUR);
                p.reboot = Dur(HOUR / 2);
                p.recreate_every = Dur(if patch { 30 * HOUR } else { 0 });
                p.recreate_first = Dur(8 * HOUR);
                p.recreate_gap = Dur(60_000);
                p.block_size = 8;
                p
            },
        )
        .prop_filter("parameters the checks accept", |p| p.check().is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_same_seed_gives_the_same_bytes(p in small()) {
        let c = p.check().unwrap();
        let a = simulate(&c, 2, &|_, _| {}).json();
        let b = simulate(&c, 1, &|_, _| {}).json();
        prop_assert_eq!(a, b, "seed {}", p.seed);
    }

    #[test]
    fn the_model_and_the_core_stay_consistent(p in small()) {
        let c = p.check().unwrap();
        let fast = simulate(&c, 2, &|_, _| {});
        for s in Sim::ALL {
            let r = run_checked(&c, s).map_err(|e| {
                TestCaseError::fail(format!("{s} seed {}: {e}", p.seed))
            })?;
            let f = fast.strategies.iter().find(|x| x.strategy == s.name()).unwrap();
            prop_assert_eq!(&r, f, "{}: every push to the core vs void resends skipped", s);
            // a duplicate-minute needs an incident that started it
            prop_assert!(r.duplicate_minutes == 0.0 || r.duplicate_incidents > 0, "{s}");
            prop_assert!(r.dhcp_conflicts >= r.duplicate_incidents, "{s}");
            let (lo, hi) = (p.restart_outage_min.ms() as f64, p.restart_outage_max.ms() as f64);
            let n = r.forced_restarts as f64;
            prop_assert!(r.outage_seconds * 1000.0 >= n * lo - 1.0, "{s}");
            prop_assert!(r.outage_seconds * 1000.0 <= n * hi + 1.0, "{s}");
            let by_cause: u64 = r.incidents_by_cause.values().sum();
            prop_assert_eq!(by_cause, r.duplicate_incidents, "{}", s);
            match s {
                Sim::HypervDefault => {
                    prop_assert_eq!(r.forced_restarts, 0);
                    prop_assert!(r.agent.is_none() && r.pool_addresses_consumed.is_none());
                }
                Sim::BlogCompatible => prop_assert!(r.pool_addresses_consumed.is_none()),
                _ => prop_assert!(r.pool_addresses_consumed.is_some()),
            }
            if !matches!(s, Sim::Delegate | Sim::DelegateGuard) {
                prop_assert_eq!(r.blocks_claimed, 0);
            }
            if let Some(a) = &r.agent {
                prop_assert!(a.inventory_unchanged <= a.inventory_pushes);
            }
            if matches!(s, Sim::Guard | Sim::DelegateGuard) {
                let a = r.agent.as_ref().unwrap();
                // guard acts on every rollback duplicate it can see: the other VM was in an
                // inventory its host had pushed
                let rollback = r.incidents_by_cause.get("rollback").copied().unwrap_or(0);
                prop_assert!(
                    rollback
                        <= a.unknown + a.failed + a.unseen_conflicts
                            + a.refusals.values().sum::<u64>(),
                    "{}: {} rollback duplicates, agent {:?}", s, rollback, a
                );
            }
        }
    }
}

#[test]
fn impossible_parameters_never_start_a_run() {
    let mut p = Scenario::Campus.params();
    p.desktops = 100_000;
    let e = p.check().unwrap_err();
    assert!(e.0.contains("distinct MACs"), "{e}");
    let e = Params::layered(Scenario::Campus, Some("duration = \"-3d\"\n"), &[]).unwrap_err();
    assert!(e.0.contains("negative"), "{e}");
}
