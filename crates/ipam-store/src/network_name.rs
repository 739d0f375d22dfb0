//! Network names become a directory under dataDir; only names that are a
//! single, ordinary path component are accepted.

/// The grammar CNI uses for network names and container IDs:
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It admits no `/`, and no `.` or `..`
/// (the first character must be alphanumeric), so joining such a name to
/// dataDir can never leave dataDir.
pub(crate) fn is_cni_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_safe_components() {
        for ok in ["net1", "a", "my-net_2.x", "10.0.0.1"] {
            assert!(is_cni_identifier(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "-x", "a b", "a\n"] {
            assert!(!is_cni_identifier(bad), "{bad:?}");
        }
    }
}
