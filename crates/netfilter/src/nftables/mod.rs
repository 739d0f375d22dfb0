//! nftables backend. Every change is one nf_tables transaction: sent over
//! netlink where `nfnl::writer`/`nfnl::reader` cover it (host-port ADD, masquerade
//! setup, every teardown), otherwise as an `nft -f -` script, preceded by one
//! `nft -a list` when the change depends on what is there.

mod check;
pub(crate) mod firewall;
mod hostports;
mod hostports_netlink;
mod listing;
mod masquerade;

use crate::error::{Error, Result};
use crate::exec::Program;

pub use listing::Listing;

pub fn installed() -> Result<()> {
    Program::find("nft").map(|_| ())
}

/// `nft list tables` needs CAP_NET_ADMIN and kernel nf_tables, like every
/// real operation.
pub fn probe() -> Result<()> {
    Program::find("nft")?
        .run(&["list", "tables"], None)
        .map(|_| ())
}

/// `nft -a list <what...>`; `None` when the table or chain does not exist.
pub fn list(what: &[&str]) -> Result<Option<Listing>> {
    let mut args = vec!["-a", "list"];
    args.extend_from_slice(what);
    match Program::find("nft")?.run(&args, None) {
        Ok(out) => Ok(Some(Listing::parse(&out))),
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Run `script` as one transaction: all of it or nothing.
pub fn apply(script: &str) -> Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    Program::find("nft")?
        .run(&["-f", "-"], Some(script))
        .map(|_| ())
}

/// Retries of a list-then-change operation whose listing went stale
/// (a concurrent plugin run deleted a rule we meant to delete).
const ATTEMPTS: usize = 4;

pub fn list_modify_apply(
    what: &[&str],
    plan: impl Fn(Option<&Listing>) -> Result<String>,
) -> Result<()> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let listing = list(what)?;
        let script = plan(listing.as_ref())?;
        match apply(&script) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Missing("nft never ran".into())))
}

/// The nftables backend.
pub struct Nftables;

crate::types::backend_impl!(Nftables);
