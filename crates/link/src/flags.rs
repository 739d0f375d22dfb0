//! Interface flags and addresses without netlink: the `SIOC[GS]IFFLAGS`
//! ioctls and `getifaddrs(3)`.
//!
//! For a plugin that only needs "bring `lo` up and list its addresses"
//! (loopback), this keeps the rtnetlink stack and an async runtime out of
//! the binary entirely. Like every socket, the ones used here belong to the
//! network namespace of the calling *thread*: call these from inside
//! [`netns::NetNs::run`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use ipnetwork::IpNetwork;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use crate::error::{Error, Result};

fn control_socket(name: &str) -> Result<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| flag_error("open control socket for", name, e.into()))
}

fn flag_error(op: &'static str, name: &str, source: io::Error) -> Error {
    Error::Ioctl {
        op,
        object: name.to_string(),
        source,
    }
}

fn ifreq_for(name: &str) -> Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(flag_error(
            "look up",
            name,
            io::Error::new(io::ErrorKind::InvalidInput, "invalid interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn get_flags(fd: &OwnedFd, name: &str) -> Result<(libc::ifreq, libc::c_short)> {
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of `req`,
    // which lives for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) };
    if rc < 0 {
        return Err(flag_error(
            "read flags of",
            name,
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok((req, flags))
}

/// Whether interface `name` is administratively up (`IFF_UP`).
/// `Ok(None)` when there is no such interface.
pub fn is_up(name: &str) -> Result<Option<bool>> {
    let fd = control_socket(name)?;
    match get_flags(&fd, name) {
        Ok((_, flags)) => Ok(Some(flags & libc::IFF_UP as libc::c_short != 0)),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Set interface `name` up or down (a no-op when it already is).
pub fn set_up(name: &str, up: bool) -> Result<()> {
    let fd = control_socket(name)?;
    let (mut req, flags) = get_flags(&fd, name)?;
    let want = if up {
        flags | libc::IFF_UP as libc::c_short
    } else {
        flags & !(libc::IFF_UP as libc::c_short)
    };
    if want == flags {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = want;
    // SAFETY: SIOCSIFFLAGS reads `req`, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &req) };
    if rc < 0 {
        let op = if up { "set up" } else { "set down" };
        return Err(flag_error(op, name, io::Error::last_os_error()));
    }
    Ok(())
}

/// The IPv4 and IPv6 addresses (with prefix length) of interface `name`.
pub fn addresses_of(name: &str) -> Result<Vec<IpNetwork>> {
    let all =
        nix::ifaddrs::getifaddrs().map_err(|e| flag_error("list addresses of", name, e.into()))?;
    let mut out = Vec::new();
    for ifa in all.filter(|i| i.interface_name == name) {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            IpNetwork::with_netmask(a.ip().into(), m.ip().into())
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            IpNetwork::with_netmask(a.ip().into(), m.ip().into())
        } else {
            continue;
        };
        if let Ok(net) = net {
            out.push(net);
        }
    }
    Ok(out)
}
