//! The CNI ipvlan plugin: an ipvlan link (l2, l3, l3s) on a host interface,
//! created inside the container, with addresses from IPAM or — chained
//! after another plugin — from prevResult, whose single interface is then
//! also the default master. Drop-in for the reference `ipvlan`; a failed
//! ADD leaves nothing in the container, and STATUS reports a missing
//! master.

use attach::sublink::{self, Expect};
use cni::{CniResult, Error, Plugin, Request, Result};
use link::{Link, SubLinkInfo};

use ipvlan::config::Conf;

struct Ipvlan;

struct Mode(link::IpvlanMode);

impl Expect for Mode {
    fn check(&self, _name: &str, _link: &Link, info: Option<SubLinkInfo>) -> Result<()> {
        match info {
            Some(SubLinkInfo::Ipvlan(Some(m))) if m == self.0 => Ok(()),
            Some(SubLinkInfo::Ipvlan(Some(m))) => Err(Error::internal(format!(
                "Container IPVlan mode {m} does not match expected value: {}",
                self.0
            ))),
            _ => Err(Error::internal(format!(
                "unknown ipvlan mode of the container interface (expected {})",
                self.0
            ))),
        }
    }
}

impl Plugin for Ipvlan {
    const NAME: &'static str = "ipvlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Conf::parse(req)?.resolve(req)?;
        sublink::add(req, &conf.plan()?)
    }

    /// Needs no master: DEL works after the master is gone.
    fn del(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?;
        sublink::del(req, Self::NAME, conf.ipam.as_deref())
    }

    fn check(&self, req: &Request) -> Result<()> {
        // prevResult is now this plugin's own result, so it does not name
        // the master: only a configured master is checked.
        let conf = Conf::parse(req)?;
        let mut plan = conf.plan()?;
        plan.master = conf.master.clone();
        // CHECK asks IPAM whenever there is an `ipam` block.
        plan.ipam = conf.ipam.clone();
        sublink::check(req, &plan, &Mode(conf.mode))
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?;
        let master = conf.chained_master()?.unwrap_or_default();
        sublink::status(req, &master, conf.link_in_container, conf.ipam.as_deref())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        sublink::gc(req, Conf::parse(req)?.ipam.as_deref())
    }
}

fn main() {
    cni::run(&Ipvlan)
}
