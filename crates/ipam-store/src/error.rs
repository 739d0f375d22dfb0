//! The crate's single error type.
//!
//! Messages that a user can see through the plugin repeat the Go reference's
//! wording exactly (reference §6), because runtimes and humans grep for them.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the store, the range checks or the allocator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem call failed; `what` says which step, `path` which file.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// The network name would not be a single, safe path component.
    #[error("invalid network name {0:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")]
    InvalidNetworkName(String),

    /// `<dataDir>/<network>` exists but is a symlink or not a directory:
    /// following it could make us write outside dataDir.
    #[error("{0}: not a directory (symlinks are refused so nothing escapes dataDir)")]
    NotADirectory(PathBuf),

    // --- range validation (wording of the reference's Range.Canonicalize) ---
    #[error("Network {0} too small to allocate from")]
    NetworkTooSmall(ipnetwork::IpNetwork),

    #[error(
        "Network has host bits set. For a subnet mask of length {prefix} the network address is {network}"
    )]
    HostBitsSet { prefix: u8, network: IpAddr },

    #[error("RangeStart {ip} not in network {subnet}")]
    RangeStartOutside {
        ip: IpAddr,
        subnet: ipnetwork::IpNetwork,
    },

    #[error("RangeEnd {ip} not in network {subnet}")]
    RangeEndOutside {
        ip: IpAddr,
        subnet: ipnetwork::IpNetwork,
    },

    /// Not checked by the reference (which then loops over the whole address
    /// space); we refuse it up front.
    #[error("RangeStart {start} is after RangeEnd {end}")]
    RangeStartAfterEnd { start: IpAddr, end: IpAddr },

    #[error("gateway {gateway} is not the same address family as network {subnet}")]
    GatewayFamily {
        gateway: IpAddr,
        subnet: ipnetwork::IpNetwork,
    },

    #[error("empty range set")]
    EmptyRangeSet,

    #[error("mixed address families")]
    MixedFamilies,

    #[error("subnets {0} and {1} overlap")]
    RangesOverlap(String, String),

    // --- allocation (wording of the reference's IPAllocator.Get) ---
    #[error("requested ip {0} is subnet's gateway")]
    RequestedGateway(IpAddr),

    #[error("requested IP address {ip} is not available in range set {set}")]
    RequestedUnavailable { ip: IpAddr, set: String },

    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate { ip: IpAddr, id: String },

    #[error("no IP addresses available in range set: {0}")]
    Exhausted(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;
