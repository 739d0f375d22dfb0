//! CNI spec versions as the runtime compares them. The version type is the
//! protocol's own ([`cni::version::Version`]); what is added here is the
//! runtime's view: which versions it drives, and a total order on version
//! strings that tolerates bad ones.

use std::cmp::Ordering;

pub use cni::version::{CURRENT, Version};

/// Parse `"1.0.0"`; `None` when it is not `MAJOR.MINOR.PATCH`. An empty
/// string means 0.1.0: configurations from before the `cniVersion` key
/// existed are decoded that way by plugins.
pub fn parse(text: &str) -> Option<Version> {
    Version::parse(text).ok()
}

/// Whether this runtime knows how to drive plugins at this version.
/// Versions above [`CURRENT`] in a configuration's `cniVersions` are
/// ignored, as libcni does.
pub fn is_implemented(version: Version) -> bool {
    Some(version) <= parse(CURRENT)
}

/// Order version strings; unparsable ones sort first so they never win.
pub fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(parse("0.3.1"), Some(Version(0, 3, 1)));
        assert_eq!(parse(""), Some(Version(0, 1, 0)));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse("1.0.0.0"), None);
        assert_eq!(parse("1.x.0"), None);
        assert_eq!(compare("1.0.0", "0.4.0"), Ordering::Greater);
        assert_eq!(compare("0.3.0", "0.3.1"), Ordering::Less);
        assert_eq!(compare("bad", "0.1.0"), Ordering::Less);
    }

    #[test]
    fn implemented_up_to_current() {
        let v = |s| parse(s).unwrap();
        assert!(is_implemented(v("1.1.0")));
        assert!(is_implemented(v("0.1.0")));
        assert!(!is_implemented(v("1.2.0")));
    }
}
