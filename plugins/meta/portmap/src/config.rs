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

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use serde_json::{Value, json};

    /// A chained portmap configuration; `backend` is always given unless
    /// the test is about its absence, so no test probes the host.
    fn conf(extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "portmap",
            "backend": "iptables",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
            ]},
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    fn parse_conf(c: Value) -> Result<Config> {
        let bytes = serde_json::to_vec(&c).unwrap();
        parse(&Request::from_config(Command::Add, &bytes, "").unwrap())
    }

    fn error_of(extra: Value) -> String {
        parse_conf(conf(extra)).unwrap_err().msg
    }

    fn mappings(list: Value) -> Value {
        json!({"runtimeConfig": {"portMappings": list}})
    }

    #[test]
    fn defaults_are_the_reference_ones() {
        let c = parse_conf(conf(json!({}))).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert!(c.backend_explicit);
        assert_eq!(c.snat, Snat::MarkBit(13));
        assert!(!c.masq_all);
        assert!(c.conditions_v4.is_empty() && c.conditions_v6.is_empty());
        assert_eq!(
            c.mappings,
            [PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }]
        );
    }

    #[test]
    fn snat_keys_choose_the_masquerade() {
        let c = parse_conf(conf(json!({"snat": false, "markMasqBit": 5}))).unwrap();
        assert_eq!(c.snat, Snat::Off);
        let c = parse_conf(conf(json!({"markMasqBit": 31}))).unwrap();
        assert_eq!(c.snat, Snat::MarkBit(31));
        let c = parse_conf(conf(json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}))).unwrap();
        assert_eq!(c.snat, Snat::ExternalMarkChain("KUBE-MARK-MASQ".into()));
        assert_eq!(
            error_of(json!({"externalSetMarkChain": "X", "markMasqBit": 5})),
            "Cannot specify externalSetMarkChain and markMasqBit"
        );
        for bit in [-1, 32] {
            assert_eq!(
                error_of(json!({"markMasqBit": bit})),
                "MasqMarkBit must be between 0 and 31"
            );
        }
    }

    #[test]
    fn backend_specific_options_must_match_the_backend() {
        assert_eq!(
            error_of(json!({"backend": "nftables", "externalSetMarkChain": "X"})),
            "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]"
        );
        assert_eq!(
            error_of(json!({"conditionsV4": ["ip saddr 10.0.0.1"], "conditionsV6": ["-s", "::1"]})),
            "iptables backend was requested but configuration contains nftables-specific options [conditionsV4]"
        );
        assert_eq!(
            error_of(json!({"backend": "ebtables"})),
            "unrecognized backend \"ebtables\""
        );
        let c = parse_conf(conf(
            json!({"backend": "nftables", "conditionsV4": ["ip saddr 10.0.0.1"]}),
        ))
        .unwrap();
        assert_eq!(c.backend, Backend::Nftables);
        assert_eq!(c.conditions_v4, ["ip saddr 10.0.0.1"]);
    }

    #[test]
    fn mappings_are_checked_before_any_rule() {
        let one = |m: Value| error_of(mappings(json!([m])));
        assert_eq!(
            one(json!({"hostPort": 8080, "containerPort": 0})),
            "Invalid container port number: 0"
        );
        assert_eq!(
            one(json!({"hostPort": 70000, "containerPort": 80})),
            "Invalid host port number: 70000"
        );
        assert_eq!(
            one(json!({"hostPort": 8080, "containerPort": 80, "protocol": "icmp"})),
            "Invalid protocol \"icmp\" for host port 8080: must be tcp, udp or sctp"
        );
        assert_eq!(
            one(json!({"hostPort": 8080, "containerPort": 80, "hostIP": "1.2.3"})),
            "Invalid host IP \"1.2.3\" for host port 8080"
        );
        let c = parse_conf(conf(mappings(json!([
            {"hostPort": 53, "containerPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"hostPort": 8443, "containerPort": 443, "protocol": ""}
        ]))))
        .unwrap();
        assert_eq!(c.mappings[0].protocol, Protocol::Udp);
        assert_eq!(c.mappings[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        // No protocol means tcp (the reference hands iptables an empty one).
        assert_eq!(c.mappings[1].protocol, Protocol::Tcp);
    }

    #[test]
    fn conditions_and_chain_names_that_could_change_a_rule_are_refused() {
        assert!(parse_conf(conf(json!({"conditionsV4": ["-s", "10.0.0.0/8"]}))).is_ok());
        assert!(parse_conf(conf(json!({"conditionsV4": ["-s 1.2.3.4\n-A X"]}))).is_err());
        assert!(parse_conf(conf(json!({"externalSetMarkChain": "a b"}))).is_err());
        assert!(parse_conf(conf(json!({"externalSetMarkChain": ""}))).is_err());
    }
}
