//! ADD: bridge, veth, IPAM, container configuration, gateway, masquerade —
//! in the reference's order, each step undone if a later one fails.

use std::time::Duration;

use cni::{CniResult, Command, Error, Interface, Request, Result, Rollback};
use link::{BridgeOptions, Link, Netlink, PortOptions, VethOptions, sysctl};
use netns::NetNs;

use crate::config::Settings;
use crate::{gateway, masquerade, vlan};
use netfilter::bridge_filter as spoofcheck;

/// The reference polls for up to 2.55 s (0+50+500+1000+1000 ms); we wait as
/// long, but return as soon as the kernel says the port is up.
const PORT_UP_DEADLINE: Duration = Duration::from_millis(2550);

fn internal(ctx: impl std::fmt::Display) -> impl FnOnce(link::Error) -> Error {
    move |e| Error::internal(format!("{ctx}: {e}"))
}

/// What every step works with: the request, its settings, the container
/// namespace and a netlink socket on each side.
struct Ctx<'s> {
    req: &'s Request,
    s: &'s Settings,
    ns: NetNs,
    host: Netlink,
    cont: Netlink,
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
    let ctx = preflight(req, s)?;
    let mut undo = Rollback::new("bridge");
    let early_ipam = ipam_before_bridge(&ctx, &mut undo)?;
    let bridge = ensure_bridge(&ctx)?;
    let (host_veth, ipam_result) = veth_and_ipam(scope, &ctx, &bridge, early_ipam, &mut undo)?;
    let container_link = ctx
        .cont
        .require_link(&req.ifname)
        .map_err(internal(format!("failed to lookup {:?}", req.ifname)))?;
    let mut result = interfaces_result(req, &bridge, &host_veth, &container_link);
    if s.macspoofchk {
        spoofcheck_setup(&ctx, &host_veth, &container_link, &mut undo)?;
    }
    if let Some(ipam_result) = ipam_result {
        configure_l3(&ctx, &bridge, ipam_result, &mut result, &mut undo)?;
    } else if !s.disable_container_interface {
        ctx.cont
            .set_up(container_link.index)
            .map_err(internal(format!("failed to set {:?} up", req.ifname)))?;
    }
    if !s.disable_container_interface {
        wait_port_up(&ctx.host, host_veth.index)?;
    }
    refresh_macs(&ctx.host, &bridge, host_veth.index, &mut result)?;
    if let Some(dns) = &s.dns {
        result.dns = dns.clone();
    }
    undo.commit();
    Ok(result)
}

/// Everything that can be found wrong without changing anything is checked
/// first — the namespace, the IPAM binary — so a bad ADD leaves not even
/// the bridge behind.
fn preflight<'s>(req: &'s Request, s: &'s Settings) -> Result<Ctx<'s>> {
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
    Ok(Ctx {
        req,
        s,
        ns,
        host,
        cont,
    })
}

/// The first ADD on a node creates the bridge: IPAM runs first, so a
/// configuration it refuses leaves no bridge behind. Every later ADD finds
/// the bridge and lets IPAM (its own process) work while we make the veth
/// (see [`veth_and_ipam`]).
fn ipam_before_bridge<'a>(ctx: &Ctx<'a>, undo: &mut Rollback<'a>) -> Result<Option<CniResult>> {
    let (req, s) = (ctx.req, ctx.s);
    let Some(ipam) = s.ipam.as_deref() else {
        return Ok(None);
    };
    let bridge_exists = ctx
        .host
        .link_by_name(&s.bridge)
        .map_err(internal(format!("failed to lookup {:?}", s.bridge)))?
        .is_some();
    // dhcp needs the container's interface, which does not exist yet: it
    // runs beside the veth's creation (its daemon waits for the interface).
    if bridge_exists || crate::config::ipam_needs_interface(ipam) {
        return Ok(None);
    }
    let result = req.delegate_add(ipam)?;
    release_ipam_on_failure(undo, req, s);
    Ok(Some(result))
}

fn ensure_bridge(ctx: &Ctx<'_>) -> Result<Link> {
    let s = ctx.s;
    let bridge = ctx
        .host
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
    Ok(bridge)
}

/// The veth pair with its host end on the bridge, and the IPAM result —
/// IPAM running on a thread meanwhile unless it ran before the bridge.
/// Both are registered for undo as soon as they exist.
fn veth_and_ipam<'s, 'a>(
    scope: &'s std::thread::Scope<'s, '_>,
    ctx: &'a Ctx<'s>,
    bridge: &Link,
    mut ipam_result: Option<CniResult>,
    undo: &mut Rollback<'a>,
) -> Result<(Link, Option<CniResult>)> {
    let (req, s) = (ctx.req, ctx.s);
    let ipam_job = match (&ipam_result, s.ipam.as_deref()) {
        (None, Some(ipam)) => Some(scope.spawn(move || req.delegate_add(ipam))),
        _ => None,
    };
    let host_veth = create_veth(&ctx.host, &ctx.cont, &ctx.ns, req, s, bridge);
    let ipam_late = ipam_job.map(|job| {
        job.join()
            .unwrap_or_else(|_| Err(Error::internal("the IPAM thread panicked")))
    });
    if let Some(Ok(_)) = &ipam_late {
        release_ipam_on_failure(undo, req, s);
    }
    let host_veth = host_veth?;
    let host_index = host_veth.index;
    let host = &ctx.host;
    undo.push("veth pair", move || {
        host.delete_link(host_index)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    if let Some(late) = ipam_late {
        ipam_result = Some(late?);
    }
    Ok((host_veth, ipam_result))
}

/// The result's interfaces: bridge, host veth, container end (in that order;
/// IPs point at index 2).
fn interfaces_result(req: &Request, bridge: &Link, host_veth: &Link, cont: &Link) -> CniResult {
    CniResult {
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
                mac: cont.mac.map(|m| m.to_string()),
                sandbox: Some(req.netns.clone()),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn spoofcheck_setup<'a>(
    ctx: &Ctx<'a>,
    host_veth: &Link,
    container_link: &Link,
    undo: &mut Rollback<'a>,
) -> Result<()> {
    let req = ctx.req;
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
    undo.push("macspoofchk rules", move || {
        spoofcheck::teardown(&req.container_id, &req.ifname).map_err(|e| e.to_string())
    });
    Ok(())
}

/// Addresses from IPAM: the container interface configured, the bridge (or
/// its VLAN interface) as gateway, forwarding, masquerade.
fn configure_l3<'a>(
    ctx: &'a Ctx<'a>,
    bridge: &Link,
    ipam_result: CniResult,
    result: &mut CniResult,
    undo: &mut Rollback<'a>,
) -> Result<()> {
    let (req, s, host) = (ctx.req, ctx.s, &ctx.host);
    if ipam_result.ips.is_empty() {
        return Err(Error::internal("IPAM plugin returned missing IP config"));
    }
    result.ips = ipam_result.ips;
    result.routes = ipam_result.routes;
    result.dns = ipam_result.dns;
    let gws = gateway::calc(result, s)?;

    attach::set_sysctls(&ctx.cont, &req.ifname, s.enable_dad)?;
    attach::configure(&ctx.cont, &req.ifname, result, s.enable_dad)?;

    if s.is_gateway {
        // With an access VLAN the gateway lives on `<bridge>.<vlan>`.
        let (gw_index, gw_name) = if s.vlan != 0 {
            let gw_link = vlan::ensure_gateway_interface(host, bridge, s)?;
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
            gateway::ensure_addr(host, gw_index, &gw_name, *gw, s.force_address)
                .map_err(|e| e.context("failed to set bridge addr"))?;
        }
        gateway::enable_forwarding(&gws)?;
    }

    if s.ip_masq {
        let addrs: Vec<_> = result.ips.iter().map(|i| i.address).collect();
        // Undone whatever the outcome: a setup that failed half-way may
        // have written one family's rules.
        undo.push("masquerade rules", move || {
            masquerade::teardown(req).map_err(|e| e.msg)
        });
        masquerade::setup(req, s, &addrs)?;
    }
    Ok(())
}

fn wait_port_up(host: &Netlink, host_index: u32) -> Result<()> {
    let state = host
        .wait_oper_up(host_index, PORT_UP_DEADLINE)
        .map_err(internal("failed to check bridge port state"))?;
    if state != link::OperState::Up {
        return Err(Error::internal(format!(
            "bridge port in error state: {state}"
        )));
    }
    Ok(())
}

/// Joining the bridge can change both MACs; report what they are now.
fn refresh_macs(
    host: &Netlink,
    bridge: &Link,
    host_index: u32,
    result: &mut CniResult,
) -> Result<()> {
    let bridge = host
        .require_link(&bridge.name)
        .map_err(internal(format!("failed to lookup {:?}", bridge.name)))?;
    let host_veth = host
        .link_by_index(host_index)
        .map_err(internal("failed to lookup the host veth"))?
        .ok_or_else(|| Error::internal("the host veth vanished during ADD"))?;
    result.interfaces[0].mac = bridge.mac.map(|m| m.to_string());
    result.interfaces[1].mac = host_veth.mac.map(|m| m.to_string());
    Ok(())
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
