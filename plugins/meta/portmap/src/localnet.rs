//! `route_localnet` on the host interface that routes to the container, so
//! that `127.0.0.1:hostPort` from the host, DNATed to the container and
//! masqueraded, is not dropped as a martian on its way out.

use std::net::Ipv4Addr;

use cni::{Error, Result};

fn failed(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("unable to enable route_localnet: {e}"))
}

/// Set `net/ipv4/conf/<iface>/route_localnet = 1` for the interface the
/// kernel would use to reach `container` (never reverted, as in the
/// reference: other containers behind the same interface rely on it).
/// Nothing to do when no route leads there.
pub fn enable_towards(container: Ipv4Addr) -> Result<()> {
    let nl = link::Netlink::current().map_err(failed)?;
    let Some(index) = nl.route_get(container.into()).map_err(failed)? else {
        return Ok(());
    };
    let Some(iface) = nl.link_by_index(index).map_err(failed)? else {
        return Ok(());
    };
    // Already on (every ADD after a node's first): the link says so, no
    // `/proc/sys` lookup.
    if iface.route_localnet == Some(true) {
        return Ok(());
    }
    link::sysctl::ensure(
        &link::sysctl::iface_key("ipv4", &iface.name, "route_localnet"),
        "1",
    )
    .map_err(failed)?;
    Ok(())
}
