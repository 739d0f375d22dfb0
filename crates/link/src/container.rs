//! The container side of an attachment: sysctls, addresses, link up, DAD and
//! routes on one interface inside the container namespace (the reference's
//! sysctl block plus `ipam.ConfigureIface`), from plain typed inputs.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use crate::connection::Netlink;
use crate::error::{Error, Result};
use crate::route::Route;
use crate::sysctl;

/// How long to wait for IPv6 duplicate address detection when DAD is
/// enabled (the reference's `SettleAddresses` deadline).
const DAD_DEADLINE: Duration = Duration::from_secs(5);
const DAD_POLL: Duration = Duration::from_millis(50);

/// One address for the interface, with the gateway of its subnet (used for
/// routes that name none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceAddress {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

/// What to put on the interface. Routes carry no `oif`: they go out of the
/// interface; a route without a gateway takes the first gateway of its
/// family among `addresses`.
#[derive(Debug, Clone, Default)]
pub struct IfaceConfig {
    pub addresses: Vec<IfaceAddress>,
    pub routes: Vec<Route>,
    /// Wait for IPv6 duplicate address detection before adding routes.
    pub enable_dad: bool,
}

fn context(what: String) -> impl FnOnce(Error) -> Error {
    move |e| Error::Context {
        context: what,
        source: Box::new(e),
    }
}

/// Container sysctls set before addresses: DAD on or off, and gratuitous
/// ARP when the link comes up (neighbours learn a reused address at once).
/// Failures are ignored, as in the reference: a kernel without IPv6 simply
/// has no such keys.
pub fn set_sysctls(cont: &Netlink, ifname: &str, enable_dad: bool) -> Result<()> {
    let ifname = ifname.to_string();
    cont.netns().run(move || {
        let v6 = |name: &str, value: &str| {
            let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv6", &ifname, name), value);
        };
        if enable_dad {
            v6("enhanced_dad", "1");
            v6("accept_dad", "1");
        } else {
            v6("accept_dad", "0");
        }
        let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv4", &ifname, "arp_notify"), "1");
    })?;
    Ok(())
}

/// Gratuitous ARP and unsolicited neighbour advertisements when `ifname`
/// comes up (`arp_notify`, `ndisc_notify`), as the reference's macvlan and
/// ipvlan set them; best effort.
pub fn set_notify_sysctls(cont: &Netlink, ifname: &str) -> Result<()> {
    let ifname = ifname.to_string();
    cont.netns().run(move || {
        let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv4", &ifname, "arp_notify"), "1");
        let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv6", &ifname, "ndisc_notify"), "1");
    })?;
    Ok(())
}

/// Put `cfg`'s addresses and routes on `ifname` inside the namespace of
/// `cont`, and bring it up. An identical route already present is fine (the
/// same route from two IPAM entries, or a repeated ADD).
pub fn configure(cont: &Netlink, ifname: &str, cfg: &IfaceConfig) -> Result<()> {
    let link = cont
        .link_by_name(ifname)
        .map_err(context(format!("failed to lookup {ifname:?}")))?
        .ok_or_else(|| Error::Invalid(format!("failed to lookup {ifname:?}: link not found")))?;
    let has_v6 = cfg.addresses.iter().any(|a| a.address.is_ipv6());
    if has_v6 {
        enable_ipv6(cont, ifname)?;
    }
    for a in &cfg.addresses {
        cont.add_address(link.index, a.address)
            .map_err(context(format!(
                "failed to add IP addr {} to {ifname:?}",
                a.address
            )))?;
    }
    cont.set_up(link.index)
        .map_err(context(format!("failed to set {ifname:?} UP")))?;
    if has_v6 && cfg.enable_dad {
        settle(cont, link.index, ifname)?;
    }
    let family_gw = |v6: bool| {
        cfg.addresses
            .iter()
            .find(|a| a.address.is_ipv6() == v6)
            .and_then(|a| a.gateway)
    };
    for r in &cfg.routes {
        let gw = r.gateway.or(family_gw(r.destination.is_ipv6()));
        let route = Route {
            gateway: gw,
            oif: Some(link.index),
            ..r.clone()
        };
        match cont.add_route(&route) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                let via = gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into());
                return Err(context(format!(
                    "failed to add route '{} via {via} dev {ifname} (Scope: {}, Table: {})'",
                    r.destination,
                    r.scope.unwrap_or(0),
                    r.table.unwrap_or(0)
                ))(e));
            }
        }
    }
    Ok(())
}

/// IPv6 may be disabled on `lo` and the interface (some runtimes do that);
/// enable it before adding IPv6 addresses, and keep addresses across a
/// link down as the reference does.
fn enable_ipv6(cont: &Netlink, ifname: &str) -> Result<()> {
    let ifname = ifname.to_string();
    cont.netns().run(move || -> Result<()> {
        for iface in ["lo", ifname.as_str()] {
            let key = sysctl::iface_key("ipv6", iface, "disable_ipv6");
            match sysctl::read(&key) {
                Ok(v) if v == "0" => continue,
                Ok(_) => {}
                // No IPv6 tree to enable: the address add will say so.
                Err(_) => continue,
            }
            sysctl::ensure(&key, "0").map_err(context(format!(
                "failed to enable IPv6 for interface {iface:?}"
            )))?;
        }
        let _ = sysctl::ensure_if_present(
            &sysctl::iface_key("ipv6", &ifname, "keep_addr_on_down"),
            "1",
        );
        Ok(())
    })?
}

/// Wait until no address of the link is tentative (DAD finished).
fn settle(cont: &Netlink, index: u32, ifname: &str) -> Result<()> {
    let deadline = Instant::now() + DAD_DEADLINE;
    loop {
        let addrs = cont.addresses(Some(index))?;
        if let Some(a) = addrs.iter().find(|a| a.dad_failed) {
            return Err(Error::Invalid(format!(
                "link {ifname} has address {} in DADFAILED state",
                a.network
            )));
        }
        if !addrs.iter().any(|a| a.tentative) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "link {ifname} still has tentative addresses after {} seconds",
                DAD_DEADLINE.as_secs()
            )));
        }
        std::thread::sleep(DAD_POLL);
    }
}

/// Turn on IP forwarding in the calling thread's namespace for each family
/// asked for; written only when not already on.
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<()> {
    let on = |key: &str| {
        sysctl::ensure(key, "1")
            .map(|_| ())
            .map_err(context("failed to enable forwarding".into()))
    };
    // Read without /proc/sys when it can be: on after a node's first ADD.
    if v4 && sysctl::ipv4_forwarding() != Some(true) {
        on("net/ipv4/ip_forward")?;
    }
    if v6 {
        on("net/ipv6/conf/all/forwarding")?;
    }
    Ok(())
}
