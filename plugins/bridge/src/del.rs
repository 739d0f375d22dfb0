//! DEL: remove the container interface, release the addresses, remove the
//! netfilter rules. Best effort: every step runs even if an earlier one
//! failed, and the first error is reported. An empty or vanished
//! `CNI_NETNS` skips only the interface step (the kernel removed the veth
//! with the namespace); rules are found by network + container id.

use cni::{Command, Error, Request, Result};
use link::Netlink;
use netns::NetNs;

use crate::config::Settings;
use crate::{masquerade, spoofcheck};

pub fn del(req: &Request, s: &Settings) -> Result<()> {
    // The steps are independent, and each waits on something else (the
    // kernel tearing down a veth, the IPAM process, iptables/nft): run them
    // side by side.
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let ipam = s
            .ipam
            .as_ref()
            .map(|ipam| scope.spawn(move || req.delegate(ipam, Command::Del)));
        let rules = scope.spawn(move || teardown_rules(req, s));
        let mut out = vec![delete_container_interface(req)];
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
    for e in results.into_iter().filter_map(|r| r.err()) {
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

fn delete_container_interface(req: &Request) -> Result<()> {
    if req.netns.is_empty() {
        return Ok(());
    }
    let ns = match NetNs::open(&req.netns) {
        Ok(ns) => ns,
        Err(netns::Error::NotFound(_)) => return Ok(()),
        Err(e) => {
            return Err(Error::new(
                cni::code::INVALID_NETNS,
                format!("failed to open netns {:?}: {e}", req.netns),
            ));
        }
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
