//! The `portmap` plugin: `hostPort → container:containerPort`, chained after
//! the plugin that gave the container its addresses.
//!
//! Differences from the reference, each deliberate:
//! - DEL removes this container's rules (ours and the Go plugin's) even
//!   when `portMappings` is absent — the reference does nothing then and
//!   leaks; the rules are found by network name and container id.
//! - Each ADD/DEL is one netfilter batch per family, not ~21 processes.
//! - Ports, protocols and `hostIP` are validated instead of handed to
//!   iptables; conditions and chain names may not contain rule syntax.
//! - CHECK compares every rule, and works for IPv4-only results.
//! - GC and STATUS are implemented.

mod config;
mod localnet;

use std::net::IpAddr;

use cni::{CniResult, Error, Plugin, Request, Result, code};
use netfilter::{Backend, HostPorts, IpNetwork, Protocol};

use config::Config;

struct Portmap;

/// `netfilter` errors: refused values are configuration errors, the rest are
/// failures of the host.
fn nat_error(context: impl std::fmt::Display, e: netfilter::Error) -> Error {
    let code = match e {
        netfilter::Error::Invalid { .. } => code::INVALID_CONFIG,
        _ => code::INTERNAL,
    };
    Error::new(code, format!("{context}: {e}"))
}

/// The reference wraps ADD/DEL config errors this way.
fn parse_config(req: &Request) -> Result<Config> {
    config::parse(req).map_err(|e| e.context("failed to parse config"))
}

/// The container's first IPv4 and first IPv6 address: those on the
/// sandbox interface named `CNI_IFNAME` (addresses that name no interface
/// count too), as the reference picks them.
fn container_addresses(prev: &CniResult, ifname: &str) -> (Option<IpNetwork>, Option<IpNetwork>) {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        let slot = if ip.address.is_ipv4() {
            &mut v4
        } else {
            &mut v6
        };
        if slot.is_some() {
            continue;
        }
        if let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i))
            && (iface.name != ifname || iface.sandbox.as_deref().unwrap_or("").is_empty())
        {
            continue;
        }
        *slot = Some(ip.address);
    }
    (v4, v6)
}

fn host_ports<'a>(
    req: &'a Request,
    conf: &'a Config,
    addrs: (Option<IpNetwork>, Option<IpNetwork>),
) -> HostPorts<'a> {
    HostPorts {
        network: &req.config.name,
        container_id: &req.container_id,
        ipv4: addrs.0,
        ipv6: addrs.1,
        mappings: &conf.mappings,
        snat: conf.snat.clone(),
        masq_all: conf.masq_all,
        conditions_v4: &conf.conditions_v4,
        conditions_v6: &conf.conditions_v6,
    }
}

/// Remove UDP conntrack entries of the mapped host ports, so datagrams of
/// a client that talked to the port before now follow the new DNAT.
/// Failures are only reported, as in the reference: the mapping works for
/// new flows either way.
fn flush_udp_conntrack(conf: &Config, ipv6: bool) {
    let ports: Vec<u16> = conf
        .mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
        .filter(|m| m.host_ip.is_none_or(|h| h.is_ipv6() == ipv6))
        .map(|m| m.host_port)
        .collect();
    if let Err(e) = netfilter::conntrack::delete_udp_entries_for_ports(ipv6, &ports) {
        eprintln!("portmap: failed to delete stale UDP conntrack entries: {e}");
    }
}

impl Plugin for Portmap {
    const NAME: &'static str = "portmap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = parse_config(req)?;
        let Some(prev) = req.prev_result()? else {
            return Err(Error::invalid_config("must be called as chained plugin"));
        };
        if conf.mappings.is_empty() {
            return Ok(prev);
        }
        let addrs = container_addresses(&prev, &req.ifname);
        if addrs.0.is_none() && addrs.1.is_none() {
            return Ok(prev);
        }
        let hp = host_ports(req, &conf, addrs);
        netfilter::netfilter(conf.backend)
            .add_hostports(&hp)
            .map_err(|e| {
                let ctx = match conf.backend {
                    Backend::Iptables => "unable to setup DNAT",
                    Backend::Nftables => "unable to set up nftables rules for port mappings",
                };
                nat_error(ctx, e)
            })?;
        if let Some(v4) = addrs.0 {
            flush_udp_conntrack(&conf, false);
            if conf.snat != netfilter::Snat::Off
                && let IpAddr::V4(ip) = v4.ip()
            {
                localnet::enable_towards(ip)?;
            }
        }
        if addrs.1.is_some() {
            flush_udp_conntrack(&conf, true);
        }
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        // Config errors still fail DEL, as in the reference; the mappings
        // themselves are not needed to find the rules.
        parse_config(req)?;
        netfilter::del_hostports(&req.config.name, &req.container_id).map_err(|e| {
            nat_error(
                format!(
                    "failed to remove port mappings of container {:?}",
                    req.container_id
                ),
                e,
            )
        })
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        let prev = req.require_prev_result()?;
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let addrs = container_addresses(&prev, &req.ifname);
        netfilter::netfilter(conf.backend)
            .check_hostports(&host_ports(req, &conf, addrs))
            .map_err(|e| nat_error("port mappings check failed", e))
    }

    fn gc(&self, req: &Request) -> Result<()> {
        config::parse(req)?;
        // Without the key the runtime has said nothing about what is
        // valid: remove nothing.
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let keep: Vec<String> = valid.iter().map(|a| a.container_id.clone()).collect();
        netfilter::gc_hostports(&req.config.name, &keep)
            .map_err(|e| nat_error("portmap GC failed", e))
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        // An explicit backend must work; without one, either will do.
        let candidates: &[Backend] = if conf.backend_explicit {
            std::slice::from_ref(&conf.backend)
        } else {
            &[Backend::Iptables, Backend::Nftables]
        };
        let mut reasons = vec![];
        for b in candidates {
            match b.probe() {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(format!("({}) {e}", b.as_str())),
            }
        }
        Err(Error::new(
            code::NOT_AVAILABLE,
            format!("no usable netfilter backend: {}", reasons.join(", ")),
        ))
    }
}

fn main() {
    cni::run(&Portmap)
}
