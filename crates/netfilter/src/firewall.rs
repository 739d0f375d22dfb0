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
//! encodes them (no process; the `filter` table and its `FORWARD` chain
//! are made as iptables-nft makes them when missing), so `iptables-save`,
//! `-C` and `-D` — the Go plugin's CHECK and DEL — see the same rules. One
//! `iptables-save` + `iptables-restore` is used instead when an
//! iptables-legacy `filter` table exists. DEL removes the per-address
//! rules and leaves the shared chains and the per-bridge isolation rules,
//! as the reference does (other containers may use them).
//!
//! # nftables (ours only)
//!
//! The same semantics in a table of our own, `inet cni_firewall`; see
//! the `nftables` backend's module for its layout.

pub use crate::firewall_spec::{DEFAULT_ADMIN_CHAIN, Firewall, IngressPolicy};

use crate::error::Result;
use crate::types::Backend;

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

/// CHECK: every rule of [`add`] is present ([`Error::Missing`](crate::Error::Missing) otherwise).
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
