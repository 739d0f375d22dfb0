//! The crate's single error type.

use std::io;

/// Everything that can go wrong talking to the kernel. Netlink failures carry
/// the operation and the object they were about, so a message reads
/// `create bridge cni0: File exists (os error 17)`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },
    /// The reference's wording, kept because users grep for it.
    #[error("{0:?} already exists but is not a bridge")]
    NotABridge(String),
    /// An ioctl or libc call (see [`crate::flags`]).
    #[error("{op} {object}: {source}")]
    Ioctl {
        op: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },
    #[error("open netlink socket in {ns}: {source}")]
    Socket {
        ns: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("{op} {object}: timed out")]
    Timeout { op: &'static str, object: String },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("address {0}: invalid MAC address")]
    InvalidMac(String),
    #[error("{0}")]
    Invalid(String),
    /// What the caller was doing when `source` happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The errno behind a kernel failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. }
            | Error::Socket { source, .. }
            | Error::Ioctl { source, .. }
            | Error::Sysctl { source, .. } => source.raw_os_error(),
            Error::Context { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// The object asked about does not exist (ENODEV, ENOENT, ESRCH).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
        )
    }

    /// The object to create already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turn an rtnetlink error into an `io::Error` that keeps the kernel's errno,
/// so callers can branch on it and messages read like `strerror`.
pub(crate) fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// Context for one netlink operation: `ctx("create bridge", name)`.
pub(crate) fn ctx(
    op: &'static str,
    object: impl ToString,
) -> impl FnOnce(rtnetlink::Error) -> Error {
    let object = object.to_string();
    move |e| Error::Netlink {
        op,
        object,
        source: to_io(e),
    }
}
