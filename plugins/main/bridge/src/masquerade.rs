//! `ipMasq` through the `nat` crate: rules keyed by network name, container
//! id and ifname, so DEL and GC find them without the (maybe vanished)
//! container interface.

use cni::{Error, Request, Result};
use ipnetwork::IpNetwork;

use crate::config::Settings;

fn attachment(req: &Request) -> netfilter::Attachment<'_> {
    netfilter::Attachment {
        network: &req.config.name,
        container_id: &req.container_id,
        ifname: &req.ifname,
    }
}

fn backend(s: &Settings) -> Result<netfilter::Backend> {
    match s.masq_backend {
        Some(b) => Ok(b),
        None => netfilter::Backend::detect().map_err(|e| Error::internal(e.to_string())),
    }
}

pub fn setup(req: &Request, s: &Settings, addrs: &[IpNetwork]) -> Result<()> {
    netfilter::netfilter(backend(s)?)
        .setup_masquerade(&attachment(req), addrs)
        .map_err(|e| Error::internal(format!("failed to setup IP masquerade: {e}")))
}

pub fn check(req: &Request, s: &Settings, addrs: &[IpNetwork]) -> Result<()> {
    netfilter::netfilter(backend(s)?)
        .check_masquerade(&attachment(req), addrs)
        .map_err(|e| Error::internal(format!("IP masquerade check failed: {e}")))
}

/// Both backends, ours and the Go bridge's rules alike.
pub fn teardown(req: &Request) -> Result<()> {
    netfilter::teardown_masquerade(&attachment(req))
        .map_err(|e| Error::internal(format!("failed to teardown IP masquerade: {e}")))
}

pub fn gc(network: &str, keep: &[(String, String)]) -> Result<()> {
    netfilter::gc_masquerade(network, keep)
        .map_err(|e| Error::internal(format!("failed to garbage-collect IP masquerade: {e}")))
}
