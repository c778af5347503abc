//! The checks, as pure functions over what the clients logged and what the authority reports.
//!
//! 1. **Every acknowledged lease is present** ([`leases_present`]): a VM whose last certain state
//!    is "leased with m" has exactly that lease on every replica at the end; a VM whose release
//!    was acknowledged (and nothing uncertain followed) has none.
//! 2. **No MAC has two live owners at any instant**, twice:
//!    - [`replay`] walks each MAC's history in commit order (leases from `allocated` / `bound`,
//!      holds from `held`, ended by `released` / `unheld`) and flags any moment with two VMs
//!      among its leases and holds, or a second lease of the same MAC.
//!    - [`overlapping_owners`] compares the clients' own certain intervals (from the answer
//!      that acknowledged a lease or hold to the start of the request that might have ended
//!      it): two VMs certainly owning one MAC at the same instant is a violation, whatever
//!      the history says.
//! 3. **No released MAC is reissued inside its cooldown**, twice:
//!    - [`replay`]: when the last lease or hold of a MAC ends at `t`, its next allocation (or a
//!      lease restored to a *different* VM) must be at `t + cooldown` or later.
//!    - [`cooldown_from_logs`]: an acknowledged allocation of m that created its lease (not
//!      `existing`) whose request *ended* less than `cooldown` after an acknowledged release of
//!      m *started* cannot have respected it.
//!
//!    Clock tolerance: history times are the replicas' wall clocks in milliseconds; all
//!    replicas run on this machine and share its clock, so the only slack needed is rounding
//!    to milliseconds and a replica stamping `now` a moment before it decides. The default
//!    tolerance is 50 ms against a 2 s cooldown; the report shows the shortest gap seen, so a
//!    violation hidden by the tolerance would still be visible as a gap under the cooldown.
//!    The client-side variant measures with this process's monotonic clock while the replica
//!    decides with the wall clock truncated to milliseconds, so it can see a gap of 1999 ms
//!    for a correct 2000 ms cooldown; it uses the same tolerance.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use macpool_api::dto::{LeaseInfo, PoolInfo};
use macpool_core::Mac;
use serde::Serialize;

use crate::workload::VmState;

pub const LEASE_PRESENT: &str = "lease-present";
pub const RELEASE_KEPT: &str = "release-kept";
pub const ONE_OWNER: &str = "one-live-owner";
pub const COOLDOWN: &str = "cooldown";
pub const HISTORY: &str = "history";
pub const ACCOUNTING: &str = "pool-accounting";
pub const WORKLOAD: &str = "workload";
pub const REPLICA: &str = "replica-exit";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which check: `lease-present`, `one-live-owner`, `cooldown`, …
    pub check: String,
    pub detail: String,
}

fn violation(check: &str, detail: String) -> Violation {
    Violation {
        check: check.into(),
        detail,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holding {
    Lease,
    Hold,
}

/// A time during which `vm` certainly had `mac` (µs since the workload started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub mac: Mac,
    pub vm: String,
    pub holding: Holding,
    pub from_us: u64,
    /// `None`: still held at the end.
    pub to_us: Option<u64>,
}

/// An acknowledged allocation: the operation's first request started at `start_us`, the
/// acknowledging answer arrived at `end_us`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocAck {
    pub vm: String,
    pub mac: Mac,
    pub start_us: u64,
    pub end_us: u64,
    pub existing: bool,
}

/// An acknowledged release (by the release API or by an inventory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseAck {
    pub vm: String,
    pub mac: Mac,
    pub start_us: u64,
    pub end_us: u64,
}

fn secs(us: u64) -> String {
    format!("{}.{:03} s", us / 1_000_000, us % 1_000_000 / 1000)
}

fn until(to: Option<u64>) -> String {
    to.map_or("the end".into(), secs)
}

/// Check 2 from the clients' logs: two VMs certainly owning one MAC at one instant.
pub fn overlapping_owners(intervals: &[Interval]) -> Vec<Violation> {
    let mut by_mac: BTreeMap<Mac, Vec<&Interval>> = BTreeMap::new();
    for i in intervals {
        by_mac.entry(i.mac).or_default().push(i);
    }
    let mut out = Vec::new();
    for (mac, mut list) in by_mac {
        list.sort_by_key(|i| i.from_us);
        for (k, a) in list.iter().enumerate() {
            for b in &list[k + 1..] {
                if a.to_us.is_some_and(|t| b.from_us >= t) {
                    continue;
                }
                if a.vm != b.vm {
                    out.push(violation(
                        ONE_OWNER,
                        format!(
                            "{mac}: VM {} certainly had it ({:?}) from {} to {} and VM {} ({:?}) \
                             from {} to {}",
                            a.vm,
                            a.holding,
                            secs(a.from_us),
                            until(a.to_us),
                            b.vm,
                            b.holding,
                            secs(b.from_us),
                            until(b.to_us)
                        ),
                    ));
                }
            }
        }
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GapStats {
    /// Allocations of a MAC that had been released before.
    pub reuses: u64,
    /// The shortest time between a release and the next allocation of the same MAC, in ms.
    pub min_gap_ms: Option<u64>,
}

/// Check 3 from the clients' logs.
pub fn cooldown_from_logs(
    allocs: &[AllocAck],
    releases: &[ReleaseAck],
    cooldown_us: u64,
    tolerance_us: u64,
) -> (Vec<Violation>, GapStats) {
    let mut by_mac: HashMap<Mac, Vec<&ReleaseAck>> = HashMap::new();
    for r in releases {
        by_mac.entry(r.mac).or_default().push(r);
    }
    let mut out = Vec::new();
    let mut stats = GapStats::default();
    // Only allocations that created their lease: an answer "existing" may be a lease an earlier
    // request created, or one an inventory restored to the VM that had it (allowed inside the
    // cooldown); the history replay tells those apart.
    for a in allocs.iter().filter(|a| !a.existing) {
        let Some(last) = by_mac.get(&a.mac).and_then(|rs| {
            rs.iter()
                .filter(|r| r.start_us < a.end_us)
                .max_by_key(|r| r.start_us)
        }) else {
            continue;
        };
        // The release was applied after it started; the allocation before it was answered.
        let gap = a.end_us - last.start_us;
        stats.reuses += 1;
        stats.min_gap_ms = Some(stats.min_gap_ms.map_or(gap / 1000, |m| m.min(gap / 1000)));
        if gap + tolerance_us < cooldown_us {
            out.push(violation(
                COOLDOWN,
                format!(
                    "{}: released by VM {} in a request started at {}, allocated to VM {} in a \
                     request answered at {}{}: at most {} ms apart, cooldown {} ms",
                    a.mac,
                    last.vm,
                    secs(last.start_us),
                    a.vm,
                    secs(a.end_us),
                    if a.existing {
                        " as its existing lease"
                    } else {
                        ""
                    },
                    gap / 1000,
                    cooldown_us / 1000
                ),
            ));
        }
    }
    (out, stats)
}

/// One history row, as the replay needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub at_ms: u64,
    pub action: String,
    pub vm: String,
    pub adapter: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayStats {
    pub entries: u64,
    pub macs: u64,
    pub allocations: u64,
    /// Leases re-created by an inventory (a migration seen after the release).
    pub restores: u64,
    pub holds: u64,
    #[serde(flatten)]
    pub gaps: GapStats,
}

#[derive(Default)]
struct MacState {
    leases: Vec<(String, String)>,
    holds: BTreeMap<String, u32>,
    /// When the last lease or hold ended (the cooldown starts there).
    left: Option<u64>,
    /// The VM whose lease was released last: the only one an inventory may restore it to.
    last_released: Option<String>,
}

impl MacState {
    fn owners(&self) -> BTreeSet<&str> {
        self.leases
            .iter()
            .map(|(v, _)| v.as_str())
            .chain(self.holds.keys().map(String::as_str))
            .collect()
    }

    fn others(&self, vm: &str) -> Vec<String> {
        self.owners()
            .into_iter()
            .filter(|o| *o != vm)
            .map(str::to_string)
            .collect()
    }
}

/// Checks 2 and 3 from the history: `per_mac` holds each MAC's rows oldest first (commit
/// order).
pub fn replay(
    per_mac: &BTreeMap<Mac, Vec<HistoryRow>>,
    cooldown_ms: u64,
    tolerance_ms: u64,
) -> (Vec<Violation>, ReplayStats) {
    let mut out = Vec::new();
    let mut stats = ReplayStats::default();
    for (mac, rows) in per_mac {
        stats.macs += 1;
        let mut st = MacState::default();
        for row in rows {
            stats.entries += 1;
            let vm = row.vm.as_str();
            let at = row.at_ms;
            let owner = (row.vm.clone(), row.adapter.clone());
            match row.action.as_str() {
                "allocated" | "allocated-duplicate" => {
                    stats.allocations += 1;
                    let others = st.others(vm);
                    if !others.is_empty() || row.action == "allocated-duplicate" {
                        out.push(violation(
                            ONE_OWNER,
                            format!(
                                "{mac} {} to VM {vm} at {at} ms while {:?} had it",
                                row.action, others
                            ),
                        ));
                    }
                    if st.leases.contains(&owner) {
                        out.push(violation(
                            HISTORY,
                            format!("{mac} allocated to VM {vm} at {at} ms, which already had it"),
                        ));
                    }
                    if st.owners().is_empty()
                        && let Some(left) = st.left
                    {
                        let gap = at.saturating_sub(left);
                        stats.gaps.reuses += 1;
                        stats.gaps.min_gap_ms =
                            Some(stats.gaps.min_gap_ms.map_or(gap, |m| m.min(gap)));
                        if at + tolerance_ms < left + cooldown_ms {
                            out.push(violation(
                                COOLDOWN,
                                format!(
                                    "{mac} became unused at {left} ms and was allocated to VM \
                                     {vm} at {at} ms: {} ms later, cooldown {cooldown_ms} ms",
                                    at as i64 - left as i64
                                ),
                            ));
                        }
                    }
                    st.leases.push(owner);
                    st.left = None;
                }
                "bound" => {
                    if st.leases.contains(&owner) {
                        continue;
                    }
                    // A lease re-created by an inventory: only the VM that last had it, and
                    // never over somebody else's lease or hold.
                    stats.restores += 1;
                    let others = st.others(vm);
                    if !others.is_empty() {
                        out.push(violation(
                            ONE_OWNER,
                            format!("{mac} restored to VM {vm} at {at} ms while {others:?} had it"),
                        ));
                    }
                    if st.owners().is_empty()
                        && let Some(left) = st.left
                        && st.last_released.as_deref() != Some(vm)
                        && at + tolerance_ms < left + cooldown_ms
                    {
                        out.push(violation(
                            COOLDOWN,
                            format!(
                                "{mac} released by VM {} at {left} ms went to VM {vm} (bound) at \
                                 {at} ms, inside the cooldown",
                                st.last_released.as_deref().unwrap_or("?")
                            ),
                        ));
                    }
                    st.leases.push(owner);
                    st.left = None;
                }
                "released" => {
                    match st.leases.iter().position(|o| *o == owner) {
                        Some(k) => {
                            st.leases.remove(k);
                        }
                        None => out.push(violation(
                            HISTORY,
                            format!(
                                "{mac} released by VM {vm} at {at} ms, which had no lease of it"
                            ),
                        )),
                    }
                    st.last_released = Some(row.vm.clone());
                    if st.owners().is_empty() {
                        st.left = Some(at);
                    }
                }
                "held" => {
                    stats.holds += 1;
                    let others = st.others(vm);
                    if !others.is_empty() {
                        out.push(violation(
                            ONE_OWNER,
                            format!("{mac} held for VM {vm} at {at} ms while {others:?} had it"),
                        ));
                    }
                    *st.holds.entry(row.vm.clone()).or_insert(0) += 1;
                    st.left = None;
                }
                "unheld" => {
                    match st.holds.get_mut(vm) {
                        Some(n) => {
                            *n -= 1;
                            if *n == 0 {
                                st.holds.remove(vm);
                            }
                        }
                        None => out.push(violation(
                            HISTORY,
                            format!("{mac} unheld for VM {vm} at {at} ms, which held none"),
                        )),
                    }
                    if st.owners().is_empty() {
                        st.left = Some(at);
                    }
                }
                _ => {}
            }
        }
    }
    (out, stats)
}

/// Check 1 against one replica's `GET /leases`: returns the violations and how many
/// acknowledged leases were looked for.
pub fn leases_present(
    expected: &[(String, VmState)],
    leases: &[LeaseInfo],
    replica: &str,
) -> (Vec<Violation>, u64) {
    let mut by_vm: HashMap<&str, Vec<&LeaseInfo>> = HashMap::new();
    let mut by_mac: BTreeMap<Mac, Vec<&LeaseInfo>> = BTreeMap::new();
    for l in leases {
        by_vm.entry(l.vm_id.as_str()).or_default().push(l);
        if let Ok(m) = Mac::parse(&l.mac) {
            by_mac.entry(m).or_default().push(l);
        }
    }
    let mut out = Vec::new();
    let mut checked = 0;
    for (vm, state) in expected {
        let have: Vec<String> = by_vm
            .get(vm.as_str())
            .map(|ls| ls.iter().map(|l| l.mac.clone()).collect())
            .unwrap_or_default();
        match state {
            VmState::Leased(m) => {
                checked += 1;
                let found = have.iter().any(|h| Mac::parse(h).ok() == Some(*m));
                if !found || have.len() != 1 {
                    out.push(violation(
                        LEASE_PRESENT,
                        format!(
                            "VM {vm}: acknowledged lease {m}, but replica {replica} lists {have:?}"
                        ),
                    ));
                }
            }
            VmState::Free => {
                if !have.is_empty() {
                    out.push(violation(
                        RELEASE_KEPT,
                        format!(
                            "VM {vm}: release acknowledged, but replica {replica} lists {have:?}"
                        ),
                    ));
                }
            }
            VmState::Unknown => {}
        }
    }
    for (mac, ls) in by_mac {
        let vms: BTreeSet<&str> = ls.iter().map(|l| l.vm_id.as_str()).collect();
        if ls.len() > 1 {
            out.push(violation(
                ONE_OWNER,
                format!(
                    "{mac}: replica {replica} lists {} leases ({vms:?})",
                    ls.len()
                ),
            ));
        }
    }
    (out, checked)
}

/// The accounting rule every pool view must satisfy.
pub fn pool_accounting(pool: &PoolInfo, replica: &str) -> Option<Violation> {
    let sum = pool.free + pool.leased + pool.held + pool.cooling + pool.delegated;
    (sum != pool.size).then(|| {
        violation(
            ACCOUNTING,
            format!(
                "pool {} on replica {replica}: free {} + leased {} + held {} + cooling {} + \
                 delegated {} = {sum}, size {}",
                pool.name,
                pool.free,
                pool.leased,
                pool.held,
                pool.cooling,
                pool.delegated,
                pool.size
            ),
        )
    })
}

/// `2015-10-16T12:53:20.123Z` (the API's time format) to milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let h: u64 = t.next()?.parse().ok()?;
    let mi: u64 = t.next()?.parse().ok()?;
    let sec: u64 = t.next()?.parse().ok()?;
    let ms: u64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        digits.parse().ok()?
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs * 1000 + ms)
}

/// Howard Hinnant's days-from-civil: (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use macpool_core::Timestamp;

    fn mac(n: u64) -> Mac {
        Mac::from_u64(0x02c0_ffee_0000 + n).unwrap()
    }

    fn row(at: u64, action: &str, vm: &str) -> HistoryRow {
        HistoryRow {
            at_ms: at,
            action: action.into(),
            vm: vm.into(),
            adapter: String::new(),
        }
    }

    fn checks(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.check.as_str()).collect()
    }

    #[test]
    fn times_parse_back_to_the_timestamps_they_came_from() {
        for ms in [0, 951_782_400_000, 1_445_000_000_123, 4_102_444_799_999] {
            assert_eq!(parse_time_ms(&Timestamp(ms).to_string()), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_time_ms("2015-10-16T12:53:20Z"),
            Some(1_445_000_000_000)
        );
        assert_eq!(parse_time_ms("2015-10-16 12:53:20Z"), None);
        assert_eq!(parse_time_ms("2015-13-16T12:53:20.000Z"), None);
    }

    #[test]
    fn a_clean_history_replays_without_violations() {
        let mut h = BTreeMap::new();
        h.insert(
            mac(1),
            vec![
                row(1000, "allocated", "a"),
                row(1100, "bound", "a"),
                row(1200, "held", "a"),
                row(1300, "released", "a"),
                row(1400, "unheld", "a"),
                // cooldown 2000 ms counts from the unhold
                row(3400, "allocated", "b"),
                row(3500, "released", "b"),
                // the released VM comes back (migration): allowed inside the cooldown
                row(3600, "bound", "b"),
            ],
        );
        let (v, stats) = replay(&h, 2000, 0);
        assert_eq!(v, vec![]);
        assert_eq!(stats.allocations, 2);
        assert_eq!(stats.restores, 1);
        assert_eq!(stats.gaps.reuses, 1);
        assert_eq!(stats.gaps.min_gap_ms, Some(2000));
    }

    #[test]
    fn two_owners_and_early_reuse_are_violations() {
        let mut h = BTreeMap::new();
        h.insert(
            mac(1),
            vec![row(1000, "allocated", "a"), row(1001, "allocated", "b")],
        );
        h.insert(
            mac(2),
            vec![
                row(1000, "allocated", "a"),
                row(1100, "released", "a"),
                row(2000, "allocated", "b"),
            ],
        );
        h.insert(
            mac(3),
            vec![row(1000, "allocated", "a"), row(1001, "held", "b")],
        );
        h.insert(
            mac(4),
            vec![
                row(1000, "allocated", "a"),
                row(1100, "released", "a"),
                row(1200, "bound", "c"),
            ],
        );
        h.insert(mac(5), vec![row(1000, "released", "a")]);
        let (v, _) = replay(&h, 2000, 50);
        assert_eq!(
            checks(&v),
            vec![ONE_OWNER, COOLDOWN, ONE_OWNER, COOLDOWN, HISTORY],
            "{v:#?}"
        );
    }

    #[test]
    fn tolerance_forgives_a_few_milliseconds_only() {
        let mut h = BTreeMap::new();
        h.insert(
            mac(1),
            vec![
                row(1000, "allocated", "a"),
                row(1100, "released", "a"),
                row(3070, "allocated", "b"),
            ],
        );
        assert!(replay(&h, 2000, 50).0.is_empty());
        assert_eq!(checks(&replay(&h, 2000, 20).0), vec![COOLDOWN]);
    }

    fn iv(m: u64, vm: &str, from: u64, to: Option<u64>) -> Interval {
        Interval {
            mac: mac(m),
            vm: vm.into(),
            holding: Holding::Lease,
            from_us: from,
            to_us: to,
        }
    }

    #[test]
    fn overlapping_certain_intervals_of_two_vms_are_violations() {
        let ok = [
            iv(1, "a", 0, Some(100)),
            iv(1, "b", 100, None),
            iv(2, "a", 0, None),
            iv(2, "a", 10, None),
        ];
        assert!(overlapping_owners(&ok).is_empty());
        let bad = [iv(1, "a", 0, Some(100)), iv(1, "b", 99, Some(200))];
        assert_eq!(checks(&overlapping_owners(&bad)), vec![ONE_OWNER]);
        let open = [iv(1, "a", 0, None), iv(1, "b", 5000, Some(6000))];
        assert_eq!(checks(&overlapping_owners(&open)), vec![ONE_OWNER]);
    }

    #[test]
    fn client_side_cooldown_uses_release_start_and_allocation_end() {
        let rel = |m, start| ReleaseAck {
            vm: "a".into(),
            mac: mac(m),
            start_us: start,
            end_us: start + 10,
        };
        let alloc = |m, end| AllocAck {
            vm: "b".into(),
            mac: mac(m),
            start_us: end - 10,
            end_us: end,
            existing: false,
        };
        let restored = AllocAck {
            existing: true,
            ..alloc(1, 200_000)
        };
        let (v, stats) = cooldown_from_logs(
            &[
                alloc(1, 2_100_000),
                alloc(2, 1_900_000),
                alloc(3, 500),
                restored,
            ],
            &[rel(1, 100_000), rel(2, 100_000)],
            2_000_000,
            0,
        );
        assert_eq!(checks(&v), vec![COOLDOWN]);
        assert_eq!(stats.reuses, 2);
        assert_eq!(stats.min_gap_ms, Some(1800));
    }

    fn lease(vm: &str, m: u64) -> LeaseInfo {
        LeaseInfo {
            mac: mac(m).to_string(),
            pool: "checker".into(),
            vm_id: vm.into(),
            adapter_id: String::new(),
            vm_name: None,
            host: None,
            cluster: None,
            state: "reserved".into(),
            created: "2025-01-01T00:00:00.000Z".into(),
            duplicate: false,
        }
    }

    #[test]
    fn acknowledged_leases_must_be_listed_and_released_ones_not() {
        let expected = vec![
            ("a".to_string(), VmState::Leased(mac(1))),
            ("b".to_string(), VmState::Free),
            ("c".to_string(), VmState::Unknown),
        ];
        let (v, n) = leases_present(&expected, &[lease("a", 1), lease("c", 3)], "r0#1");
        assert_eq!((v, n), (vec![], 1));
        let (v, _) = leases_present(&expected, &[lease("a", 2), lease("b", 1)], "r0#1");
        assert_eq!(checks(&v), vec![LEASE_PRESENT, RELEASE_KEPT]);
        let (v, _) = leases_present(&[], &[lease("a", 1), lease("b", 1)], "r0#1");
        assert_eq!(checks(&v), vec![ONE_OWNER]);
    }
}
