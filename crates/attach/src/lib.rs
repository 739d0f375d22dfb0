//! The container side of an interface plugin (bridge, macvlan, ipvlan,
//! vlan, host-device): the glue between a [`cni::CniResult`] and
//! [`link::container`], which takes plain typed values. Failures come back
//! as CNI errors with the reference's messages.

pub mod sublink;

use cni::{CniResult, Error, Interface, Result};
use link::container::{IfaceAddress, IfaceConfig};
use link::{Link, Netlink};
use netns::NetNs;

/// The container interface of `prev`: `ifname` in the sandbox `netns`, or
/// the reference's error naming the sandbox `prev` gives instead.
pub fn container_entry<'a>(
    prev: &'a CniResult,
    ifname: &str,
    netns: &str,
) -> Result<&'a Interface> {
    if let Some(i) = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname && i.sandbox.as_deref() == Some(netns))
    {
        return Ok(i);
    }
    let sandbox = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname)
        .and_then(|i| i.sandbox.clone())
        .unwrap_or_default();
    Err(Error::internal(format!(
        "Sandbox in prevResult {sandbox} doesn't match configured netns: {netns}"
    )))
}

/// The container's namespace, or the CNI error for a bad `CNI_NETNS`
/// (code 3, naming the path).
pub fn open_netns(path: &str) -> Result<NetNs> {
    NetNs::open(path).map_err(|e| netns_error(path, e))
}

/// Like [`open_netns`] for DEL: `None` when the namespace no longer exists
/// (what was in it went with it).
pub fn open_netns_if_exists(path: &str) -> Result<Option<NetNs>> {
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(netns::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(netns_error(path, e)),
    }
}

fn netns_error(path: &str, e: netns::Error) -> Error {
    Error::new(
        cni::code::INVALID_NETNS,
        format!("failed to open netns {path:?}: {e}"),
    )
}

/// The addresses and routes of `result` that belong on `ifname` (IPs whose
/// interface index points at it, checked as the reference checks).
pub fn iface_config(result: &CniResult, ifname: &str, enable_dad: bool) -> Result<IfaceConfig> {
    let addresses = result
        .ips_of(ifname)?
        .into_iter()
        .map(|ipc| IfaceAddress {
            address: ipc.address,
            gateway: ipc.gateway,
        })
        .collect();
    let routes = result
        .routes
        .iter()
        .map(|r| link::Route {
            destination: r.dst,
            gateway: r.gw,
            oif: None,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
            mtu: r.mtu,
            advmss: r.advmss,
        })
        .collect();
    Ok(IfaceConfig {
        addresses,
        routes,
        enable_dad,
    })
}

/// The container sysctls for DAD and gratuitous ARP on `ifname`.
pub fn set_sysctls(cont: &Netlink, ifname: &str, enable_dad: bool) -> Result<()> {
    link::container::set_sysctls(cont, ifname, enable_dad)
        .map_err(|e| Error::internal(e.to_string()))
}

/// The reference's `ipam.ConfigureIface`: `result`'s addresses and routes on
/// `ifname` inside the namespace of `cont`, link up.
pub fn configure(cont: &Netlink, ifname: &str, result: &CniResult, enable_dad: bool) -> Result<()> {
    let cfg = iface_config(result, ifname, enable_dad)?;
    link::container::configure(cont, ifname, &cfg).map_err(|e| Error::internal(e.to_string()))
}

/// `arp_notify` and `ndisc_notify` on `ifname` (macvlan, ipvlan).
pub fn set_notify_sysctls(cont: &Netlink, ifname: &str) -> Result<()> {
    link::container::set_notify_sysctls(cont, ifname).map_err(|e| Error::internal(e.to_string()))
}

/// IP forwarding in the calling thread's namespace for the families that
/// have a gateway.
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<()> {
    link::container::enable_forwarding(v4, v6).map_err(|e| Error::internal(e.to_string()))
}

/// CHECK: every address of `prev` is on `l` (the reference's
/// `ValidateExpectedInterfaceIPs`).
pub fn check_addresses(cont: &Netlink, l: &Link, prev: &CniResult) -> Result<()> {
    let have = cont
        .addresses(Some(l.index))
        .map_err(|e| Error::internal(e.to_string()))?;
    for ipc in &prev.ips {
        if !have.iter().any(|a| a.network == ipc.address) {
            return Err(Error::internal(format!(
                "Failed to match addr {} on interface {}",
                ipc.address, l.name
            )));
        }
    }
    Ok(())
}

/// CHECK: every route of `prev` leaves through `l` (the reference's
/// `ValidateExpectedRoute`).
pub fn check_routes(cont: &Netlink, l: &Link, prev: &CniResult) -> Result<()> {
    let have = cont
        .routes_via(l.index)
        .map_err(|e| Error::internal(e.to_string()))?;
    for r in &prev.routes {
        let found = have.iter().any(|h| {
            h.destination.network() == r.dst.network()
                && h.destination.prefix() == r.dst.prefix()
                && (r.gw.is_none() || h.gateway == r.gw)
        });
        if !found {
            let gw = r.gw.map(|g| g.to_string()).unwrap_or_default();
            return Err(Error::internal(format!(
                "Expected Route {{Dst:{} GW:{gw}}} not found in routing table",
                r.dst
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Interface, IpConfig, Route};

    #[test]
    fn only_ips_of_the_interface_and_every_route() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                ..Default::default()
            }],
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "10.0.1.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                },
            ],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        let cfg = iface_config(&r, "eth0", false).unwrap();
        assert_eq!(cfg.addresses.len(), 1);
        assert_eq!(cfg.addresses[0].address, "10.0.0.2/24".parse().unwrap());
        assert_eq!(cfg.routes.len(), 1);
        let e = iface_config(&r, "net1", false).unwrap_err();
        assert!(e.msg.contains("invalid interface index"), "{}", e.msg);
    }
}
