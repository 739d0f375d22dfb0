//! Routes: add, delete, list, and ask the kernel which way a packet goes.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use crate::connection::Netlink;
use crate::error::{Error, Result, ctx};

/// Route scopes (`RT_SCOPE_*`) as numbers, the way CNI results carry them.
pub mod scope {
    pub const UNIVERSE: u8 = 0;
    pub const LINK: u8 = 253;
    pub const HOST: u8 = 254;
}

/// A unicast route, with the fields CNI results can express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; host bits are ignored.
    pub destination: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Metric (`RTA_PRIORITY`).
    pub priority: Option<u32>,
    /// Routing table; `None` is the main table.
    pub table: Option<u32>,
    /// `None` is universe (global).
    pub scope: Option<u8>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
}

impl Route {
    /// A route to `destination` with nothing else set.
    pub fn to(destination: IpNetwork) -> Self {
        Route {
            destination,
            gateway: None,
            oif: None,
            priority: None,
            table: None,
            scope: None,
            mtu: None,
            advmss: None,
        }
    }

    fn to_message(&self) -> Result<RouteMessage> {
        let invalid = |e| invalid_route(self, e);
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.destination.network(), self.destination.prefix())
            .map_err(invalid)?;
        if let Some(gw) = self.gateway {
            b = b.gateway(gw).map_err(invalid)?;
        }
        if let Some(oif) = self.oif {
            b = b.output_interface(oif);
        }
        if let Some(p) = self.priority {
            b = b.priority(p);
        }
        if let Some(t) = self.table {
            b = b.table_id(t);
        }
        if let Some(s) = self.scope {
            b = b.scope(RouteScope::from(s));
        }
        // RTPROT_BOOT, what `ip route add` and the reference's netlink
        // library use, so routes look the same whoever made them.
        b = b.protocol(RouteProtocol::Boot);
        let mut msg = b.build();
        let mut metrics = Vec::new();
        if let Some(m) = self.mtu {
            metrics.push(RouteMetric::Mtu(m));
        }
        if let Some(m) = self.advmss {
            metrics.push(RouteMetric::Advmss(m));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        Ok(msg)
    }

    fn from_message(msg: &RouteMessage) -> Option<Self> {
        let family = msg.header.address_family;
        let mut dst = None;
        let mut route = Route::to(default_network(family)?);
        let mut table = u32::from(msg.header.table);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = to_ip(a),
                RouteAttribute::Gateway(a) => route.gateway = to_ip(a),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Priority(p) => route.priority = Some(*p),
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        match m {
                            RouteMetric::Mtu(v) => route.mtu = Some(*v),
                            RouteMetric::Advmss(v) => route.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(ip) = dst {
            route.destination = IpNetwork::new(ip, msg.header.destination_prefix_length).ok()?;
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            route.table = Some(table);
        }
        let s: u8 = msg.header.scope.into();
        if s != scope::UNIVERSE {
            route.scope = Some(s);
        }
        Some(route)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev {oif}")?;
        }
        if let Some(p) = self.priority {
            write!(f, " metric {p}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        Ok(())
    }
}

/// rtnetlink does not export its builder error type, so take anything printable.
fn invalid_route(route: &Route, e: impl fmt::Display) -> Error {
    Error::Invalid(format!("route {route}: {e}"))
}

fn to_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn default_network(family: AddressFamily) -> Option<IpNetwork> {
    match family {
        AddressFamily::Inet => IpNetwork::new(IpAddr::from([0u8; 4]), 0).ok(),
        AddressFamily::Inet6 => IpNetwork::new(IpAddr::from([0u16; 8]), 0).ok(),
        _ => None,
    }
}

impl Netlink {
    /// Add a route; an identical existing route is an EEXIST error.
    pub fn add_route(&self, route: &Route) -> Result<()> {
        let req = self.handle().route().add(route.to_message()?);
        self.block_on(req.execute())
            .map_err(ctx("add route", route))
    }

    /// Delete a route. Returns `false` if there was no such route.
    pub fn delete_route(&self, route: &Route) -> Result<bool> {
        let req = self.handle().route().del(route.to_message()?);
        match self.block_on(req.execute()) {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = ctx("delete route", route)(e);
                if e.errno() == Some(libc::ESRCH) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Unicast routes of one family in every table (`ipv6` selects the family).
    pub fn routes(&self, ipv6: bool) -> Result<Vec<Route>> {
        // A bare header: with strict checking on (see the connection), every
        // non-zero field of a dump request is a filter, and the builder's
        // defaults (main table, boot protocol, unicast) would hide routes.
        let mut msg = RouteMessage::default();
        msg.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let req = self.handle().route().get(msg);
        let msgs: Vec<RouteMessage> = self
            .block_on(req.execute().try_collect())
            .map_err(ctx("list routes", if ipv6 { "ipv6" } else { "ipv4" }))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.kind == RouteType::Unicast)
            .filter_map(Route::from_message)
            .collect())
    }

    /// Routes leaving through link `index` (main and other tables).
    pub fn routes_via(&self, index: u32) -> Result<Vec<Route>> {
        let mut all = self.routes(false)?;
        all.extend(self.routes(true)?);
        all.retain(|r| r.oif == Some(index));
        Ok(all)
    }

    /// Output interface the kernel would use to reach `dst` (`ip route get`),
    /// or `None` when it is unreachable.
    pub fn route_get(&self, dst: IpAddr) -> Result<Option<u32>> {
        // Only family, destination length and destination: under strict
        // checking the kernel refuses a get request whose table, protocol,
        // scope or type are set (the builder's defaults).
        let mut msg = RouteMessage::default();
        let (family, prefix, address) = match dst {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        msg.header.address_family = family;
        msg.header.destination_prefix_length = prefix;
        msg.attributes.push(RouteAttribute::Destination(address));
        let req = self.handle().route().get(msg);
        match self.block_on(req.execute().try_next()) {
            Ok(Some(m)) => Ok(Route::from_message(&m).and_then(|r| r.oif)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = ctx("route get", dst)(e);
                if matches!(
                    e.errno(),
                    Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                ) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}
