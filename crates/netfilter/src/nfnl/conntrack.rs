//! Removing stale UDP conntrack entries for mapped host ports, over
//! ctnetlink (no `conntrack` process).
//!
//! Why: a UDP "connection" to hostPort that existed before the mapping (or
//! before the container was restarted with a new address) stays in
//! conntrack with its old, un-DNATed or wrongly-DNATed tuple, and every new
//! datagram follows it — the new container never sees the traffic. The
//! reference deletes entries whose original destination port is the host
//! port (plugins PR #553); so do we: dump the family's entries, delete the
//! UDP ones with a matching original destination port by their tuple.

use std::io;

use crate::error::{Error, Result};
use crate::nfnl::abi::{
    CTA_PROTO_DST_PORT, CTA_PROTO_NUM, CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_ZONE,
    IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPPROTO_UDP, NFNL_SUBSYS_CTNETLINK,
};
use crate::nfnl::socket::{
    NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR, align, attributes, error_code,
    message, messages, with_socket,
};

fn err(what: &'static str, source: io::Error) -> Error {
    Error::Conntrack { what, source }
}

/// An entry to delete: its original tuple attribute and zone attribute.
struct Entry {
    attrs: Vec<u8>,
}

fn matching_entry(payload: &[u8], ports: &[u16]) -> Option<Entry> {
    let attrs = payload.get(NFGENMSG_LEN..)?;
    let mut tuple = None;
    let mut zone = None;
    for (kind, whole, inner) in attributes(attrs) {
        match kind {
            CTA_TUPLE_ORIG => tuple = Some((whole, inner)),
            CTA_ZONE => zone = Some(whole),
            _ => {}
        }
    }
    let (whole, inner) = tuple?;
    let (_, _, proto) = attributes(inner).find(|(k, _, _)| *k == CTA_TUPLE_PROTO)?;
    let mut num = None;
    let mut dport = None;
    for (k, _, v) in attributes(proto) {
        match k {
            CTA_PROTO_NUM => num = v.first().copied(),
            CTA_PROTO_DST_PORT if v.len() >= 2 => dport = Some(u16::from_be_bytes([v[0], v[1]])),
            _ => {}
        }
    }
    if num != Some(IPPROTO_UDP) || !ports.contains(&dport?) {
        return None;
    }
    let mut attrs = whole.to_vec();
    attrs.resize(align(attrs.len()), 0);
    if let Some(z) = zone {
        attrs.extend_from_slice(z);
        attrs.resize(align(attrs.len()), 0);
    }
    Some(Entry { attrs })
}

/// Delete UDP conntrack entries of the family whose original destination
/// port is one of `ports`. Returns how many were deleted; entries that
/// vanish meanwhile are not an error.
pub fn delete_udp_entries_for_ports(ipv6: bool, ports: &[u16]) -> Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    with_socket(|sock| {
        let mut stale = vec![];
        let dump = message(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            family,
            &[],
        );
        sock.dump(&dump, |_, payload| {
            stale.extend(matching_entry(payload, ports))
        })?;
        let mut buf = Vec::with_capacity(crate::nfnl::socket::RECV_BUFFER);
        let mut deleted = 0;
        for (i, entry) in stale.iter().enumerate() {
            let seq = 2 + i as u32;
            sock.send(&message(
                NFNL_SUBSYS_CTNETLINK,
                IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                family,
                &entry.attrs,
            ))?;
            let n = sock.recv_into(&mut buf)?;
            for (kind, payload) in messages(&buf[..n]) {
                if kind == NLMSG_ERROR {
                    match error_code(payload) {
                        0 => deleted += 1,
                        // Expired or deleted by someone else meanwhile.
                        libc::ENOENT => {}
                        code => return Err(io::Error::from_raw_os_error(code)),
                    }
                }
            }
        }
        Ok(deleted)
    })
    .map_err(|e| err("delete stale UDP entries", e))
}
