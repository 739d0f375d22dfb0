//! Gateways: which addresses the bridge carries, the default routes added for
//! `isDefaultGateway`, and putting the addresses on the bridge.

use std::net::IpAddr;

use cni::{CniResult, Error, Result, Route};
use ipnetwork::IpNetwork;
use link::Netlink;

use crate::config::Settings;

/// Gateway addresses (with the subnet's prefix) per family.
#[derive(Debug, Default)]
pub struct Gateways {
    pub v4: Vec<IpNetwork>,
    pub v6: Vec<IpNetwork>,
}

/// The reference's `calcGateways`: point every IP at the container interface
/// (index 2), fill in missing gateways (first host of the subnet) when the
/// bridge is the gateway, add a default route per family for
/// `isDefaultGateway` unless IPAM already gave one with a gateway.
pub fn calc(result: &mut CniResult, s: &Settings) -> Result<Gateways> {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let ipc = &mut result.ips[i];
        ipc.interface = Some(2);
        let v6 = ipc.address.is_ipv6();
        if ipc.gateway.is_none() && s.is_gateway {
            ipc.gateway = Some(first_host(ipc.address));
        }
        let gateway = ipc.gateway;
        let prefix = ipc.address.prefix();
        let fam = usize::from(v6);
        if s.is_default_gateway && !default_found[fam] {
            let default = default_net(v6);
            default_found[fam] = result
                .routes
                .iter()
                .any(|r| r.gw.is_some() && r.dst == default);
            if !default_found[fam] {
                result.routes.push(Route::new(default, gateway));
                default_found[fam] = true;
            }
        }
        if s.is_gateway
            && let Some(gw) = gateway
        {
            let net = IpNetwork::new(gw, prefix)
                .map_err(|e| Error::internal(format!("gateway {gw}/{prefix}: {e}")))?;
            if v6 {
                gws.v6.push(net);
            } else {
                gws.v4.push(net);
            }
        }
    }
    Ok(gws)
}

fn first_host(net: IpNetwork) -> IpAddr {
    match net.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n).wrapping_add(1)).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n).wrapping_add(1)).into()),
    }
}

pub fn default_net(v6: bool) -> IpNetwork {
    if v6 {
        IpNetwork::new(IpAddr::from([0u16; 8]), 0).unwrap_or_else(|_| unreachable!())
    } else {
        IpNetwork::new(IpAddr::from([0u8; 4]), 0).unwrap_or_else(|_| unreachable!())
    }
}

/// The reference's `ensureAddr`: put `gw` on the link `index` (named
/// `name`). An identical address is fine; any other IPv4 address, or an
/// overlapping IPv6 one, is replaced with `forceAddress` and an error
/// otherwise. Afterwards the link's MAC is pinned to its current value, so a
/// bridge stops taking the lowest port MAC as ports come and go.
pub fn ensure_addr(
    host: &Netlink,
    index: u32,
    name: &str,
    gw: IpNetwork,
    force: bool,
) -> Result<()> {
    let addrs = host
        .addresses(Some(index))
        .map_err(|e| Error::internal(format!("could not get list of IP addresses: {e}")))?;
    for a in addrs.iter().filter(|a| a.network.is_ipv6() == gw.is_ipv6()) {
        if a.network == gw {
            return Ok(());
        }
        let conflicts = gw.is_ipv4() || a.network.contains(gw.ip()) || gw.contains(a.network.ip());
        if !conflicts {
            continue;
        }
        if !force {
            return Err(Error::internal(format!(
                "{name:?} already has an IP address different from {gw}"
            )));
        }
        host.delete_address(index, a.network).map_err(|e| {
            Error::internal(format!("failed to remove IP address {}: {e}", a.network))
        })?;
    }
    match host.add_address(index, gw) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => {
            return Err(Error::internal(format!(
                "could not add IP address {gw} to {name:?}: {e}"
            )));
        }
    }
    let link = host
        .require_link(name)
        .map_err(|e| Error::internal(e.to_string()))?;
    if let Some(mac) = link.mac {
        host.set_mac(index, mac)
            .map_err(|e| Error::internal(format!("could not set bridge's mac: {e}")))?;
    }
    Ok(())
}

/// Forwarding for each family that has a gateway on the bridge; written only
/// when not already on.
pub fn enable_forwarding(gws: &Gateways) -> Result<()> {
    attach::enable_forwarding(!gws.v4.is_empty(), !gws.v6.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::IpConfig;

    fn settings(gw: bool, default_gw: bool) -> Settings {
        let mut s = crate::config::tests_support::settings();
        s.is_gateway = gw || default_gw;
        s.is_default_gateway = default_gw;
        s
    }

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn missing_gateway_is_the_first_host_and_default_routes_are_added_once_per_family() {
        let mut r = CniResult {
            ips: vec![
                ip("10.1.2.5/24", None),
                ip("10.9.0.5/16", None),
                ip("2001:db8::5/64", Some("2001:db8::fe")),
            ],
            ..Default::default()
        };
        let gws = calc(&mut r, &settings(false, true)).unwrap();
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(
            gws.v4,
            vec![
                "10.1.2.1/24".parse().unwrap(),
                "10.9.0.1/16".parse().unwrap()
            ]
        );
        assert_eq!(gws.v6, vec!["2001:db8::fe/64".parse().unwrap()]);
        assert_eq!(r.routes.len(), 2);
        assert_eq!(
            r.routes[0],
            Route::new(default_net(false), Some("10.1.2.1".parse().unwrap()))
        );
        assert_eq!(
            r.routes[1],
            Route::new(default_net(true), Some("2001:db8::fe".parse().unwrap()))
        );
    }

    #[test]
    fn no_gateway_role_leaves_ips_alone_and_ipam_default_route_is_kept() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            ..Default::default()
        };
        let gws = calc(&mut r, &settings(false, false)).unwrap();
        assert_eq!(r.ips[0].gateway, None);
        assert!(gws.v4.is_empty() && r.routes.is_empty());

        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", Some("10.1.2.1"))],
            routes: vec![Route::new(
                default_net(false),
                Some("10.1.2.254".parse().unwrap()),
            )],
            ..Default::default()
        };
        calc(&mut r, &settings(true, true)).unwrap();
        assert_eq!(r.routes.len(), 1);
    }
}
