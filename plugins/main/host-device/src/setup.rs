//! Container-side configuration of the moved device: IPAM's addresses and
//! routes (the reference's `ipam.ConfigureIface`).

use cni::{CniResult, Error, Result};
use link::{Netlink, Route};

pub fn configure(cont: &Netlink, index: u32, ifname: &str, result: &CniResult) -> Result<()> {
    for ipc in &result.ips {
        cont.add_address(index, ipc.address).map_err(|e| {
            Error::internal(format!(
                "failed to add IP addr {} to {ifname:?}: {e}",
                ipc.address
            ))
        })?;
    }
    for r in &result.routes {
        let gw = r.gw.or_else(|| {
            result
                .ips
                .iter()
                .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
                .and_then(|i| i.gateway)
        });
        let mut route = Route::to(r.dst);
        route.gateway = gw;
        route.oif = Some(index);
        route.priority = r.priority;
        route.table = r.table;
        route.scope = r.scope;
        route.mtu = r.mtu;
        route.advmss = r.advmss;
        cont.add_route(&route)
            .map_err(|e| Error::internal(format!("failed to add route '{route}': {e}")))?;
    }
    Ok(())
}

pub fn check(cont: &Netlink, index: u32, ifname: &str, prev: &CniResult) -> Result<()> {
    let have = cont
        .addresses(Some(index))
        .map_err(|e| Error::internal(e.to_string()))?;
    for ipc in prev.ips.iter().filter(|i| i.interface == Some(0)) {
        if !have.iter().any(|a| a.network == ipc.address) {
            return Err(Error::internal(format!(
                "Failed to match addr {} on interface {ifname}",
                ipc.address
            )));
        }
    }
    Ok(())
}
