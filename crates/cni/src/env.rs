//! The `CNI_*` environment: which variables each verb needs and how the
//! reference validates them (same rules, same messages, same codes).

use crate::error::{Error, Result, code};

/// The verb a runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(Error::invalid_env(format!("unknown CNI_COMMAND: {other}")));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Environment variables the verb cannot do without. GC and STATUS work
    /// on the network as a whole: no container, netns or interface.
    pub fn required_env(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Gc => &["CNI_PATH"],
            Command::Status | Command::Version => &[],
        }
    }

    /// Whether the verb is about one attachment (has container id and ifname).
    pub fn is_per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reference's rule for container ids and network names: they become
/// file and chain names, so they must never contain a path separator.
fn is_valid_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Validate `CNI_CONTAINERID` (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::new(code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    if !is_valid_id(id) {
        return Err(Error::invalid_env("invalid characters in containerID").with_details(id));
    }
    Ok(())
}

/// Validate a network name: same rule as a container id (it names the
/// host-local state directory and is hashed into chain names).
pub fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_config("missing network name"));
    }
    if !is_valid_id(name) {
        return Err(
            Error::invalid_config("invalid characters found in network name").with_details(name),
        );
    }
    // It names a directory under host-local's dataDir (NAME_MAX): refuse it
    // here, before any plugin creates something it could never clean up.
    if name.len() > MAX_NETWORK_NAME {
        return Err(Error::invalid_config(format!(
            "network name is too long: {} bytes, at most {MAX_NETWORK_NAME}",
            name.len()
        ))
        .with_details(name));
    }
    Ok(())
}

/// Longest network name: a file name component (`NAME_MAX`).
pub const MAX_NETWORK_NAME: usize = 255;

/// Validate `CNI_IFNAME` as the kernel and the reference do.
pub fn validate_ifname(name: &str) -> Result<()> {
    let msg = if name.is_empty() {
        "interface name is empty"
    } else if name.len() > 15 {
        "interface name is too long"
    } else if name == "." || name == ".." {
        "interface name is . or .."
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "interface name contains / or : or whitespace characters"
    } else {
        return Ok(());
    };
    Err(Error::invalid_env(msg).with_details(name))
}

/// Split `CNI_PATH` (colon-separated), dropping empty entries.
pub fn split_path(s: &str) -> Vec<std::path::PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_unknown_is_code_4() {
        for c in ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] {
            assert_eq!(Command::parse(c).unwrap().as_str(), c);
        }
        let e = Command::parse("add").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "unknown CNI_COMMAND: add"));
    }

    #[test]
    fn gc_and_status_need_no_attachment() {
        assert!(!Command::Gc.required_env().contains(&"CNI_CONTAINERID"));
        assert!(!Command::Status.required_env().contains(&"CNI_NETNS"));
        assert!(!Command::Del.required_env().contains(&"CNI_NETNS"));
        assert!(Command::Add.required_env().contains(&"CNI_NETNS"));
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "abc-123_x.y", "0", "cnitool-0123456789abcdef0123"] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["-a", ".a", "_a", "a b", "a/b", "../x", "a;b", "ä"] {
            let e = validate_container_id(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{bad}");
            assert_eq!(e.details, bad);
        }
        assert_eq!(
            validate_container_id("").unwrap_err().code,
            code::UNKNOWN_CONTAINER
        );
    }

    #[test]
    fn network_names() {
        validate_network_name("my-net.1").unwrap();
        for bad in ["../x", "a/b", ".", "..", "x y"] {
            let e = validate_network_name(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}");
            assert_eq!(e.msg, "invalid characters found in network name");
        }
        assert_eq!(
            validate_network_name("").unwrap_err().msg,
            "missing network name"
        );
    }

    #[test]
    fn ifnames() {
        validate_ifname("eth0").unwrap();
        validate_ifname("a23456789012345").unwrap();
        let cases = [
            ("", "interface name is empty"),
            ("a234567890123456", "interface name is too long"),
            (".", "interface name is . or .."),
            ("..", "interface name is . or .."),
            (
                "a/b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a:b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a\tb",
                "interface name contains / or : or whitespace characters",
            ),
        ];
        for (name, msg) in cases {
            let e = validate_ifname(name).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (code::INVALID_ENV, msg),
                "{name:?}"
            );
        }
    }

    #[test]
    fn path_splits() {
        assert_eq!(
            split_path("/a::/b:"),
            vec![std::path::PathBuf::from("/a"), "/b".into()]
        );
    }
}
