//! sbr's keys: `table`, `gateways`, `addSourceHints`, checked before the
//! namespace is touched, with the reference's messages.

use std::net::IpAddr;

use cni::{Error, Request, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SbrNet {
    #[serde(default)]
    table: Option<i64>,
    #[serde(default)]
    gateways: Option<Vec<String>>,
    #[serde(default)]
    add_source_hints: Option<bool>,
}

/// Static gateways: at most one per family, used instead of prevResult's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

impl Gateways {
    pub fn for_family(&self, ip: IpAddr) -> Option<IpAddr> {
        if ip.is_ipv4() { self.v4 } else { self.v6 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A fixed table: only the source rules are added, no route is moved.
    pub table: Option<u32>,
    pub gateways: Gateways,
    pub add_source_hints: bool,
}

impl Config {
    pub fn load(req: &Request) -> Result<Config> {
        let net: SbrNet = req.plugin_config()?;
        let table = match net.table {
            None => None,
            // Table 0 is "unspecified" to the kernel and 253–255 are the
            // default, main and local tables: rules to them would not give
            // the interface a table of its own.
            Some(t @ (1..=252 | 256..=0xffff_ffff)) => Some(t as u32),
            Some(t) => {
                return Err(Error::invalid_config(format!(
                    "invalid table {t}: must be 1-252 or 256-4294967295"
                )));
            }
        };
        let gateways = if table.is_none() {
            parse_gateways(net.gateways.as_deref().unwrap_or_default())?
        } else {
            // The reference ignores gateways with a fixed table.
            Gateways::default()
        };
        Ok(Config {
            table,
            gateways,
            add_source_hints: net.add_source_hints.unwrap_or(false),
        })
    }
}

fn parse_gateways(list: &[String]) -> Result<Gateways> {
    if list.len() > 2 {
        return Err(Error::invalid_config(
            "gateways list cannot contain more than 2 entries (one IPv4, one IPv6)",
        ));
    }
    let mut out = Gateways::default();
    for gw in list {
        let ip = gw
            .parse::<IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| {
                Error::invalid_config(format!("invalid static gateway IP address: {gw}"))
            })?;
        let (slot, family) = if ip.is_ipv4() {
            (&mut out.v4, "IPv4")
        } else {
            (&mut out.v6, "IPv6")
        };
        if let Some(prev) = slot {
            return Err(Error::invalid_config(format!(
                "gateways list contains multiple {family} addresses: {prev} and {gw}"
            )));
        }
        *slot = Some(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Command, code};
    use serde_json::{Value, json};

    fn load(extra: Value) -> Result<Config> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let stdin = serde_json::to_vec(&conf).unwrap();
        let mut r = Request::from_config(Command::Add, &stdin, "").unwrap();
        r.container_id = "c1".into();
        r.netns = "/var/run/netns/x".into();
        r.ifname = "eth1".into();
        Config::load(&r)
    }

    #[test]
    fn defaults() {
        let c = load(json!({})).unwrap();
        assert_eq!(c.table, None);
        assert_eq!(c.gateways, Gateways::default());
        assert!(!c.add_source_hints);
    }

    #[test]
    fn gateways_one_per_family() {
        let c = load(json!({"gateways": ["192.168.1.1", "2001:db8::1"], "addSourceHints": true}))
            .unwrap();
        assert_eq!(c.gateways.v4, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(c.gateways.v6, Some("2001:db8::1".parse().unwrap()));
        assert!(c.add_source_hints);
        let e = load(json!({"gateways": ["10.0.0.1", "10.0.0.2"]})).unwrap_err();
        assert_eq!(
            e.msg,
            "gateways list contains multiple IPv4 addresses: 10.0.0.1 and 10.0.0.2"
        );
        let e = load(json!({"gateways": ["a", "b", "c"]})).unwrap_err();
        assert!(e.msg.contains("more than 2 entries"), "{}", e.msg);
        let e = load(json!({"gateways": ["10.0.0.300"]})).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(e.msg, "invalid static gateway IP address: 10.0.0.300");
    }

    #[test]
    fn table_range_and_type() {
        assert_eq!(load(json!({"table": 200})).unwrap().table, Some(200));
        assert_eq!(load(json!({"table": 70000})).unwrap().table, Some(70000));
        for bad in [0, 254, -1, 1i64 << 32] {
            let e = load(json!({ "table": bad })).unwrap_err();
            assert!(
                e.msg.starts_with(&format!("invalid table {bad}")),
                "{}",
                e.msg
            );
        }
        let e = load(json!({"table": "100"})).unwrap_err();
        assert!(e.msg.contains("table"), "{}", e.msg);
        // With a fixed table the gateways are not used, as in the reference.
        assert!(load(json!({"table": 100, "gateways": ["nope"]})).is_ok());
    }
}
