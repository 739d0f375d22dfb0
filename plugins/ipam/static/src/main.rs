//! The `static` IPAM plugin: the addresses, routes and DNS of its
//! configuration (or the addresses the runtime passes), nothing stored.
//!
//! Beyond the reference: CHECK also fails when a configured address is
//! missing from prevResult (the reference only compares gateways of the
//! addresses it finds), STATUS validates the configuration, and GC has
//! nothing to collect.

mod config;

use cni::{CniResult, Error, Plugin, Request, Result};
use config::Config;

struct Static;

impl Plugin for Static {
    const NAME: &'static str = "static";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Config::load(req)?;
        Ok(CniResult {
            interfaces: Vec::new(),
            ips: conf.addresses,
            routes: conf.routes,
            dns: conf.dns,
        })
    }

    fn del(&self, _req: &Request) -> Result<()> {
        // Nothing was allocated, so there is nothing to release; not even
        // the configuration is read, so a DEL never fails.
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Config::load(req)?;
        let prev = req.require_prev_result()?;
        for want in &conf.addresses {
            let Some(got) = prev
                .ips
                .iter()
                .find(|ip| ip.address.ip() == want.address.ip())
            else {
                return Err(Error::internal(format!(
                    "static: Failed to find addr {} on interface {} in prevResult",
                    want.address.ip(),
                    req.ifname
                )));
            };
            if want.gateway.is_some() && want.gateway != got.gateway {
                return Err(Error::internal(format!(
                    "static: Failed to match addr {} on interface {}",
                    got.address.ip(),
                    req.ifname
                )));
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        Config::load(req).map(|_| ())
    }
}

fn main() {
    cni::run(&Static)
}
