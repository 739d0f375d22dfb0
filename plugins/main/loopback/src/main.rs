//! The `loopback` plugin: `lo` up on ADD, down on DEL, checked on CHECK.
//!
//! Same behaviour as the reference, plus: the skeleton refuses a `CNI_NETNS`
//! that is the plugin's own namespace *before* touching it, so a runtime bug
//! can never take the host's `lo` down.

use cni::{CniResult, Error, Interface, IpConfig, Plugin, Request, Result, code};
use ipnetwork::IpNetwork;
use link::flags;
use netns::NetNs;

struct Loopback;

const LO: &str = "lo";

/// Open the container's namespace. `Ok(None)` when it is already gone.
fn open_netns(path: &str) -> Result<Option<NetNs>> {
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(netns::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(Error::new(code::INVALID_NETNS, e.to_string())),
    }
}

fn require_netns(path: &str) -> Result<NetNs> {
    open_netns(path)?.ok_or_else(|| {
        Error::new(
            code::INVALID_NETNS,
            format!("failed to open netns {path:?}: no such file or directory"),
        )
    })
}

/// Run `f` on a thread inside the container's namespace. `lo` needs no
/// netlink: the flag ioctls and getifaddrs keep this binary small.
fn inside<T: Send>(ns: &NetNs, f: impl FnOnce() -> link::Result<T> + Send) -> Result<T> {
    ns.run(f)
        .map_err(|e| Error::new(code::INVALID_NETNS, e.to_string()))?
        .map_err(|e| Error::internal(e.to_string()))
}

impl Plugin for Loopback {
    const NAME: &'static str = "loopback";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let prev = req.prev_result()?;
        let ns = require_netns(&req.netns)?;
        let addrs: Vec<IpNetwork> = inside(&ns, || {
            flags::set_up(LO, true)?;
            flags::addresses_of(LO)
        })?;
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(Error::internal(format!(
                "loopback interface found with non-loopback address {:?}",
                bad.ip().to_string()
            )));
        }
        if let Some(prev) = prev {
            // Chained after another plugin: pass its result on unchanged.
            return Ok(prev);
        }
        let first = |v4: bool| {
            addrs.iter().find(|a| a.is_ipv4() == v4).map(|a| IpConfig {
                address: *a,
                gateway: None,
                interface: Some(0),
            })
        };
        Ok(CniResult {
            interfaces: vec![Interface {
                name: LO.into(),
                mac: Some("00:00:00:00:00:00".into()),
                sandbox: Some(req.netns.clone()),
                ..Default::default()
            }],
            ips: [first(true), first(false)].into_iter().flatten().collect(),
            ..Default::default()
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        if req.netns.is_empty() {
            return Ok(());
        }
        let Some(ns) = open_netns(&req.netns)? else {
            return Ok(());
        };
        inside(&ns, || flags::set_up(LO, false))
    }

    fn check(&self, req: &Request) -> Result<()> {
        let ns = require_netns(&req.netns)?;
        match inside(&ns, || flags::is_up(LO))? {
            Some(true) => Ok(()),
            Some(false) => Err(Error::internal("loopback interface is down")),
            None => Err(Error::internal("loopback interface not found")),
        }
    }
}

fn main() {
    cni::run(&Loopback)
}
