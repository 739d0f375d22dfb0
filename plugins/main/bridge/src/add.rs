//! ADD: bridge, veth, IPAM, container configuration, gateway, masquerade —
//! in the reference's order, each step undone if a later one fails.

use std::time::Duration;

use cni::{CniResult, Command, Error, Interface, Request, Result};
use link::{BridgeOptions, Link, Netlink, PortOptions, VethOptions, sysctl};
use netns::NetNs;

use crate::config::Settings;
use crate::rollback::Rollback;
use crate::{container, gateway, masquerade, vlan};
use netfilter::bridge_filter as spoofcheck;

/// The reference polls for up to 2.55 s (0+50+500+1000+1000 ms); we wait as
/// long, but return as soon as the kernel says the port is up.
const PORT_UP_DEADLINE: Duration = Duration::from_millis(2550);

fn internal(ctx: impl std::fmt::Display) -> impl FnOnce(link::Error) -> Error {
    move |e| Error::internal(format!("{ctx}: {e}"))
}

fn release_ipam_on_failure<'a>(undo: &mut Rollback<'a>, req: &'a Request, s: &'a Settings) {
    if let Some(ipam) = s.ipam.as_deref() {
        undo.push("IPAM reservation", move || {
            req.delegate(ipam, Command::Del).map_err(|e| e.to_string())
        });
    }
}

pub fn add(req: &Request, s: &Settings) -> Result<CniResult> {
    std::thread::scope(|scope| add_in(scope, req, s))
}

fn add_in<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    req: &'s Request,
    s: &'s Settings,
) -> Result<CniResult> {
    // Everything that can be found wrong without changing anything is
    // checked first — the namespace, the IPAM binary — so a bad ADD leaves
    // not even the bridge behind.
    let ns = NetNs::open(&req.netns).map_err(|e| {
        Error::new(
            cni::code::INVALID_NETNS,
            format!("failed to open netns {:?}: {e}", req.netns),
        )
    })?;
    if let Some(ipam) = s.ipam.as_deref() {
        cni::delegate::find_in_path(ipam, &req.path)?;
    }
    let host = Netlink::current().map_err(internal("failed to open netlink"))?;
    let cont =
        Netlink::in_netns(&ns).map_err(internal("failed to open netlink in the container"))?;
    let mut undo = Rollback::default();

    // The first ADD on a node creates the bridge: IPAM runs first, so a
    // configuration it refuses leaves no bridge behind. Every later ADD
    // finds the bridge and lets IPAM (its own process) work while we make
    // the veth.
    let bridge_exists = host
        .link_by_name(&s.bridge)
        .map_err(internal(format!("failed to lookup {:?}", s.bridge)))?
        .is_some();
    let mut ipam_result = None;
    if !bridge_exists && let Some(ipam) = s.ipam.as_deref() {
        ipam_result = Some(req.delegate_add(ipam)?);
        release_ipam_on_failure(&mut undo, req, s);
    }

    let mut bridge = host
        .ensure_bridge(&BridgeOptions {
            name: s.bridge.clone(),
            mtu: s.mtu,
            vlan_filtering: s.vlan_filtering(),
            promisc: s.promisc,
        })
        .map_err(internal(format!("failed to create bridge {:?}", s.bridge)))?;
    // The bridge must not autoconfigure from router advertisements of the
    // containers it serves; best effort, as in the reference.
    let _ = sysctl::ensure_if_present(&sysctl::iface_key("ipv6", &s.bridge, "accept_ra"), "0");

    let ipam_job = match (&ipam_result, s.ipam.as_deref()) {
        (None, Some(ipam)) => Some(scope.spawn(move || req.delegate_add(ipam))),
        _ => None,
    };
    // --- veth pair, host end on the bridge ---
    let host_veth = create_veth(&host, &cont, &ns, req, s, &bridge);
    let ipam_late = ipam_job.map(|job| {
        job.join()
            .unwrap_or_else(|_| Err(Error::internal("the IPAM thread panicked")))
    });
    if let Some(Ok(_)) = &ipam_late {
        release_ipam_on_failure(&mut undo, req, s);
    }
    let host_veth = host_veth?;
    let host_index = host_veth.index;
    undo.push("veth pair", {
        let host = &host;
        move || {
            host.delete_link(host_index)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    });
    if let Some(late) = ipam_late {
        ipam_result = Some(late?);
    }
    let container_link = cont
        .require_link(&req.ifname)
        .map_err(internal(format!("failed to lookup {:?}", req.ifname)))?;

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: bridge.mac.map(|m| m.to_string()),
                ..Default::default()
            },
            Interface {
                name: host_veth.name.clone(),
                mac: host_veth.mac.map(|m| m.to_string()),
                ..Default::default()
            },
            Interface {
                name: req.ifname.clone(),
                mac: container_link.mac.map(|m| m.to_string()),
                sandbox: Some(req.netns.clone()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };

    if s.macspoofchk {
        let mac = container_link
            .mac
            .ok_or_else(|| Error::internal(format!("{:?} has no MAC address", req.ifname)))?;
        spoofcheck::setup(
            &req.container_id,
            &req.ifname,
            &host_veth.name,
            &mac.to_string(),
        )
        .map_err(|e| Error::internal(format!("failed to setup macspoofchk: {e}")))?;
        undo.push("macspoofchk rules", || {
            spoofcheck::teardown(&req.container_id, &req.ifname).map_err(|e| e.to_string())
        });
    }

    if let Some(ipam_result) = ipam_result {
        // --- addresses from IPAM ---
        if ipam_result.ips.is_empty() {
            return Err(Error::internal("IPAM plugin returned missing IP config"));
        }
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        let gws = gateway::calc(&mut result, s)?;

        container::set_sysctls(&ns, &req.ifname, s.enable_dad)?;
        container::configure(&cont, &ns, &req.ifname, &result, s.enable_dad)?;

        if s.is_gateway {
            // With an access VLAN the gateway lives on `<bridge>.<vlan>`.
            let (gw_index, gw_name) = if s.vlan != 0 {
                let gw_link = vlan::ensure_gateway_interface(&host, &bridge, s)?;
                result.interfaces.push(Interface {
                    name: gw_link.name.clone(),
                    mac: gw_link.mac.map(|m| m.to_string()),
                    ..Default::default()
                });
                (gw_link.index, gw_link.name)
            } else {
                (bridge.index, bridge.name.clone())
            };
            for gw in gws.v4.iter().chain(&gws.v6) {
                gateway::ensure_addr(&host, gw_index, &gw_name, *gw, s.force_address)
                    .map_err(|e| e.context("failed to set bridge addr"))?;
            }
            gateway::enable_forwarding(&gws)?;
        }

        if s.ip_masq {
            let addrs: Vec<_> = result.ips.iter().map(|i| i.address).collect();
            // Undone whatever the outcome: a setup that failed half-way may
            // have written one family's rules.
            undo.push("masquerade rules", || {
                masquerade::teardown(req).map_err(|e| e.msg)
            });
            masquerade::setup(req, s, &addrs)?;
        }
    } else if !s.disable_container_interface {
        cont.set_up(container_link.index)
            .map_err(internal(format!("failed to set {:?} up", req.ifname)))?;
    }

    if !s.disable_container_interface {
        let state = host
            .wait_oper_up(host_index, PORT_UP_DEADLINE)
            .map_err(internal("failed to check bridge port state"))?;
        if state != link::OperState::Up {
            return Err(Error::internal(format!(
                "bridge port in error state: {state}"
            )));
        }
    }

    // Joining the bridge can change both MACs; report what they are now.
    bridge = host
        .require_link(&bridge.name)
        .map_err(internal(format!("failed to lookup {:?}", bridge.name)))?;
    let host_veth = host
        .link_by_index(host_index)
        .map_err(internal("failed to lookup the host veth"))?
        .ok_or_else(|| Error::internal("the host veth vanished during ADD"))?;
    result.interfaces[0].mac = bridge.mac.map(|m| m.to_string());
    result.interfaces[1].mac = host_veth.mac.map(|m| m.to_string());
    if let Some(dns) = &s.dns {
        result.dns = dns.clone();
    }
    undo.commit();
    Ok(result)
}

/// Create the pair with the container end named CNI_IFNAME inside the
/// container, set up the host port (flags, VLANs), and return the host end.
fn create_veth(
    host: &Netlink,
    cont: &Netlink,
    ns: &NetNs,
    req: &Request,
    s: &Settings,
    bridge: &Link,
) -> Result<Link> {
    if cont
        .link_by_name(&req.ifname)
        .map_err(internal(format!("failed to lookup {:?}", req.ifname)))?
        .is_some()
    {
        let peer = link::random_veth_name().unwrap_or_else(|_| "veth".into());
        return Err(Error::internal(format!(
            "container veth name ({:?}) peer provided ({peer:?}) already exists",
            req.ifname
        )));
    }
    let pair = host
        .create_veth(&VethOptions {
            container_name: &req.ifname,
            container_ns: ns,
            host_name: None,
            bridge_index: Some(bridge.index),
            mtu: s.mtu,
            container_mac: s.mac,
        })
        .map_err(internal("failed to make veth pair"))?;
    let port = pair.host.index;
    // Any failure from here on must not leave the pair behind.
    let configure = || -> Result<()> {
        // accept_ra=0 as the reference. IPv6 off on the port as well: a
        // bridge port has no L3 role (the bridge takes its frames before
        // IPv6 would see them), yet with IPv6 on it gets a link-local
        // address whose DAD and MLD packets flood every other port, and
        // routes that every link change on the node walks. Written before
        // the container end comes up, so none of that ever exists.
        let _ = sysctl::write_if_present(
            &sysctl::iface_key("ipv6", &pair.host.name, "accept_ra"),
            "0",
        );
        let _ = sysctl::write_if_present(
            &sysctl::iface_key("ipv6", &pair.host.name, "disable_ipv6"),
            "1",
        );
        host.set_port_options(
            port,
            PortOptions {
                hairpin: Some(s.hairpin),
                isolated: Some(s.port_isolation),
            },
        )
        .map_err(internal(format!(
            "failed to setup hairpin/isolation on {:?}",
            pair.host.name
        )))?;
        vlan::configure_port(host, port, s)
    };
    if let Err(e) = configure() {
        let _ = host.delete_link(port);
        return Err(e);
    }
    Ok(pair.host)
}
