//! The public face's types, which the backends implement and lib.rs
//! dispatches on: which backend, the attachment every rule is keyed by,
//! and the operations both backends offer ([`Netfilter`]; lib.rs's face
//! validates the input once, then hands it to a backend's implementation,
//! which [`backend_impl`] writes).

use std::str::FromStr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::hostports::HostPorts;
use crate::validate;

/// Which netfilter front-end to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "iptables" => Ok(Backend::Iptables),
            "nftables" => Ok(Backend::Nftables),
            _ => Err(Error::Invalid {
                what: "backend",
                value: s.to_string(),
                reason: "must be \"iptables\" or \"nftables\"",
            }),
        }
    }
}

/// One interface of one container on one network: the identity every rule
/// is keyed by.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Attachment<'_> {
    pub(crate) fn validate(&self) -> Result<()> {
        validate::identifier("network name", self.network)?;
        validate::identifier("container id", self.container_id)?;
        validate::ifname(self.ifname)
    }
}

/// The operations both backends implement.
pub trait Netfilter {
    fn backend(&self) -> Backend;

    /// Masquerade traffic from each address to anything outside its subnet
    /// (multicast excepted). `addresses` carry their prefix: `10.1.2.5/24`.
    /// Idempotent: a repeated call replaces the attachment's rules.
    fn setup_masquerade(&self, att: &Attachment<'_>, addresses: &[IpNetwork]) -> Result<()>;

    /// Fails with [`Error::Missing`] when a rule of `setup_masquerade` is absent.
    fn check_masquerade(&self, att: &Attachment<'_>, addresses: &[IpNetwork]) -> Result<()>;

    /// Remove this backend's masquerade rules of the attachment (also those
    /// the Go bridge created). Succeeds when there is nothing to remove.
    fn teardown_masquerade(&self, att: &Attachment<'_>) -> Result<()>;

    /// Remove masquerade rules of `network` whose (container id, ifname) is
    /// not in `keep`.
    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<()>;

    /// Install the mappings; the shared chains/tables are created when
    /// missing. Idempotent: a repeated call replaces the container's rules.
    fn add_hostports(&self, hp: &HostPorts<'_>) -> Result<()>;

    /// Fails with [`Error::Missing`] when a rule of `add_hostports` is absent.
    fn check_hostports(&self, hp: &HostPorts<'_>) -> Result<()>;

    /// Remove every host-port rule of (network, container id), ours or the
    /// Go portmap's, whatever mappings they were made from.
    fn del_hostports(&self, network: &str, container_id: &str) -> Result<()>;

    /// Remove host-port rules of `network` whose container id is not in `keep`.
    fn gc_hostports(&self, network: &str, keep: &[String]) -> Result<()>;
}

/// `impl Netfilter for $backend`, on input the public face (lib.rs) has
/// already validated: each backend has a `masquerade` and a `hostports`
/// module with the same functions, which this delegates to.
macro_rules! backend_impl {
    ($backend:ident) => {
        impl $crate::types::Netfilter for $backend {
            fn backend(&self) -> $crate::types::Backend {
                $crate::types::Backend::$backend
            }

            fn setup_masquerade(
                &self,
                att: &$crate::types::Attachment<'_>,
                addresses: &[ipnetwork::IpNetwork],
            ) -> $crate::error::Result<()> {
                masquerade::setup(att, addresses)
            }

            fn check_masquerade(
                &self,
                att: &$crate::types::Attachment<'_>,
                addresses: &[ipnetwork::IpNetwork],
            ) -> $crate::error::Result<()> {
                masquerade::check(att, addresses)
            }

            fn teardown_masquerade(
                &self,
                att: &$crate::types::Attachment<'_>,
            ) -> $crate::error::Result<()> {
                masquerade::teardown(att)
            }

            fn gc_masquerade(
                &self,
                network: &str,
                keep: &[(String, String)],
            ) -> $crate::error::Result<()> {
                masquerade::gc(network, keep)
            }

            fn add_hostports(
                &self,
                hp: &$crate::hostports::HostPorts<'_>,
            ) -> $crate::error::Result<()> {
                hostports::add(hp)
            }

            fn check_hostports(
                &self,
                hp: &$crate::hostports::HostPorts<'_>,
            ) -> $crate::error::Result<()> {
                hostports::check(hp)
            }

            fn del_hostports(
                &self,
                network: &str,
                container_id: &str,
            ) -> $crate::error::Result<()> {
                hostports::del(network, container_id)
            }

            fn gc_hostports(&self, network: &str, keep: &[String]) -> $crate::error::Result<()> {
                hostports::gc(network, keep)
            }
        }
    };
}
pub(crate) use backend_impl;
