//! CHECK inside the container: prevResult's addresses are on the device and
//! its routes are in the table (the reference's
//! `ValidateExpectedInterfaceIPs` and `ValidateExpectedRoute`).

use cni::{CniResult, Error, Result};
use link::{Link, Netlink};

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

pub fn addresses_and_routes(cont: &Netlink, dev: &Link, prev: &CniResult) -> Result<()> {
    let have = cont.addresses(Some(dev.index)).map_err(internal)?;
    for ipc in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|i| i == 0))
    {
        if !have.iter().any(|a| a.network == ipc.address) {
            return Err(Error::internal(format!(
                "Failed to match addr {} on interface {}",
                ipc.address, dev.name
            )));
        }
    }
    let routes = cont.routes_via(dev.index).map_err(internal)?;
    for r in &prev.routes {
        let present = routes.iter().any(|h| {
            h.destination.network() == r.dst.network()
                && h.destination.prefix() == r.dst.prefix()
                && r.gw.is_none_or(|gw| h.gateway == Some(gw))
        });
        if !present {
            let gw = r.gw.map(|g| g.to_string()).unwrap_or_default();
            return Err(Error::internal(format!(
                "Expected Route {{Dst:{} GW:{gw}}} not found in routing table",
                r.dst
            )));
        }
    }
    Ok(())
}
