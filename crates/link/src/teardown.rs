//! Deleting a link, returning at the kernel's point of published removal.
//!
//! An RTM_DELLINK request returns only after `netdev_run_todo` has waited
//! for RCU and for the device's last reference — for a veth whose peer is
//! in a container namespace 20–30 ms, of which the kernel needs about 2 ms
//! to unlist both ends, remove the bridge port and multicast RTM_DELLINK.
//! Nothing a runtime can observe changes during the rest of the wait, so
//! the request is made by a detached helper ([`netns::detach`]) while we
//! wait for the notification of the device (for a veth with its peer in
//! our namespace, the peer's: it is the second of the pair to be
//! unregistered, so its bridge port is surely gone), or for the helper's
//! report of a failed request, whichever comes first.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netns::NetNs;

use crate::connection::Netlink;
use crate::error::{Error, Result};

const NETLINK_ROUTE: libc::c_int = 0;
const RTMGRP_LINK: u32 = 1;
const RTM_DELLINK: u16 = 17;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
/// How long to wait for a notification before waiting for the helper.
const NOTIFY_BOUND: Duration = Duration::from_secs(3);
/// Sequence number of the one request the helper sends.
const SEQ: u32 = 1;

/// A raw NETLINK_ROUTE socket made in the calling thread's namespace,
/// subscribed to `groups` (0: none).
fn route_socket(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if groups != 0 {
        // SAFETY: an all-zero sockaddr_nl is valid; pid 0 = kernel assigns.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: bind with a valid address of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// The RTM_DELLINK request for `index`: header + `struct ifinfomsg`.
fn dellink_message(index: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..4].copy_from_slice(&32u32.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&SEQ.to_ne_bytes());
    // ifinfomsg: family, pad, type (u16), index (i32), flags, change.
    m[20..24].copy_from_slice(&(index as i32).to_ne_bytes());
    m
}

/// Whether a datagram of notifications holds the RTM_DELLINK of `index`.
fn has_dellink(mut buf: &[u8], index: u32) -> bool {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return false;
        }
        // Only the device's own notification (family AF_UNSPEC), sent after
        // every NETDEV_UNREGISTER handler ran; a bridge port's AF_BRIDGE
        // RTM_DELLINK comes earlier, from inside the bridge's handler.
        if kind == RTM_DELLINK && len >= NLMSG_HDRLEN + 8 && buf[NLMSG_HDRLEN] == 0 {
            let b = &buf[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8];
            if i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u32 == index {
                return true;
            }
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    false
}

/// What one subscription socket told us.
enum Heard {
    Nothing,
    Deleted,
    /// The socket overflowed: notifications were lost.
    Lost,
}

fn read_notifications(sock: &OwnedFd, index: u32) -> Heard {
    let mut buf = [0u8; 16384];
    let mut heard = Heard::Nothing;
    loop {
        // SAFETY: recv into a local buffer, without blocking.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error().raw_os_error();
            if e == Some(libc::ENOBUFS) {
                heard = Heard::Lost;
                continue;
            }
            return heard;
        }
        if n == 0 {
            return heard;
        }
        if has_dellink(&buf[..n as usize], index) {
            return Heard::Deleted;
        }
    }
}

/// The helper's report: `Some(errno)`, or `None` at end of file.
fn read_report(pipe: &OwnedFd) -> Option<i32> {
    let mut b = [0u8; 4];
    loop {
        // SAFETY: read into a local buffer.
        let n = unsafe { libc::read(pipe.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
        if n == 4 {
            return Some(i32::from_ne_bytes(b));
        }
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn delete_error(index: u32, source: io::Error) -> Error {
    Error::Netlink {
        op: "delete link",
        object: format!("index {index}"),
        source,
    }
}

impl Netlink {
    /// Delete the link. Returns `false` if it was already gone.
    ///
    /// Returns once the kernel has published the removal (the link and,
    /// for a veth, its peer are unlisted and no longer bridge ports), and
    /// leaves the rest of the kernel's wait to a detached helper — unless
    /// the environment asks for synchronous teardown
    /// ([`netns::detach::SYNC_TEARDOWN_ENV`]).
    pub fn delete_link(&self, index: u32) -> Result<bool> {
        if !netns::detach::enabled() {
            return self.delete_link_sync(index);
        }
        let Some(link) = self.link_by_index(index)? else {
            return Ok(false);
        };
        match self.delete_link_detached(&link) {
            Ok(Some(deleted)) => Ok(deleted),
            Ok(None) => self.delete_link_sync(index),
            Err(e) => Err(e),
        }
    }

    /// `Ok(None)`: the helper could not be set up; nothing was asked of
    /// the kernel yet.
    fn delete_link_detached(&self, link: &crate::Link) -> Result<Option<bool>> {
        let index = link.index;
        // Whatever fails before the request is made falls back to the
        // synchronous delete.
        let Ok(here) = NetNs::current() else {
            return Ok(None);
        };
        let own_ns = here.same_as(self.netns());
        // A veth whose peer lives in our namespace: wait for the peer's
        // notification there (the bridge side).
        let peer = match (link.is_veth(), link.peer_index, own_ns) {
            (true, Some(p), false) => {
                let Ok(sub) = route_socket(RTMGRP_LINK) else {
                    return Ok(None);
                };
                match Netlink::current().and_then(|host| host.link_by_index(p)) {
                    Ok(Some(l)) if l.is_veth() && l.peer_index == Some(index) => Some((sub, p)),
                    _ => None,
                }
            }
            _ => None,
        };
        let make = || -> io::Result<(OwnedFd, OwnedFd)> {
            Ok((route_socket(RTMGRP_LINK)?, route_socket(0)?))
        };
        let made = if own_ns {
            make()
        } else {
            match self.netns().run(make) {
                Ok(made) => made,
                Err(_) => return Ok(None),
            }
        };
        let Ok((sub, request)) = made else {
            return Ok(None);
        };
        let Ok((report_r, report_w)) = pipe() else {
            return Ok(None);
        };
        let message = dellink_message(index);
        if netns::detach::request(request.as_fd(), &message, SEQ, report_w.as_fd()).is_err() {
            return Ok(None);
        }
        drop(request);
        drop(report_w);

        // Poll: [device's own namespace, report pipe, (peer's namespace)].
        let mut own_heard = false;
        let mut peer_heard = false;
        let deadline = Instant::now() + NOTIFY_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds = vec![
                libc::pollfd {
                    fd: sub.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: report_r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let Some((p, _)) = &peer {
                fds.push(libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: poll on a local array of valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                // The request returned (or the helper died): its word is final.
                return self.settle(index, read_report(&report_r)).map(Some);
            }
            if fds[0].revents != 0 {
                match read_notifications(&sub, index) {
                    Heard::Deleted => own_heard = true,
                    Heard::Lost => break,
                    Heard::Nothing => {}
                }
            }
            if let Some((p, peer_index)) = &peer
                && fds[2].revents != 0
            {
                match read_notifications(p, *peer_index) {
                    Heard::Deleted => peer_heard = true,
                    Heard::Lost => break,
                    Heard::Nothing => {}
                }
            }
            if if peer.is_some() {
                peer_heard
            } else {
                own_heard
            } {
                return Ok(Some(true));
            }
        }
        // No notification in time (or some were lost): the helper's report.
        self.settle(index, read_report(&report_r)).map(Some)
    }

    /// The outcome from the helper's report.
    fn settle(&self, index: u32, report: Option<i32>) -> Result<bool> {
        match report {
            Some(0) => Ok(true),
            Some(libc::ENODEV) => Ok(false),
            Some(code) => Err(delete_error(index, io::Error::from_raw_os_error(code))),
            None => match self.link_by_index(index)? {
                None => Ok(true),
                Some(_) => Err(delete_error(
                    index,
                    io::Error::other("the delete request ended without a reply"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dellink_message_names_the_index() {
        let m = dellink_message(42);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_DELLINK);
        assert_eq!(i32::from_ne_bytes([m[20], m[21], m[22], m[23]]), 42);
    }

    #[test]
    fn only_the_dellink_of_the_index_counts() {
        let mut d = dellink_message(7).to_vec();
        assert!(has_dellink(&d, 7));
        assert!(!has_dellink(&d, 8));
        d[4..6].copy_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        assert!(!has_dellink(&d, 7));
        assert!(!has_dellink(&d[..12], 7));
        // A bridge port's notification (AF_BRIDGE) is not the device's.
        let mut port = dellink_message(7);
        port[16] = libc::AF_BRIDGE as u8;
        assert!(!has_dellink(&port, 7));
    }
}
