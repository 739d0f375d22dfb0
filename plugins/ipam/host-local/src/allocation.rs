//! One ADD's addresses: which requested address goes to which range set,
//! and giving everything back if any set fails.

use std::net::IpAddr;

use cni::{Error, IpConfig, Result};
use ipam_store::{LockedStore, Owner, allocate};

use crate::config::Config;

/// Store failures become CNI errors: filesystem problems are I/O (5),
/// everything else keeps the reference's code 999 and wording.
pub(crate) fn store_err(e: ipam_store::Error) -> Error {
    match e {
        ipam_store::Error::Io { .. } => Error::io(e.to_string()),
        ipam_store::Error::InvalidNetworkName(_) | ipam_store::Error::NotADirectory(_) => {
            Error::invalid_config(e.to_string())
        }
        _ => Error::internal(e.to_string()),
    }
}

/// Reserves one address per range set, or none at all.
pub fn allocate_all(
    locked: &mut LockedStore<'_>,
    conf: &Config,
    owner: &Owner,
) -> Result<Vec<IpConfig>> {
    let mut requested = conf.requested.clone();
    let mut taken: Vec<IpAddr> = Vec::new();
    let mut ips = Vec::new();
    let mut failure = None;
    for (i, set) in conf.range_sets.iter().enumerate() {
        // The first requested address that falls in this set is consumed
        // by it, as in the reference.
        let wanted = requested
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|p| requested.remove(p));
        match allocate(locked, set, i, owner, wanted) {
            Ok(a) => {
                taken.push(a.address.ip());
                ips.push(IpConfig {
                    address: a.address,
                    gateway: Some(a.gateway),
                    interface: None,
                });
            }
            Err(e) => {
                failure = Some(store_err(e).context(format!("failed to allocate for range {i}")));
                break;
            }
        }
    }
    if failure.is_none() && !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(IpAddr::to_string).collect();
        failure = Some(Error::internal(format!(
            "failed to allocate all requested IPs: {}",
            list.join(" ")
        )));
    }
    if let Some(e) = failure {
        // Roll back only what this ADD reserved: an earlier ADD's
        // reservation for the same attachment is not ours to drop.
        for ip in taken {
            let _ = locked.unreserve(ip, owner);
        }
        return Err(e);
    }
    Ok(ips)
}
