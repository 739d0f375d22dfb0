//! What identifies one attachment of a container to a network, and the
//! per-call arguments that go with it (libcni's `RuntimeConf`).

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use crate::error::{Error, Result};

/// One container interface on one network, plus the arguments of the call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    pub container_id: String,
    /// Path of the container's network namespace; may be empty on DEL.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `mac`, ...). Each plugin
    /// receives only those it declares in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> Self {
        Attachment {
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            ..Default::default()
        }
    }

    /// Check the identifiers the way plugins will (and libcni does before
    /// ADD), so a bad value fails before any plugin has run.
    pub fn validate(&self) -> Result<()> {
        validate_container_id(&self.container_id)?;
        validate_ifname(&self.ifname)
    }

    /// `CNI_ARGS` as passed in the environment: `K1=V1;K2=V2`.
    pub fn args_env(&self) -> String {
        format_cni_args(&self.args)
    }
}

/// The plugins' own rules (the `cni` crate's) decide what a valid id,
/// network name and interface name are; the runtime only applies them
/// early, so a bad value fails before any plugin has run.
fn invalid(e: cni::Error) -> Error {
    Error::InvalidArgument(if e.details.is_empty() {
        e.msg
    } else {
        format!("{}: {:?}", e.msg, e.details)
    })
}

pub fn validate_container_id(id: &str) -> Result<()> {
    cni::env::validate_container_id(id).map_err(invalid)
}

pub fn validate_network_name(name: &str) -> Result<()> {
    cni::env::validate_network_name(name).map_err(invalid)
}

pub fn validate_ifname(name: &str) -> Result<()> {
    cni::env::validate_ifname(name).map_err(invalid)
}

/// Parse `CNI_ARGS` (`K1=V1;K2=V2`). Like cnitool, every pair needs a
/// non-empty key and value; unlike it, a value may itself contain `=`.
pub fn parse_cni_args(text: &str) -> Result<Vec<(String, String)>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::InvalidArgument(format!(
                "invalid CNI_ARGS pair {pair:?}"
            ))),
        })
        .collect()
}

pub fn format_cni_args(args: &[(String, String)]) -> String {
    let pairs: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(";")
}

/// Absolute, lexically cleaned path, like Go's `filepath.Abs`: symlinks are
/// not resolved, because cnitool hashes the path as written.
pub fn absolute_path(path: &Path) -> std::io::Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut clean = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

/// The container id cnitool derives from a netns path: `cnitool-` and the
/// hex of the first 10 bytes of SHA-512 of the absolute path. Using the same
/// id makes `cnictl` and `cnitool` find each other's cached attachments.
pub fn cnitool_container_id(netns: &Path) -> std::io::Result<String> {
    let absolute = absolute_path(netns)?;
    let digest = Sha512::digest(absolute.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("cnitool-{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_cnitool() {
        // sha512("/var/run/netns/test") first 10 bytes, computed independently
        // with `printf %s /var/run/netns/test | sha512sum`.
        let id = cnitool_container_id(Path::new("/var/run/netns/test")).unwrap();
        assert_eq!(id, "cnitool-7b8a61d5d8e94d07cbe4");
        let again = cnitool_container_id(Path::new("/var/run/./netns//x/../test")).unwrap();
        assert_eq!(id, again);
    }

    #[test]
    fn cni_args_round_trip_and_reject_bad_pairs() {
        let args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=a=b").unwrap();
        assert_eq!(
            args,
            [
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("K8S_POD_NAME".to_string(), "a=b".to_string())
            ]
        );
        assert_eq!(format_cni_args(&args), "IgnoreUnknown=1;K8S_POD_NAME=a=b");
        assert!(parse_cni_args("A=1;;B=2").is_err());
        assert!(parse_cni_args("=1").is_err());
        assert!(parse_cni_args("A=").is_err());
        assert!(parse_cni_args("").unwrap().is_empty());
    }

    #[test]
    fn identifiers_and_ifnames() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert!(validate_container_id("-abc").is_err());
        let e = validate_network_name("a/b").unwrap_err().to_string();
        assert!(e.contains("invalid characters") && e.contains("a/b"), "{e}");
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("..").is_err());
    }
}
