//! The firewall plugin's filter rules: let forwarded traffic reach and
//! leave a container's addresses, and optionally isolate bridges from each
//! other (`ingressPolicy`).
//!
//! # iptables (the reference's layout, `filter` table, IPv4 and IPv6)
//!
//! ```text
//! -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD          (inserted first)
//! -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN (inserted first)
//! -A CNI-FORWARD -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT     (per address)
//! -A CNI-FORWARD -s <ip>/32 -j ACCEPT                                                (per address)
//! ```
//!
//! `same-bridge` and `isolated` add, per bridge (Docker's layout):
//!
//! ```text
//! -A FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)" -j CNI-ISOLATION-STAGE-1
//! -A CNI-ISOLATION-STAGE-1 -i <br> -o <br> -m comment --comment "… (ingressPolicy: isolated)" -j DROP     (isolated only)
//! -A CNI-ISOLATION-STAGE-1 -i <br> ! -o <br> -m comment --comment "… (ingressPolicy: <policy>)" -j CNI-ISOLATION-STAGE-2
//! -A CNI-ISOLATION-STAGE-1 -m comment --comment "…" -j RETURN
//! -A CNI-ISOLATION-STAGE-2 -o <br> -m comment --comment "…" -j DROP
//! -A CNI-ISOLATION-STAGE-2 -m comment --comment "…" -j RETURN
//! ```
//!
//! The rules are written over nf_tables netlink exactly as iptables-nft
//! encodes them (no process once the `filter` table and its `FORWARD`
//! chain exist), so `iptables-save`, `-C` and `-D` — the Go plugin's CHECK
//! and DEL — see the same rules. One `iptables-save` + `iptables-restore`
//! is used instead when iptables-nft has not made the table yet, or when
//! an iptables-legacy `filter` table exists. DEL removes the per-address
//! rules and leaves the shared chains and the per-bridge isolation rules,
//! as the reference does (other containers may use them).
//!
//! # nftables (ours only)
//!
//! The same semantics in a table of our own, `inet cni_firewall`; see
//! the `nftables` backend's module for its layout.

use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::{Attachment, Backend};

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
    fn validate(&self) -> Result<()> {
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

/// ADD: the shared chains when missing, the attachment's rules, the
/// bridge's isolation rules. Idempotent.
pub fn add(backend: Backend, fw: &Firewall<'_>) -> Result<()> {
    fw.validate()?;
    match backend {
        Backend::Iptables => crate::iptables::firewall::add(fw),
        Backend::Nftables => crate::nftables::firewall::add(fw),
    }
}

/// The iptables isolation rules of `fw.ingress` alone: what the
/// reference adds with iptables whatever the backend (firewalld too).
pub fn add_ingress_policy(fw: &Firewall<'_>) -> Result<()> {
    fw.validate()?;
    crate::iptables::firewall::add_ingress_policy(fw)
}

/// CHECK: every rule of [`add`] is present ([`Error::Missing`] otherwise).
pub fn check(backend: Backend, fw: &Firewall<'_>) -> Result<()> {
    fw.validate()?;
    match backend {
        Backend::Iptables => crate::iptables::firewall::check(fw),
        Backend::Nftables => crate::nftables::firewall::check(fw),
    }
}

/// DEL: the attachment's rules (also those the Go plugin made). Shared
/// chains and per-bridge rules stay. Succeeds when nothing is there.
pub fn del(backend: Backend, fw: &Firewall<'_>) -> Result<()> {
    fw.validate()?;
    match backend {
        Backend::Iptables => crate::iptables::firewall::del(fw),
        Backend::Nftables => crate::nftables::firewall::del(fw),
    }
}

/// Whether the backend can be used here (STATUS): its tables can be read.
pub fn status(backend: Backend) -> Result<()> {
    match backend {
        Backend::Iptables => crate::iptables::firewall::status(),
        Backend::Nftables => crate::nftables::firewall::status(),
    }
}
