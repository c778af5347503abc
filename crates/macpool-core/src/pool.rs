//! Pools: named sets of ranges with the policies that govern how their addresses are handed out.

use std::fmt;
use std::time::Duration;

use crate::mac::Mac;
use crate::range::MacRange;

/// A pool name: 1–64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit, so it
/// is safe in URLs, shell scripts and metric labels.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolName(String);

impl PoolName {
    pub fn new(name: &str) -> Result<PoolName, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 {
            return Err(format!(
                "pool name '{name}' must be 1 to 64 characters long"
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "pool name '{name}' must start with a letter or digit"
            ));
        }
        if let Some(bad) = name.chars().find(|c| !ok_char(*c)) {
            return Err(format!(
                "pool name '{name}' contains '{bad}': use letters, digits, '.', '_' and '-'"
            ));
        }
        Ok(PoolName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which free address an allocation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AllocationOrder {
    /// From a cursor that starts at a random offset and moves past each allocation, so a freshly
    /// released MAC is not handed out again at once (stale ARP and DHCP state stays harmless).
    #[default]
    NextFit,
    /// Always the lowest free address: compact, predictable, reuses early.
    Lowest,
}

impl AllocationOrder {
    pub fn name(self) -> &'static str {
        match self {
            AllocationOrder::NextFit => "next-fit",
            AllocationOrder::Lowest => "lowest",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "next-fit" => Ok(AllocationOrder::NextFit),
            "lowest" => Ok(AllocationOrder::Lowest),
            other => Err(format!(
                "unknown order '{other}': expected next-fit or lowest"
            )),
        }
    }
}

/// What happens when someone asks for a specific MAC that is already taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DuplicatePolicy {
    #[default]
    Deny,
    /// Grant it, and flag the lease as a duplicate so it shows up everywhere.
    AllowAndFlag,
}

impl DuplicatePolicy {
    pub fn name(self) -> &'static str {
        match self {
            DuplicatePolicy::Deny => "deny",
            DuplicatePolicy::AllowAndFlag => "allow-and-flag",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(DuplicatePolicy::Deny),
            "allow-and-flag" => Ok(DuplicatePolicy::AllowAndFlag),
            other => Err(format!(
                "unknown duplicate policy '{other}': expected deny or allow-and-flag"
            )),
        }
    }
}

/// A threshold in hundredths of a percent of the pool size (`5%` = 500), below which the pool is
/// reported as running low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LowWater(u16);

impl LowWater {
    pub fn from_basis_points(bp: u16) -> Result<LowWater, String> {
        if bp > 10_000 {
            return Err(format!(
                "low-water mark {}% is above 100%",
                f64::from(bp) / 100.0
            ));
        }
        Ok(LowWater(bp))
    }

    /// Parses `5%`, `5`, `2.5%`.
    pub fn parse(s: &str) -> Result<LowWater, String> {
        let t = s.trim().trim_end_matches('%');
        let pct: f64 = t
            .parse()
            .map_err(|_| format!("low-water mark '{s}' is not a percentage like 5%"))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("low-water mark '{s}' must be between 0% and 100%"));
        }
        Ok(LowWater((pct * 100.0).round() as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// True when `free` out of `size` is below the mark.
    pub fn is_low(self, free: u64, size: u64) -> bool {
        size > 0 && u128::from(free) * 10_000 < u128::from(self.0) * u128::from(size)
    }
}

impl Default for LowWater {
    fn default() -> Self {
        LowWater(500)
    }
}

impl fmt::Display for LowWater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}%", f64::from(self.0) / 100.0)
        }
    }
}

/// The default reuse cooldown: a day outlives ARP caches, switch tables and most DHCP leases.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Everything an admin sets on a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolPolicy {
    pub order: AllocationOrder,
    pub cooldown: Duration,
    pub duplicates: DuplicatePolicy,
    pub low_water: LowWater,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy {
            order: AllocationOrder::default(),
            cooldown: DEFAULT_COOLDOWN,
            duplicates: DuplicatePolicy::default(),
            low_water: LowWater::default(),
        }
    }
}

/// A pool's definition: name, ranges (sorted, non-overlapping) and policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolSpec {
    pub name: PoolName,
    pub ranges: Vec<MacRange>,
    pub policy: PoolPolicy,
}

impl PoolSpec {
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(MacRange::len).sum()
    }

    /// The lowest and the highest address of the pool's ranges (a pool has at least one).
    pub fn span(&self) -> (Mac, Mac) {
        let lo = self.ranges.iter().map(MacRange::first).min();
        let hi = self.ranges.iter().map(MacRange::last).max();
        (lo.unwrap_or(Mac::ZERO), hi.unwrap_or(Mac::ZERO))
    }
}

/// A pool's counters at one instant. `free + leased + held + cooling + delegated == size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub size: u64,
    /// Addresses with at least one live lease.
    pub leased: u64,
    /// Addresses kept by a hold and no lease.
    pub held: u64,
    /// Released addresses waiting for their cooldown to end.
    pub cooling: u64,
    /// Addresses inside blocks delegated to hosts (pending, active or draining).
    pub delegated: u64,
    pub free: u64,
}

impl PoolUsage {
    /// Share of the pool not free, in percent.
    pub fn percent_used(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            (self.size - self.free) as f64 * 100.0 / self.size as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_url_and_label_safe() {
        assert!(PoolName::new("rds-pool_1.a").is_ok());
        assert!(PoolName::new("").is_err());
        assert!(PoolName::new("-lead").is_err());
        assert!(PoolName::new("has space").unwrap_err().contains("' '"));
        assert!(PoolName::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn low_water_parses_and_compares() {
        let lw = LowWater::parse("5%").unwrap();
        assert_eq!(lw.basis_points(), 500);
        assert!(lw.is_low(4, 100));
        assert!(!lw.is_low(5, 100));
        assert_eq!(LowWater::parse("2.5").unwrap().to_string(), "2.5%");
        assert!(LowWater::parse("120%").is_err());
        assert!(LowWater::parse("lots").is_err());
    }
}
