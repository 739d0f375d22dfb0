//! DHCP over a packet socket bound to one interface of one namespace.
//!
//! Before the interface has an address a UDP socket cannot receive the
//! server's reply (it is addressed to the offered address, or broadcast
//! with a source the routing table does not know), so the client talks
//! through an `AF_PACKET`/`SOCK_DGRAM` socket for `ETH_P_IP`: it writes the
//! IPv4 and UDP headers itself and reads every IPv4 packet that reaches the
//! interface, keeping UDP to port 68. The socket is created inside the
//! namespace and keeps working from any thread afterwards.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
const ETH_P_IP: u16 = 0x0800;

/// A packet socket on one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

/// A UDP datagram to port 68, with the IPv4 source it came from.
pub struct Received {
    pub source: Ipv4Addr,
    pub payload: Vec<u8>,
}

impl PacketSocket {
    /// Open and bind to `ifindex`. Must run in the interface's namespace.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sll = sockaddr(ifindex, [0; 6], 0);
        // SAFETY: `sll` is a valid sockaddr_ll for the call's duration.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Send a BOOTP payload from `src`:68 to `dst`:67 in an Ethernet
    /// broadcast frame (the server's MAC is never needed).
    pub fn send(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let packet = ip_udp(src, dst, payload);
        let sll = sockaddr(self.ifindex, [0xff; 6], 6);
        // SAFETY: buffer and address are valid for the call's duration.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next UDP datagram to port 68 before `deadline`, or `None`.
    pub fn recv_until(&self, deadline: Instant) -> io::Result<Option<Received>> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            if let Some(r) = parse_udp_to_client(&buf[..n as usize]) {
                return Ok(Some(r));
            }
        }
    }
}

fn sockaddr(ifindex: i32, addr: [u8; 6], halen: u8) -> libc::sockaddr_ll {
    let mut a = [0u8; 8];
    a[..6].copy_from_slice(&addr);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: halen,
        sll_addr: a,
    }
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks(2);
        for pair in &mut it {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum = sum.wrapping_add(u32::from(word));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (TTL 64, no options) and a UDP header around `payload`.
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = libc::IPPROTO_UDP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = libc::IPPROTO_UDP as u8;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut c = checksum(&[&pseudo, &udp, payload]);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    out
}

/// The UDP payload of an IPv4 packet to port 68 (checksums are not
/// verified: veth delivers packets whose checksum the sender offloaded).
pub fn parse_udp_to_client(pkt: &[u8]) -> Option<Received> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != libc::IPPROTO_UDP as u8 {
        return None;
    }
    // Fragments are not reassembled; DHCP replies fit one packet.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
    if ihl < 20 || total < ihl + 8 {
        return None;
    }
    let udp = &pkt[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]])).min(udp.len());
    if ulen < 8 {
        return None;
    }
    Some(Received {
        source: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        payload: udp[8..ulen].to_vec(),
    })
}

/// Exponential resend delays as the reference: four fast resends about 2 s
/// apart, then 4 s doubling up to `max`.
pub fn resend_delays(max: Duration) -> impl Iterator<Item = Duration> {
    let fast = std::iter::repeat_n(Duration::from_secs(2), 4);
    let slow = std::iter::successors(Some(Duration::from_secs(4)), move |d| {
        Some((*d * 2).min(max.max(Duration::from_secs(1))))
    });
    fast.chain(slow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_parse_back_with_valid_checksums() {
        let p = ip_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"hello");
        assert_eq!(checksum(&[&p[..20]]), 0);
        // Turn it into a server→client packet and read it back.
        let mut q = p.clone();
        q[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
        q[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        let r = parse_udp_to_client(&q).unwrap();
        assert_eq!(r.payload, b"hello");
        assert!(parse_udp_to_client(&p).is_none(), "port 67 is not for us");
        assert!(parse_udp_to_client(&q[..10]).is_none());
    }

    #[test]
    fn resends_back_off_to_the_maximum() {
        let d: Vec<u64> = resend_delays(Duration::from_secs(16))
            .take(8)
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(d, vec![2, 2, 2, 2, 4, 8, 16, 16]);
    }
}
