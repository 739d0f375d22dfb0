//! The CNI vlan plugin: an 802.1Q VLAN link on a host interface, created
//! inside the container, with addresses from IPAM. Drop-in for the
//! reference `vlan`; a failed ADD leaves nothing in the container, DEL
//! works after the master is gone, and STATUS reports a missing master.

use attach::sublink::{self, Expect};
use cni::{CniResult, Error, Plugin, Request, Result};
use link::{Link, SubLinkInfo};

use vlan::config::Conf;

struct Vlan;

struct Expected {
    vlan_id: u16,
    mtu: u32,
}

impl Expect for Expected {
    fn check(&self, name: &str, link: &Link, info: Option<SubLinkInfo>) -> Result<()> {
        let have = match info {
            Some(SubLinkInfo::Vlan(Some(id))) => id,
            _ => {
                return Err(Error::internal(format!(
                    "Error: Container interface {name} has no VLAN id"
                )));
            }
        };
        if have != self.vlan_id {
            return Err(Error::internal(format!(
                "Error: Container vlan {name} configured VLAN ID is {}, current value is {have}",
                self.vlan_id
            )));
        }
        if self.mtu != 0 && self.mtu != link.mtu {
            return Err(Error::internal(format!(
                "Error: configured MTU of {name} is {}, current value is {}",
                self.mtu, link.mtu
            )));
        }
        Ok(())
    }
}

impl Plugin for Vlan {
    const NAME: &'static str = "vlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Conf::parse(req)?.resolve(req)?;
        sublink::add(req, &conf.plan())
    }

    /// Needs no master (the reference's DEL fails once the master is gone).
    fn del(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?;
        sublink::del(req, Self::NAME, conf.ipam.as_deref())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Conf::parse(req)?.resolve(req)?;
        let expected = Expected {
            vlan_id: conf.vlan_id,
            mtu: conf.mtu,
        };
        sublink::check(req, &conf.plan(), &expected)
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
    cni::run(&Vlan)
}
