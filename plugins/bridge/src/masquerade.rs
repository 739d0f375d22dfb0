//! `ipMasq` through the `nat` crate: rules keyed by network name, container
//! id and ifname, so DEL and GC find them without the (maybe vanished)
//! container interface.

use cni::{Error, Request, Result};
use ipnetwork::IpNetwork;

use crate::config::Settings;

fn attachment(req: &Request) -> nat::Attachment<'_> {
    nat::Attachment {
        network: &req.config.name,
        container_id: &req.container_id,
        ifname: &req.ifname,
    }
}

fn backend(s: &Settings) -> Result<nat::Backend> {
    match s.masq_backend {
        Some(b) => Ok(b),
        None => nat::Backend::detect().map_err(|e| Error::internal(e.to_string())),
    }
}

pub fn setup(req: &Request, s: &Settings, addrs: &[IpNetwork]) -> Result<()> {
    nat::netfilter(backend(s)?)
        .setup_masquerade(&attachment(req), addrs)
        .map_err(|e| Error::internal(format!("failed to setup IP masquerade: {e}")))
}

pub fn check(req: &Request, s: &Settings, addrs: &[IpNetwork]) -> Result<()> {
    nat::netfilter(backend(s)?)
        .check_masquerade(&attachment(req), addrs)
        .map_err(|e| Error::internal(format!("IP masquerade check failed: {e}")))
}

/// Both backends, ours and the Go bridge's rules alike.
pub fn teardown(req: &Request) -> Result<()> {
    nat::teardown_masquerade(&attachment(req))
        .map_err(|e| Error::internal(format!("failed to teardown IP masquerade: {e}")))
}

pub fn gc(network: &str, keep: &[(String, String)]) -> Result<()> {
    nat::gc_masquerade(network, keep)
        .map_err(|e| Error::internal(format!("failed to garbage-collect IP masquerade: {e}")))
}
