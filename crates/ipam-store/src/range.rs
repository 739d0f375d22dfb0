//! One allocation range: a subnet, the inclusive window `[start, end]` inside
//! it that may be handed out, and the gateway that never is.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::ip_math::{canonical, from_u128, next_ip, same_family, to_u128};

/// A validated range with the reference's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    subnet: IpNetwork,
    start: IpAddr,
    end: IpAddr,
    gateway: IpAddr,
}

impl Range {
    /// Validates a range the way the reference's `Range.Canonicalize` does
    /// and fills the defaults: start = network+1, end = broadcast−1 (IPv4) or
    /// the last address (IPv6), gateway = network+1.
    pub fn new(
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range> {
        let max_prefix = if subnet.is_ipv4() { 32 } else { 128 };
        // Fewer than two host bits leaves nothing between network and broadcast.
        if subnet.prefix() > max_prefix - 2 {
            return Err(Error::NetworkTooSmall(subnet));
        }
        if subnet.ip() != subnet.network() {
            return Err(Error::HostBitsSet {
                prefix: subnet.prefix(),
                network: subnet.network(),
            });
        }
        let first = first_host(subnet);
        let gateway = match gateway.map(canonical) {
            None => first,
            Some(gw) if !same_family(gw, subnet.ip()) => {
                return Err(Error::GatewayFamily {
                    gateway: gw,
                    subnet,
                });
            }
            Some(gw) => gw,
        };
        let start = match start.map(canonical) {
            None => first,
            Some(ip) if in_subnet(subnet, ip) => ip,
            Some(ip) => return Err(Error::RangeStartOutside { ip, subnet }),
        };
        let end = match end.map(canonical) {
            None => last_host(subnet),
            Some(ip) if in_subnet(subnet, ip) => ip,
            Some(ip) => return Err(Error::RangeEndOutside { ip, subnet }),
        };
        if to_u128(start) > to_u128(end) {
            return Err(Error::RangeStartAfterEnd { start, end });
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn subnet(&self) -> IpNetwork {
        self.subnet
    }
    pub fn start(&self) -> IpAddr {
        self.start
    }
    pub fn end(&self) -> IpAddr {
        self.end
    }
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }
    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// `ip` lies in the subnet and inside `[start, end]` (the reference's
    /// `Range.Contains`, used to map addresses to ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        in_subnet(self.subnet, ip)
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// `ip` may be handed out: inside the window, not the gateway, and never
    /// the network or (IPv4) broadcast address even if the configured window
    /// includes them — the reference would allocate those, we do not.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.contains(ip)
            && ip != self.gateway
            && ip != self.subnet.network()
            && !(self.subnet.is_ipv4() && ip == self.subnet.broadcast())
    }

    /// How many addresses [`Range::is_allocatable`] accepts.
    pub fn capacity(&self) -> u128 {
        // An IPv6 /0 range holds 2^128 addresses, one more than u128 can
        // count: saturate (an off-by-one at that size is immaterial).
        let window = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        let mut excluded = 0;
        let mut exclude = |ip: IpAddr| {
            if self.contains(ip) {
                excluded += 1;
            }
        };
        exclude(self.subnet.network());
        if self.subnet.is_ipv4() {
            exclude(self.subnet.broadcast());
        }
        if self.gateway != self.subnet.network()
            && !(self.subnet.is_ipv4() && self.gateway == self.subnet.broadcast())
        {
            exclude(self.gateway);
        }
        window.saturating_sub(excluded)
    }

    /// Any address of one range lies in the other (the reference's
    /// `Range.Overlaps`, which compares window ends).
    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }
}

/// `start-end`, the reference's `Range.String`, used inside error messages.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

fn in_subnet(subnet: IpNetwork, ip: IpAddr) -> bool {
    same_family(subnet.ip(), ip) && subnet.contains(ip)
}

fn first_host(subnet: IpNetwork) -> IpAddr {
    // The prefix check guarantees at least four addresses, so +1 stays inside.
    next_ip(subnet.network()).unwrap_or(subnet.network())
}

fn last_host(subnet: IpNetwork) -> IpAddr {
    let broadcast = subnet.broadcast();
    if subnet.is_ipv4() {
        from_u128(broadcast, to_u128(broadcast) - 1)
    } else {
        broadcast
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_for_a_slash_29() {
        let r = Range::new(net("192.0.2.0/29"), None, None, None).unwrap();
        assert_eq!(r.start(), ip("192.0.2.1"));
        assert_eq!(r.end(), ip("192.0.2.6"));
        assert_eq!(r.gateway(), ip("192.0.2.1"));
        assert_eq!(r.to_string(), "192.0.2.1-192.0.2.6");
        assert_eq!(r.capacity(), 5);
    }

    #[test]
    fn ipv6_default_end_is_the_last_address() {
        let r = Range::new(net("2001:db8:1::/64"), None, None, None).unwrap();
        assert_eq!(r.start(), ip("2001:db8:1::1"));
        assert_eq!(r.end(), ip("2001:db8:1::ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn reference_messages() {
        let msg = |r: Result<Range>| r.unwrap_err().to_string();
        assert_eq!(
            msg(Range::new(net("10.0.0.0/31"), None, None, None)),
            "Network 10.0.0.0/31 too small to allocate from"
        );
        assert_eq!(
            msg(Range::new(net("2001:db8::/127"), None, None, None)),
            "Network 2001:db8::/127 too small to allocate from"
        );
        assert_eq!(
            msg(Range::new(net("10.0.0.5/24"), None, None, None)),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0"
        );
        assert_eq!(
            msg(Range::new(
                net("10.0.0.0/24"),
                Some(ip("10.0.1.5")),
                None,
                None
            )),
            "RangeStart 10.0.1.5 not in network 10.0.0.0/24"
        );
        assert_eq!(
            msg(Range::new(
                net("10.0.0.0/24"),
                None,
                Some(ip("10.0.1.5")),
                None
            )),
            "RangeEnd 10.0.1.5 not in network 10.0.0.0/24"
        );
    }

    #[test]
    fn network_broadcast_and_gateway_are_never_allocatable() {
        let r = Range::new(
            net("10.0.0.0/30"),
            Some(ip("10.0.0.0")),
            Some(ip("10.0.0.3")),
            Some(ip("10.0.0.2")),
        )
        .unwrap();
        let allocatable: Vec<_> = ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .filter(|s| r.is_allocatable(ip(s)))
            .collect();
        assert_eq!(allocatable, vec![&"10.0.0.1"]);
        assert_eq!(r.capacity(), 1);
    }

    #[test]
    fn capacity_of_the_whole_ipv6_space_does_not_overflow() {
        let r = Range::new(
            "::/0".parse().unwrap(),
            Some("::".parse().unwrap()),
            None,
            None,
        )
        .unwrap();
        assert!(r.capacity() > u128::MAX - 4);
    }

    #[test]
    fn overlap_by_window_not_by_subnet() {
        let a = Range::new(net("10.0.0.0/24"), None, Some(ip("10.0.0.100")), None).unwrap();
        let b = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.101")), None, None).unwrap();
        assert!(!a.overlaps(&b));
        let c = Range::new(net("10.0.0.0/16"), None, None, None).unwrap();
        assert!(a.overlaps(&c));
    }
}
