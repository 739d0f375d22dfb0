//! The container side: sysctls, addresses, link up and routes inside the
//! container namespace (the reference's sysctl block plus `ipam.ConfigureIface`).

use std::time::{Duration, Instant};

use cni::{CniResult, Error, Result};
use link::{Netlink, Route, sysctl};
use netns::NetNs;

/// How long to wait for IPv6 duplicate address detection when `enabledad`
/// is set (the reference's `SettleAddresses` deadline).
const DAD_DEADLINE: Duration = Duration::from_secs(5);
const DAD_POLL: Duration = Duration::from_millis(50);

/// Container sysctls for L3 mode. Failures are ignored, as in the reference:
/// a kernel without IPv6 simply has no such keys.
pub fn set_sysctls(ns: &NetNs, ifname: &str, enable_dad: bool) -> Result<()> {
    let ifname = ifname.to_string();
    ns.run(move || {
        let v6 = |name: &str, value: &str| {
            let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv6", &ifname, name), value);
        };
        if enable_dad {
            v6("enhanced_dad", "1");
            v6("accept_dad", "1");
        } else {
            v6("accept_dad", "0");
        }
        // Gratuitous ARP when the link comes up, so neighbours learn the
        // (possibly reused) address at once.
        let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv4", &ifname, "arp_notify"), "1");
    })
    .map_err(|e| Error::internal(e.to_string()))
}

/// Put the result's addresses and routes on `ifname` inside the container and
/// bring it up.
pub fn configure(
    cont: &Netlink,
    ns: &NetNs,
    ifname: &str,
    result: &CniResult,
    enable_dad: bool,
) -> Result<()> {
    let link = cont
        .link_by_name(ifname)
        .map_err(|e| Error::internal(format!("failed to lookup {ifname:?}: {e}")))?
        .ok_or_else(|| Error::internal(format!("failed to lookup {ifname:?}: link not found")))?;
    let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());
    if has_v6 {
        enable_ipv6(ns, ifname)?;
    }
    for ipc in &result.ips {
        if ipc.interface != Some(2) {
            return Err(Error::internal(format!(
                "failed to add IP addr {} to {ifname:?}: invalid interface index",
                ipc.address
            )));
        }
        cont.add_address(link.index, ipc.address).map_err(|e| {
            Error::internal(format!(
                "failed to add IP addr {} to {ifname:?}: {e}",
                ipc.address
            ))
        })?;
    }
    cont.set_up(link.index)
        .map_err(|e| Error::internal(format!("failed to set {ifname:?} UP: {e}")))?;
    if has_v6 && enable_dad {
        settle(cont, link.index, ifname)?;
    }
    let v4gw = result
        .ips
        .iter()
        .find(|i| i.address.is_ipv4())
        .and_then(|i| i.gateway);
    let v6gw = result
        .ips
        .iter()
        .find(|i| i.address.is_ipv6())
        .and_then(|i| i.gateway);
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.is_ipv4() { v4gw } else { v6gw });
        let route = Route {
            destination: r.dst,
            gateway: gw,
            oif: Some(link.index),
            priority: r.priority,
            table: r.table,
            scope: r.scope,
            mtu: r.mtu,
            advmss: r.advmss,
        };
        match cont.add_route(&route) {
            Ok(()) => {}
            // The same route from two IPAM entries (or a repeated ADD).
            Err(e) if e.is_exists() => {}
            Err(e) => {
                let via = gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into());
                return Err(Error::internal(format!(
                    "failed to add route '{} via {via} dev {ifname} (Scope: {}, Table: {})': {e}",
                    r.dst,
                    r.scope.unwrap_or(0),
                    r.table.unwrap_or(0)
                )));
            }
        }
    }
    Ok(())
}

/// IPv6 may be disabled on `lo` and the interface (some runtimes do that);
/// enable it before adding IPv6 addresses, and keep addresses across a
/// link down as the reference does.
fn enable_ipv6(ns: &NetNs, ifname: &str) -> Result<()> {
    let ifname = ifname.to_string();
    ns.run(move || -> Result<()> {
        for iface in ["lo", ifname.as_str()] {
            let key = sysctl::iface_key("ipv6", iface, "disable_ipv6");
            match sysctl::read(&key) {
                Ok(v) if v == "0" => continue,
                Ok(_) => {}
                // No IPv6 tree to enable: the address add will say so.
                Err(_) => continue,
            }
            sysctl::ensure(&key, "0").map_err(|e| {
                Error::internal(format!(
                    "failed to enable IPv6 for interface {iface:?}: {e}"
                ))
            })?;
        }
        let _ = sysctl::ensure_if_present(
            &sysctl::iface_key("ipv6", &ifname, "keep_addr_on_down"),
            "1",
        );
        Ok(())
    })
    .map_err(|e| Error::internal(e.to_string()))?
}

/// Wait until no address of the link is tentative (DAD finished).
fn settle(cont: &Netlink, index: u32, ifname: &str) -> Result<()> {
    let deadline = Instant::now() + DAD_DEADLINE;
    loop {
        let addrs = cont
            .addresses(Some(index))
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Some(a) = addrs.iter().find(|a| a.dad_failed) {
            return Err(Error::internal(format!(
                "link {ifname} has address {} in DADFAILED state",
                a.network
            )));
        }
        if !addrs.iter().any(|a| a.tentative) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::internal(format!(
                "link {ifname} still has tentative addresses after {} seconds",
                DAD_DEADLINE.as_secs()
            )));
        }
        std::thread::sleep(DAD_POLL);
    }
}
