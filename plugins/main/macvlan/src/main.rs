//! The CNI macvlan plugin: a macvlan link on a host ("master") interface,
//! created inside the container, with addresses from IPAM. Drop-in for the
//! reference `macvlan` (same keys, defaults and result); a failed ADD
//! leaves nothing in the container, and STATUS reports a missing master.

use attach::sublink::{self, Expect};
use cni::{CniResult, Error, Plugin, Request, Result};
use link::{Link, SubLinkInfo};

use macvlan::config::Conf;

struct Macvlan;

struct Mode(link::MacvlanMode);

impl Expect for Mode {
    fn check(&self, _name: &str, _link: &Link, info: Option<SubLinkInfo>) -> Result<()> {
        match info {
            Some(SubLinkInfo::Macvlan(Some(m))) if m == self.0 => Ok(()),
            Some(SubLinkInfo::Macvlan(Some(m))) => Err(Error::internal(format!(
                "container macvlan mode {m} does not match expected value: {}",
                self.0
            ))),
            _ => Err(Error::internal(format!(
                "unknown macvlan mode of the container interface (expected {})",
                self.0
            ))),
        }
    }
}

impl Plugin for Macvlan {
    const NAME: &'static str = "macvlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Conf::parse(req)?.resolve(req)?;
        sublink::add(req, &conf.plan())
    }

    /// Needs no master: DEL works after the master is gone.
    fn del(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?;
        sublink::del(req, Self::NAME, conf.ipam.as_deref())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?.resolve(req)?;
        sublink::check(req, &conf.plan(), &Mode(conf.mode))
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?;
        sublink::status(
            req,
            &conf.master,
            conf.link_in_container,
            conf.ipam.as_deref(),
        )
    }

    fn gc(&self, req: &Request) -> Result<()> {
        sublink::gc(req, Conf::parse(req)?.ipam.as_deref())
    }
}

fn main() {
    cni::run(&Macvlan)
}
