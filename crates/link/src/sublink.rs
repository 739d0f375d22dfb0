//! Links stacked on a parent ("master") link: macvlan, ipvlan and 802.1Q
//! vlan — created in one request directly inside the target namespace.

use std::fmt;

use netlink_packet_core::Emitable;
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVlan, IpVlanMode, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netns::NetNs;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use crate::connection::Netlink;
use crate::error::{Result, ctx};
use crate::mac::MacAddr;

/// `IFLA_MACVLAN_MODE`, named as the CNI configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
    Source,
}

impl MacvlanMode {
    /// The configuration's spelling; `""` is bridge, as in the reference.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            "source" => MacvlanMode::Source,
            _ => return None,
        })
    }

    fn to_netlink(self) -> MacVlanMode {
        match self {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
            MacvlanMode::Source => MacVlanMode::Source,
        }
    }

    fn from_netlink(m: MacVlanMode) -> Option<Self> {
        Some(match m {
            MacVlanMode::Private => MacvlanMode::Private,
            MacVlanMode::Vepa => MacvlanMode::Vepa,
            MacVlanMode::Bridge => MacvlanMode::Bridge,
            MacVlanMode::Passthrough => MacvlanMode::Passthru,
            MacVlanMode::Source => MacvlanMode::Source,
            _ => return None,
        })
    }
}

impl fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        })
    }
}

/// `IFLA_IPVLAN_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanMode {
    L2,
    L3,
    L3s,
}

impl IpvlanMode {
    /// The configuration's spelling; `""` is l2, as in the reference.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "l2" => IpvlanMode::L2,
            "l3" => IpvlanMode::L3,
            "l3s" => IpvlanMode::L3s,
            _ => return None,
        })
    }

    fn to_netlink(self) -> IpVlanMode {
        match self {
            IpvlanMode::L2 => IpVlanMode::L2,
            IpvlanMode::L3 => IpVlanMode::L3,
            IpvlanMode::L3s => IpVlanMode::L3S,
        }
    }

    fn from_netlink(m: IpVlanMode) -> Option<Self> {
        Some(match m {
            IpVlanMode::L2 => IpvlanMode::L2,
            IpVlanMode::L3 => IpvlanMode::L3,
            IpVlanMode::L3S => IpvlanMode::L3s,
            _ => return None,
        })
    }
}

impl fmt::Display for IpvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        })
    }
}

/// What kind of link to stack on the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubLinkKind {
    Macvlan {
        mode: MacvlanMode,
        /// `IFLA_MACVLAN_BC_QUEUE_LEN`; sent only when set.
        bcqueuelen: Option<u32>,
    },
    Ipvlan {
        mode: IpvlanMode,
    },
    Vlan {
        id: u16,
    },
}

impl SubLinkKind {
    /// The kernel's name for the kind (`IFLA_INFO_KIND`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            SubLinkKind::Macvlan { .. } => "macvlan",
            SubLinkKind::Ipvlan { .. } => "ipvlan",
            SubLinkKind::Vlan { .. } => "vlan",
        }
    }
}

/// A link to create on top of `parent_index` (an index in the namespace of
/// the connection that creates it).
#[derive(Debug, Clone, Copy)]
pub struct SubLinkOptions<'a> {
    pub name: &'a str,
    pub kind: SubLinkKind,
    pub parent_index: u32,
    /// `None` inherits the parent's MTU.
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    /// Create the link inside this namespace (`IFLA_NET_NS_FD`); `None`
    /// keeps it in the connection's namespace.
    pub target_ns: Option<&'a NetNs>,
}

fn info_data(kind: SubLinkKind) -> InfoData {
    match kind {
        SubLinkKind::Macvlan { mode, bcqueuelen } => {
            let mut v = vec![InfoMacVlan::Mode(mode.to_netlink())];
            if let Some(q) = bcqueuelen.filter(|q| *q > 0) {
                v.push(InfoMacVlan::BcQueueLen(q));
            }
            InfoData::MacVlan(v)
        }
        SubLinkKind::Ipvlan { mode } => InfoData::IpVlan(vec![InfoIpVlan::Mode(mode.to_netlink())]),
        SubLinkKind::Vlan { id } => InfoData::Vlan(vec![InfoVlan::Id(id)]),
    }
}

/// The `RTM_NEWLINK` body for `opts` (without the netlink header).
pub fn sublink_message(opts: &SubLinkOptions<'_>) -> LinkMessage {
    let kind = match opts.kind {
        SubLinkKind::Macvlan { .. } => InfoKind::MacVlan,
        SubLinkKind::Ipvlan { .. } => InfoKind::IpVlan,
        SubLinkKind::Vlan { .. } => InfoKind::Vlan,
    };
    let mut b = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(kind)
        .name(opts.name.to_string())
        .link(opts.parent_index)
        .set_info_data(info_data(opts.kind));
    if let Some(mtu) = opts.mtu {
        b = b.mtu(mtu);
    }
    if let Some(mac) = opts.mac {
        b = b.address(mac.octets().to_vec());
    }
    if let Some(ns) = opts.target_ns {
        b = b.setns_by_fd(ns.raw_fd());
    }
    b.build()
}

/// [`sublink_message`] as the bytes that go on the wire after the netlink
/// header.
pub fn sublink_message_bytes(opts: &SubLinkOptions<'_>) -> Vec<u8> {
    let msg = sublink_message(opts);
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

/// The sub-link settings read back from a link's `IFLA_LINKINFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubLinkInfo {
    Macvlan(Option<MacvlanMode>),
    Ipvlan(Option<IpvlanMode>),
    Vlan(Option<u16>),
}

pub(crate) fn read_sublink_info(infos: &[LinkInfo]) -> Option<SubLinkInfo> {
    for info in infos {
        if let LinkInfo::Data(d) = info {
            return match d {
                InfoData::MacVlan(v) => {
                    Some(SubLinkInfo::Macvlan(v.iter().find_map(|i| match i {
                        InfoMacVlan::Mode(m) => MacvlanMode::from_netlink(*m),
                        _ => None,
                    })))
                }
                InfoData::IpVlan(v) => Some(SubLinkInfo::Ipvlan(v.iter().find_map(|i| match i {
                    InfoIpVlan::Mode(m) => IpvlanMode::from_netlink(*m),
                    _ => None,
                }))),
                InfoData::Vlan(v) => Some(SubLinkInfo::Vlan(v.iter().find_map(|i| match i {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                }))),
                _ => None,
            };
        }
    }
    None
}

impl Netlink {
    /// Create the link `opts` describes, in one request. The kernel answers
    /// EEXIST when the name is taken in the target namespace (or, for a
    /// vlan, when the parent already has that VLAN id).
    pub fn create_sublink(&self, opts: &SubLinkOptions<'_>) -> Result<()> {
        let req = self.handle().link().add(sublink_message(opts));
        self.block_on(req.execute()).map_err(ctx(
            match opts.kind {
                SubLinkKind::Macvlan { .. } => "create macvlan",
                SubLinkKind::Ipvlan { .. } => "create ipvlan",
                SubLinkKind::Vlan { .. } => "create vlan",
            },
            opts.name,
        ))
    }

    /// The link of the first default route of the main table (IPv4 first,
    /// then IPv6), as the reference picks a missing `master`.
    pub fn default_route_link(&self) -> Result<Option<String>> {
        for v6 in [false, true] {
            for r in self.routes(v6)? {
                if r.table.is_none()
                    && r.destination.prefix() == 0
                    && let Some(oif) = r.oif
                    && let Some(l) = self.link_by_index(oif)?
                {
                    return Ok(Some(l.name));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Parseable;
    use netlink_packet_route::link::LinkAttribute;

    fn opts(kind: SubLinkKind) -> SubLinkOptions<'static> {
        SubLinkOptions {
            name: "eth0",
            kind,
            parent_index: 7,
            mtu: Some(1400),
            mac: Some(MacAddr([0x02, 0, 0, 0, 0, 0x42])),
            target_ns: None,
        }
    }

    /// `IFLA_LINK` of a message.
    fn message_parent(msg: &LinkMessage) -> Option<u32> {
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(i) => Some(*i),
            _ => None,
        })
    }

    /// The IFLA_LINKINFO attribute of an emitted message, as raw bytes.
    fn linkinfo_bytes(msg: &LinkMessage) -> Vec<u8> {
        let attr = msg
            .attributes
            .iter()
            .find(|a| matches!(a, LinkAttribute::LinkInfo(_)))
            .unwrap();
        let mut buf = vec![0u8; attr.buffer_len()];
        attr.emit(&mut buf);
        buf
    }

    #[test]
    fn ipvlan_message_is_kind_ipvlan_with_a_u16_mode() {
        for (mode, raw) in [
            (IpvlanMode::L2, 0u16),
            (IpvlanMode::L3, 1),
            (IpvlanMode::L3s, 2),
        ] {
            let msg = sublink_message(&opts(SubLinkKind::Ipvlan { mode }));
            assert_eq!(message_parent(&msg), Some(7));
            let b = linkinfo_bytes(&msg);
            // IFLA_LINKINFO{ IFLA_INFO_KIND "ipvlan\0", IFLA_INFO_DATA{ IFLA_IPVLAN_MODE u16 } }
            let mut want = vec![28, 0, 18, 0, 11, 0, 1, 0];
            want.extend_from_slice(b"ipvlan\0\0");
            want.extend_from_slice(&[12, 0, 2, 0, 6, 0, 1, 0]);
            want.extend_from_slice(&raw.to_ne_bytes());
            want.extend_from_slice(&[0, 0]);
            assert_eq!(b, want, "{mode}");
        }
    }

    #[test]
    fn vlan_message_carries_the_id() {
        let msg = sublink_message(&opts(SubLinkKind::Vlan { id: 100 }));
        let b = linkinfo_bytes(&msg);
        let mut want = vec![28, 0, 18, 0, 9, 0, 1, 0];
        want.extend_from_slice(b"vlan\0\0\0\0");
        want.extend_from_slice(&[12, 0, 2, 0, 6, 0, 1, 0]);
        want.extend_from_slice(&100u16.to_ne_bytes());
        want.extend_from_slice(&[0, 0]);
        assert_eq!(b, want);
    }

    #[test]
    fn macvlan_sends_bcqueuelen_only_when_set() {
        let with = sublink_message(&opts(SubLinkKind::Macvlan {
            mode: MacvlanMode::Vepa,
            bcqueuelen: Some(100),
        }));
        let without = sublink_message(&opts(SubLinkKind::Macvlan {
            mode: MacvlanMode::Vepa,
            bcqueuelen: None,
        }));
        assert_eq!(
            linkinfo_bytes(&with).len(),
            linkinfo_bytes(&without).len() + 8
        );
        let b = linkinfo_bytes(&without);
        // mode vepa = 2 as u32
        assert_eq!(&b[b.len() - 4..], &2u32.to_ne_bytes());
    }

    #[test]
    fn common_attributes_and_round_trip() {
        let o = opts(SubLinkKind::Vlan { id: 5 });
        let bytes = sublink_message_bytes(&o);
        let msg = LinkMessage::parse(&bytes[..]).unwrap();
        let has = |f: &dyn Fn(&LinkAttribute) -> bool| msg.attributes.iter().any(f);
        assert!(has(
            &|a| matches!(a, LinkAttribute::IfName(n) if n == "eth0")
        ));
        assert!(has(&|a| matches!(a, LinkAttribute::Mtu(1400))));
        assert!(has(
            &|a| matches!(a, LinkAttribute::Address(m) if m == &[2, 0, 0, 0, 0, 0x42])
        ));
        assert!(!has(&|a| matches!(a, LinkAttribute::NetNsFd(_))));
        let infos = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(read_sublink_info(&infos), Some(SubLinkInfo::Vlan(Some(5))));
    }

    #[test]
    fn modes_parse_as_the_reference() {
        assert_eq!(MacvlanMode::parse(""), Some(MacvlanMode::Bridge));
        assert_eq!(MacvlanMode::parse("passthru"), Some(MacvlanMode::Passthru));
        assert_eq!(MacvlanMode::parse("Bridge"), None);
        assert_eq!(IpvlanMode::parse(""), Some(IpvlanMode::L2));
        assert_eq!(IpvlanMode::parse("l3s"), Some(IpvlanMode::L3s));
        assert_eq!(IpvlanMode::parse("l4"), None);
    }
}
