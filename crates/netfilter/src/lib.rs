//! Netfilter state for CNI plugins: masquerade (the bridge plugin's `ipMasq`)
//! and host-port mappings (the portmap plugin), behind one trait with an
//! iptables backend and an nftables backend; the firewall plugin's filter
//! rules ([`firewall`]: the reference's iptables layout, or a table of our
//! own on nftables); the bridge plugin's `macspoofchk` ([`bridge_filter`]).
//!
//! Names, rule text and comments are the Go reference plugins' own
//! (`CNI-<hash>`, `CNI-DN-<hash>`, `CNI-HOSTPORT-*`, `inet cni_plugins_masquerade`,
//! `ip|ip6 cni_hostport`; see [`names`]), so each implementation can remove
//! what the other created on a node in the middle of an upgrade.
//!
//! What differs is the cost. Every change is one atomic batch:
//!
//! - iptables: one `iptables-restore --noflush` per address family;
//! - nftables: one nf_tables transaction sent over netlink (no `nft`
//!   process) for host-port ADDs and masquerade setup, built to list
//!   byte-for-byte like `nft`'s own parse of the reference's text; `nft -f -`
//!   only where the netlink writer does not cover the rules (free-form
//!   conditions, `masqAll`, repeated ADDs), and for GC listings;
//! - CHECK (both backends): the container's rules read over netlink and
//!   compared with the expressions ADD sends, no process (`iptables-restore
//!   -C` / `nft list` only for iptables-legacy tables and the free-form
//!   conditions the encoders do not cover);
//! - teardown (both backends, and iptables-nft's tables): rules are found
//!   over nf_tables netlink — by comment, or by the chain they jump to — and
//!   deleted by handle in one transaction, with no process at all; the
//!   programs are used only when iptables-legacy state may exist.
//!
//! A batch that fails because another plugin run changed the table in the
//! meantime is re-planned from a fresh read ("already gone" is success).
//! No shell is involved; every value is validated before it is written into
//! a rule ([`validate`]), once, here at the public face: the implementation
//! [`netfilter`] returns and the free functions below check their input and
//! only then hand it to a backend, which does not check it again.
//!
//! # Masquerade (for the bridge plugin)
//!
//! ```no_run
//! use netfilter::{Attachment, Backend, IpNetwork};
//! # fn main() -> netfilter::Result<()> {
//! let att = Attachment { network: "mynet", container_id: "abc123", ifname: "eth0" };
//! let addrs: Vec<IpNetwork> = vec!["10.1.2.5/24".parse().unwrap()];
//! // ADD: `ipMasqBackend` if configured, else auto-detect (no process started).
//! let backend = Backend::detect()?;
//! netfilter::netfilter(backend).setup_masquerade(&att, &addrs)?;
//! // CHECK
//! netfilter::netfilter(backend).check_masquerade(&att, &addrs)?;
//! // DEL: found by (network, container id, ifname), in *both* backends,
//! // including the Go bridge's chains; no addresses needed.
//! netfilter::teardown_masquerade(&att)?;
//! // GC: everything of "mynet" except these (container id, ifname) pairs.
//! netfilter::gc_masquerade("mynet", &[("abc123".to_string(), "eth0".to_string())])?;
//! # Ok(()) }
//! ```
//!
//! The iptables layout ignores `ifname` as the reference does (one
//! `CNI-<hash>` chain per network + container), so tearing down one
//! interface of a container removes the iptables masquerade of all its
//! interfaces on that network. nftables rules are per interface.
//!
//! # Host ports (for the portmap plugin)
//!
//! [`HostPorts`] describes one container's mappings for both address
//! families; [`Netfilter::add_hostports`], [`Netfilter::check_hostports`],
//! [`del_hostports`] (both backends, by network + container id) and
//! [`gc_hostports`]. UDP conntrack entries for mapped ports are removed with
//! [`conntrack::delete_udp_entries_for_ports`] (netlink, no process).

pub mod bridge_filter;
mod error;
mod exec;
mod family;
pub mod firewall;
mod firewall_spec;
mod hostports;
mod iptables;
mod lock;
pub mod names;
pub mod nfnl;
mod nftables;
#[cfg(test)]
mod testutil;
mod types;
pub mod validate;

pub use error::{Error, Result};
pub use exec::processes_spawned_on_this_thread;
pub use hostports::{HostPorts, PortMapping, Protocol, Snat};
pub use ipnetwork::IpNetwork;
pub use nfnl::conntrack;
pub use types::{Attachment, Backend, Netfilter};

use error::Errors;

/// Choosing a backend, which needs the backends themselves.
impl Backend {
    /// The reference's default: iptables when usable, else nftables.
    ///
    /// "Usable" here means the programs are installed; unlike the reference
    /// (`iptables --version` plus `iptables -S INPUT 1`, on every call) this
    /// starts no process. Use [`Backend::probe`] where a real test is worth
    /// a process (STATUS).
    pub fn detect() -> Result<Backend> {
        let ipt = iptables::installed();
        if ipt.is_ok() {
            return Ok(Backend::Iptables);
        }
        let nft = nftables::installed();
        if nft.is_ok() {
            return Ok(Backend::Nftables);
        }
        Err(Error::NoBackend {
            iptables: ipt.err().map(|e| e.to_string()).unwrap_or_default(),
            nftables: nft.err().map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    /// Whether this backend's programs are installed (no process started).
    pub fn is_installed(self) -> bool {
        match self {
            Backend::Iptables => iptables::installed().is_ok(),
            Backend::Nftables => nftables::installed().is_ok(),
        }
    }

    /// Run one cheap read-only command to prove the backend works here
    /// (programs present, kernel support, permissions).
    pub fn probe(self) -> Result<()> {
        match self {
            Backend::Iptables => iptables::probe(),
            Backend::Nftables => nftables::probe(),
        }
    }
}

/// The implementation for `backend`: every input is validated here, once,
/// before the backend sees it.
pub fn netfilter(backend: Backend) -> Box<dyn Netfilter> {
    Box::new(Validated(backend))
}

/// The backend's own implementation, on validated input.
fn ops(backend: Backend) -> &'static dyn Netfilter {
    match backend {
        Backend::Iptables => &iptables::Iptables,
        Backend::Nftables => &nftables::Nftables,
    }
}

/// The public face of one backend: validates, then dispatches.
struct Validated(Backend);

impl Validated {
    /// Free-form match conditions are checked against what the backend
    /// parses them with.
    fn hostports(&self, hp: &HostPorts<'_>) -> Result<()> {
        hp.validate(match self.0 {
            Backend::Iptables => validate::iptables_condition,
            Backend::Nftables => validate::nft_condition,
        })
    }
}

impl Netfilter for Validated {
    fn backend(&self) -> Backend {
        self.0
    }

    fn setup_masquerade(&self, att: &Attachment<'_>, addresses: &[IpNetwork]) -> Result<()> {
        att.validate()?;
        ops(self.0).setup_masquerade(att, addresses)
    }

    fn check_masquerade(&self, att: &Attachment<'_>, addresses: &[IpNetwork]) -> Result<()> {
        att.validate()?;
        ops(self.0).check_masquerade(att, addresses)
    }

    fn teardown_masquerade(&self, att: &Attachment<'_>) -> Result<()> {
        att.validate()?;
        ops(self.0).teardown_masquerade(att)
    }

    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<()> {
        validate::identifier("network name", network)?;
        ops(self.0).gc_masquerade(network, keep)
    }

    fn add_hostports(&self, hp: &HostPorts<'_>) -> Result<()> {
        self.hostports(hp)?;
        if self.0 == Backend::Nftables && matches!(hp.snat, Snat::ExternalMarkChain(_)) {
            return Err(Error::Invalid {
                what: "externalSetMarkChain",
                value: String::new(),
                reason: "is an iptables-only option",
            });
        }
        ops(self.0).add_hostports(hp)
    }

    fn check_hostports(&self, hp: &HostPorts<'_>) -> Result<()> {
        self.hostports(hp)?;
        ops(self.0).check_hostports(hp)
    }

    fn del_hostports(&self, network: &str, container_id: &str) -> Result<()> {
        validate::identifier("network name", network)?;
        validate::identifier("container id", container_id)?;
        ops(self.0).del_hostports(network, container_id)
    }

    fn gc_hostports(&self, network: &str, keep: &[String]) -> Result<()> {
        validate::identifier("network name", network)?;
        ops(self.0).gc_hostports(network, keep)
    }
}

/// Run `op` on every installed backend, collecting errors: DEL and GC clean
/// both, since the rules may have been made by another version or config.
/// The caller has validated the input.
fn on_installed_backends(op: impl Fn(&dyn Netfilter) -> Result<()>) -> Result<()> {
    let mut errors = Errors::default();
    for backend in [Backend::Iptables, Backend::Nftables] {
        if !backend.is_installed() {
            continue;
        }
        if let Err(e) = op(ops(backend)) {
            // A backend that is installed but does not work here (no kernel
            // support, no permission) cannot hold rules of ours: its error
            // is not DEL's problem. Probing costs a process only on failure.
            if backend.probe().is_ok() {
                errors.keep::<()>(Err(e));
            }
        }
    }
    errors.into_result()
}

/// Masquerade teardown in every installed backend (bridge DEL).
pub fn teardown_masquerade(att: &Attachment<'_>) -> Result<()> {
    att.validate()?;
    on_installed_backends(|b| b.teardown_masquerade(att))
}

/// Masquerade GC in every installed backend (bridge GC).
pub fn gc_masquerade(network: &str, keep: &[(String, String)]) -> Result<()> {
    validate::identifier("network name", network)?;
    on_installed_backends(|b| b.gc_masquerade(network, keep))
}

/// Host-port teardown in every installed backend (portmap DEL).
pub fn del_hostports(network: &str, container_id: &str) -> Result<()> {
    validate::identifier("network name", network)?;
    validate::identifier("container id", container_id)?;
    on_installed_backends(|b| b.del_hostports(network, container_id))
}

/// Host-port GC in every installed backend (portmap GC).
pub fn gc_hostports(network: &str, keep: &[String]) -> Result<()> {
    validate::identifier("network name", network)?;
    on_installed_backends(|b| b.gc_hostports(network, keep))
}
