//! Prometheus text-format metrics, kept with atomics and two small maps; pool gauges are read
//! from the store at scrape time so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use macpool_core::authority::PoolView;
use macpool_core::conflict::{Conflict, ConflictClass};
use macpool_store::StoreStats;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    allocations: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
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

    pub fn count_error(&self, slug: &'static str) {
        *self.errors.lock().unwrap().entry(slug).or_default() += 1;
    }

    /// `conflicts` are the store's current conflicts; every class gets a gauge, 0 included, so
    /// alerts can say `macpool_conflicts{class="latent"} > 0`.
    pub fn render(&self, pools: &[PoolView], conflicts: &[Conflict], store: StoreStats) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP macpool_conflicts Conflicts across the hosts' latest inventories, by class.\n# TYPE macpool_conflicts gauge"
        );
        for class in ConflictClass::ALL {
            let n = conflicts.iter().filter(|c| c.class == class).count();
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
            "# HELP macpool_store_commits_total Durable commits (one fsync each).\n# TYPE macpool_store_commits_total counter\nmacpool_store_commits_total {}",
            store.commits
        );
        let _ = writeln!(
            out,
            "# HELP macpool_store_mutations_total Mutations made durable.\n# TYPE macpool_store_mutations_total counter\nmacpool_store_mutations_total {}",
            store.mutations
        );
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
        let text = m.render(&[], &[], StoreStats::default());
        assert!(text.contains("macpool_http_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("macpool_http_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("macpool_http_request_duration_seconds_count 2\n"));
    }

    #[test]
    fn every_conflict_class_has_a_gauge_zero_included() {
        use macpool_core::conflict::Subject;
        let latent = Conflict {
            class: ConflictClass::Latent,
            subject: Subject::Mac {
                mac: "00155D000001".parse().unwrap(),
                sightings: Vec::new(),
            },
            explanation: String::new(),
            fix: String::new(),
        };
        let text = Metrics::default().render(&[], &[latent.clone(), latent], StoreStats::default());
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
