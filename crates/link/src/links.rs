//! Links: what one looks like, finding them, changing their basic settings
//! and deleting them.

use std::fmt;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use crate::connection::Netlink;
use crate::error::{Error, Result, ctx, to_io};
use crate::mac::MacAddr;
use crate::sublink::{SubLinkInfo, read_sublink_info};

/// RFC 2863 operational state, spelled as `ip link` and the reference print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl From<State> for OperState {
    fn from(s: State) -> Self {
        match s {
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            _ => OperState::Unknown,
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperState::Unknown => "unknown",
            OperState::NotPresent => "notpresent",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Testing => "testing",
            OperState::Dormant => "dormant",
            OperState::Up => "up",
        })
    }
}

/// A snapshot of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", … (`None` for e.g. `lo`).
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub promisc: bool,
    /// Receives all multicast (`IFF_ALLMULTI`).
    pub allmulti: bool,
    /// `IFLA_TXQLEN`: transmit queue length.
    pub txqlen: u32,
    pub oper_state: OperState,
    /// Index of the bridge (or other controller) this link is a port of.
    pub controller: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Bridge-port flags, present when the link is a bridge port.
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
    /// For a bridge: whether VLAN filtering is on.
    pub vlan_filtering: Option<bool>,
    /// For a macvlan, ipvlan or vlan: its mode or VLAN id
    /// (`peer_index` is then the parent's index).
    pub sublink: Option<SubLinkInfo>,
    /// IPv4 `route_localnet` of the link, as the kernel reports it with the
    /// link (`IFLA_AF_SPEC`): no `/proc/sys` lookup, which costs 0.3 ms in
    /// the host namespace of a node with hundreds of containers (see
    /// [`crate::sysctl`]). `None` when the link has no IPv4 settings.
    pub route_localnet: Option<bool>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    pub(crate) fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            allmulti: msg.header.flags.contains(LinkFlags::Allmulti),
            txqlen: 0,
            oper_state: OperState::Unknown,
            controller: None,
            peer_index: None,
            hairpin: None,
            isolated: None,
            vlan_filtering: None,
            sublink: None,
            route_localnet: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = MacAddr::from_bytes(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::TxQueueLen(q) => link.txqlen = *q,
                LinkAttribute::OperState(s) => link.oper_state = (*s).into(),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Link(l) => link.peer_index = Some(*l),
                LinkAttribute::LinkInfo(infos) => link.read_info(infos),
                LinkAttribute::AfSpecUnspec(specs) => link.read_af_spec(specs),
                _ => {}
            }
        }
        link
    }

    fn read_af_spec(&mut self, specs: &[AfSpecUnspec]) {
        for spec in specs {
            if let AfSpecUnspec::Inet(inet) = spec {
                for a in inet {
                    if let AfSpecInet::DevConf(conf) = a {
                        self.route_localnet = Some(conf.route_localnet != 0);
                    }
                }
            }
        }
    }

    fn read_info(&mut self, infos: &[LinkInfo]) {
        self.sublink = read_sublink_info(infos);
        for info in infos {
            match info {
                LinkInfo::Kind(k) => self.kind = Some(kind_name(k)),
                LinkInfo::Data(InfoData::Bridge(opts)) => {
                    for o in opts {
                        if let InfoBridge::VlanFiltering(v) = o {
                            self.vlan_filtering = Some(*v);
                        }
                    }
                }
                LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                    for o in opts {
                        match o {
                            InfoBridgePort::HairpinMode(v) => self.hairpin = Some(*v),
                            InfoBridgePort::Isolated(v) => self.isolated = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        other => other.to_string(),
    }
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

impl Netlink {
    /// The link called `name`, or `None` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let req = self.handle().link().get().match_name(name.to_string());
        self.block_on(async {
            match req.execute().try_next().await {
                Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
                Err(e) if is_enodev(&e) => Ok(None),
                Err(e) => Err(ctx("find link", name)(e)),
            }
        })
    }

    /// The link with index `index`, or `None` if there is none.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let req = self.handle().link().get().match_index(index);
        self.block_on(async {
            match req.execute().try_next().await {
                Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
                Err(e) if is_enodev(&e) => Ok(None),
                Err(e) => Err(ctx("find link", format!("index {index}"))(e)),
            }
        })
    }

    /// Like [`Netlink::link_by_name`], but a missing link is an error.
    pub fn require_link(&self, name: &str) -> Result<Link> {
        self.link_by_name(name)?.ok_or_else(|| Error::Netlink {
            op: "find link",
            object: name.to_string(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    /// Every link in the namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        let req = self.handle().link().get();
        self.block_on(async {
            let msgs: Vec<LinkMessage> = req
                .execute()
                .try_collect()
                .await
                .map_err(ctx("list links", "in namespace"))?;
            Ok(msgs.iter().map(Link::from_message).collect())
        })
    }

    /// Veths in this namespace whose peer has index `peer_index` (in
    /// whatever namespace the peer lives): the host end of a container's
    /// interface.
    pub fn veths_with_peer(&self, peer_index: u32) -> Result<Vec<Link>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|l| l.is_veth() && l.peer_index == Some(peer_index))
            .collect())
    }

    /// Links that are ports of the bridge `bridge_index`.
    pub fn ports_of(&self, bridge_index: u32) -> Result<Vec<Link>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|l| l.controller == Some(bridge_index))
            .collect())
    }

    fn change(&self, op: &'static str, index: u32, msg: LinkMessage) -> Result<()> {
        let req = self.handle().link().change(msg);
        self.block_on(req.execute())
            .map_err(|e| ctx(op, self.describe(index))(e))
    }

    /// `name (index N)` when the name can still be found, for messages.
    pub(crate) fn describe(&self, index: u32) -> String {
        match self.link_by_index(index) {
            Ok(Some(l)) => l.name,
            _ => format!("index {index}"),
        }
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.change(
            "set up",
            index,
            LinkUnspec::new_with_index(index).up().build(),
        )
    }

    pub fn set_down(&self, index: u32) -> Result<()> {
        self.change(
            "set down",
            index,
            LinkUnspec::new_with_index(index).down().build(),
        )
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.change(
            "set mtu",
            index,
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
        )
    }

    pub fn set_mac(&self, index: u32, mac: MacAddr) -> Result<()> {
        self.change(
            "set mac",
            index,
            LinkUnspec::new_with_index(index)
                .address(mac.octets().to_vec())
                .build(),
        )
    }

    pub fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.change(
            "set promisc",
            index,
            LinkMessageBuilder::<LinkUnspec>::default()
                .index(index)
                .promiscuous(on)
                .build(),
        )
    }

    pub fn set_allmulti(&self, index: u32, on: bool) -> Result<()> {
        self.change(
            "set allmulticast",
            index,
            LinkMessageBuilder::<LinkUnspec>::default()
                .index(index)
                .allmulticast(on)
                .build(),
        )
    }

    pub fn set_txqlen(&self, index: u32, len: u32) -> Result<()> {
        self.change(
            "set txqlen",
            index,
            LinkUnspec::new_with_index(index).txqueuelen(len).build(),
        )
    }

    /// Make the link a port of bridge `bridge_index`.
    pub fn set_controller(&self, index: u32, bridge_index: u32) -> Result<()> {
        self.change(
            "attach to bridge",
            index,
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .build(),
        )
    }

    /// Delete the link and wait for the kernel to finish destroying it.
    /// Returns `false` if it was already gone.
    pub(crate) fn delete_link_sync(&self, index: u32) -> Result<bool> {
        let req = self.handle().link().del(index);
        match self.block_on(req.execute()) {
            Ok(()) => Ok(true),
            Err(e) if is_enodev(&e) => Ok(false),
            Err(e) => Err(Error::Netlink {
                op: "delete link",
                object: format!("index {index}"),
                source: to_io(e),
            }),
        }
    }

    /// A VLAN link in this namespace on parent `parent_index` with id `vid`
    /// (for example `eth1.100`, made by an administrator).
    pub fn find_vlan(&self, parent_index: u32, vid: u16) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| {
            l.kind.as_deref() == Some("vlan")
                && l.peer_index == Some(parent_index)
                && l.sublink == Some(SubLinkInfo::Vlan(Some(vid)))
        }))
    }
}
