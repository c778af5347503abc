//! The 48-bit MAC address value type: parsing every spelling admins paste, printing in the
//! dialect they asked for, and the bit-level facts (multicast, locally administered, Hyper-V OUI).

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address. Stored as the integer value so ranges are plain arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Mac(u64);

/// The largest value a 48-bit MAC can hold (`FF-FF-FF-FF-FF-FF`).
pub const MAC_MAX: u64 = 0xFFFF_FFFF_FFFF;

/// Microsoft's OUI that Hyper-V uses for its default dynamic ranges.
pub const HYPERV_OUI: [u8; 3] = [0x00, 0x15, 0x5D];

/// How a MAC is spelled on output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MacFormat {
    /// `00-15-5D-0A-0B-0C` (IEEE 802, what Windows shows)
    #[default]
    Ieee,
    /// `00:15:5d:0a:0b:0c` (Linux, libvirt)
    Unix,
    /// `00155D0A0B0C` (Hyper-V PowerShell)
    Hyperv,
    /// `0015.5d0a.0b0c` (Cisco IOS)
    Cisco,
}

impl MacFormat {
    pub const ALL: [MacFormat; 4] = [
        MacFormat::Ieee,
        MacFormat::Unix,
        MacFormat::Hyperv,
        MacFormat::Cisco,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MacFormat::Ieee => "ieee",
            MacFormat::Unix => "unix",
            MacFormat::Hyperv => "hyperv",
            MacFormat::Cisco => "cisco",
        }
    }
}

impl FromStr for MacFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown MAC format '{s}': expected ieee, unix, hyperv or cisco")
            })
    }
}

/// Why a string is not a MAC. Positions are 1-based character positions in the trimmed input,
/// so the message can point at the offending character.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    #[error("empty MAC address")]
    Empty,
    #[error(
        "wrong length: '{input}' has {hex_digits} hex digits, a MAC has 12 \
         (e.g. 00-15-5D-0A-0B-0C, 00:15:5d:0a:0b:0c, 00155D0A0B0C or 0015.5d0a.0b0c)"
    )]
    WrongLength { input: String, hex_digits: usize },
    #[error(
        "bad digit '{found}' at position {position} in '{input}': expected a hex digit 0-9 or A-F"
    )]
    BadDigit {
        input: String,
        position: usize,
        found: char,
    },
    #[error("mixed separators in '{input}': use one of ':', '-' or '.' throughout")]
    MixedSeparators { input: String },
    #[error(
        "misplaced separator at position {position} in '{input}': expected groups of two \
         (00-15-5D-0A-0B-0C) or four (0015.5d0a.0b0c) hex digits"
    )]
    MisplacedSeparator { input: String, position: usize },
}

impl Mac {
    pub const ZERO: Mac = Mac(0);
    pub const BROADCAST: Mac = Mac(MAC_MAX);

    /// Builds a MAC from its integer value; `None` when it does not fit in 48 bits.
    pub fn from_u64(value: u64) -> Option<Mac> {
        (value <= MAC_MAX).then_some(Mac(value))
    }

    pub fn from_octets(o: [u8; 6]) -> Mac {
        Mac(o.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    pub fn to_u64(self) -> u64 {
        self.0
    }

    pub fn octets(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The I/G bit: set for group (multicast and broadcast) addresses.
    pub fn is_multicast(self) -> bool {
        self.octets()[0] & 0x01 != 0
    }

    pub fn is_unicast(self) -> bool {
        !self.is_multicast()
    }

    /// The U/L bit: set for locally administered addresses (no vendor OUI).
    pub fn is_local(self) -> bool {
        self.octets()[0] & 0x02 != 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_broadcast(self) -> bool {
        self.0 == MAC_MAX
    }

    /// The first three octets: the vendor OUI when universally administered.
    pub fn oui(self) -> [u8; 3] {
        let o = self.octets();
        [o[0], o[1], o[2]]
    }

    /// The address after this one, `None` past `FF-FF-FF-FF-FF-FF`.
    pub fn next(self) -> Option<Mac> {
        Mac::from_u64(self.0 + 1)
    }

    /// Why this MAC cannot be given to a VM adapter, if it cannot.
    pub fn invalid_reason(self) -> Option<&'static str> {
        if self.is_zero() {
            Some("the all-zero address is not a valid adapter address")
        } else if self.is_broadcast() {
            Some("the broadcast address is not a valid adapter address")
        } else if self.is_multicast() {
            Some("a multicast (group) address cannot be an adapter address")
        } else {
            None
        }
    }

    /// When the MAC lies in Hyper-V's default range `00-15-5D-xx-yy-zz`, the last two octets
    /// `(xx, yy)` of the IPv4 address of the host that issues it by default.
    pub fn hyperv_default_host_suffix(self) -> Option<(u8, u8)> {
        let o = self.octets();
        (o[..3] == HYPERV_OUI).then_some((o[3], o[4]))
    }

    pub fn display(self, format: MacFormat) -> MacDisplay {
        MacDisplay { mac: self, format }
    }

    /// Parses one MAC in any of the four dialects, any letter case, surrounding whitespace ignored.
    pub fn parse(input: &str) -> Result<Mac, MacParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(MacParseError::Empty);
        }
        let separator = s.chars().find(|c| matches!(c, ':' | '-' | '.'));
        if let Some(sep) = separator
            && s.chars().any(|c| matches!(c, ':' | '-' | '.') && c != sep)
        {
            return Err(MacParseError::MixedSeparators { input: s.into() });
        }
        let mut value = 0u64;
        let mut digits = 0usize;
        for (i, c) in s.chars().enumerate() {
            if Some(c) == separator {
                continue;
            }
            let Some(d) = c.to_digit(16) else {
                return Err(MacParseError::BadDigit {
                    input: s.into(),
                    position: i + 1,
                    found: c,
                });
            };
            digits += 1;
            if digits <= 12 {
                value = (value << 4) | u64::from(d);
            }
        }
        if digits != 12 {
            return Err(MacParseError::WrongLength {
                input: s.into(),
                hex_digits: digits,
            });
        }
        if let Some(sep) = separator {
            let group = if sep == '.' { 4 } else { 2 };
            let mut run = 0;
            for (i, c) in s.chars().enumerate() {
                if c == sep {
                    if run != group {
                        return Err(MacParseError::MisplacedSeparator {
                            input: s.into(),
                            position: i + 1,
                        });
                    }
                    run = 0;
                } else {
                    run += 1;
                }
            }
            if run != group {
                return Err(MacParseError::MisplacedSeparator {
                    input: s.into(),
                    position: s.chars().count(),
                });
            }
        }
        Ok(Mac(value))
    }
}

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

/// A MAC printed in one dialect; build it with [`Mac::display`].
pub struct MacDisplay {
    mac: Mac,
    format: MacFormat,
}

impl fmt::Display for MacDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.mac.octets();
        match self.format {
            MacFormat::Ieee => write!(
                f,
                "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
                o[0], o[1], o[2], o[3], o[4], o[5]
            ),
            MacFormat::Unix => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                o[0], o[1], o[2], o[3], o[4], o[5]
            ),
            MacFormat::Hyperv => write!(
                f,
                "{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
                o[0], o[1], o[2], o[3], o[4], o[5]
            ),
            MacFormat::Cisco => write!(
                f,
                "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
                o[0], o[1], o[2], o[3], o[4], o[5]
            ),
        }
    }
}

/// The canonical spelling is IEEE (`00-15-5D-0A-0B-0C`), the one Windows admins read.
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(MacFormat::Ieee).fmt(f)
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_dialect_to_the_same_value() {
        let expected = Mac::from_octets([0x00, 0x15, 0x5d, 0x0a, 0x0b, 0x0c]);
        for s in [
            "00:15:5d:0a:0b:0c",
            "00-15-5D-0A-0B-0C",
            "00155D0A0B0C",
            "0015.5d0a.0b0c",
            "  00:15:5D:0a:0B:0c\t",
            "00155d0a0b0c\n",
        ] {
            assert_eq!(mac(s), expected, "{s:?}");
        }
    }

    #[test]
    fn rejects_with_a_precise_reason() {
        assert_eq!(Mac::parse("  "), Err(MacParseError::Empty));
        assert_eq!(
            Mac::parse("00:15:5d:0a:0b"),
            Err(MacParseError::WrongLength {
                input: "00:15:5d:0a:0b".into(),
                hex_digits: 10
            })
        );
        assert_eq!(
            Mac::parse("00155D0A0B0C0D"),
            Err(MacParseError::WrongLength {
                input: "00155D0A0B0C0D".into(),
                hex_digits: 14
            })
        );
        assert_eq!(
            Mac::parse("00:15:5g:0a:0b:0c"),
            Err(MacParseError::BadDigit {
                input: "00:15:5g:0a:0b:0c".into(),
                position: 8,
                found: 'g'
            })
        );
        assert_eq!(
            Mac::parse("00:15-5d:0a:0b:0c"),
            Err(MacParseError::MixedSeparators {
                input: "00:15-5d:0a:0b:0c".into()
            })
        );
        assert_eq!(
            Mac::parse("001:5:5d:0a:0b:0c"),
            Err(MacParseError::MisplacedSeparator {
                input: "001:5:5d:0a:0b:0c".into(),
                position: 4
            })
        );
        assert_eq!(
            Mac::parse("00155d.0a0b0c").unwrap_err().to_string(),
            "misplaced separator at position 7 in '00155d.0a0b0c': expected groups of two \
             (00-15-5D-0A-0B-0C) or four (0015.5d0a.0b0c) hex digits"
        );
        assert!(Mac::parse("00 15 5d 0a 0b 0c").is_err());
    }

    #[test]
    fn prints_every_dialect() {
        let m = mac("00155D0A0B0C");
        assert_eq!(m.display(MacFormat::Ieee).to_string(), "00-15-5D-0A-0B-0C");
        assert_eq!(m.display(MacFormat::Unix).to_string(), "00:15:5d:0a:0b:0c");
        assert_eq!(m.display(MacFormat::Hyperv).to_string(), "00155D0A0B0C");
        assert_eq!(m.display(MacFormat::Cisco).to_string(), "0015.5d0a.0b0c");
    }

    #[test]
    fn bit_facts() {
        assert!(mac("01:00:5e:00:00:01").is_multicast());
        assert!(mac("02:00:00:00:00:01").is_local());
        assert!(!mac("00:15:5d:00:00:01").is_local());
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast());
        assert_eq!(
            mac("00-15-5D-01-85-07").hyperv_default_host_suffix(),
            Some((1, 133))
        );
        assert_eq!(mac("00-1D-D8-01-85-07").hyperv_default_host_suffix(), None);
        assert!(Mac::ZERO.invalid_reason().is_some());
        assert!(mac("00-15-5D-01-85-07").invalid_reason().is_none());
        assert_eq!(Mac::from_u64(MAC_MAX + 1), None);
    }

    proptest! {
        #[test]
        fn parse_of_print_is_identity(v in 0..=MAC_MAX, f in 0usize..4) {
            let m = Mac::from_u64(v).unwrap();
            let printed = m.display(MacFormat::ALL[f]).to_string();
            prop_assert_eq!(Mac::parse(&printed), Ok(m));
            prop_assert_eq!(Mac::parse(&printed.to_lowercase()), Ok(m));
            prop_assert_eq!(Mac::parse(&printed.to_uppercase()), Ok(m));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Mac::parse(&s);
        }
    }
}
