//! The checker's short form, run by CI: clients against `macpool serve` replicas that are
//! killed (-9) and restarted during the run; afterwards no acknowledged lease may be missing,
//! no MAC may have had two live owners and no released MAC may have been reissued inside its
//! cooldown (`crates/macpool-checker`; the long form is `macpool-checker --duration 300 …`).

use std::path::PathBuf;
use std::time::Duration;

use macpool_checker::{Config, Report};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_macpool"))
}

/// The CI short form: 8 clients, 15 s, a kill every 3 s, a pool small enough that addresses
/// come back out of their cooldown and are reused within the run.
fn short_form(database: String, replicas: usize) -> Config {
    Config {
        replicas,
        clients: 8,
        duration: Duration::from_secs(15),
        kill_every: Some(Duration::from_secs(3)),
        pool_size: 512,
        vms_per_client: 12,
        seed: 6,
        ..Config::new(exe(), database)
    }
}

fn assert_no_violations(report: &Report, min_answered: u64) {
    eprintln!("{}", report.to_text());
    assert!(
        report.passed(),
        "{} violation(s): {:#?}",
        report.violations.len(),
        report.violations
    );
    assert!(report.kills >= 1, "no replica was killed");
    assert_eq!(
        report.restarts, report.kills,
        "every killed replica restarts"
    );
    assert!(
        report.operations_answered >= min_answered,
        "only {} operations answered (want ≥ {min_answered})",
        report.operations_answered
    );
    let unknown: u64 = report.requests.values().map(|c| c.unknown).sum();
    assert!(
        unknown < report.requests_total / 4,
        "{unknown} of {} requests ended unknown",
        report.requests_total
    );
    assert!(
        report.checks.acknowledged_leases > 0,
        "no lease to look for"
    );
    assert!(
        report.checks.history.gaps.reuses > 0,
        "no address was reused: the cooldown was not exercised"
    );
}

// Listed as ignored, by name, when the URL was not set at build time (build.rs); a binary built
// with it but run without it fails rather than pass without checking anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn two_replicas_on_postgres_never_lease_a_mac_twice() {
    let base = std::env::var("MACPOOL_TEST_DATABASE_URL")
        .expect("MACPOOL_TEST_DATABASE_URL was set when this test was built");
    let url = macpool_store::postgres::scratch_database(&base, "macpool_test_replicas_checker")
        .await
        .unwrap();
    let report = macpool_checker::run(short_form(url, 2)).await.unwrap();
    assert_no_violations(&report, 500);
    assert_eq!(report.checks.replicas_read, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_on_sqlite_killed_and_restarted_never_leases_a_mac_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().display());
    let report = macpool_checker::run(short_form(url, 1)).await.unwrap();
    assert_no_violations(&report, 500);
}
