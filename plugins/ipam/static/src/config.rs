//! static's configuration: the `ipam` section's addresses, routes and DNS,
//! and the addresses a runtime may pass instead (CNI_ARGS `IP`/`GATEWAY`,
//! `args.cni.ips`, `runtimeConfig.ips`), with the reference's precedence
//! and messages (`plugins/ipam/static/main.go`).

use std::net::IpAddr;

use cni::{Dns, Error, IpConfig, Request, Result, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;

/// One `addresses` entry as written; both strings, parsed by us so that an
/// error names the field and the value.
#[derive(Debug, Default, Deserialize)]
struct AddressConf {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct IpamSection {
    #[serde(default)]
    addresses: Option<Vec<AddressConf>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Debug, Default, Deserialize)]
struct IpsOnly {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsSection {
    #[serde(default)]
    cni: Option<IpsOnly>,
}

#[derive(Debug, Deserialize)]
struct StaticNet {
    #[serde(default)]
    ipam: Option<IpamSection>,
    #[serde(default)]
    args: Option<ArgsSection>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<IpsOnly>,
}

/// The validated configuration: what ADD returns and CHECK compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addresses: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An address before validation: the text as given, and the parsed form
/// when it came from CNI_ARGS (parsed there, as the reference does, so
/// that `GATEWAY` can be matched against it).
struct Pending {
    text: String,
    parsed: Option<IpNetwork>,
    gateway: Option<IpAddr>,
}

impl Config {
    pub fn load(req: &Request) -> Result<Config> {
        let net: StaticNet = req.plugin_config()?;
        let Some(ipam) = net.ipam else {
            return Err(Error::invalid_config("IPAM config missing 'ipam' key"));
        };

        let mut pending = Vec::new();
        for (i, a) in ipam.addresses.unwrap_or_default().into_iter().enumerate() {
            let gateway = match a.gateway.as_deref() {
                None | Some("") => None,
                Some(s) => Some(parse_ip(s).ok_or_else(|| {
                    Error::invalid_config(format!(
                        "ipam.addresses[{i}].gateway: invalid IP address: {s}"
                    ))
                })?),
            };
            pending.push(Pending {
                text: a.address.unwrap_or_default(),
                parsed: None,
                gateway,
            });
        }

        if !req.args.pairs().is_empty() {
            req.args.check_known(&["IP", "GATEWAY"])?;
            if let Some(ips) = req.args.get("IP").filter(|s| !s.is_empty()) {
                for item in ips.split(',') {
                    let text = item.trim();
                    let parsed = parse_cidr(text).ok_or_else(|| {
                        Error::invalid_config(format!(
                            "the 'ip' field is expected to be in CIDR notation, got: '{text}'"
                        ))
                    })?;
                    pending.push(Pending {
                        text: text.to_string(),
                        parsed: Some(parsed),
                        gateway: None,
                    });
                }
            }
            if let Some(gws) = req.args.get("GATEWAY").filter(|s| !s.is_empty()) {
                for item in gws.split(',') {
                    let gw = parse_ip(item.trim()).ok_or_else(|| {
                        Error::invalid_config(format!("invalid gateway address: {item}"))
                    })?;
                    // Only addresses from CNI_ARGS are parsed at this point,
                    // so only they can take a gateway from GATEWAY.
                    for p in &mut pending {
                        if p.parsed.is_some_and(|n| n.contains(gw)) {
                            p.gateway = Some(gw);
                        }
                    }
                }
            }
        }

        // Each runtime list replaces everything before it.
        let lists = [
            net.args.and_then(|a| a.cni).and_then(|c| c.ips),
            net.runtime_config.and_then(|r| r.ips),
        ];
        for ips in lists.into_iter().flatten().filter(|l| !l.is_empty()) {
            pending = ips
                .into_iter()
                .map(|text| {
                    let parsed = parse_cidr(&text).ok_or_else(|| {
                        Error::invalid_config(format!(
                            "an entry in the 'ips' field is NOT in CIDR notation, got: '{text}'"
                        ))
                    })?;
                    Ok(Pending {
                        text,
                        parsed: Some(parsed),
                        gateway: None,
                    })
                })
                .collect::<Result<_>>()?;
        }

        let mut addresses = Vec::with_capacity(pending.len());
        for p in pending {
            let address = match p.parsed {
                Some(n) => n,
                None => parse_cidr(&p.text).ok_or_else(|| {
                    Error::invalid_config(format!(
                        "the 'address' field is expected to be in CIDR notation, got: '{}'",
                        p.text
                    ))
                })?,
            };
            addresses.push(IpConfig {
                address,
                gateway: p.gateway,
                interface: None,
            });
        }

        let v4 = addresses.iter().filter(|a| a.address.is_ipv4()).count();
        let v6 = addresses.len() - v4;
        if (v4 > 1 || v6 > 1) && matches!(req.version(), "0.1.0" | "0.2.0") {
            return Err(Error::invalid_config(format!(
                "CNI version {} does not support more than 1 address per family",
                req.version()
            )));
        }

        Ok(Config {
            addresses,
            routes: ipam.routes.unwrap_or_default(),
            dns: ipam.dns.unwrap_or_default(),
        })
    }
}

/// An address as Go's `net.ParseIP` reads it; IPv4-mapped IPv6 addresses
/// are IPv4, as Go prints them.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// `a.b.c.d/n` or `x::/n` with the host bits kept, as Go's `net.ParseCIDR`
/// reads it: a bare address, a signed or empty prefix, or one longer than
/// the address are refused.
pub fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (ip, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    IpNetwork::new(ip, prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Command, code};
    use serde_json::{Value, json};

    fn request(conf: Value, args: &str) -> Request {
        let stdin = serde_json::to_vec(&conf).unwrap();
        let mut r = Request::from_config(Command::Add, &stdin, args).unwrap();
        r.container_id = "c1".into();
        r.netns = "/var/run/netns/x".into();
        r
    }

    fn load(conf: Value, args: &str) -> Result<Config> {
        Config::load(&request(conf, args))
    }

    fn net(ipam: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": ipam})
    }

    fn addrs(c: &Config) -> Vec<(String, Option<String>)> {
        c.addresses
            .iter()
            .map(|a| (a.address.to_string(), a.gateway.map(|g| g.to_string())))
            .collect()
    }

    fn pair(a: &str, g: Option<&str>) -> (String, Option<String>) {
        (a.to_string(), g.map(str::to_string))
    }

    #[test]
    fn addresses_routes_and_dns_from_the_config_keep_host_bits() {
        let c = load(
            net(json!({"type": "static",
                "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
                              {"address": "3ffe:ffff:0:01ff::1/64"}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
                "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}})),
            "",
        )
        .unwrap();
        assert_eq!(
            addrs(&c),
            vec![
                pair("10.10.0.5/24", Some("10.10.0.1")),
                pair("3ffe:ffff:0:1ff::1/64", None)
            ]
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some("10.10.0.254".parse().unwrap()));
        assert_eq!(c.dns.nameservers, vec!["8.8.8.8"]);
        assert_eq!(c.dns.domain, "example.com");
    }

    #[test]
    fn missing_ipam_and_bad_addresses_name_the_value() {
        let e = load(json!({"cniVersion": "1.0.0", "name": "n"}), "").unwrap_err();
        assert_eq!(e.msg, "IPAM config missing 'ipam' key");
        for bad in [
            "10.0.0.5",
            "10.0.0.500/24",
            "10.0.0.5/33",
            "10.0.0.5/+8",
            "x/8",
            "",
        ] {
            let e = load(net(json!({"addresses": [{"address": bad}]})), "").unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("the 'address' field is expected to be in CIDR notation, got: '{bad}'")
            );
        }
        let e = load(
            net(json!({"addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.300"}]})),
            "",
        )
        .unwrap_err();
        assert_eq!(
            e.msg,
            "ipam.addresses[0].gateway: invalid IP address: 10.0.0.300"
        );
        let e = load(net(json!({"addresses": [{"address": 5}]})), "").unwrap_err();
        assert!(e.msg.contains("ipam.addresses[0].address"), "{}", e.msg);
    }

    #[test]
    fn cni_args_ip_and_gateway_add_to_the_config() {
        let c = load(
            net(json!({"addresses": [{"address": "10.10.0.5/24"}]})),
            "IP=10.20.0.5/24, 2001:db8::5/64;GATEWAY=10.20.0.1,2001:db8::1",
        )
        .unwrap();
        assert_eq!(
            addrs(&c),
            vec![
                pair("10.10.0.5/24", None),
                pair("10.20.0.5/24", Some("10.20.0.1")),
                pair("2001:db8::5/64", Some("2001:db8::1")),
            ]
        );
        let e = load(net(json!({})), "IP=10.20.0.5").unwrap_err();
        assert_eq!(
            e.msg,
            "the 'ip' field is expected to be in CIDR notation, got: '10.20.0.5'"
        );
        let e = load(net(json!({})), "IP=10.20.0.5/24;GATEWAY=nope").unwrap_err();
        assert_eq!(e.msg, "invalid gateway address: nope");
        let e = load(net(json!({})), "K8S_POD_NAME=p").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(
            load(net(json!({})), "IgnoreUnknown=1;K8S_POD_NAME=p").is_ok(),
            "IgnoreUnknown"
        );
    }

    #[test]
    fn args_and_runtime_config_replace_what_came_before() {
        let ipam = json!({"addresses": [{"address": "not an address"}]});
        let mut conf = net(ipam);
        conf["args"] = json!({"cni": {"ips": ["10.30.0.5/24"]}});
        let c = load(conf.clone(), "IP=10.20.0.5/24").unwrap();
        assert_eq!(addrs(&c), vec![pair("10.30.0.5/24", None)]);
        conf["runtimeConfig"] = json!({"ips": ["10.40.0.5/16", "2001:db8::9/64"]});
        let c = load(conf.clone(), "").unwrap();
        assert_eq!(
            addrs(&c),
            vec![pair("10.40.0.5/16", None), pair("2001:db8::9/64", None)]
        );
        conf["runtimeConfig"] = json!({"ips": ["10.40.0.5"]});
        let e = load(conf, "").unwrap_err();
        assert_eq!(
            e.msg,
            "an entry in the 'ips' field is NOT in CIDR notation, got: '10.40.0.5'"
        );
    }

    #[test]
    fn old_versions_take_one_address_per_family() {
        let mut conf =
            net(json!({"addresses": [{"address": "10.0.0.5/24"}, {"address": "10.0.1.5/24"}]}));
        conf["cniVersion"] = json!("0.2.0");
        let e = load(conf.clone(), "").unwrap_err();
        assert_eq!(
            e.msg,
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        conf["cniVersion"] = json!("0.3.1");
        assert_eq!(load(conf, "").unwrap().addresses.len(), 2);
    }
}
