//! The CNI vlan plugin: an 802.1Q VLAN link on a host interface, created
//! inside the container, with addresses from IPAM. Drop-in for the
//! reference `vlan`; a failed ADD leaves nothing in the container, DEL
//! works after the master is gone, and STATUS reports a missing master.
//!
//! The kernel allows one VLAN link per id and parent, so the reference
//! cannot give two attachments the same master and VLAN (its #243). When
//! the master's namespace already holds that VLAN link (say `eth1.100`,
//! made by the administrator), each attachment gets a macvlan in bridge
//! mode on it instead: any number of containers then share the VLAN.

use attach::sublink::{self, Decisions, Expect, Plan};
use cni::{Error, Request, Result};
use link::{Link, MacvlanMode, SubLinkInfo, SubLinkKind};

use vlan::config::Conf;

struct Vlan(Conf);

struct Expected {
    vlan_id: u16,
    mtu: u32,
    /// The shared VLAN link the container's macvlan must sit on.
    shared: Option<u32>,
}

/// The plan for `conf`: a VLAN link, or a macvlan on the VLAN link the
/// master's namespace already has for this id (returned with its index).
fn plan_for(req: &Request, conf: &Conf) -> Result<(Plan, Option<u32>)> {
    let mut plan = conf.plan();
    let nl = sublink::master_side(req, conf.link_in_container)?;
    let master = sublink::find_master(&nl, &conf.master)?;
    let shared = nl
        .find_vlan(master.index, conf.vlan_id)
        .map_err(|e| Error::internal(e.to_string()))?;
    let Some(dev) = shared else {
        return Ok((plan, None));
    };
    plan.master = dev.name;
    plan.kind = SubLinkKind::Macvlan {
        mode: MacvlanMode::Bridge,
        bcqueuelen: None,
    };
    Ok((plan, Some(dev.index)))
}

impl Expect for Expected {
    fn check(&self, name: &str, link: &Link, info: Option<SubLinkInfo>) -> Result<()> {
        if let Some(parent) = self.shared {
            if link.peer_index != Some(parent) {
                return Err(Error::internal(format!(
                    "Error: Container interface {name} is not on the VLAN {} link of the master",
                    self.vlan_id
                )));
            }
            return self.check_mtu(name, link);
        }
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
        self.check_mtu(name, link)
    }
}

impl Expected {
    fn check_mtu(&self, name: &str, link: &Link) -> Result<()> {
        if self.mtu != 0 && self.mtu != link.mtu {
            return Err(Error::internal(format!(
                "Error: configured MTU of {name} is {}, current value is {}",
                self.mtu, link.mtu
            )));
        }
        Ok(())
    }
}

impl Decisions for Vlan {
    const NAME: &'static str = "vlan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn parse(req: &Request) -> Result<Self> {
        Conf::parse(req).map(Vlan)
    }

    fn add_plan(self, req: &Request) -> Result<Plan> {
        let conf = self.0.resolve(req)?;
        Ok(plan_for(req, &conf)?.0)
    }

    fn check_plan(self, req: &Request) -> Result<(Plan, Box<dyn Expect>)> {
        let conf = self.0.resolve(req)?;
        let (plan, shared) = plan_for(req, &conf)?;
        let expected = Expected {
            vlan_id: conf.vlan_id,
            mtu: conf.mtu,
            shared,
        };
        Ok((plan, Box::new(expected)))
    }

    fn status_master(&self) -> Result<(String, bool)> {
        Ok((self.0.master.clone(), self.0.link_in_container))
    }
}

fn main() {
    sublink::run::<Vlan>()
}
