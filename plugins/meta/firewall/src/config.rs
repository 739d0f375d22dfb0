//! firewall's configuration: the reference's keys and defaults
//! (`FirewallNetConf` in `plugins/meta/firewall/firewall.go`), validated
//! before anything is changed.

use cni::{Error, Request, Result};
use netfilter::firewall::{DEFAULT_ADMIN_CHAIN, IngressPolicy};
use serde::Deserialize;

/// Where GC's records of each attachment's addresses live by default
/// (tmpfs: netfilter rules do not survive a reboot either).
pub const DEFAULT_DATA_DIR: &str = "/run/cni/firewall";

/// Names the admin chain cannot take: built-in chains and targets, and the
/// chains the plugin itself manages.
const RESERVED_CHAINS: &[&str] = &[
    "INPUT",
    "FORWARD",
    "OUTPUT",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "CNI-FORWARD",
    "CNI-ISOLATION-STAGE-1",
    "CNI-ISOLATION-STAGE-2",
];

#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(default)]
    backend: Option<String>,
    #[serde(rename = "iptablesAdminChainName", default)]
    iptables_admin_chain_name: Option<String>,
    #[serde(rename = "firewalldZone", default)]
    firewalld_zone: Option<String>,
    #[serde(rename = "ingressPolicy", default)]
    ingress_policy: Option<String>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
}

/// Which firewall to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Firewalld,
    Nftables,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Firewalld => "firewalld",
            Backend::Nftables => "nftables",
        }
    }
}

#[derive(Debug)]
pub struct Config {
    /// `None`: not configured (firewalld when it runs, else iptables).
    pub backend: Option<Backend>,
    pub admin_chain: String,
    pub zone: String,
    pub ingress: IngressPolicy,
    pub data_dir: String,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_config(msg)
}

pub fn parse(req: &Request) -> Result<Config> {
    let keys: Keys = req.plugin_config()?;
    let backend = match keys.backend.as_deref() {
        None | Some("") => None,
        Some("iptables") => Some(Backend::Iptables),
        Some("firewalld") => Some(Backend::Firewalld),
        Some("nftables") => Some(Backend::Nftables),
        Some(other) => {
            return Err(invalid(format!(
                "unknown backend {other:?}: must be \"iptables\", \"firewalld\" or \"nftables\""
            )));
        }
    };
    let ingress = match keys.ingress_policy.as_deref().unwrap_or("") {
        "" | "open" => IngressPolicy::Open,
        "same-bridge" => IngressPolicy::SameBridge,
        "isolated" => IngressPolicy::Isolated,
        other => return Err(invalid(format!("unknown ingress policy: {other:?}"))),
    };
    let admin_chain = match keys.iptables_admin_chain_name.as_deref() {
        None | Some("") => DEFAULT_ADMIN_CHAIN.to_string(),
        Some(c) => {
            netfilter::validate::chain_name(c)
                .map_err(|e| invalid(format!("iptablesAdminChainName: {e}")))?;
            if RESERVED_CHAINS.contains(&c) {
                return Err(invalid(format!(
                    "iptablesAdminChainName {c:?}: a built-in chain, target or the plugin's own chain"
                )));
            }
            c.to_string()
        }
    };
    let zone = match keys.firewalld_zone.as_deref() {
        None | Some("") => "trusted".to_string(),
        Some(z) => {
            // firewalld's own rule for zone names (no '/', printable).
            if z.len() > 17
                || !z
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                return Err(invalid(format!(
                    "firewalldZone {z:?}: must be up to 17 letters, digits, '_' or '-'"
                )));
            }
            z.to_string()
        }
    };
    let data_dir = match keys.data_dir.as_deref() {
        None | Some("") => DEFAULT_DATA_DIR.to_string(),
        Some(d) if d.starts_with('/') => d.to_string(),
        Some(d) => return Err(invalid(format!("dataDir {d:?}: must be an absolute path"))),
    };
    Ok(Config {
        backend,
        admin_chain,
        zone,
        ingress,
        data_dir,
    })
}
