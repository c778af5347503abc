//! Prometheus text-format metrics, kept with atomics and two small maps; pool gauges are read
//! from the store at scrape time so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use macpool_core::Timestamp;
use macpool_core::authority::{Gauges, PoolView};
use macpool_core::block::BlockState;
use macpool_core::conflict::ConflictClass;
use macpool_core::inventory::CursorSource;
use macpool_store::StoreStats;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What the store shows at scrape time (one snapshot); gauges are computed from it, never cached.
#[derive(Default)]
pub struct Scrape {
    pub gauges: Gauges,
    pub store: StoreStats,
}

/// Unix seconds, as Prometheus compares them with `time()`.
fn seconds(t: Timestamp) -> f64 {
    t.0 as f64 / 1000.0
}

/// A label value in the text format: backslash, double quote and newline escaped. Host names
/// come from inventories, so they are escaped rather than trusted.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Default)]
pub struct Metrics {
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    allocations: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count_allocations(&self, pool: &str, n: u64) {
        if n > 0 {
            *self
                .allocations
                .lock()
                .unwrap()
                .entry(pool.to_string())
                .or_default() += n;
        }
    }

    /// A presented token was unknown, revoked, or refused while its address was throttled.
    pub fn count_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_error(&self, slug: &'static str) {
        *self.errors.lock().unwrap().entry(slug).or_default() += 1;
    }

    /// `conflicts` are the store's current conflicts; every class gets a gauge, 0 included, so
    /// alerts can say `macpool_conflicts{class="latent"} > 0`.
    pub fn render(&self, scrape: &Scrape) -> String {
        let Scrape {
            gauges:
                Gauges {
                    pools,
                    conflicts,
                    blocks,
                    received: inventories,
                    cursor_sources,
                },
            store,
        } = scrape;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP macpool_conflicts Conflicts across the hosts' latest inventories, by class.\n# TYPE macpool_conflicts gauge"
        );
        for class in ConflictClass::ALL {
            let n = conflicts.get(&class).copied().unwrap_or(0);
            let _ = writeln!(out, "macpool_conflicts{{class=\"{}\"}} {n}", class.slug());
        }
        type Gauge = (&'static str, &'static str, fn(&PoolView) -> u64);
        let gauges: [Gauge; 5] = [
            (
                "macpool_pool_size",
                "Addresses in the pool's ranges.",
                |p| p.usage.size,
            ),
            ("macpool_pool_leased", "Addresses with a live lease.", |p| {
                p.usage.leased
            }),
            ("macpool_pool_held", "Addresses kept by a hold.", |p| {
                p.usage.held
            }),
            (
                "macpool_pool_cooling",
                "Released addresses cooling down.",
                |p| p.usage.cooling,
            ),
            ("macpool_pool_free", "Addresses free to allocate.", |p| {
                p.usage.free
            }),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in pools {
                let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", p.spec.name, value(p));
            }
        }
        let _ = writeln!(
            out,
            "# HELP macpool_pool_low 1 when free addresses are below the low-water mark.\n# TYPE macpool_pool_low gauge"
        );
        for p in pools {
            let _ = writeln!(
                out,
                "macpool_pool_low{{pool=\"{}\"}} {}",
                p.spec.name,
                u8::from(p.low)
            );
        }
        let _ = writeln!(
            out,
            "# HELP macpool_allocations_total New leases granted.\n# TYPE macpool_allocations_total counter"
        );
        for (pool, n) in self.allocations.lock().unwrap().iter() {
            let _ = writeln!(out, "macpool_allocations_total{{pool=\"{pool}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP macpool_errors_total Error responses by problem type.\n# TYPE macpool_errors_total counter"
        );
        for (slug, n) in self.errors.lock().unwrap().iter() {
            let _ = writeln!(out, "macpool_errors_total{{type=\"{slug}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP macpool_auth_failures_total Presented tokens refused: unknown, revoked, or from a throttled address.\n# TYPE macpool_auth_failures_total counter\nmacpool_auth_failures_total {}",
            self.auth_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP macpool_store_commits_total Durable commits (one fsync each).\n# TYPE macpool_store_commits_total counter\nmacpool_store_commits_total {}",
            store.commits
        );
        let _ = writeln!(
            out,
            "# HELP macpool_store_mutations_total Mutations made durable.\n# TYPE macpool_store_mutations_total counter\nmacpool_store_mutations_total {}",
            store.mutations
        );
        let _ = writeln!(
            out,
            "# HELP macpool_store_poisoned 1 when the embedded store failed an fsync and refuses every change until macpool restarts.\n# TYPE macpool_store_poisoned gauge\nmacpool_store_poisoned {}",
            u8::from(store.poisoned)
        );
        let _ = writeln!(
            out,
            "# HELP macpool_inventory_received_timestamp_seconds When the authority accepted the host's latest inventory (Unix time).\n# TYPE macpool_inventory_received_timestamp_seconds gauge"
        );
        for (host, received) in inventories {
            let _ = writeln!(
                out,
                "macpool_inventory_received_timestamp_seconds{{host=\"{}\"}} {}",
                label(host),
                seconds(*received)
            );
        }
        let _ = writeln!(
            out,
            "# HELP macpool_host_cursor_estimated 1 when the host's agent has no readable allocator cursor and delegate rotates on a lower bound from the inventory; 0 when it reads the cursor.\n# TYPE macpool_host_cursor_estimated gauge"
        );
        for (host, source) in cursor_sources {
            let _ = writeln!(
                out,
                "macpool_host_cursor_estimated{{host=\"{}\"}} {}",
                label(host),
                u8::from(*source == CursorSource::InventoryBound)
            );
        }
        // every state gets a sample per pool with blocks, 0 included, like the conflict gauge
        let _ = writeln!(
            out,
            "# HELP macpool_blocks Delegated blocks that are not free yet, by pool and state.\n# TYPE macpool_blocks gauge"
        );
        let block_pools: std::collections::BTreeSet<&str> =
            blocks.iter().map(|b| b.pool.as_str()).collect();
        for pool in block_pools {
            for state in [
                BlockState::Pending,
                BlockState::Active,
                BlockState::Draining,
            ] {
                let n = blocks
                    .iter()
                    .filter(|b| b.pool.as_str() == pool && b.state == state)
                    .count();
                let _ = writeln!(
                    out,
                    "macpool_blocks{{pool=\"{pool}\",state=\"{}\"}} {n}",
                    state.name()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP macpool_block_draining_since_timestamp_seconds When a draining block began draining (Unix time); it is freed once no inventory uses its MACs and the pool's cooldown has passed.\n# TYPE macpool_block_draining_since_timestamp_seconds gauge"
        );
        for b in blocks.iter().filter(|b| b.state == BlockState::Draining) {
            let _ = writeln!(
                out,
                "macpool_block_draining_since_timestamp_seconds{{pool=\"{}\",host=\"{}\",block=\"{}\"}} {}",
                b.pool,
                label(&b.host),
                b.id,
                seconds(b.changed)
            );
        }
        let name = "macpool_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an HTTP request.\n# TYPE {name} histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_request(Duration::from_micros(300));
        m.observe_request(Duration::from_millis(30));
        let text = m.render(&Scrape::default());
        assert!(text.contains("macpool_http_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("macpool_http_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("macpool_http_request_duration_seconds_count 2\n"));
    }

    /// The gauges the staleness, draining, cursor and store alerts in packaging/prometheus read.
    #[test]
    fn inventory_age_draining_blocks_and_a_poisoned_store_are_exported() {
        let block = |id, state| macpool_core::block::Block {
            id,
            pool: macpool_core::pool::PoolName::new("rds").unwrap(),
            host: "HV\"1".into(),
            range: macpool_core::range::MacRange::parse("00155DF00000-00155DF000FF").unwrap(),
            state,
            claimed: Timestamp(1_000),
            changed: Timestamp(86_400_500),
            unused_since: None,
        };
        let text = Metrics::default().render(&Scrape {
            gauges: Gauges {
                blocks: vec![block(1, BlockState::Draining), block(2, BlockState::Active)],
                received: vec![("HV1".into(), Timestamp(1_700_000_000_250))],
                cursor_sources: vec![
                    ("HV1".into(), CursorSource::InventoryBound),
                    ("HV2".into(), CursorSource::Registry),
                ],
                ..Gauges::default()
            },
            store: StoreStats {
                poisoned: true,
                ..StoreStats::default()
            },
        });
        for line in [
            "macpool_store_poisoned 1",
            "macpool_host_cursor_estimated{host=\"HV1\"} 1",
            "macpool_host_cursor_estimated{host=\"HV2\"} 0",
            "macpool_inventory_received_timestamp_seconds{host=\"HV1\"} 1700000000.25",
            "macpool_blocks{pool=\"rds\",state=\"draining\"} 1",
            "macpool_blocks{pool=\"rds\",state=\"active\"} 1",
            "macpool_blocks{pool=\"rds\",state=\"pending\"} 0",
            "macpool_block_draining_since_timestamp_seconds{pool=\"rds\",host=\"HV\\\"1\",block=\"1\"} 86400.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(
            !text.contains("block=\"2\""),
            "an active block is not draining:\n{text}"
        );
    }

    #[test]
    fn every_conflict_class_has_a_gauge_zero_included() {
        let text = Metrics::default().render(&Scrape {
            gauges: Gauges {
                conflicts: BTreeMap::from([(ConflictClass::Latent, 2)]),
                ..Gauges::default()
            },
            ..Scrape::default()
        });
        for line in [
            "macpool_conflicts{class=\"latent\"} 2",
            "macpool_conflicts{class=\"live-duplicate\"} 0",
            "macpool_conflicts{class=\"invalid\"} 0",
            "macpool_conflicts{class=\"range-overlap\"} 0",
            "macpool_conflicts{class=\"unmanaged\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
