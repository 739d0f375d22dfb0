//! Spec versions: which ones we speak and how they compare.

use crate::error::{Error, Result, code};
use std::cmp::Ordering;

/// Every spec version the plugins of this project support, oldest first.
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest spec version: what results are built in.
pub const CURRENT: &str = "1.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parse `X.Y.Z` (an empty string means 0.1.0, as in the reference: the
    /// oldest configurations had no `cniVersion`).
    pub fn parse(s: &str) -> Result<Version> {
        if s.is_empty() {
            return Ok(Version(0, 1, 0));
        }
        let bad = || {
            Error::new(
                code::DECODING_FAILURE,
                format!("invalid version {s:?}: the version must be of the form X.Y.Z"),
            )
        };
        let mut parts = s.split('.');
        let mut next = || -> Result<u32> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    /// CHECK (and a cached `prevResult` on DEL) exist since 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS exist since 1.1.0.
    pub fn has_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Whether this version is one the project speaks.
    pub fn is_supported(s: &str) -> bool {
        SUPPORTED.contains(&s)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Compare two version strings.
pub fn compare(a: &str, b: &str) -> Result<Ordering> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// The `VERSION` reply.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({ "cniVersion": CURRENT, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.1.0").unwrap() > Version::parse("1.0.0").unwrap());
        assert_eq!(Version::parse("").unwrap(), Version(0, 1, 0));
        assert_eq!(compare("0.10.0", "0.9.0").unwrap(), Ordering::Greater);
    }

    #[test]
    fn verbs_by_version() {
        let v = |s| Version::parse(s).unwrap();
        assert!(!v("0.3.1").has_check());
        assert!(v("0.4.0").has_check());
        assert!(!v("1.0.0").has_gc_and_status());
        assert!(v("1.1.0").has_gc_and_status());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "1", "1.0", "1.0.0.0", "a.b.c", "1..0", "-1.0.0", "1.0.x", " 1.0.0",
        ] {
            let e = Version::parse(bad).unwrap_err();
            assert_eq!(e.code, code::DECODING_FAILURE, "{bad}");
            assert!(e.msg.contains(bad), "{}", e.msg);
        }
    }

    #[test]
    fn supported_list_is_sorted_and_complete() {
        let parsed: Vec<_> = SUPPORTED
            .iter()
            .map(|s| Version::parse(s).unwrap())
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(SUPPORTED.last(), Some(&CURRENT));
        assert!(Version::is_supported("0.2.0") && !Version::is_supported("9.9.9"));
    }
}
