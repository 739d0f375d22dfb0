//! Address arithmetic shared by ranges and the allocator.
//!
//! Both families are handled as `u128` plus a family flag, so "next address"
//! and "compare" are one code path instead of two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ip` as an integer (IPv4 occupies the low 32 bits).
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of the same family as `like` with integer value `n`
/// (`n` must fit the family).
pub(crate) fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        // Truncation cannot happen for values produced from IPv4 inputs.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The next address of the same family, or `None` past the last one.
pub(crate) fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(v6).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Go's `net.IP.To4()` turns `::ffff:a.b.c.d` into an IPv4 address; do the
/// same so such input lands in IPv4 ranges like it does in the reference.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

pub(crate) fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}
