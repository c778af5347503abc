//! The seed's exact sequence (`--scenario blog`): one duplicate under Hyper-V as shipped, none
//! under the strategies that act on the rollback, none under delegate.

use macpool_sim::report::{Report, StrategyResult};
use macpool_sim::{Scenario, simulate};

fn blog() -> Report {
    let c = Scenario::Blog
        .params()
        .check()
        .expect("the preset is valid");
    simulate(&c, 1, &|_, _| {})
}

fn get<'a>(r: &'a Report, name: &str) -> &'a StrategyResult {
    r.strategies
        .iter()
        .find(|s| s.strategy == name)
        .unwrap_or_else(|| panic!("strategy {name} ran"))
}

#[test]
fn hyperv_default_has_exactly_the_seeds_one_duplicate() {
    let r = blog();
    let s = get(&r, "hyperv-default");
    assert_eq!(s.duplicate_incidents, 1, "{s:#?}");
    assert_eq!(s.incidents_by_cause.get("rollback"), Some(&1));
    assert_eq!(s.forced_restarts, 0);
    assert_eq!(s.duplicated_macs_at_end, 1, "nobody fixes it");
    // the rollback at 05:00 until the end of the day: 19 hours
    assert_eq!(s.duplicate_minutes, 19.0 * 60.0);
    assert_eq!(
        s.dhcp_conflicts,
        1 + 19 / 4,
        "the request at the rollback + renewals"
    );
    assert_eq!(s.pool_addresses_consumed, None, "no authority");
}

#[test]
fn guard_fixes_the_rollback_with_one_restart_and_a_pool_mac() {
    let r = blog();
    let s = get(&r, "guard");
    assert_eq!(s.duplicate_incidents, 0, "{s:#?}");
    assert_eq!(
        s.averted_duplicates, 1,
        "the desktop came back on the MAC, guard turned it off"
    );
    assert_eq!(s.forced_restarts, 1);
    assert!(
        (15.0..=30.0).contains(&s.outage_seconds),
        "{}",
        s.outage_seconds
    );
    assert_eq!(s.pool_addresses_consumed, Some(1), "one fresh static MAC");
    let a = s.agent.as_ref().expect("guard has an agent");
    assert_eq!(
        (a.decisions, a.remediated, a.unknown, a.failed),
        (1, 1, 0, 0)
    );
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
}

#[test]
fn the_published_workaround_restarts_and_avoids_this_one() {
    let r = blog();
    let s = get(&r, "blog-compatible");
    assert_eq!(s.duplicate_incidents, 0, "{s:#?}");
    assert_eq!(s.forced_restarts, 1, "one logoff, one restart");
    assert_eq!(s.pool_addresses_consumed, None);
}

#[test]
fn delegate_never_lets_node_1_wrap_around() {
    let r = blog();
    for name in ["delegate", "delegate+guard"] {
        let s = get(&r, name);
        assert_eq!(s.duplicate_incidents, 0, "{name}: {s:#?}");
        assert_eq!(s.forced_restarts, 0, "{name}: no restart needed");
        assert!(
            s.blocks_claimed >= 3,
            "{name}: a block per host and a rotation on node 1: {}",
            s.blocks_claimed
        );
    }
}

#[test]
fn every_strategy_replays_the_same_script() {
    let r = blog();
    assert_eq!(r.strategies.len(), 5, "{:?}", r.unavailable);
    assert_eq!(r.workload.logoffs, 1);
    assert_eq!(r.workload.live_migrations, 1);
    assert_eq!(r.workload.other_vms_created, 256);
    assert_eq!(
        blog().json(),
        r.json(),
        "the same run twice, the same bytes"
    );
}
