//! DEL: remove the container interface, release the addresses, remove the
//! netfilter rules. Best effort: every step runs even if an earlier one
//! failed, and the first error is reported. With an empty or vanished
//! `CNI_NETNS` the host end of the veth is removed instead, when
//! `prevResult` names it (the kernel would remove it too, but only once it
//! has finished destroying the namespace, some time after DEL returned);
//! rules are found by network + container id.

use cni::{Command, Error, Request, Result};
use link::Netlink;

use crate::config::Settings;
use crate::masquerade;
use netfilter::bridge_filter as spoofcheck;

pub fn del(req: &Request, s: &Settings) -> Result<()> {
    // The steps are independent, and each waits on something else (the
    // kernel tearing down a veth, the IPAM process, iptables/nft): run them
    // side by side.
    // dhcp releases its lease from the container's interface, so it must
    // run before the interface goes (the reference's order for every IPAM).
    let mut early = Vec::new();
    if let Some(ipam) = s
        .ipam
        .as_deref()
        .filter(|i| crate::config::ipam_needs_interface(i))
    {
        early.push(req.delegate(ipam, Command::Del));
    }
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let ipam = s
            .ipam
            .as_ref()
            .filter(|i| !crate::config::ipam_needs_interface(i))
            .map(|ipam| scope.spawn(move || req.delegate(ipam, Command::Del)));
        let rules = scope.spawn(move || teardown_rules(req, s));
        let mut out = vec![delete_container_interface(req, s)];
        for handle in ipam.into_iter().chain([rules]) {
            out.push(
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::internal("a DEL step panicked"))),
            );
        }
        out
    });
    let mut first_error = None;
    for e in early.into_iter().chain(results).filter_map(|r| r.err()) {
        eprintln!("bridge DEL: {e}");
        first_error.get_or_insert(e);
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn teardown_rules(req: &Request, s: &Settings) -> Result<()> {
    let mut result = Ok(());
    if s.macspoofchk {
        result = spoofcheck::teardown(&req.container_id, &req.ifname)
            .map_err(|e| Error::internal(format!("failed to teardown macspoofchk: {e}")));
    }
    // Rules may exist even if this config no longer masquerades (it was
    // edited) — but looking costs processes, so only when configured.
    if s.ip_masq {
        let masq = masquerade::teardown(req);
        if result.is_ok() {
            result = masq;
        }
    }
    result
}

fn delete_container_interface(req: &Request, s: &Settings) -> Result<()> {
    if req.netns.is_empty() {
        return delete_host_port(req, s);
    }
    let Some(ns) = attach::open_netns_if_exists(&req.netns)? else {
        return delete_host_port(req, s);
    };
    let cont = Netlink::in_netns(&ns).map_err(|e| Error::internal(e.to_string()))?;
    // Deleting one end of a veth pair deletes the other: the host port goes too.
    if let Some(l) = cont
        .link_by_name(&req.ifname)
        .map_err(|e| Error::internal(format!("failed to lookup {:?}: {e}", req.ifname)))?
    {
        cont.delete_link(l.index)
            .map_err(|e| Error::internal(format!("failed to delete {:?}: {e}", req.ifname)))?;
    }
    Ok(())
}

/// The container's namespace is gone (or unnamed): delete the host end of
/// its veth as `prevResult` recorded it — only a veth that is still a port
/// of our bridge and still has the recorded MAC, so a reused name can never
/// take another container's port.
fn delete_host_port(req: &Request, s: &Settings) -> Result<()> {
    let Ok(Some(prev)) = req.prev_result() else {
        return Ok(());
    };
    let recorded: Vec<_> = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.as_deref().is_none_or(str::is_empty) && i.name != s.bridge)
        .filter_map(|i| Some((i.name.as_str(), i.mac.as_deref()?)))
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let host = Netlink::current().map_err(|e| Error::internal(e.to_string()))?;
    let Some(bridge) = host
        .link_by_name(&s.bridge)
        .map_err(|e| Error::internal(format!("failed to lookup {:?}: {e}", s.bridge)))?
    else {
        return Ok(());
    };
    for (name, mac) in recorded {
        let Some(port) = host
            .link_by_name(name)
            .map_err(|e| Error::internal(format!("failed to lookup {name:?}: {e}")))?
        else {
            continue;
        };
        let same_mac = port
            .mac
            .is_some_and(|m| m.to_string().eq_ignore_ascii_case(mac));
        if port.is_veth() && port.controller == Some(bridge.index) && same_mac {
            host.delete_link(port.index)
                .map_err(|e| Error::internal(format!("failed to delete {name:?}: {e}")))?;
        }
    }
    Ok(())
}
