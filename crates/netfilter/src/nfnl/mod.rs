//! A NETLINK_NETFILTER client that knows nothing of CNI: the socket and its
//! message framing, the nf_tables transaction writer, the rule reader, the
//! table/chain inventory and ctnetlink's conntrack deletion. The policies
//! (masquerade, host ports) and the two layouts (iptables-nft, nftables)
//! above it decide *what* to write; this module only knows *how*.

pub(crate) mod abi;
pub mod conntrack;
pub(crate) mod inventory;
pub(crate) mod reader;
pub(crate) mod socket;
pub(crate) mod writer;
pub use socket::release_sockets;
