//! The `sbr` meta plugin: source-based routing for one container
//! interface. Each of its addresses gets `ip rule from ADDR lookup TABLE`,
//! and the interface's routes move from the main table into TABLE, so
//! traffic from that address leaves through that interface whatever the
//! main table says.
//!
//! Beyond the reference: ADD undoes its rules and routes when a step fails;
//! DEL succeeds when the namespace is gone, also removes rules when the
//! interface is gone (by prevResult's addresses), and removes the routes it
//! moved; CHECK verifies the rules and tables instead of accepting
//! anything.

mod config;
mod routing;

use std::fs::File;
use std::net::IpAddr;

use cni::{CniResult, Error, Plugin, Request, Result, code};
use config::Config;
use link::Netlink;
use netns::NetNs;

struct Sbr;

/// The addresses of `prev` that belong to `ifname`: those naming it, and
/// those naming no interface (or one that is not in the list), as the
/// reference decides.
pub(crate) fn addresses_of(prev: &CniResult, ifname: &str) -> Vec<cni::IpConfig> {
    prev.ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev
                .interfaces
                .get(i)
                .is_none_or(|iface| iface.name == ifname),
            None => true,
        })
        .cloned()
        .collect()
}

/// The namespace, held under the reference's lock: an exclusive flock on
/// the namespace file serialises sbr runs (ours and the reference's) for
/// one container. `None` when the namespace no longer exists.
struct Locked {
    _lock: File,
    ns: NetNs,
}

fn lock_netns(path: &str) -> Result<Option<Locked>> {
    let netns_err = |e: String| {
        Error::new(
            code::INVALID_NETNS,
            format!("failed to open netns {path:?}: {e}"),
        )
    };
    let lock = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(netns_err(e.to_string())),
    };
    lock.lock()
        .map_err(|e| Error::io(format!("failed to lock netns {path:?}: {e}")))?;
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(Locked { _lock: lock, ns })),
        Err(netns::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(netns_err(e.to_string())),
    }
}

/// [`lock_netns`] for ADD and CHECK, where the namespace must exist.
fn require_netns(path: &str) -> Result<Locked> {
    lock_netns(path)?.ok_or_else(|| {
        Error::new(
            code::INVALID_NETNS,
            format!("failed to open netns {path:?}: it does not exist"),
        )
    })
}

fn connect(ns: &NetNs) -> Result<Netlink> {
    Netlink::in_netns(ns).map_err(|e| Error::internal(e.to_string()))
}

impl Plugin for Sbr {
    const NAME: &'static str = "sbr";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Config::load(req)?;
        let prev = req
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("This plugin must be called as chained plugin"))?;
        if prev.ips.is_empty() {
            return Err(Error::invalid_config(format!(
                "No IP addresses supplied on interface: {}",
                req.ifname
            )));
        }
        let ips = addresses_of(&prev, &req.ifname);
        let locked = require_netns(&req.netns)?;
        let nl = connect(&locked.ns)?;
        routing::setup(&nl, &ips, &req.ifname, &conf)?;
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = Config::load(req)?;
        if req.netns.is_empty() {
            return Ok(());
        }
        let Some(locked) = lock_netns(&req.netns)? else {
            return Ok(());
        };
        // prevResult's addresses find the rules even when the interface
        // is already gone; a prevResult we cannot read only loses that.
        let recorded: Vec<IpAddr> = match req.prev_result() {
            Ok(Some(prev)) => addresses_of(&prev, &req.ifname)
                .iter()
                .map(|ip| ip.address.ip())
                .collect(),
            _ => Vec::new(),
        };
        let nl = connect(&locked.ns)?;
        routing::teardown(&nl, &req.ifname, &conf, &recorded)
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Config::load(req)?;
        let prev = req.require_prev_result()?;
        let ips = addresses_of(&prev, &req.ifname);
        let locked = require_netns(&req.netns)?;
        let nl = connect(&locked.ns)?;
        routing::check(&nl, &ips, &req.ifname, &conf)
    }
}

fn main() {
    cni::run(&Sbr)
}
