//! What the firewall policy is asked to do: one attachment's addresses,
//! the admin chain and the ingress policy. The backends read these types;
//! nothing here knows a backend.

use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::types::Attachment;

/// `iptablesAdminChainName`'s default.
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

/// `ingressPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngressPolicy {
    /// Every inbound connection is accepted (the default).
    #[default]
    Open,
    /// Only connections from the same bridge are accepted.
    SameBridge,
    /// Like `SameBridge`, and containers on the same bridge cannot reach
    /// each other either.
    Isolated,
}

impl IngressPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressPolicy::Open => "open",
            IngressPolicy::SameBridge => "same-bridge",
            IngressPolicy::Isolated => "isolated",
        }
    }
}

impl FromStr for IngressPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<IngressPolicy> {
        match s {
            "" | "open" => Ok(IngressPolicy::Open),
            "same-bridge" => Ok(IngressPolicy::SameBridge),
            "isolated" => Ok(IngressPolicy::Isolated),
            _ => Err(Error::Invalid {
                what: "ingressPolicy",
                value: s.to_string(),
                reason: "must be \"open\", \"same-bridge\" or \"isolated\"",
            }),
        }
    }
}

/// One attachment's firewall state.
#[derive(Debug, Clone, Copy)]
pub struct Firewall<'a> {
    pub attachment: Attachment<'a>,
    /// `iptablesAdminChainName` (iptables only).
    pub admin_chain: &'a str,
    /// The container's addresses (prevResult's `ips`).
    pub addresses: &'a [IpAddr],
    pub ingress: IngressPolicy,
    /// The bridge (prevResult's first interface); needed unless `Open`.
    pub bridge: Option<&'a str>,
}

impl Firewall<'_> {
    pub(crate) fn validate(&self) -> Result<()> {
        self.attachment.validate()?;
        crate::validate::chain_name(self.admin_chain)?;
        if let Some(b) = self.bridge {
            crate::validate::ifname(b)?;
        }
        if self.ingress != IngressPolicy::Open && self.bridge.is_none() {
            return Err(Error::Invalid {
                what: "ingressPolicy",
                value: self.ingress.as_str().to_string(),
                reason: "needs the bridge's name (chain the firewall after the bridge plugin)",
            });
        }
        Ok(())
    }

    /// The addresses, each once, in order.
    pub(crate) fn unique_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = vec![];
        for a in self.addresses {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }
}
