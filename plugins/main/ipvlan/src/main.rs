//! The CNI ipvlan plugin: an ipvlan link (l2, l3, l3s) on a host interface,
//! created inside the container, with addresses from IPAM or — chained
//! after another plugin — from prevResult, whose single interface is then
//! also the default master. Drop-in for the reference `ipvlan`; a failed
//! ADD leaves nothing in the container, and STATUS reports a missing
//! master.

use attach::sublink::{self, Decisions, Expect, Plan};
use cni::{Error, Request, Result};
use link::{Link, SubLinkInfo};

use ipvlan::config::Conf;

struct Ipvlan(Conf);

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

impl Decisions for Ipvlan {
    const NAME: &'static str = "ipvlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn parse(req: &Request) -> Result<Self> {
        Conf::parse(req).map(Ipvlan)
    }

    fn add_plan(self, req: &Request) -> Result<Plan> {
        self.0.resolve(req)?.plan()
    }

    fn check_plan(self, _req: &Request) -> Result<(Plan, Box<dyn Expect>)> {
        // prevResult is now this plugin's own result, so it does not name
        // the master: only a configured master is checked.
        let conf = self.0;
        let mut plan = conf.plan()?;
        plan.master = conf.master.clone();
        // CHECK asks IPAM whenever there is an `ipam` block.
        plan.ipam = conf.ipam.clone();
        Ok((plan, Box::new(Mode(conf.mode))))
    }

    fn status_master(&self) -> Result<(String, bool)> {
        Ok((
            self.0.chained_master()?.unwrap_or_default(),
            self.0.link_in_container,
        ))
    }
}

fn main() {
    sublink::run::<Ipvlan>()
}
