//! Typed rtnetlink operations for the CNI plugins — the only crate in the
//! workspace that speaks rtnetlink, so the library's frequent API changes
//! touch one place.
//!
//! The API is synchronous: a plugin run is one short process, so each
//! [`Netlink`] owns a tokio *current-thread* runtime and blocks on it. A
//! netlink socket belongs to the network namespace it was created in, so
//! [`Netlink::in_netns`] creates its socket on a short-lived thread inside
//! the target namespace and then uses it from the calling thread; no thread
//! of ours ever stays in a foreign namespace.
//!
//! Sysctls are not netlink: see [`sysctl`]. They apply to the namespace of
//! the *calling thread*, so container sysctls must be written from inside
//! [`netns::NetNs::run`].

mod address;
mod bridge;
mod connection;
pub mod container;
mod device;
mod error;
pub mod flags;
mod links;
mod mac;
mod route;
mod rule;
mod sublink;
pub mod sysctl;
mod table;
pub mod tc;
mod teardown;
mod veth;
mod watch;

pub use address::Address;
pub use bridge::{BridgeOptions, PortOptions, VlanEntry};
pub use connection::Netlink;
pub use error::{Error, Result};
pub use links::{Link, OperState};
pub use mac::MacAddr;
pub use route::{Route, scope};
pub use rule::Rule;
pub use sublink::{
    IpvlanMode, MacvlanMode, SubLinkInfo, SubLinkKind, SubLinkOptions, sublink_message_bytes,
};
pub use table::KernelRoute;
pub use veth::{VethOptions, VethPair, random_veth_name};
