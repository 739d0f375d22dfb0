//! The one error type of this crate.

use std::io;

/// Everything that can go wrong while reading or changing netfilter state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value was refused before it could reach a rule.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The backend's programs are not installed.
    #[error("{0} not found in PATH")]
    ProgramNotFound(&'static str),
    /// The program could not be started at all.
    #[error("run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// The program ran and failed; `stderr` is what it said.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    /// Output of a listing did not look as expected.
    #[error("parse output of {program}: {detail}")]
    Parse { program: String, detail: String },
    /// CHECK found state missing.
    #[error("{0}")]
    Missing(String),
    /// Neither iptables nor nftables can be used on this host.
    #[error(
        "neither iptables nor nftables is usable: (iptables) {iptables}, (nftables) {nftables}"
    )]
    NoBackend { iptables: String, nftables: String },
    /// A conntrack netlink operation failed.
    #[error("conntrack: {what}: {source}")]
    Conntrack {
        what: &'static str,
        source: io::Error,
    },
    /// An nf_tables netlink request failed.
    #[error("nf_tables netlink: {0}")]
    Netlink(io::Error),
    /// Several independent steps failed (teardown keeps going after an error).
    #[error("{}", join(.0))]
    Several(Vec<Error>),
}

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T> = std::result::Result<T, Error>;

/// Collects errors of independent teardown steps so one failure does not
/// stop the others.
#[derive(Default)]
pub(crate) struct Errors(Vec<Error>);

impl Errors {
    pub(crate) fn keep<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub(crate) fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::Several(self.0)),
        }
    }
}
