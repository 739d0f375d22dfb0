//! What a container's host-port mappings are, independent of the backend.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::validate;

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn ipproto(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// `tcp`, `udp`, `sctp` in any case.
    pub fn parse(s: &str) -> Result<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::Invalid {
                what: "protocol",
                value: s.to_string(),
                reason: "must be tcp, udp or sctp",
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `hostIP:hostPort/protocol → container:containerPort`. Port 0 is refused
/// by every backend before a rule is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Restrict to this destination; an unspecified address (`0.0.0.0`,
    /// `::`) only restricts the family, as in the reference.
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// Whether this mapping applies to the family of `container_ip`, and
    /// the destination address to match, if any.
    pub(crate) fn destination_for(&self, container_ip: IpAddr) -> Option<Option<IpAddr>> {
        match self.host_ip {
            None => Some(None),
            Some(h) if h.is_ipv4() != container_ip.is_ipv4() => None,
            Some(h) if h.is_unspecified() => Some(None),
            Some(h) => Some(Some(h)),
        }
    }
}

/// How hairpin and localhost traffic gets masqueraded (the `snat`,
/// `markMasqBit` and `externalSetMarkChain` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snat {
    /// `snat: false`.
    Off,
    /// Mark with this bit (0–31) in `CNI-HOSTPORT-SETMARK`, masquerade in
    /// `CNI-HOSTPORT-MASQ`. nftables masquerades directly, without a mark.
    MarkBit(u8),
    /// Jump to this existing chain to mark (iptables only).
    ExternalMarkChain(String),
}

/// One container's mappings on one network.
#[derive(Debug, Clone)]
pub struct HostPorts<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    /// The container's first IPv4 address with its prefix (iptables'
    /// hairpin rule matches the whole subnet, as in the reference).
    pub ipv4: Option<IpNetwork>,
    pub ipv6: Option<IpNetwork>,
    pub mappings: &'a [PortMapping],
    pub snat: Snat,
    pub masq_all: bool,
    /// Extra match tokens for the family (iptables or nft syntax, by backend).
    pub conditions_v4: &'a [String],
    pub conditions_v6: &'a [String],
}

impl HostPorts<'_> {
    /// The container addresses with the conditions for their family.
    pub(crate) fn families(&self) -> impl Iterator<Item = (IpNetwork, &[String])> {
        self.ipv4
            .map(|ip| (ip, self.conditions_v4))
            .into_iter()
            .chain(self.ipv6.map(|ip| (ip, self.conditions_v6)))
    }

    /// Everything that is not a typed value yet; `condition` is the
    /// backend's token check.
    pub(crate) fn validate(&self, condition: fn(&str) -> Result<()>) -> Result<()> {
        validate::identifier("network name", self.network)?;
        validate::identifier("container id", self.container_id)?;
        if self.ipv4.is_some_and(|n| !n.is_ipv4()) || self.ipv6.is_some_and(|n| !n.is_ipv6()) {
            return Err(Error::Invalid {
                what: "container address",
                value: format!("{:?} / {:?}", self.ipv4, self.ipv6),
                reason: "ipv4 and ipv6 must hold addresses of their family",
            });
        }
        for m in self.mappings {
            if m.host_port == 0 {
                return Err(Error::Invalid {
                    what: "host port",
                    value: "0".into(),
                    reason: "must be 1 to 65535",
                });
            }
            if m.container_port == 0 {
                return Err(Error::Invalid {
                    what: "container port",
                    value: "0".into(),
                    reason: "must be 1 to 65535",
                });
            }
        }
        if let Snat::MarkBit(bit) = self.snat
            && bit > 31
        {
            return Err(Error::Invalid {
                what: "mark bit",
                value: bit.to_string(),
                reason: "must be 0 to 31",
            });
        }
        if let Snat::ExternalMarkChain(chain) = &self.snat {
            validate::chain_name(chain)?;
        }
        for c in self.conditions_v4.iter().chain(self.conditions_v6) {
            condition(c)?;
        }
        Ok(())
    }
}

/// `ip:port` as iptables' `--to-destination` and nft's `dnat to` want it.
pub(crate) fn ip_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}
