//! host-local's configuration: the `ipam` section, the runtime's extra
//! range sets and requested addresses, validated into range sets with the
//! reference's messages (`backend/allocator/config.go`).

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{Error, Request, Result, Route};
use ipam_store::{DEFAULT_DATA_DIR, Range, RangeSet};
use ipnetwork::IpNetwork;
use serde::Deserialize;

/// One range as written in JSON (all strings, parsed by us so that errors
/// can name the field and the value).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

/// The `ipam` section.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamSection {
    // The legacy single range at the top level of `ipam`. Spelled out
    // rather than `#[serde(flatten)]`ed so that type errors name the key.
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HostLocalNet {
    #[serde(default)]
    ipam: Option<IpamSection>,
}

/// Everything a verb needs, validated.
#[derive(Debug)]
pub struct Config {
    pub network: String,
    pub data_dir: PathBuf,
    /// In the reference's order: `runtimeConfig.ipRanges`, then the legacy
    /// top-level range, then `ranges`. The index is `last_reserved_ip.<i>`.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
    /// From `CNI_ARGS` `IP=`, `args.cni.ips`, `runtimeConfig.ips`, in that
    /// order, without duplicates.
    pub requested: Vec<IpAddr>,
}

impl Config {
    /// For ADD, DEL and CHECK: at least one range set is required.
    pub fn load(req: &Request) -> Result<Config> {
        Self::load_inner(req, true)
    }

    /// For GC and STATUS, which get no `runtimeConfig`: a network whose
    /// ranges all come from the `ipRanges` capability has none configured,
    /// yet its reservations must still be collected and its dataDir checked.
    pub fn load_allowing_no_ranges(req: &Request) -> Result<Config> {
        Self::load_inner(req, false)
    }

    fn load_inner(req: &Request, require_ranges: bool) -> Result<Config> {
        let net: HostLocalNet = req.plugin_config()?;
        let Some(ipam) = net.ipam else {
            return Err(Error::invalid_config("IPAM config missing 'ipam' key"));
        };
        let requested = requested_ips(req)?;

        let mut raw_sets: Vec<(String, Vec<RangeConf>)> = Vec::new();
        if let Some(extra) = req
            .config
            .runtime_config
            .as_ref()
            .and_then(|r| r.ip_ranges.as_ref())
        {
            for (i, set) in extra.iter().enumerate() {
                let mut ranges = Vec::new();
                for (j, v) in set.iter().enumerate() {
                    let r: RangeConf = serde_json::from_value(v.clone()).map_err(|e| {
                        Error::invalid_config(format!("runtimeConfig.ipRanges[{i}][{j}]: {e}"))
                    })?;
                    ranges.push(r);
                }
                raw_sets.push((format!("runtimeConfig.ipRanges[{i}]"), ranges));
            }
        }
        if ipam.subnet.is_some() {
            let legacy = RangeConf {
                subnet: ipam.subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            };
            raw_sets.push(("ipam".to_string(), vec![legacy]));
        }
        for (i, set) in ipam.ranges.into_iter().enumerate() {
            raw_sets.push((format!("ipam.ranges[{i}]"), set));
        }
        if raw_sets.is_empty() && require_ranges {
            return Err(Error::invalid_config("no IP ranges specified"));
        }

        let mut range_sets = Vec::new();
        for (i, (field, raw)) in raw_sets.iter().enumerate() {
            let set = build_set(field, raw)
                .map_err(|msg| Error::invalid_config(format!("invalid range set {i}: {msg}")))?;
            range_sets.push(set);
        }

        let v4 = range_sets.iter().filter(|s| s.is_ipv4()).count();
        let v6 = range_sets.len() - v4;
        if (v4 > 1 || v6 > 1) && version_below_0_3(req.version()) {
            return Err(Error::invalid_config(format!(
                "CNI version {} does not support more than 1 address per family",
                req.version()
            )));
        }
        for (i, a) in range_sets.iter().enumerate() {
            if let Some(j) = range_sets[i + 1..].iter().position(|b| a.overlaps(b)) {
                return Err(Error::invalid_config(format!(
                    "range set {i} overlaps with {}",
                    i + j + 1
                )));
            }
        }

        Ok(Config {
            network: req.config.name.clone(),
            data_dir: PathBuf::from(
                ipam.data_dir
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
            ),
            range_sets,
            routes: ipam.routes,
            resolv_conf: ipam
                .resolv_conf
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            requested,
        })
    }
}

fn version_below_0_3(v: &str) -> bool {
    matches!(v, "0.1.0" | "0.2.0")
}

/// Validates one set; the message is what follows "invalid range set i: ".
fn build_set(field: &str, raw: &[RangeConf]) -> std::result::Result<RangeSet, String> {
    let mut ranges = Vec::new();
    for (j, r) in raw.iter().enumerate() {
        // The legacy range is not in a list: `ipam.subnet`, not `ipam[0].subnet`.
        let at = |key: &str| {
            if field == "ipam" {
                format!("{field}.{key}")
            } else {
                format!("{field}[{j}].{key}")
            }
        };
        let subnet = match r.subnet.as_deref() {
            Some(s) => parse_cidr(s).map_err(|e| format!("{}: {e}", at("subnet")))?,
            None => return Err(format!("{}: missing", at("subnet"))),
        };
        let ip = |key: &str, v: &Option<String>| -> std::result::Result<Option<IpAddr>, String> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| format!("{}: invalid IP address: {s}", at(key)))
                })
                .transpose()
        };
        let start = ip("rangeStart", &r.range_start)?;
        let end = ip("rangeEnd", &r.range_end)?;
        let gateway = ip("gateway", &r.gateway)?;
        ranges.push(Range::new(subnet, start, end, gateway).map_err(|e| e.to_string())?);
    }
    RangeSet::new(ranges).map_err(|e| e.to_string())
}

/// `a.b.c.d/n` or `x::/n`; unlike `IpNetwork::from_str`, a bare address
/// (no prefix) is refused, as Go's `net.ParseCIDR` does.
fn parse_cidr(s: &str) -> std::result::Result<IpNetwork, String> {
    let bad = || format!("invalid CIDR address: {s}");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNetwork::new(ip.to_canonical(), prefix).map_err(|_| bad())
}

/// Requested addresses from every source, in the reference's order. A
/// prefix length is accepted and ignored (the range decides the mask).
fn requested_ips(req: &Request) -> Result<Vec<IpAddr>> {
    let mut raw: Vec<String> = Vec::new();
    if !req.args.pairs().is_empty() {
        req.args.check_known(&["IP"])?;
        if let Some(ip) = req.args.get("IP") {
            raw.push(ip.to_string());
        }
    }
    if let Some(ips) = req
        .config
        .args
        .as_ref()
        .and_then(|a| a.cni.as_ref())
        .and_then(|c| c.ips.as_ref())
    {
        raw.extend(ips.iter().cloned());
    }
    if let Some(ips) = req
        .config
        .runtime_config
        .as_ref()
        .and_then(|r| r.ips.as_ref())
    {
        raw.extend(ips.iter().cloned());
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for s in raw {
        let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
        let ip = addr
            .parse::<IpAddr>()
            .map_err(|_| {
                Error::invalid_config(format!("cannot understand ip: IP {s} not v4 nor v6"))
            })?
            .to_canonical();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use serde_json::{Value, json};

    fn request_with(conf: Value, cni_args: &str) -> Request {
        let bytes = serde_json::to_vec(&conf).unwrap();
        Request::from_config(Command::Add, &bytes, cni_args).unwrap()
    }

    fn net(ipam: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam})
    }

    fn load(conf: Value) -> Result<Config> {
        Config::load(&request_with(conf, ""))
    }

    fn error_of(conf: Value) -> String {
        load(conf).unwrap_err().msg
    }

    fn subnets(c: &Config) -> Vec<String> {
        c.range_sets
            .iter()
            .map(|s| s.ranges()[0].subnet().to_string())
            .collect()
    }

    #[test]
    fn runtime_ranges_then_legacy_range_then_ranges_with_defaults() {
        let mut conf = net(json!({
            "type": "host-local",
            "subnet": "10.1.0.0/24",
            "ranges": [[{"subnet": "10.2.0.0/24"}], [{"subnet": "fd00::/64"}]],
        }));
        conf["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.3.0.0/24"}]]});
        let c = load(conf).unwrap();
        assert_eq!(
            subnets(&c),
            ["10.3.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "fd00::/64"]
        );
        assert_eq!(c.network, "net1");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.resolv_conf, None);
        assert!(c.requested.is_empty());
        let r = &c.range_sets[1].ranges()[0];
        // As the reference: the range starts at .1; the allocator skips the gateway.
        assert_eq!(r.start().to_string(), "10.1.0.1");
        assert_eq!(r.end().to_string(), "10.1.0.254");
        assert_eq!(r.gateway().to_string(), "10.1.0.1");
    }

    #[test]
    fn empty_data_dir_and_resolv_conf_mean_the_defaults() {
        let c = load(net(json!({
            "type": "host-local", "subnet": "10.1.0.0/24", "dataDir": "", "resolvConf": ""
        })))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.resolv_conf, None);
        let c = load(net(json!({
            "type": "host-local", "subnet": "10.1.0.0/24", "dataDir": "/tmp/d",
            "resolvConf": "/etc/r.conf"
        })))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/r.conf")));
    }

    #[test]
    fn missing_ipam_or_ranges_are_the_reference_errors() {
        assert_eq!(
            error_of(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"})),
            "IPAM config missing 'ipam' key"
        );
        let no_ranges = net(json!({"type": "host-local"}));
        assert_eq!(error_of(no_ranges.clone()), "no IP ranges specified");
        // GC and STATUS get no runtimeConfig: no ranges is fine there.
        let c = Config::load_allowing_no_ranges(&request_with(no_ranges, "")).unwrap();
        assert!(c.range_sets.is_empty());
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        assert_eq!(
            error_of(net(json!({"type": "host-local", "subnet": "10.0.0.1"}))),
            "invalid range set 0: ipam.subnet: invalid CIDR address: 10.0.0.1"
        );
        assert_eq!(
            error_of(net(json!({
                "type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "x"
            }))),
            "invalid range set 0: ipam.rangeStart: invalid IP address: x"
        );
        assert_eq!(
            error_of(net(json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.300"}]]
            }))),
            "invalid range set 1: ipam.ranges[1][0].gateway: invalid IP address: 10.9.0.300"
        );
        assert_eq!(
            error_of(net(
                json!({"type": "host-local", "ranges": [[{"rangeStart": "10.0.0.1"}]]})
            )),
            "invalid range set 0: ipam.ranges[0][0].subnet: missing"
        );
        let mut conf = net(json!({"type": "host-local", "subnet": "10.0.0.0/24"}));
        conf["runtimeConfig"] = json!({"ipRanges": [[{"subnet": 7}]]});
        let msg = error_of(conf);
        assert!(msg.starts_with("runtimeConfig.ipRanges[0][0]: "), "{msg}");
    }

    #[test]
    fn overlapping_sets_are_refused() {
        assert_eq!(
            error_of(net(json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.0.0.0/16"}], [{"subnet": "10.0.5.0/24"}]]
            }))),
            "range set 0 overlaps with 1"
        );
    }

    #[test]
    fn old_versions_allow_one_address_per_family() {
        let two_v4 = |version: &str| {
            let mut conf = net(json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]
            }));
            conf["cniVersion"] = json!(version);
            load(conf)
        };
        assert_eq!(
            two_v4("0.2.0").unwrap_err().msg,
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        assert_eq!(two_v4("0.3.1").unwrap().range_sets.len(), 2);
    }

    #[test]
    fn requested_addresses_from_every_source_in_order_without_duplicates() {
        let mut conf = net(json!({"type": "host-local", "subnet": "10.0.0.0/24"}));
        conf["args"] = json!({"cni": {"ips": ["10.0.0.6/24", "10.0.0.5"]}});
        conf["runtimeConfig"] = json!({"ips": ["10.0.0.7"]});
        let c = Config::load(&request_with(conf, "IP=10.0.0.5")).unwrap();
        let got: Vec<String> = c.requested.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(got, ["10.0.0.5", "10.0.0.6", "10.0.0.7"]);
    }

    #[test]
    fn bad_requested_addresses_and_unknown_args_are_refused() {
        let conf = net(json!({"type": "host-local", "subnet": "10.0.0.0/24"}));
        let e = Config::load(&request_with(conf.clone(), "IP=zz")).unwrap_err();
        assert_eq!(e.msg, "cannot understand ip: IP zz not v4 nor v6");
        assert!(Config::load(&request_with(conf.clone(), "FOO=1")).is_err());
        let c = Config::load(&request_with(conf, "IgnoreUnknown=1;FOO=1")).unwrap();
        assert!(c.requested.is_empty());
    }
}
