//! A lease as the daemon keeps it (in memory and on disk) and as the plugin
//! turns it into a CNI result.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use cni::{CniResult, Dns, IpConfig, Route};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize};

use crate::config::LeaseOptions;

/// Lease time assumed when the server sends none (the reference's).
pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// An option 121 route: destination, prefix length, router (0.0.0.0:
/// on-link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClasslessRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub router: Ipv4Addr,
}

/// Who holds the lease, and how to reach its interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub client_id: String,
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    /// The namespace path as the daemon opens it (`-hostprefix` applied).
    pub netns: String,
    /// Device and inode of that namespace at ADD: a path that later names
    /// another namespace is not used.
    #[serde(default)]
    pub netns_id: Option<(u64, u64)>,
    pub options: LeaseOptions,
}

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server: Ipv4Addr,
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub classless_routes: Vec<ClasslessRoute>,
    /// Option 33 pairs (classful destination, router).
    #[serde(default)]
    pub static_routes: Vec<(Ipv4Addr, Ipv4Addr)>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub domain: String,
    /// Unix seconds of the ACK.
    pub bound_at: u64,
    pub lease_secs: u32,
    pub renew_secs: u32,
    pub rebind_secs: u32,
}

impl Binding {
    pub fn renew_at(&self) -> u64 {
        self.bound_at + u64::from(self.renew_secs)
    }
    pub fn rebind_at(&self) -> u64 {
        self.bound_at + u64::from(self.rebind_secs)
    }
    pub fn expires_at(&self) -> u64 {
        self.bound_at + u64::from(self.lease_secs)
    }
    pub fn expired(&self) -> bool {
        unix_now() >= self.expires_at()
    }
}

/// One lease: the record written under the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub attachment: Attachment,
    pub binding: Binding,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn classful(dst: Ipv4Addr) -> u8 {
    match dst.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn v4net(addr: Ipv4Addr, prefix: u8) -> Option<IpNetwork> {
    Ipv4Network::new(addr, prefix).ok().map(IpNetwork::V4)
}

impl Binding {
    /// The CNI result of the reference: the address with its mask and the
    /// first router as gateway; option 121 routes when the server sent
    /// any (RFC 3442: then 3 and 33 are ignored), otherwise option 33
    /// routes and a default route via the first router. DNS servers and
    /// domain (options 6 and 15) go to `dns`, which the reference leaves
    /// empty.
    pub fn to_result(&self, priority: u32) -> CniResult {
        let mut routes = Vec::new();
        let metric = (priority != 0).then_some(priority);
        if !self.classless_routes.is_empty() {
            for r in &self.classless_routes {
                let Some(dst) = v4net(r.dst, r.prefix) else {
                    continue;
                };
                let mut route = if r.router.is_unspecified() {
                    let mut route = Route::new(dst, None);
                    route.scope = Some(link::scope::LINK);
                    route
                } else {
                    Route::new(dst, Some(IpAddr::V4(r.router)))
                };
                route.priority = metric;
                routes.push(route);
            }
        } else {
            for (dst, gw) in &self.static_routes {
                if let Some(net) = v4net(*dst, classful(*dst)) {
                    let mut route = Route::new(net, Some(IpAddr::V4(*gw)));
                    route.priority = metric;
                    routes.push(route);
                }
            }
            if let (Some(gw), Some(default)) =
                (self.routers.first(), v4net(Ipv4Addr::UNSPECIFIED, 0))
            {
                let mut route = Route::new(default, Some(IpAddr::V4(*gw)));
                route.priority = metric;
                routes.push(route);
            }
        }
        let address = v4net(self.address, self.prefix)
            .unwrap_or(IpNetwork::V4(Ipv4Network::from(self.address)));
        CniResult {
            interfaces: Vec::new(),
            ips: vec![IpConfig {
                interface: None,
                address,
                gateway: self.routers.first().map(|g| IpAddr::V4(*g)),
            }],
            routes,
            dns: Dns {
                nameservers: self.dns.iter().map(ToString::to_string).collect(),
                domain: self.domain.clone(),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            address: Ipv4Addr::new(10, 9, 0, 50),
            prefix: 24,
            server: Ipv4Addr::new(10, 9, 0, 1),
            routers: vec![Ipv4Addr::new(10, 9, 0, 1)],
            classless_routes: vec![],
            static_routes: vec![(Ipv4Addr::new(172, 16, 0, 0), Ipv4Addr::new(10, 9, 0, 2))],
            dns: vec![Ipv4Addr::new(10, 9, 0, 1)],
            domain: "lan".into(),
            bound_at: 100,
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        }
    }

    #[test]
    fn router_gives_gateway_and_default_route() {
        let r = binding().to_result(0).to_current();
        assert_eq!(r["ips"][0]["address"], "10.9.0.50/24");
        assert_eq!(r["ips"][0]["gateway"], "10.9.0.1");
        assert_eq!(r["routes"][0]["dst"], "172.16.0.0/16");
        assert_eq!(r["routes"][1]["dst"], "0.0.0.0/0");
        assert_eq!(r["routes"][1]["gw"], "10.9.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.9.0.1");
    }

    #[test]
    fn classless_routes_replace_router_and_static_routes() {
        let mut b = binding();
        b.classless_routes = vec![
            ClasslessRoute {
                dst: Ipv4Addr::new(192, 168, 5, 0),
                prefix: 24,
                router: Ipv4Addr::UNSPECIFIED,
            },
            ClasslessRoute {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                router: Ipv4Addr::new(10, 9, 0, 254),
            },
        ];
        let r = b.to_result(7).to_current();
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["scope"], 253);
        assert_eq!(routes[1]["gw"], "10.9.0.254");
        assert_eq!(routes[1]["priority"], 7);
    }

    #[test]
    fn times_follow_the_ack() {
        let b = binding();
        assert_eq!(b.renew_at(), 1900);
        assert_eq!(b.rebind_at(), 3250);
        assert_eq!(b.expires_at(), 3700);
    }
}
