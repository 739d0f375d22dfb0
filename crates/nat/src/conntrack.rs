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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn err(what: &'static str, source: io::Error) -> Error {
    Error::Conntrack { what, source }
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(err("open netlink socket", io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        // SAFETY: msg is a valid buffer of msg.len() bytes; the kernel
        // address (pid 0) is the default destination of an unbound socket.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(err("send", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(err("receive", io::Error::last_os_error()));
        }
        Ok(n as usize)
    }
}

fn message(msg_type: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// Netlink attributes in `buf`: (type without flags, whole attribute bytes
/// padded, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let whole = &buf[..len];
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, whole, payload))
    })
}

/// Netlink messages in one datagram: (type, flags-less payload).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

/// The errno of an NLMSG_ERROR payload (0 = ack).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
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
    let sock = Socket::open()?;
    sock.send(&message(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        &[],
    ))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut stale = vec![];
    'dump: loop {
        let n = sock.recv(&mut buf)?;
        if n == 0 {
            break;
        }
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(err("dump", io::Error::from_raw_os_error(code)));
                    }
                }
                _ => stale.extend(matching_entry(payload, ports)),
            }
        }
    }
    let mut deleted = 0;
    for (i, entry) in stale.iter().enumerate() {
        let seq = 2 + i as u32;
        sock.send(&message(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            &entry.attrs,
        ))?;
        let n = sock.recv(&mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                match error_code(payload) {
                    0 => deleted += 1,
                    libc::ENOENT => {}
                    code => return Err(err("delete", io::Error::from_raw_os_error(code))),
                }
            }
        }
    }
    Ok(deleted)
}
