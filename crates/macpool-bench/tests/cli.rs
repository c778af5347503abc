//! The benchmarks end to end through the real `macpool-bench` binary (they were `macpool bench
//! …` and its tests in `crates/macpool/tests/cli.rs` until issue 20 moved them out of the
//! shipped binary): the servers are this binary's hidden `serve`, as the benchmarks start them.

use std::process::{Child, Command};

use macpool_api::dto::PoolCreate;
use macpool_client::Client;
use serde_json::Value;

const TOKEN: &str = "bench-test-bootstrap-token-0123456789abcdef";

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_macpool-bench")
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A `macpool-bench serve` on a store of its own, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let started = macpool_spawn::spawn(
            Command::new(exe())
                .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(dir.path())
                .env("MACPOOL_BOOTSTRAP_TOKEN", TOKEN),
        )
        .expect("start macpool-bench serve");
        Server {
            child: started.child,
            url: started.url,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, Some(TOKEN.to_string())).unwrap()
    }

    async fn create_pool(&self, name: &str, range: &str) {
        self.client()
            .create_pool(&PoolCreate {
                name: name.into(),
                ranges: vec![range.into()],
                ..PoolCreate::default()
            })
            .await
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `macpool-bench --json allocate` against `targets`, with the test token.
fn bench_allocate(targets: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(exe());
    cmd.args(["--json", "allocate", "--token", TOKEN]);
    for t in targets {
        cmd.args(["--target", t]);
    }
    cmd
}

/// The load generator's own HTTP connection reports the server's problems, counted: a pool of
/// 16 addresses and 24 timed allocations leave 8 refused as exhausted, and the run fails.
#[tokio::test]
async fn bench_allocate_counts_and_names_refusals() {
    let server = Server::start();
    server
        .create_pool("small", "00-15-5D-E9-00-00-00-15-5D-E9-00-0F")
        .await;
    let out = bench_allocate(&[&server.url])
        .args(["--pool", "small", "--clients", "4", "--per-client", "6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out.stdout);
    assert_eq!(report["allocations"], 16, "{report}");
    assert_eq!(report["errors"], 8, "{report}");
    assert_eq!(report["distinct_macs"], 16, "{report}");
    let first = report["first_error"].as_str().unwrap();
    assert!(first.contains("pool-exhausted"), "{first}");
}

/// `allocate` against two separate stores (the uncoordinated writers
/// `scripts/bench-postgres.sh` compares replicas with): the pre-fill goes through every target,
/// the clients alternate, and the report carries the whole machine's CPU per allocation.
#[tokio::test]
async fn bench_allocate_fills_every_target_and_reports_cpu() {
    let servers = [Server::start(), Server::start()];
    for (i, s) in servers.iter().enumerate() {
        let range = format!("00-15-5D-E{i}-00-00-00-15-5D-E{i}-00-3F");
        s.create_pool("bench", &range).await;
    }
    let out = bench_allocate(&[&servers[0].url, &servers[1].url])
        .args(["--pool", "bench", "--clients", "4", "--per-client", "5"])
        .args(["--fill", "50"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = json(&out.stdout);
    assert_eq!(report["prefilled"], 64, "32 of 64 in each store: {report}");
    assert_eq!(report["allocations"], 20);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["distinct_macs"], 20);
    if cfg!(target_os = "linux") {
        let cpu = report["machine_cpu"]["us_per_allocation"].as_f64().unwrap();
        assert!(cpu > 0.0, "{report}");
    }
    for s in &servers {
        let pool = s.client().pool("bench").await.unwrap();
        // 32 pre-filled and 10 timed (clients 0 and 2, or 1 and 3, 5 each) in each store.
        assert_eq!(pool.free, 64 - 32 - 10, "{pool:?}");
    }
}

/// `fleet` end to end on a small fleet: it starts its own server, seeds every host, runs the
/// allocations alone and under the fleet (pushes on a 2 s timer, rollback bursts, scrapes,
/// conflict reads) and reports each kind of request without errors, with the server's memory.
#[test]
fn bench_fleet_runs_a_small_fleet_and_reports_every_kind_of_request() {
    let out = assert_cmd::Command::new(exe())
        .args(["--json", "fleet", "--hosts", "4", "--desktops", "10"])
        .args([
            "--push-interval",
            "2",
            "--rollback-every",
            "20",
            "--duration",
            "8",
        ])
        .args(["--clients", "2", "--per-client", "5", "--duplicates", "3"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = json(&out.stdout);
    assert_eq!(report["fleet"]["adapters"], 160, "{report}");
    for kind in ["pushes", "metrics_scrapes", "conflict_reads"] {
        assert_eq!(report[kind]["errors"], 0, "{kind}: {report}");
        assert!(
            report[kind]["count"].as_u64().unwrap() >= 2,
            "{kind}: {report}"
        );
    }
    assert!(report["allocations_alone_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        report["allocations_under_fleet_ms"]["p99"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["server_rss_mib"]["after_seed"].as_f64().unwrap() > 0.0);
}

/// `decide` on a few rollbacks: the real agent against this binary's stand-in and server.
#[test]
fn bench_decide_times_real_conflicts() {
    let out = assert_cmd::Command::new(exe())
        .args(["--json", "decide", "--iterations", "3"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = json(&out.stdout);
    assert_eq!(report["iterations"], 3, "{report}");
    let p50 = report["event_to_first_command_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0, "{report}");
}

/// The bench's own `--help` names every benchmark and hides the internal `serve` and `standin`.
#[test]
fn help_lists_the_benchmarks_and_hides_the_internals() {
    let out = assert_cmd::Command::new(exe())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for name in ["allocate", "decide", "sql", "dashboard", "fleet"] {
        assert!(help.contains(&format!("  {name}")), "{name}: {help}");
    }
    assert!(
        !help.contains("  serve") && !help.contains("  standin"),
        "{help}"
    );
}
