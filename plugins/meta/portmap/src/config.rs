//! portmap's configuration: the reference's keys, defaults and messages
//! (`parseConfig` in `plugins/meta/portmap/main.go`), plus checks the
//! reference leaves to iptables (port range, protocol, hostIP syntax).

use std::net::IpAddr;

use cni::{Error, Request, Result};
use netfilter::{Backend, PortMapping, Protocol, Snat};
use serde::Deserialize;

/// The default mark bit (0x2000). Kubernetes uses 14 and 15, Calico 20–31.
const DEFAULT_MARK_BIT: i64 = 13;

/// The plugin's own keys; the common ones (`name`, `prevResult`,
/// `runtimeConfig`) come from `cni::NetConf`.
#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(rename = "masqAll", default)]
    masq_all: bool,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub backend: Backend,
    /// Whether `backend` was configured (else auto-detected).
    pub backend_explicit: bool,
    pub snat: Snat,
    pub masq_all: bool,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    pub mappings: Vec<PortMapping>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_config(msg)
}

/// Which backend the conditions are written for: iptables tokens start
/// with `-` or `!`, nftables tokens never do (the reference's rule).
fn backend_of_conditions(conditions: &Option<Vec<String>>) -> Option<Backend> {
    let first = conditions.as_ref()?.first()?;
    match first.chars().next()? {
        '-' | '!' => Some(Backend::Iptables),
        _ => Some(Backend::Nftables),
    }
}

/// `backend` key, the default, and the options that only fit one backend.
fn choose_backend(keys: &Keys) -> Result<Backend> {
    let mut specific: Vec<(Backend, &str)> = vec![];
    if keys.external_set_mark_chain.is_some() {
        specific.push((Backend::Iptables, "externalSetMarkChain"));
    }
    if let Some(b) = backend_of_conditions(&keys.conditions_v4) {
        specific.push((b, "conditionsV4"));
    }
    if let Some(b) = backend_of_conditions(&keys.conditions_v6) {
        specific.push((b, "conditionsV6"));
    }
    let requested = match keys.backend.as_deref() {
        Some(name) => name.to_string(),
        None => match Backend::detect() {
            Ok(b) => b.as_str().to_string(),
            // Reported when a verb needs netfilter; config errors come first.
            Err(_) => "iptables".to_string(),
        },
    };
    let wrong = if requested == "iptables" {
        Backend::Nftables
    } else {
        Backend::Iptables
    };
    let wrong_keys: Vec<&str> = specific
        .iter()
        .filter(|(b, _)| *b == wrong)
        .map(|(_, k)| *k)
        .collect();
    if !wrong_keys.is_empty() {
        return Err(invalid(format!(
            "{requested} backend was requested but configuration contains {}-specific options [{}]",
            wrong.as_str(),
            wrong_keys.join(" ")
        )));
    }
    requested
        .parse()
        .map_err(|_| invalid(format!("unrecognized backend {requested:?}")))
}

fn mapping(m: &cni::PortMapping) -> Result<PortMapping> {
    if m.container_port <= 0 || m.container_port > 65535 {
        return Err(invalid(format!(
            "Invalid container port number: {}",
            m.container_port
        )));
    }
    if m.host_port <= 0 || m.host_port > 65535 {
        return Err(invalid(format!(
            "Invalid host port number: {}",
            m.host_port
        )));
    }
    // The reference passes an empty protocol to iptables, which fails;
    // runtimes always send one, and tcp is what they mean.
    let protocol = if m.protocol.is_empty() {
        Protocol::Tcp
    } else {
        Protocol::parse(&m.protocol).map_err(|_| {
            invalid(format!(
                "Invalid protocol {:?} for host port {}: must be tcp, udp or sctp",
                m.protocol, m.host_port
            ))
        })?
    };
    let host_ip = match m.host_ip.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "Invalid host IP {s:?} for host port {}",
                m.host_port
            ))
        })?),
    };
    Ok(PortMapping {
        host_port: m.host_port as u16,
        container_port: m.container_port as u16,
        protocol,
        host_ip,
    })
}

/// Parse and validate, in the reference's order so the first error a user
/// sees is the same.
pub fn parse(req: &Request) -> Result<Config> {
    let keys: Keys = req.plugin_config()?;
    if keys.mark_masq_bit.is_some() && keys.external_set_mark_chain.is_some() {
        return Err(invalid(
            "Cannot specify externalSetMarkChain and markMasqBit",
        ));
    }
    let bit = keys.mark_masq_bit.unwrap_or(DEFAULT_MARK_BIT);
    if !(0..=31).contains(&bit) {
        return Err(invalid("MasqMarkBit must be between 0 and 31"));
    }
    let backend = choose_backend(&keys)?;
    let mappings = req
        .config
        .port_mappings()
        .iter()
        .map(mapping)
        .collect::<Result<Vec<_>>>()?;
    let snat = match (
        keys.snat.unwrap_or(true),
        keys.external_set_mark_chain.clone(),
    ) {
        (false, _) => Snat::Off,
        (true, Some(chain)) => Snat::ExternalMarkChain(chain),
        (true, None) => Snat::MarkBit(bit as u8),
    };
    // Conditions and the external chain name go into rules: refuse what
    // could change a rule's meaning (the reference passes them verbatim).
    let check_condition = match backend {
        Backend::Iptables => netfilter::validate::iptables_condition,
        Backend::Nftables => netfilter::validate::nft_condition,
    };
    let conditions_v4 = keys.conditions_v4.unwrap_or_default();
    let conditions_v6 = keys.conditions_v6.unwrap_or_default();
    for c in conditions_v4.iter().chain(&conditions_v6) {
        check_condition(c).map_err(|e| invalid(e.to_string()))?;
    }
    if let Snat::ExternalMarkChain(chain) = &snat {
        netfilter::validate::chain_name(chain).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(Config {
        backend,
        backend_explicit: keys.backend.is_some(),
        snat,
        masq_all: keys.masq_all,
        conditions_v4,
        conditions_v6,
        mappings,
    })
}
