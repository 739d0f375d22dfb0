//! Results (spec §"Success"): the current (1.0/1.1) types, and conversion to
//! and from the older wire formats 0.4.0, 0.3.x and 0.1.0/0.2.0.
//!
//! Plugins build a [`CniResult`] in the current format; the skeleton converts
//! it to the `cniVersion` the runtime asked for. Conversion fails where the
//! reference fails: a result with no IP cannot be expressed as 0.1.0/0.2.0.

use crate::error::{Error, Result, code};
use crate::version::{CURRENT, Version};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// An interface created or configured by a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside a container; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, host bits kept (`10.1.2.5/24`).
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route (spec 1.1 adds `mtu`, `advmss`, `priority`, `table`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A success result in the current spec format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::decoding(format!("failed to decode {what}: {inner}"))
        } else {
            Error::decoding(format!("failed to decode {what}: {path}: {inner}"))
        }
    })
}

#[derive(Deserialize)]
struct Wire1 {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct Ip020 {
    ip: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Deserialize)]
struct Wire020 {
    #[serde(default)]
    ip4: Option<Ip020>,
    #[serde(default)]
    ip6: Option<Ip020>,
    #[serde(default)]
    dns: Dns,
}

fn strip_nulls(v: &mut Value) {
    // Go encoders write `null` for empty slices and absent pointers; treat
    // them as missing so our stricter types accept what Go plugins print.
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

impl CniResult {
    /// The IPs that belong on the interface named `ifname` (the reference's
    /// check in `ConfigureIface`): IPs without an interface index are
    /// skipped; an index that is out of range or names another interface is
    /// an error.
    pub fn ips_of(&self, ifname: &str) -> Result<Vec<&IpConfig>> {
        let mut out = Vec::new();
        for ipc in &self.ips {
            let Some(idx) = ipc.interface else { continue };
            if self.interfaces.get(idx).is_none_or(|i| i.name != ifname) {
                return Err(Error::internal(format!(
                    "failed to add IP addr {} to {ifname:?}: invalid interface index",
                    ipc.address
                )));
            }
            out.push(ipc);
        }
        Ok(out)
    }

    /// Parse a result printed in `version` (the version of the config that
    /// produced it) into the current format.
    pub fn from_value(mut v: Value, version: &str) -> Result<Self> {
        let ver = Version::parse(version)?;
        if !v.is_object() {
            return Err(Error::decoding(format!(
                "failed to decode result: expected a JSON object, got {v}"
            )));
        }
        strip_nulls(&mut v);
        if ver < Version::V0_3_0 {
            let w: Wire020 = decode(v, "result")?;
            let mut r = CniResult {
                dns: w.dns,
                ..Default::default()
            };
            for ip in [w.ip4, w.ip6].into_iter().flatten() {
                r.ips.push(IpConfig {
                    address: ip.ip,
                    gateway: ip.gateway,
                    interface: None,
                });
                r.routes.extend(ip.routes);
            }
            return Ok(r);
        }
        // 0.3.x and 0.4.0 carry an ip `version` field, which 1.0 dropped.
        if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
            for ip in ips {
                if let Some(m) = ip.as_object_mut() {
                    m.remove("version");
                }
            }
        }
        let w: Wire1 = decode(v, "result")?;
        for ip in &w.ips {
            if let Some(i) = ip.interface
                && i >= w.interfaces.len()
            {
                return Err(Error::decoding(format!(
                    "failed to decode result: ip {} refers to interface {i}, but there are only {} interfaces",
                    ip.address,
                    w.interfaces.len()
                )));
            }
        }
        Ok(CniResult {
            interfaces: w.interfaces,
            ips: w.ips,
            routes: w.routes,
            dns: w.dns,
        })
    }

    /// Parse result JSON text printed in `version`.
    pub fn from_slice(data: &[u8], version: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| Error::decoding(format!("failed to decode result: {e}")))?;
        Self::from_value(v, version)
    }

    /// The result as JSON in `version`.
    pub fn to_value(&self, version: &str) -> Result<Value> {
        let ver = Version::parse(version)?;
        if ver < Version::V0_3_0 {
            return self.to_020(version);
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        let mut interfaces = Vec::with_capacity(self.interfaces.len());
        for i in &self.interfaces {
            let mut v = to_json(i);
            if ver < Version::V1_0_0
                && let Some(m) = v.as_object_mut()
            {
                // 0.3.x/0.4.0 interfaces have only name, mac and sandbox.
                m.retain(|k, _| matches!(k.as_str(), "name" | "mac" | "sandbox"));
            }
            interfaces.push(v);
        }
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut v = to_json(ip);
                    if ver < Version::V1_0_0
                        && let Some(m) = v.as_object_mut()
                    {
                        let fam = if ip.address.is_ipv4() { "4" } else { "6" };
                        m.insert("version".into(), json!(fam));
                    }
                    v
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            out.insert(
                "routes".into(),
                Value::Array(self.routes.iter().map(to_json).collect()),
            );
        }
        out.insert("dns".into(), to_json(&self.dns));
        Ok(Value::Object(out))
    }

    fn to_020(&self, version: &str) -> Result<Value> {
        let v4 = self.ips.iter().find(|ip| ip.address.is_ipv4());
        let v6 = self.ips.iter().find(|ip| ip.address.is_ipv6());
        if v4.is_none() && v6.is_none() {
            return Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                "cannot convert: no valid IP addresses",
            )
            .with_details(format!(
                "a result without IP addresses cannot be expressed as {version}"
            )));
        }
        let section = |ip: &IpConfig, v4: bool| {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| {
                    let mut m = json!({ "dst": r.dst.to_string() });
                    if let Some(gw) = r.gw {
                        m["gw"] = json!(gw.to_string());
                    }
                    m
                })
                .collect();
            let mut m = json!({ "ip": ip.address.to_string() });
            if let Some(gw) = ip.gateway {
                m["gateway"] = json!(gw.to_string());
            }
            if !routes.is_empty() {
                m["routes"] = Value::Array(routes);
            }
            m
        };
        let mut out = json!({ "cniVersion": version });
        if let Some(ip) = v4 {
            out["ip4"] = section(ip, true);
        }
        if let Some(ip) = v6 {
            out["ip6"] = section(ip, false);
        }
        out["dns"] = to_json(&self.dns);
        Ok(out)
    }

    /// The result as JSON in the current version.
    pub fn to_current(&self) -> Value {
        // Cannot fail: the current format can express every result.
        self.to_value(CURRENT).unwrap_or(Value::Null)
    }
}

fn to_json<T: Serialize>(t: &T) -> Value {
    // Serialising these plain structs cannot fail (no maps with non-string
    // keys, no custom serialisers that error).
    serde_json::to_value(t).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("11:22:33:44:55:66".into()),
                    sandbox: Some("/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.2.5/24".parse().unwrap(),
                    gateway: Some("10.1.2.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "2001:db8::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.2.1".parse().unwrap()),
                ),
                Route {
                    mtu: Some(1400),
                    table: Some(100),
                    ..Route::new("::/0".parse().unwrap(), None)
                },
            ],
            dns: Dns {
                nameservers: vec!["10.1.2.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn current_round_trips() {
        let r = sample();
        let v = r.to_value("1.1.0").unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["ips"][0]["address"], "10.1.2.5/24");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["mtu"], 1500);
        assert_eq!(v["routes"][1]["table"], 100);
        assert_eq!(CniResult::from_value(v, "1.1.0").unwrap(), r);
    }

    #[test]
    fn to_040_adds_ip_version_and_drops_new_interface_fields() {
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let v = sample().to_value(ver).unwrap();
            assert_eq!(v["cniVersion"], ver);
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert!(v["interfaces"][0].get("mtu").is_none());
            let back = CniResult::from_value(v, ver).unwrap();
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.interfaces[0].mtu, None);
        }
    }

    #[test]
    fn to_020_keeps_first_ip_per_family_and_splits_routes() {
        let v = sample().to_value("0.2.0").unwrap();
        assert_eq!(v["ip4"]["ip"], "10.1.2.5/24");
        assert_eq!(v["ip4"]["gateway"], "10.1.2.1");
        assert_eq!(v["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v["ip6"]["ip"], "2001:db8::5/64");
        assert_eq!(v["ip6"]["routes"][0]["dst"], "::/0");
        assert!(v.get("interfaces").is_none());
        let back = CniResult::from_value(v, "0.2.0").unwrap();
        assert_eq!(back.ips.len(), 2);
        assert_eq!(back.ips[0].interface, None);
        assert_eq!(back.routes.len(), 2);
    }

    #[test]
    fn no_ip_cannot_be_020() {
        let r = CniResult {
            interfaces: sample().interfaces,
            ..Default::default()
        };
        for ver in ["0.1.0", "0.2.0"] {
            let e = r.to_value(ver).unwrap_err();
            assert_eq!(e.msg, "cannot convert: no valid IP addresses");
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        }
        assert!(r.to_value("0.3.1").is_ok());
    }

    #[test]
    fn parses_go_style_nulls_and_rejects_bad_indexes() {
        let v = json!({"cniVersion":"1.0.0","interfaces":null,"ips":[{"address":"10.0.0.2/24","interface":null}],"dns":{}});
        let r = CniResult::from_value(v, "1.0.0").unwrap();
        assert_eq!(r.ips[0].interface, None);
        let bad = json!({"ips":[{"address":"10.0.0.2/24","interface":3}]});
        let e = CniResult::from_value(bad, "1.0.0").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        assert!(e.msg.contains("interface 3"));
    }

    #[test]
    fn decode_errors_name_the_field() {
        let bad = json!({"ips":[{"address":"not-an-ip"}]});
        let e = CniResult::from_value(bad, "1.0.0").unwrap_err();
        assert!(e.msg.contains("ips[0].address"), "{}", e.msg);
        let e = CniResult::from_value(json!([1]), "1.0.0").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
    }
}
