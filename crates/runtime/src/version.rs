//! CNI spec versions as the runtime compares them: which versions exist,
//! which one this runtime implements, and which verbs each allows.

use std::cmp::Ordering;
use std::fmt;

/// The newest spec version this runtime implements. Versions above it in a
/// configuration's `cniVersions` are ignored, as libcni does.
pub const CURRENT: &str = "1.1.0";

/// A parsed `MAJOR.MINOR.PATCH` spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl SpecVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SpecVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parse `"1.0.0"`. An empty string means 0.1.0: configurations from
    /// before the `cniVersion` key existed are decoded that way by plugins.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self::new(0, 1, 0));
        }
        let mut parts = text.split('.');
        let mut next = || -> Option<u32> {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let version = Self::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(version)
    }

    /// CHECK and a cached `prevResult` on DEL exist since 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Self::new(0, 4, 0)
    }

    /// GC and STATUS exist since 1.1.0.
    pub fn has_gc_and_status(self) -> bool {
        self >= Self::new(1, 1, 0)
    }

    /// Whether this runtime knows how to drive plugins at this version.
    pub fn is_implemented(self) -> bool {
        Some(self) <= Self::parse(CURRENT)
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Order version strings; unparsable ones sort first so they never win.
pub fn compare(a: &str, b: &str) -> Ordering {
    SpecVersion::parse(a).cmp(&SpecVersion::parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(SpecVersion::parse("0.3.1"), Some(SpecVersion::new(0, 3, 1)));
        assert_eq!(SpecVersion::parse(""), Some(SpecVersion::new(0, 1, 0)));
        assert_eq!(SpecVersion::parse("1.0"), None);
        assert_eq!(SpecVersion::parse("1.0.0.0"), None);
        assert_eq!(SpecVersion::parse("1.x.0"), None);
        assert_eq!(compare("1.0.0", "0.4.0"), Ordering::Greater);
        assert_eq!(compare("0.3.0", "0.3.1"), Ordering::Less);
    }

    #[test]
    fn verbs_by_version() {
        let v = |s| SpecVersion::parse(s).unwrap();
        assert!(!v("0.3.1").has_check());
        assert!(v("0.4.0").has_check());
        assert!(!v("1.0.0").has_gc_and_status());
        assert!(v("1.1.0").has_gc_and_status());
        assert!(v("1.1.0").is_implemented());
        assert!(!v("1.2.0").is_implemented());
    }
}
