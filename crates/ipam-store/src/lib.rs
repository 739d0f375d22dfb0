//! host-local's on-disk reservation store and address allocator,
//! byte-compatible with the Go reference so both can share a node.
//!
//! - [`Range`] / [`RangeSet`]: validated ranges with the reference's
//!   defaults and messages.
//! - [`Store`] / [`LockedStore`]: `<dataDir>/<network>/` with its flock,
//!   one file per reserved address, `last_reserved_ip.<i>`; reserve,
//!   release, lookup, GC.
//! - [`allocate`]: one address from a range set, requested or round-robin.
//!
//! The crate takes plain Rust values (`std::net`, `ipnetwork`) and knows
//! nothing of the CNI protocol.

mod allocator;
mod error;
mod ip_math;
mod network_name;
mod owner_index;
mod range;
mod range_set;
mod reservation;
mod store;

pub use allocator::{Allocation, RoundRobin, allocate};
pub use error::{Error, Result};
pub use range::Range;
pub use range_set::RangeSet;
pub use reservation::{FileOwner, Owner, Reservation};
pub use store::{DEFAULT_DATA_DIR, GcReport, LockedStore, Store};

/// Whether `name` may name a network (and so a directory under dataDir).
pub fn is_valid_network_name(name: &str) -> bool {
    network_name::is_cni_identifier(name)
}
