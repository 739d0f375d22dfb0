//! The CNI bridge plugin: a Linux bridge on the host, one veth pair per
//! container, addresses from the IPAM plugin, optionally the bridge as
//! gateway and masquerade for outbound traffic. Drop-in for the reference
//! `bridge` (same keys, defaults, results and netfilter state).

mod add;
mod check;
mod config;
mod container;
mod del;
mod gateway;
mod masquerade;
mod rollback;
mod vlan;

use cni::{CniResult, Command, Plugin, Request, Result};

use config::Settings;

struct Bridge;

impl Plugin for Bridge {
    const NAME: &'static str = "bridge";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        add::add(req, &Settings::load(req)?)
    }

    fn del(&self, req: &Request) -> Result<()> {
        del::del(req, &Settings::load(req)?)
    }

    fn check(&self, req: &Request) -> Result<()> {
        check::check(req, &Settings::load(req)?)
    }

    /// Ready when IPAM is (the reference does the same); L2-only is always ready.
    fn status(&self, req: &Request) -> Result<()> {
        let s = Settings::load(req)?;
        match &s.ipam {
            Some(ipam) => req.delegate(ipam, Command::Status),
            None => Ok(()),
        }
    }

    /// Forward to IPAM (the spec requires it; the reference does not) and
    /// remove masquerade rules of attachments not in the valid list.
    fn gc(&self, req: &Request) -> Result<()> {
        let s = Settings::load(req)?;
        let mut first_error = None;
        if let Some(ipam) = &s.ipam
            && let Err(e) = req.delegate(ipam, Command::Gc)
        {
            first_error = Some(e);
        }
        if let Some(valid) = req.config.gc_attachments() {
            let keep: Vec<(String, String)> = valid
                .iter()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            if let Err(e) = masquerade::gc(&req.config.name, &keep) {
                first_error.get_or_insert(e);
            }
            if s.macspoofchk
                && let Err(e) = netfilter::bridge_filter::gc(&keep, host_port_bridge, &s.bridge)
            {
                first_error.get_or_insert(cni::Error::internal(format!(
                    "failed to garbage-collect macspoofchk rules: {e}"
                )));
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// The bridge a host port belongs to: `Ok(None)` when the port is gone or
/// is no bridge port.
fn host_port_bridge(port: &str) -> std::result::Result<Option<String>, String> {
    let host = link::Netlink::current().map_err(|e| e.to_string())?;
    let Some(l) = host.link_by_name(port).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    match l.controller {
        None => Ok(None),
        Some(index) => Ok(host
            .link_by_index(index)
            .map_err(|e| e.to_string())?
            .map(|b| b.name)),
    }
}

fn main() {
    cni::run(&Bridge)
}
