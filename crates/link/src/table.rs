//! Routes as the kernel reports them, moved between tables whole: every
//! attribute a route was made with (protocol, scope, preferred source,
//! metric, metrics) survives the move, as `ip route` shows it.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};

use crate::connection::Netlink;
use crate::error::{Result, ctx};
use crate::route::scope;

/// A route as listed, with the fields callers decide on.
#[derive(Debug, Clone)]
pub struct KernelRoute {
    pub destination: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Preferred source (`src` in `ip route`).
    pub prefsrc: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    message: RouteMessage,
}

impl std::fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev {oif}")?;
        }
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        write!(f, " table {}", self.table)
    }
}

fn to_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

impl KernelRoute {
    fn from_message(message: RouteMessage) -> Option<Self> {
        let unspecified = match message.header.address_family {
            AddressFamily::Inet => IpAddr::from([0u8; 4]),
            AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
            _ => return None,
        };
        let mut dst = unspecified;
        let mut route = KernelRoute {
            destination: IpNetwork::new(unspecified, 0).ok()?,
            gateway: None,
            prefsrc: None,
            oif: None,
            table: u32::from(message.header.table),
            scope: message.header.scope.into(),
            message: RouteMessage::default(),
        };
        for attr in &message.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = to_ip(a)?,
                RouteAttribute::Gateway(a) => route.gateway = to_ip(a),
                RouteAttribute::PrefSource(a) => route.prefsrc = to_ip(a),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Table(t) => route.table = *t,
                _ => {}
            }
        }
        route.destination = IpNetwork::new(dst, message.header.destination_prefix_length).ok()?;
        route.message = message;
        Some(route)
    }

    /// The same route in `table`, as a request: kernel-set flags cleared
    /// (the kernel refuses them on a new route) and per-entry state such as
    /// cache info and expiry dropped.
    fn in_table(&self, table: u32) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header = self.message.header.clone();
        msg.header.flags = RouteFlags::empty();
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.attributes = self
            .message
            .attributes
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    RouteAttribute::Destination(_)
                        | RouteAttribute::Source(_)
                        | RouteAttribute::Gateway(_)
                        | RouteAttribute::PrefSource(_)
                        | RouteAttribute::Oif(_)
                        | RouteAttribute::Priority(_)
                        | RouteAttribute::Metrics(_)
                        | RouteAttribute::MultiPath(_)
                        | RouteAttribute::Preference(_)
                        | RouteAttribute::Realm(_)
                )
            })
            .cloned()
            .collect();
        msg.attributes.push(RouteAttribute::Table(table));
        msg
    }
}

impl Netlink {
    /// Unicast routes of both families in every table, optionally only
    /// those of `table` and those leaving through link `oif`.
    pub fn kernel_routes(&self, table: Option<u32>, oif: Option<u32>) -> Result<Vec<KernelRoute>> {
        let mut out = Vec::new();
        for (family, name) in [
            (AddressFamily::Inet, "ipv4"),
            (AddressFamily::Inet6, "ipv6"),
        ] {
            // A bare header: under strict checking every set field filters.
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let req = self.handle().route().get(msg);
            let msgs: Vec<RouteMessage> = self
                .block_on(req.execute().try_collect())
                .map_err(ctx("list routes", name))?;
            out.extend(
                msgs.into_iter()
                    .filter(|m| m.header.kind == RouteType::Unicast)
                    .filter_map(KernelRoute::from_message)
                    .filter(|r| table.is_none_or(|t| r.table == t))
                    .filter(|r| oif.is_none_or(|i| r.oif == Some(i))),
            );
        }
        Ok(out)
    }

    /// Put a copy of `route` into `table`, replacing an equal route there
    /// (`ip route replace … table N`).
    pub fn copy_route_to_table(&self, route: &KernelRoute, table: u32) -> Result<()> {
        let req = self.handle().route().add(route.in_table(table)).replace();
        self.block_on(req.execute())
            .map_err(ctx("copy route", format!("{route} to table {table}")))
    }

    /// Delete a route as listed. Returns `false` if it was already gone.
    pub fn delete_kernel_route(&self, route: &KernelRoute) -> Result<bool> {
        let req = self.handle().route().del(route.in_table(route.table));
        match self.block_on(req.execute()) {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = ctx("delete route", route)(e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }

    /// `ip route replace SUBNET dev OIF src SRC scope link` in the main table.
    pub fn replace_link_route(&self, oif: u32, subnet: IpNetwork, src: IpAddr) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match subnet {
            IpNetwork::V4(_) => AddressFamily::Inet,
            IpNetwork::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = subnet.prefix();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::from(scope::LINK);
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(to_address(subnet.network())));
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg.attributes
            .push(RouteAttribute::PrefSource(to_address(src)));
        let req = self.handle().route().add(msg).replace();
        self.block_on(req.execute()).map_err(ctx(
            "replace route",
            format!("{subnet} dev {oif} src {src}"),
        ))
    }
}
