//! The `host-device` plugin: moves an existing device of the host into the
//! container under the requested name, remembers the host name in the
//! device's alias, and on DEL moves it back under that name.
//!
//! Beyond the reference: the move and the rename are one netlink request
//! (no temporary name or namespace; a name taken inside sends the device
//! straight back); a failed
//! ADD — also a failed IPAM or address setup — leaves the device back on
//! the host and releases the address; DEL finds the device also when it
//! was renamed inside the container (by alias or recorded MAC), and
//! succeeds when the namespace or the device is already gone; GC is
//! forwarded to IPAM.

mod check;
mod config;
mod device;

use cni::{CniResult, Command, Error, Interface, Plugin, Request, Result, Rollback};
use config::Config;
use link::{MacAddr, Netlink};
use netns::NetNs;

struct HostDevice;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

fn add(req: &Request, conf: &Config) -> Result<CniResult> {
    let ns = attach::open_netns(&req.netns)?;
    let sandbox = req.netns.clone();
    if conf.dpdk {
        // The device belongs to a userspace driver: there is no netdev to
        // move, only the attachment to report (and IPAM's addresses).
        let mut result = match &conf.ipam {
            Some(ipam) => req.delegate_add(ipam)?,
            None => CniResult::default(),
        };
        result.interfaces = vec![Interface {
            name: req.ifname.clone(),
            sandbox: Some(sandbox),
            ..Default::default()
        }];
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
        if conf.ipam.is_some() {
            result.dns = req.config.dns.clone().unwrap_or_default();
        }
        return Ok(result);
    }

    let host = Netlink::current().map_err(internal)?;
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    let dev = device::find(&host, &conf.selector)?;
    let moved = device::move_in(&host, &dev, &cont, &req.ifname)?;
    let iface = Interface {
        name: moved.name.clone(),
        mac: moved.mac.map(|m| m.to_string()),
        sandbox: Some(sandbox),
        ..Default::default()
    };
    let Some(ipam) = &conf.ipam else {
        return Ok(CniResult {
            interfaces: vec![iface],
            ..Default::default()
        });
    };
    // From here a failure puts the device back, as it was, and releases
    // the address.
    let mut undo = Rollback::new("host-device");
    undo.push("moving the device in", || {
        device::move_out(&cont, &moved, &dev.name, host.netns(), dev.up).map_err(|e| e.msg)
    });
    let mut result = req.delegate_add(ipam)?;
    undo.push("the IPAM allocation", || {
        req.delegate(ipam, Command::Del).map_err(|e| e.msg)
    });
    if result.ips.is_empty() {
        return Err(Error::internal("IPAM plugin returned missing IP config"));
    }
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces = vec![iface];
    attach::set_sysctls(&cont, &req.ifname, false)?;
    attach::configure(&cont, &req.ifname, &result, false)?;
    undo.commit();
    result.dns = req.config.dns.clone().unwrap_or_default();
    Ok(result)
}

fn del(req: &Request, conf: &Config) -> Result<()> {
    if req.netns.is_empty() {
        return Ok(());
    }
    // A vanished namespace took the device with it: a physical device
    // returns to the initial namespace by itself, a virtual one is gone.
    let ns = attach::open_netns_if_exists(&req.netns)?;
    if let Some(ipam) = &conf.ipam {
        req.delegate(ipam, Command::Del)?;
    }
    let Some(ns) = ns else {
        return Ok(());
    };
    if conf.dpdk {
        return Ok(());
    }
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    let recorded_mac = req.prev_result().ok().flatten().and_then(|p| {
        p.interfaces
            .iter()
            .find(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
            .and_then(|i| i.mac.as_deref()?.parse::<MacAddr>().ok())
    });
    let configured_mac = match &conf.selector {
        config::Selector::Mac(m) => Some(*m),
        _ => None,
    };
    let Some((dev, alias)) = device::find_in_container(
        &cont,
        &req.ifname,
        conf.device.as_deref(),
        recorded_mac.or(configured_mac),
    )?
    else {
        // Already moved back (an earlier DEL) or gone with its namespace.
        return Ok(());
    };
    let Some(host_name) = alias else {
        return Err(Error::internal(format!(
            "failed to find original ifname for {:?} (alias is not set)",
            dev.name
        )));
    };
    let host_ns = NetNs::current().map_err(internal)?;
    device::move_out(&cont, &dev, &host_name, &host_ns, false)
}

fn check(req: &Request, conf: &Config) -> Result<()> {
    let ns = attach::open_netns(&req.netns)?;
    if let Some(ipam) = &conf.ipam {
        req.delegate(ipam, Command::Check)?;
    }
    let prev = req.require_prev_result()?;
    if conf.dpdk {
        return Ok(());
    }
    let iface = attach::container_entry(&prev, &req.ifname, &req.netns)?;
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    let link = cont
        .link_by_name(&iface.name)
        .map_err(internal)?
        .ok_or_else(|| {
            Error::internal(format!(
                "Container Interface name in prevResult: {} not found",
                iface.name
            ))
        })?;
    if let Some(mac) = &iface.mac {
        let actual = link.mac.map(|m| m.to_string()).unwrap_or_default();
        if !mac.eq_ignore_ascii_case(&actual) {
            return Err(Error::internal(format!(
                "Interface {} Mac {mac} doesn't match container Mac: {actual}",
                iface.name
            )));
        }
    }
    check::addresses_and_routes(&cont, &link, &prev)
}

impl Plugin for HostDevice {
    const NAME: &'static str = "host-device";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        add(req, &Config::load(req)?)
    }

    fn del(&self, req: &Request) -> Result<()> {
        del(req, &Config::load(req)?)
    }

    fn check(&self, req: &Request) -> Result<()> {
        check(req, &Config::load(req)?)
    }

    /// Ready when IPAM is, as the reference.
    fn status(&self, req: &Request) -> Result<()> {
        match req.config.ipam_type() {
            Some(ipam) => req.delegate(ipam, Command::Status),
            None => Ok(()),
        }
    }

    fn gc(&self, req: &Request) -> Result<()> {
        match req.config.ipam_type() {
            Some(ipam) => req.delegate(ipam, Command::Gc),
            None => Ok(()),
        }
    }
}

fn main() {
    cni::run(&HostDevice)
}
