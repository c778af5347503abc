//! Inclusive ranges of unicast MACs: what pools are made of and what hosts are delegated.

use std::fmt;

use crate::mac::{Mac, MacFormat, MacParseError};

/// An inclusive range `[first, last]` in which every address is unicast.
///
/// Invariant (enforced by [`MacRange::new`]): `first <= last` and both share the first octet, whose
/// multicast bit is clear — the only way a contiguous run of MACs contains no group address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MacRange {
    first: Mac,
    last: Mac,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("invalid MAC in range: {0}")]
    Mac(#[from] MacParseError),
    #[error("range '{0}' is not of the form FIRST-LAST (e.g. 00:15:5d:f0:00:00-00:15:5d:f0:ff:ff)")]
    Syntax(String),
    #[error("range {first} - {last} is inverted: the first address is above the last")]
    Inverted { first: Mac, last: Mac },
    #[error("range {first} - {last} contains multicast addresses: {reason}")]
    Multicast {
        first: Mac,
        last: Mac,
        reason: &'static str,
    },
}

impl MacRange {
    pub fn new(first: Mac, last: Mac) -> Result<MacRange, RangeError> {
        if first > last {
            return Err(RangeError::Inverted { first, last });
        }
        if first.is_multicast() {
            return Err(RangeError::Multicast {
                first,
                last,
                reason: "its first address has the group bit set",
            });
        }
        if first.octets()[0] != last.octets()[0] {
            return Err(RangeError::Multicast {
                first,
                last,
                reason: "it spans several first octets, and every odd first octet is multicast",
            });
        }
        Ok(MacRange { first, last })
    }

    /// A range of one address.
    pub fn single(mac: Mac) -> Result<MacRange, RangeError> {
        MacRange::new(mac, mac)
    }

    /// Parses `FIRST-LAST` in any MAC dialect. Because `-` is also an IEEE separator, the split
    /// is tried at every `-` and the one that yields two MACs wins; `..`, ` - ` and `,` also work.
    pub fn parse(input: &str) -> Result<MacRange, RangeError> {
        let s = input.trim();
        for sep in ["..", " - ", ","] {
            if let Some((a, b)) = s.split_once(sep) {
                return MacRange::new(Mac::parse(a)?, Mac::parse(b)?);
            }
        }
        let mut last_err = None;
        for (i, _) in s.match_indices('-') {
            match (Mac::parse(&s[..i]), Mac::parse(&s[i + 1..])) {
                (Ok(a), Ok(b)) => return MacRange::new(a, b),
                (Err(e), _) | (_, Err(e)) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) if s.matches('-').count() == 1 => Err(RangeError::Mac(e)),
            _ => Err(RangeError::Syntax(s.into())),
        }
    }

    pub fn first(&self) -> Mac {
        self.first
    }

    pub fn last(&self) -> Mac {
        self.last
    }

    /// Number of addresses, counting both ends.
    pub fn len(&self) -> u64 {
        self.last.to_u64() - self.first.to_u64() + 1
    }

    /// Never true: a range holds at least one address. Present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, mac: Mac) -> bool {
        self.first <= mac && mac <= self.last
    }

    /// Whether every address of `other` lies in this range.
    pub fn contains_range(&self, other: &MacRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    pub fn overlaps(&self, other: &MacRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The address of this range that no adapter may have ([`Mac::invalid_reason`]), with why.
    /// A unicast range holds no group address (so no broadcast either): the all-zero address,
    /// which can only be a range's first, is the one such address a range can contain.
    pub fn invalid_address(&self) -> Option<(Mac, &'static str)> {
        self.first.invalid_reason().map(|why| (self.first, why))
    }

    /// This range without the address [`MacRange::invalid_address`] names; `None` when that
    /// address was all of it. How a pool stored before such ranges were refused is read.
    pub fn without_invalid(self) -> Option<MacRange> {
        match self.invalid_address() {
            None => Some(self),
            Some(_) if self.first == self.last => None,
            Some((mac, _)) => Some(MacRange {
                first: mac.next()?,
                last: self.last,
            }),
        }
    }

    /// The address `offset` places after `first`, if still inside the range.
    pub fn nth(&self, offset: u64) -> Option<Mac> {
        (offset < self.len()).then(|| Mac::from_u64(self.first.to_u64() + offset).unwrap())
    }

    pub fn display(&self, format: MacFormat) -> String {
        format!(
            "{}-{}",
            self.first.display(format),
            self.last.display(format)
        )
    }
}

impl fmt::Display for MacRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.first, self.last)
    }
}

impl fmt::Debug for MacRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacRange({self})")
    }
}

impl std::str::FromStr for MacRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacRange::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> MacRange {
        MacRange::parse(s).unwrap()
    }

    #[test]
    fn parses_dash_separated_ieee_ranges() {
        let range = r("00-15-5D-F0-00-00-00-15-5D-F0-00-FF");
        assert_eq!(range.len(), 256);
        assert_eq!(r("00:15:5d:f0:00:00-00:15:5d:f0:00:ff"), range);
        assert_eq!(r("00155DF00000-00155DF000FF"), range);
        assert_eq!(r("00155DF00000..00155DF000FF"), range);
        assert_eq!(r("00-15-5D-F0-00-00 - 00-15-5D-F0-00-FF"), range);
    }

    #[test]
    fn inclusive_size_and_single_address() {
        assert_eq!(r("00155D000001-00155D000001").len(), 1);
        assert_eq!(
            r("00155D000000-00155D0000FF").nth(255).unwrap().to_string(),
            "00-15-5D-00-00-FF"
        );
        assert_eq!(r("00155D000000-00155D0000FF").nth(256), None);
    }

    #[test]
    fn rejects_inverted_multicast_and_garbage() {
        assert!(matches!(
            MacRange::parse("00155D0000FF-00155D000000"),
            Err(RangeError::Inverted { .. })
        ));
        assert!(matches!(
            MacRange::parse("01005E000000-01005E0000FF"),
            Err(RangeError::Multicast { .. })
        ));
        assert!(matches!(
            MacRange::parse("00FFFFFFFFFF-020000000000"),
            Err(RangeError::Multicast { .. })
        ));
        assert!(matches!(
            MacRange::parse("nonsense"),
            Err(RangeError::Syntax(_))
        ));
        assert!(matches!(
            MacRange::parse("00155D00000G-00155D0000FF"),
            Err(RangeError::Mac(_))
        ));
    }

    #[test]
    fn the_zero_address_is_the_only_invalid_address_a_range_can_hold() {
        let zero = r("000000000000-0000000000FF");
        assert_eq!(zero.invalid_address().map(|(m, _)| m), Some(Mac::ZERO));
        assert_eq!(zero.without_invalid(), Some(r("000000000001-0000000000FF")));
        assert_eq!(r("000000000000-000000000000").without_invalid(), None);
        let fine = r("00155D000000-00155D0000FF");
        assert_eq!(fine.invalid_address(), None);
        assert_eq!(fine.without_invalid(), Some(fine));
        // Broadcast is a group address: no range can reach it.
        assert!(MacRange::parse("FEFFFFFFFFFF-FFFFFFFFFFFF").is_err());
    }

    #[test]
    fn overlap_is_symmetric_and_inclusive() {
        let a = r("00155D000000-00155D0000FF");
        let b = r("00155D0000FF-00155D0001FF");
        let c = r("00155D000100-00155D0001FF");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }
}
