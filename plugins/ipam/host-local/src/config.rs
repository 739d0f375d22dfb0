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
