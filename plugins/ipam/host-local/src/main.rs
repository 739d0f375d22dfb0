//! The `host-local` IPAM plugin: addresses from configured ranges, kept as
//! one file per address under `<dataDir>/<network>/`, byte-compatible with
//! the Go reference so both can run on one node.
//!
//! Beyond the reference: one flock for the whole ADD (a multi-set ADD is
//! all-or-nothing and only its own reservations are rolled back), CHECK
//! compares the reservation with prevResult, GC removes reservations of
//! attachments the runtime no longer knows, STATUS reports exhaustion and
//! an unwritable dataDir with code 50, and ADD/DEL do not read every
//! reservation file.

mod allocation;
mod config;
mod dns;

use std::net::IpAddr;

use allocation::store_err;
use cni::{CniResult, Error, Plugin, Request, Result, code};
use config::Config;
use ipam_store::{Owner, Store};

struct HostLocal;

fn owner(req: &Request) -> Owner {
    Owner::new(req.container_id.clone(), req.ifname.clone())
}

fn open_store(conf: &Config) -> Result<Store> {
    Store::open(&conf.data_dir, &conf.network).map_err(store_err)
}

impl Plugin for HostLocal {
    const NAME: &'static str = "host-local";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Config::load(req)?;
        let dns = match &conf.resolv_conf {
            Some(path) => dns::parse_resolv_conf(path)?,
            None => Default::default(),
        };
        let store = open_store(&conf)?;
        let mut locked = store.lock().map_err(store_err)?;
        let ips = allocation::allocate_all(&mut locked, &conf, &owner(req))?;
        Ok(CniResult {
            interfaces: Vec::new(),
            ips,
            routes: conf.routes,
            dns,
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = Config::load(req)?;
        let store = open_store(&conf)?;
        let mut locked = store.lock().map_err(store_err)?;
        let owner = owner(req);
        // One release per range set, as the reference: the first removes
        // the files of this (id, ifname); a later one, finding none, also
        // removes legacy id-only files of the container.
        let mut errors = Vec::new();
        for _ in &conf.range_sets {
            if let Err(e) = locked.release(&owner) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::io(errors.join(";")))
        }
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Config::load(req)?;
        let store = open_store(&conf)?;
        let mut locked = store.lock().map_err(store_err)?;
        let reserved = locked.lookup(&owner(req)).map_err(store_err)?;
        if reserved.is_empty() {
            return Err(Error::internal(format!(
                "host-local: Failed to find address added by container {}",
                req.container_id
            )));
        }
        let Some(prev) = req.prev_result()? else {
            return Ok(());
        };
        let in_sets = |ip: &IpAddr| conf.range_sets.iter().any(|s| s.contains(*ip));
        let reported: Vec<IpAddr> = prev.ips.iter().map(|c| c.address.ip()).collect();
        if let Some(ip) = reported
            .iter()
            .find(|ip| in_sets(ip) && !reserved.contains(ip))
        {
            return Err(Error::internal(format!(
                "host-local: address {ip} in prevResult is not reserved for container {}",
                req.container_id
            )));
        }
        if let Some(ip) = reserved
            .iter()
            .find(|ip| in_sets(ip) && !reported.contains(ip))
        {
            return Err(Error::internal(format!(
                "host-local: address {ip} reserved for container {} is missing from prevResult",
                req.container_id
            )));
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = Config::load_allowing_no_ranges(req)?;
        let unavailable = |msg: String| Error::new(code::NOT_AVAILABLE, msg);
        let store = open_store(&conf).map_err(|e| unavailable(e.msg))?;
        let mut locked = store.lock().map_err(|e| unavailable(e.to_string()))?;
        locked
            .check_writable()
            .map_err(|e| unavailable(format!("dataDir is not writable: {e}")))?;
        for (i, set) in conf.range_sets.iter().enumerate() {
            let used = locked.count_reserved_in(set).map_err(store_err)?;
            if used >= set.capacity() {
                return Err(unavailable(format!(
                    "range set {i}: no IP addresses available in range set: {set}"
                )));
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        // No list at all means the runtime said nothing: remove nothing.
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let conf = Config::load_allowing_no_ranges(req)?;
        let keep: Vec<Owner> = valid
            .iter()
            .map(|a| Owner::new(a.container_id.clone(), a.ifname.clone()))
            .collect();
        let store = open_store(&conf)?;
        let mut locked = store.lock().map_err(store_err)?;
        let report = locked.gc(&keep).map_err(store_err)?;
        if report.errors.is_empty() {
            Ok(())
        } else {
            let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            Err(Error::io(format!("host-local GC: {}", msgs.join("; "))))
        }
    }
}

fn main() {
    cni::run(&HostLocal)
}
