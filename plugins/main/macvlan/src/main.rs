//! The CNI macvlan plugin: a macvlan link on a host ("master") interface,
//! created inside the container, with addresses from IPAM. Drop-in for the
//! reference `macvlan` (same keys, defaults and result); a failed ADD
//! leaves nothing in the container, and STATUS reports a missing master.

use attach::sublink::{self, Decisions, Expect, Plan};
use cni::{Error, Request, Result};
use link::{Link, SubLinkInfo};

use macvlan::config::Conf;

struct Macvlan(Conf);

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

impl Decisions for Macvlan {
    const NAME: &'static str = "macvlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn parse(req: &Request) -> Result<Self> {
        Conf::parse(req).map(Macvlan)
    }

    fn add_plan(self, req: &Request) -> Result<Plan> {
        Ok(self.0.resolve(req)?.plan())
    }

    fn check_plan(self, req: &Request) -> Result<(Plan, Box<dyn Expect>)> {
        let conf = self.0.resolve(req)?;
        Ok((conf.plan(), Box::new(Mode(conf.mode))))
    }

    fn status_master(&self) -> Result<(String, bool)> {
        Ok((self.0.master.clone(), self.0.link_in_container))
    }
}

fn main() {
    sublink::run::<Macvlan>()
}
