//! What every benchmark measures and how it reports it: latency percentiles, wall time and the
//! machine's CPU over the timed part.

use std::time::{Duration, Instant};

/// p50, p90, p99 and max of sorted microsecond samples, in milliseconds, for `--json`.
pub(crate) fn latency_json(sorted_us: &[u64]) -> serde_json::Value {
    serde_json::json!({
        "p50": percentile_ms(sorted_us, 50.0),
        "p90": percentile_ms(sorted_us, 90.0),
        "p99": percentile_ms(sorted_us, 99.0),
        "max": percentile_ms(sorted_us, 100.0),
    })
}

/// The same percentiles as [`latency_json`], as one line for people.
fn latency_line(sorted_us: &[u64]) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile_ms(sorted_us, 50.0),
        percentile_ms(sorted_us, 90.0),
        percentile_ms(sorted_us, 99.0),
        percentile_ms(sorted_us, 100.0)
    )
}

/// The `q`-th percentile (0..=100) of sorted microsecond samples, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((q / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// The timed part of a benchmark: wall time and, on Linux, the whole machine's CPU time. Where
/// the clients, the servers and PostgreSQL share a few cores, CPU time per allocation is the
/// cost figure: it scatters far less from run to run than throughput does.
pub(crate) struct Stopwatch {
    started: Instant,
    cpu: Option<CpuTicks>,
}

/// What a [`Stopwatch`] measured.
#[derive(Default)]
pub(crate) struct Measured {
    pub elapsed: Duration,
    /// The whole machine's CPU ticks (all cores, every process) over the window, if readable.
    machine_cpu: Option<CpuTicks>,
}

/// `/proc/stat`'s first line, or the difference of two: ticks (USER_HZ, 100 per second)
/// spent busy, and in all (summed over the cores).
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    fn read() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    /// `cpu user nice system idle iowait irq softirq steal …`: idle and iowait are not busy.
    fn parse(line: &str) -> Option<CpuTicks> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        if ticks.len() < 5 {
            return None;
        }
        let total: u64 = ticks.iter().take(8).sum();
        Some(CpuTicks {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
            cpu: CpuTicks::read(),
        }
    }

    pub fn stop(&self) -> Measured {
        let elapsed = self.started.elapsed();
        let machine_cpu = match (self.cpu, CpuTicks::read()) {
            (Some(a), Some(b)) if b.total > a.total => Some(CpuTicks {
                busy: b.busy - a.busy,
                total: b.total - a.total,
            }),
            _ => None,
        };
        Measured {
            elapsed,
            machine_cpu,
        }
    }
}

impl Measured {
    /// Busy CPU seconds of the whole machine over the window.
    fn busy_seconds(&self) -> Option<f64> {
        Some(self.machine_cpu?.busy as f64 / 100.0)
    }

    /// Machine CPU per allocation, in microseconds.
    pub fn cpu_us_per(&self, allocations: u64) -> Option<f64> {
        let busy = self.busy_seconds()?;
        (allocations > 0).then(|| busy * 1e6 / allocations as f64)
    }

    /// Adds what every benchmark reports of its timed part to the `--json` object `report`:
    /// seconds, allocations per second, latency percentiles and the machine's CPU.
    pub fn add_json(&self, report: &mut serde_json::Value, allocations: u64, latencies_us: &[u64]) {
        let report = report
            .as_object_mut()
            .expect("a benchmark report is a JSON object");
        report.insert("seconds".into(), self.elapsed.as_secs_f64().into());
        let rate = self.per_second(allocations);
        report.insert("allocations_per_second".into(), rate.into());
        report.insert("latency_ms".into(), latency_json(latencies_us));
        report.insert("machine_cpu".into(), self.cpu_json(allocations));
    }

    /// The same as [`Measured::add_json`], as lines for people.
    pub fn lines(&self, allocations: u64, latencies_us: &[u64]) -> [(&'static str, String); 4] {
        [
            ("elapsed", format!("{:.2} s", self.elapsed.as_secs_f64())),
            (
                "throughput",
                format!("{:.0} allocations/s", self.per_second(allocations)),
            ),
            ("latency", latency_line(latencies_us)),
            ("machine CPU", self.cpu_line(allocations)),
        ]
    }

    fn per_second(&self, allocations: u64) -> f64 {
        allocations as f64 / self.elapsed.as_secs_f64()
    }

    /// Busy CPU seconds, the share of all cores that was busy (from the same ticks, so never
    /// above 100), and CPU per allocation.
    fn cpu_json(&self, allocations: u64) -> serde_json::Value {
        match self.machine_cpu {
            Some(t) => serde_json::json!({
                "busy_seconds": self.busy_seconds(),
                "busy_percent": 100.0 * t.busy as f64 / t.total as f64,
                "us_per_allocation": self.cpu_us_per(allocations),
            }),
            None => serde_json::Value::Null,
        }
    }

    /// The same as [`Measured::cpu_json`], as one line for people.
    fn cpu_line(&self, allocations: u64) -> String {
        match (self.cpu_us_per(allocations), self.busy_seconds()) {
            (Some(us), Some(busy)) => {
                format!("{us:.0} µs per allocation ({busy:.1} busy CPU seconds, all processes)")
            }
            _ => "not measured (no /proc/stat)".into(),
        }
    }
}

/// 64 random bits without another dependency: `RandomState` is seeded from the OS per process.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_idle_and_iowait_as_not_busy() {
        let t = CpuTicks::parse("cpu  100 5 50 1000 20 3 2 7 0 0").unwrap();
        assert_eq!(t.total, 1187);
        assert_eq!(t.busy, 1187 - 1000 - 20);
    }

    #[test]
    fn cpu_ticks_refuse_other_lines_and_short_or_bad_ones() {
        assert!(CpuTicks::parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(CpuTicks::parse("cpu 1 2 3").is_none());
        assert!(CpuTicks::parse("cpu 1 2 x 4 5").is_none());
    }

    #[test]
    fn cpu_per_allocation_is_busy_time_over_allocations() {
        let m = Measured {
            elapsed: Duration::from_secs(2),
            machine_cpu: Some(CpuTicks {
                busy: 300,
                total: 400,
            }),
        };
        assert_eq!(m.cpu_us_per(30_000), Some(100.0));
        assert_eq!(m.cpu_us_per(0), None);
        assert!(Measured::default().cpu_us_per(10).is_none());
        assert_eq!(m.cpu_json(30_000)["busy_percent"], 75.0);
    }
}
