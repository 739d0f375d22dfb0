//! Linux bridges, their ports' flags and their VLAN tables.

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkBridgeVlan};

use crate::connection::Netlink;
use crate::error::{Error, Result, ctx};
use crate::links::Link;

/// What a bridge should look like when it has to be created.
#[derive(Debug, Clone, Default)]
pub struct BridgeOptions {
    pub name: String,
    /// `None` leaves the kernel default.
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
    /// Turn promiscuous mode on (never turned off again, as the reference).
    pub promisc: bool,
}

/// Bridge-port flags to set on a port; `None` leaves a flag unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortOptions {
    pub hairpin: Option<bool>,
    /// No forwarding between two isolated ports (`bridge link set isolated`).
    pub isolated: Option<bool>,
}

/// One row of `bridge vlan show` for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanEntry {
    pub vid: u16,
    /// Untagged ingress frames are classified into this VLAN.
    pub pvid: bool,
    /// Frames leave this port untagged.
    pub untagged: bool,
}

impl Netlink {
    /// Create the bridge if it does not exist, and bring it up. An existing
    /// bridge is reused as it is (MTU and VLAN filtering are only applied at
    /// creation, like the reference); a non-bridge of that name is an error.
    pub fn ensure_bridge(&self, opts: &BridgeOptions) -> Result<Link> {
        let mut msg = LinkBridge::new(&opts.name);
        if let Some(mtu) = opts.mtu {
            msg = msg.mtu(mtu);
        }
        if opts.vlan_filtering {
            msg = msg.vlan_filtering(true);
        }
        let req = self.handle().link().add(msg.build());
        let created = match self.block_on(req.execute()) {
            Ok(()) => true,
            Err(e) => {
                let e = ctx("create bridge", &opts.name)(e);
                if !e.is_exists() {
                    return Err(e);
                }
                false
            }
        };
        let link = self.require_link(&opts.name)?;
        if !link.is_bridge() {
            return Err(Error::NotABridge(opts.name.clone()));
        }
        // A bridge whose MAC was never set takes the lowest MAC of its ports
        // and changes as containers come and go, breaking neighbours' ARP
        // caches (cni#285). Setting it once, to its own random MAC, stops that.
        if created && let Some(mac) = link.mac {
            self.set_mac(link.index, mac)?;
        }
        if opts.promisc && !link.promisc {
            self.set_promisc(link.index, true)?;
        }
        if !link.up {
            self.set_up(link.index)?;
        }
        self.require_link(&opts.name)
    }

    /// Set hairpin / isolation on a bridge port.
    pub fn set_port_options(&self, port_index: u32, opts: PortOptions) -> Result<()> {
        if opts.hairpin.is_none() && opts.isolated.is_none() {
            return Ok(());
        }
        let mut msg = LinkBridgePort::new(port_index);
        if let Some(h) = opts.hairpin {
            msg = msg.hairpin(h);
        }
        if let Some(i) = opts.isolated {
            msg = msg.isolated(i);
        }
        let req = self.handle().link().set_port(msg.build());
        self.block_on(req.execute())
            .map_err(|e| ctx("set bridge port flags on", self.describe(port_index))(e))
    }

    /// Add VLAN `vid` to a bridge port (`bridge vlan add vid V dev P master
    /// [pvid] [untagged]`).
    pub fn add_port_vlan(&self, port_index: u32, entry: VlanEntry) -> Result<()> {
        let req = self.handle().link().set(
            LinkBridgeVlan::new(port_index)
                .vlan(entry.vid, vlan_flags(entry))
                .build(),
        );
        self.block_on(req.execute()).map_err(|e| {
            ctx(
                "add vlan to bridge port",
                format!("{} vid {}", self.describe(port_index), entry.vid),
            )(e)
        })
    }

    /// Remove VLAN `vid` from a bridge port.
    pub fn delete_port_vlan(&self, port_index: u32, vid: u16) -> Result<()> {
        let req = self.handle().link().del_with_message(
            LinkBridgeVlan::new(port_index)
                .vlan(vid, BridgeVlanInfoFlags::empty())
                .build(),
        );
        self.block_on(req.execute()).map_err(|e| {
            ctx(
                "delete vlan from bridge port",
                format!("{} vid {vid}", self.describe(port_index)),
            )(e)
        })
    }

    /// Remove every VLAN entry of a bridge port (e.g. the default PVID 1).
    pub fn clear_port_vlans(&self, port_index: u32) -> Result<()> {
        for entry in self.port_vlans(port_index)? {
            self.delete_port_vlan(port_index, entry.vid)?;
        }
        Ok(())
    }

    /// The VLAN table of a bridge port.
    pub fn port_vlans(&self, port_index: u32) -> Result<Vec<VlanEntry>> {
        // The AF_BRIDGE getlink handler only dumps; filter for our port.
        let req = self
            .handle()
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan]);
        let msgs: Vec<LinkMessage> = self.block_on(req.execute().try_collect()).map_err(ctx(
            "list vlans of bridge port",
            format!("index {port_index}"),
        ))?;
        let mut out = Vec::new();
        for msg in msgs.iter().filter(|m| m.header.index == port_index) {
            for attr in &msg.attributes {
                if let LinkAttribute::AfSpecBridge(specs) = attr {
                    for spec in specs {
                        if let AfSpecBridge::VlanInfo(info) = spec {
                            out.push(VlanEntry {
                                vid: info.vid,
                                pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                                untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn vlan_flags(entry: VlanEntry) -> BridgeVlanInfoFlags {
    let mut flags = BridgeVlanInfoFlags::empty();
    if entry.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if entry.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    flags
}
