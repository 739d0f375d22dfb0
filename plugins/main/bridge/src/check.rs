//! CHECK: the state ADD made is still there — IPAM's view, the bridge, the
//! container interface, its host peer on the bridge, addresses, routes, and
//! (unlike the reference) the masquerade and spoofcheck rules. L2-only
//! configs are checked too (the reference fails them asking IPAM "").

use cni::{Command, Error, Interface, Request, Result};
use link::{Link, Netlink};

use crate::config::Settings;
use crate::masquerade;
use netfilter::bridge_filter as spoofcheck;

pub fn check(req: &Request, s: &Settings) -> Result<()> {
    if let Some(ipam) = &s.ipam {
        req.delegate(ipam, Command::Check)?;
    }
    let prev = req.require_prev_result()?;

    let br_entry = prev.interfaces.iter().find(|i| i.name == s.bridge);
    let host = Netlink::current().map_err(|e| Error::internal(e.to_string()))?;
    let bridge = check_bridge(&host, s, br_entry)?;

    let cont_entry = attach::container_entry(&prev, &req.ifname, &req.netns)?;
    let ns = attach::open_netns(&req.netns)?;
    let cont = Netlink::in_netns(&ns).map_err(|e| Error::internal(e.to_string()))?;
    let cont_link = check_container_interface(&cont, cont_entry)?;
    attach::check_addresses(&cont, &cont_link, &prev)?;
    attach::check_routes(&cont, &cont_link, &prev)?;

    // The host end: a veth named in the result whose peer is the container
    // interface and whose controller is the bridge — looked up by those
    // names (one request each), not by listing every link of the host (a
    // veth per attached container).
    let mut found = false;
    let on_host = |i: &&Interface| i.sandbox.as_deref().unwrap_or_default().is_empty();
    for i in prev.interfaces.iter().filter(on_host) {
        let l = host
            .link_by_name(&i.name)
            .map_err(|e| Error::internal(e.to_string()))?;
        if l.is_some_and(|l| {
            l.is_veth()
                && l.peer_index == Some(cont_link.index)
                && l.controller == Some(bridge.index)
        }) {
            found = true;
            break;
        }
    }
    if !found {
        return Err(Error::internal(format!(
            "CNI veth created for bridge {} was not found",
            s.bridge
        )));
    }

    if s.ip_masq && s.is_l3() {
        let addrs: Vec<_> = prev.ips.iter().map(|i| i.address).collect();
        masquerade::check(req, s, &addrs)?;
    }
    if s.macspoofchk {
        spoofcheck::check(&req.container_id, &req.ifname)
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    Ok(())
}

fn check_bridge(host: &Netlink, s: &Settings, entry: Option<&Interface>) -> Result<Link> {
    let br = host
        .link_by_name(&s.bridge)
        .map_err(|e| Error::internal(e.to_string()))?
        .ok_or_else(|| {
            Error::internal(format!(
                "CNI created bridge {} in host namespace was not found",
                s.bridge
            ))
        })?;
    if !br.is_bridge() {
        return Err(Error::internal(format!("Error: {} not a bridge", s.bridge)));
    }
    if let Some(want) = entry.and_then(|e| e.mac.as_deref()) {
        let have = br.mac.map(|m| m.to_string()).unwrap_or_default();
        if !want.eq_ignore_ascii_case(&have) {
            return Err(Error::internal(format!(
                "Bridge interface {} Mac doesn't match: {want}",
                s.bridge
            )));
        }
    }
    if br.promisc != s.promisc {
        return Err(Error::internal(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
            s.bridge, s.promisc, br.promisc
        )));
    }
    Ok(br)
}

fn check_container_interface(cont: &Netlink, entry: &Interface) -> Result<Link> {
    let l = cont
        .link_by_name(&entry.name)
        .map_err(|e| Error::internal(e.to_string()))?
        .ok_or_else(|| {
            Error::internal(format!(
                "CNI created interface in container {} not found",
                entry.name
            ))
        })?;
    if !l.is_veth() {
        return Err(Error::internal(format!(
            "Error: Container interface {} not of type veth",
            entry.name
        )));
    }
    if let Some(want) = entry.mac.as_deref() {
        let have = l.mac.map(|m| m.to_string()).unwrap_or_default();
        if !want.eq_ignore_ascii_case(&have) {
            return Err(Error::internal(format!(
                "Interface {} Mac doesn't match: {want} not found",
                entry.name
            )));
        }
    }
    Ok(l)
}
