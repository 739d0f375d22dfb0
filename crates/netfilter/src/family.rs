//! IPv4 or IPv6, for both backends: iptables (`iptables-*` or
//! `ip6tables-*`) and nftables (`ip` or `ip6` tables). Each backend adds
//! what the family means to it in its own `impl Family`.

use crate::nfnl::abi::{NFPROTO_IPV4, NFPROTO_IPV6};
use ipnetwork::IpNetwork;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(net: &IpNetwork) -> Family {
        if net.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The nf_tables family of this family's tables (nftables' `ip`/`ip6`,
    /// and the tables iptables-nft keeps).
    pub fn nfproto(self) -> u8 {
        match self {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        }
    }
}
