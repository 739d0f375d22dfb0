//! tuning's configuration: the reference's keys (`parseConf` in
//! `plugins/meta/tuning/tuning.go`), its override order for the MAC
//! (`mac` < CNI_ARGS `MAC` < `runtimeConfig.mac` < `args.cni.mac`) and for
//! the other `args.cni.*` keys, validated before anything is changed.
//!
//! Differences from the reference:
//! - `args.cni.sysctl` without a top-level `sysctl` works (the reference
//!   writes into a nil map and panics).
//! - Sysctl keys are split on `.` into path components *before* `IFNAME`
//!   is substituted, and a `/` inside a component stands for a `.` (the
//!   sysctl(8) convention), so `net.ipv4.conf.IFNAME.rp_filter` with
//!   ifname `eth0.100` and `net.ipv4.conf.eth0/100.rp_filter` both name
//!   `net/ipv4/conf/eth0.100/rp_filter`, the kernel's path.
//! - Every key, the MAC, the MTU and txQLen are checked up front: a bad one
//!   is an error naming the key and value, and nothing is changed.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use cni::{Error, Request, Result};
use link::MacAddr;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
pub const DEFAULT_ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";
/// Overrides [`DEFAULT_ALLOWLIST`]; meant for tests, which cannot write
/// the machine's `/etc`.
pub const ALLOWLIST_ENV: &str = "CNI_TUNING_ALLOWLIST";

/// Smallest and largest MTU accepted (IPv4's minimum; the largest any
/// Ethernet-like link takes). The kernel may refuse less for a given link.
pub const MIN_MTU: i64 = 68;
pub const MAX_MTU: i64 = 65535;

/// A JSON object of string values whose keys may not repeat (the
/// reference refuses duplicated sysctl keys).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sysctls(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sysctls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of sysctl names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Sysctls, A::Error> {
                let mut seen = HashSet::new();
                let mut out = vec![];
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicated sysctl keys are not allowed: {k:?}"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Sysctls(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
struct ArgsCniKeys {
    #[serde(default)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsKeys {
    #[serde(default)]
    cni: Option<ArgsCniKeys>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeKeys {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(default)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RuntimeKeys>,
    #[serde(default)]
    args: Option<ArgsKeys>,
}

/// One sysctl to set: the key as configured, the path under `/proc/sys`
/// it names for this interface, and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub path: String,
    pub value: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub sysctls: Vec<Sysctl>,
    pub mac: Option<MacAddr>,
    /// Only `true` does something on ADD (the reference's rule); CHECK
    /// compares either way.
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub txqlen: Option<u32>,
    pub allmulti: Option<bool>,
}

impl Config {
    /// Whether any link attribute is to be changed.
    pub fn changes_link(&self) -> bool {
        self.mac.is_some()
            || self.promisc
            || self.mtu.is_some()
            || self.txqlen.is_some()
            || self.allmulti.is_some()
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_config(msg)
}

/// The `/proc/sys` path (relative, `net/...`) that sysctl `key` names for
/// interface `ifname`, or an error naming the key and value.
pub fn sysctl_path(key: &str, value: &str, ifname: &str) -> Result<String> {
    let bad = |why: &str| {
        invalid(format!(
            "invalid net sysctl key: {key:?} (value {value:?}): {why}"
        ))
    };
    let mut parts = vec![];
    let mut substituted = false;
    for comp in key.split('.') {
        let comp = if comp == "IFNAME" && !substituted {
            substituted = true;
            ifname.to_string()
        } else {
            comp.replace('/', ".")
        };
        if comp.is_empty() || comp == "." || comp == ".." || comp.contains('\0') {
            return Err(bad("empty or relative path component"));
        }
        parts.push(comp);
    }
    if parts.len() < 2 || parts[0] != "net" {
        return Err(bad("only net.* sysctls may be set"));
    }
    Ok(parts.join("/"))
}

/// The allowlist's regexes, or `None` when the file does not exist (then
/// every `net.*` key is allowed, as in the reference).
fn read_allowlist() -> Result<Option<(String, Vec<regex::Regex>)>> {
    let path = std::env::var(ALLOWLIST_ENV).unwrap_or_else(|_| DEFAULT_ALLOWLIST.to_string());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(format!(
                "failed to read sysctl allowlist {path}: {e}"
            )));
        }
    };
    let mut lines = vec![];
    let mut res = vec![];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let re = regex::Regex::new(line).map_err(|e| {
            invalid(format!(
                "invalid regular expression {line:?} in {path}: {e}"
            ))
        })?;
        lines.push(line.to_string());
        res.push(re);
    }
    Ok(Some((format!("[{}]", lines.join(" ")), res)))
}

fn mtu(v: i64, key: &str) -> Result<Option<u32>> {
    if v == 0 {
        return Ok(None);
    }
    if !(MIN_MTU..=MAX_MTU).contains(&v) {
        return Err(invalid(format!(
            "invalid {key} {v}: must be between {MIN_MTU} and {MAX_MTU}"
        )));
    }
    Ok(Some(v as u32))
}

fn txqlen(v: i64, key: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        invalid(format!(
            "invalid {key} {v}: must be between 0 and {}",
            u32::MAX
        ))
    })
}

fn mac(v: &str, key: &str) -> Result<MacAddr> {
    v.parse::<MacAddr>()
        .map_err(|e| invalid(format!("invalid args {v} for MAC addr ({key}): {e}")))
}

#[derive(Deserialize)]
struct DupArgsCni {
    #[serde(default)]
    #[allow(dead_code)]
    sysctl: Option<Sysctls>,
}

#[derive(Deserialize)]
struct DupArgs {
    #[serde(default)]
    #[allow(dead_code)]
    cni: Option<DupArgsCni>,
}

#[derive(Deserialize)]
struct DupCheck {
    #[serde(default)]
    #[allow(dead_code)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    #[allow(dead_code)]
    args: Option<DupArgs>,
}

/// Refuse a sysctl key given twice in one object. This reads the raw
/// text: once decoded into a JSON value, the last duplicate has won.
pub fn check_duplicates(data: &[u8]) -> Result<()> {
    match serde_json::from_slice::<DupCheck>(data) {
        Err(e) if e.to_string().contains("duplicated sysctl keys") => {
            Err(invalid(format!("invalid network config: {e}")))
        }
        // Other errors are reported by the typed parse, with its codes.
        _ => Ok(()),
    }
}

/// Only `dataDir` (and the JSON's shape): what DEL, GC and STATUS need, so
/// a configuration that ADD would refuse can still be cleaned up.
pub fn data_dir(req: &Request) -> Result<PathBuf> {
    let keys: Keys = req.plugin_config()?;
    Ok(PathBuf::from(
        keys.data_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
    ))
}

/// Parse and validate everything. `ifname` is the attachment's
/// (empty for GC/STATUS, where no sysctl path is computed).
pub fn parse(req: &Request) -> Result<Config> {
    let keys: Keys = req.plugin_config()?;
    check_duplicates(&req.stdin)?;
    // CNI_ARGS: only MAC is known (IgnoreUnknown as in the reference).
    req.args.check_known(&["MAC"])?;
    parse_keys(keys, req.args.get("MAC"), &req.ifname)
}

fn parse_keys(keys: Keys, env_mac: Option<&str>, ifname: &str) -> Result<Config> {
    let data_dir = PathBuf::from(
        keys.data_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
    );
    let mut mac_src: Option<(String, &str)> =
        keys.mac.filter(|m| !m.is_empty()).map(|m| (m, "mac"));
    if let Some(m) = env_mac.filter(|m| !m.is_empty()) {
        mac_src = Some((m.to_string(), "CNI_ARGS MAC"));
    }
    if let Some(m) = keys
        .runtime_config
        .and_then(|r| r.mac)
        .filter(|m| !m.is_empty())
    {
        mac_src = Some((m, "runtimeConfig.mac"));
    }
    let mut sysctls = keys.sysctl.unwrap_or_default().0;
    let mut promisc = keys.promisc.unwrap_or(false);
    let mut mtu_v = mtu(keys.mtu.unwrap_or(0), "mtu")?;
    let mut txq = keys.txqlen.map(|v| txqlen(v, "txQLen")).transpose()?;
    let mut allmulti = keys.allmulti;
    if let Some(a) = keys.args.and_then(|a| a.cni) {
        for (k, v) in a.sysctl.unwrap_or_default().0 {
            match sysctls.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => sysctls.push((k, v)),
            }
        }
        if let Some(m) = a.mac {
            mac_src = Some((m, "args.cni.mac"));
        }
        if let Some(p) = a.promisc {
            promisc = p;
        }
        if let Some(m) = a.mtu {
            mtu_v = mtu(m, "args.cni.mtu")?;
        }
        if let Some(a) = a.allmulti {
            allmulti = Some(a);
        }
        if let Some(q) = a.txqlen {
            txq = Some(txqlen(q, "args.cni.txQLen")?);
        }
    }
    let mac = match mac_src {
        Some((m, key)) if !m.is_empty() => Some(mac(&m, key)?),
        _ => None,
    };
    let mut out = vec![];
    for (key, value) in &sysctls {
        out.push(Sysctl {
            key: key.clone(),
            path: sysctl_path(key, value, ifname)?,
            value: value.clone(),
        });
    }
    if !out.is_empty()
        && let Some((shown, allow)) = read_allowlist()?
    {
        for s in &out {
            if !allow.iter().any(|re| re.is_match(&s.key)) {
                return Err(invalid(format!(
                    "Sysctl {} is not allowed (value {:?}). Only the following sysctls are allowed: {shown}",
                    s.key, s.value
                )));
            }
        }
    }
    Ok(Config {
        data_dir,
        sysctls: out,
        mac,
        promisc,
        mtu: mtu_v,
        txqlen: txq,
        allmulti,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: serde_json::Value, env_mac: Option<&str>, ifname: &str) -> Result<Config> {
        let keys: Keys = cni::config::config_from_value(v)?;
        parse_keys(keys, env_mac, ifname)
    }

    fn ok(v: serde_json::Value) -> Config {
        parse_json(v, None, "eth0").unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        parse_json(v, None, "eth0").unwrap_err().msg
    }

    #[test]
    fn empty_config_changes_nothing() {
        let c = ok(json!({"type": "tuning"}));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.sysctls.is_empty());
        assert!(!c.changes_link());
    }

    #[test]
    fn sysctl_paths_substitute_ifname_and_keep_dots_in_names() {
        let c = parse_json(
            json!({"sysctl": {
                "net.ipv4.conf.IFNAME.rp_filter": "1",
                "net.ipv4.conf.eth1/200.arp_notify": "1",
                "net.core.somaxconn": "512",
            }}),
            None,
            "eth0.100",
        )
        .unwrap();
        let paths: Vec<&str> = c.sysctls.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "net/ipv4/conf/eth0.100/rp_filter",
                "net/ipv4/conf/eth1.200/arp_notify",
                "net/core/somaxconn"
            ]
        );
    }

    #[test]
    fn refuses_non_net_and_relative_keys() {
        for key in [
            "kernel.hostname",
            "net",
            "net..ipv4",
            "net.ipv4./.x",
            "net.//.x",
            "vm.net.x",
        ] {
            let m = err(json!({"sysctl": {key: "7"}}));
            assert!(m.contains(&format!("{key:?}")), "{m}");
            assert!(m.contains("\"7\""), "{m}");
        }
    }

    #[test]
    fn refuses_duplicate_sysctl_keys() {
        let text = br#"{"sysctl": {"net.core.somaxconn": "1", "net.core.somaxconn": "2"}}"#;
        let e = check_duplicates(text).unwrap_err();
        assert!(e.msg.contains("duplicated sysctl keys"), "{}", e.msg);
        assert!(e.msg.contains("net.core.somaxconn"), "{}", e.msg);
        let nested = br#"{"args": {"cni": {"sysctl": {"net.a": "1", "net.a": "1"}}}}"#;
        assert!(check_duplicates(nested).is_err());
        let fine = br#"{"sysctl": {"net.a": "1"}, "args": {"cni": {"sysctl": {"net.a": "2"}}}}"#;
        assert!(check_duplicates(fine).is_ok());
    }

    #[test]
    fn args_cni_sysctl_without_top_level_sysctl() {
        let c = ok(json!({"args": {"cni": {"sysctl": {"net.core.somaxconn": "9"}}}}));
        assert_eq!(c.sysctls.len(), 1);
        assert_eq!(c.sysctls[0].value, "9");
    }

    #[test]
    fn args_cni_overrides_top_level() {
        let c = ok(json!({
            "sysctl": {"net.core.somaxconn": "1", "net.ipv4.ip_forward": "0"},
            "mtu": 1400, "promisc": true, "txQLen": 10, "allmulti": false,
            "args": {"cni": {"sysctl": {"net.core.somaxconn": "2"},
                "mtu": 1300, "promisc": false, "txQLen": 20, "allmulti": true}},
        }));
        assert_eq!(
            c.sysctls
                .iter()
                .map(|s| (s.key.as_str(), s.value.as_str()))
                .collect::<Vec<_>>(),
            [("net.core.somaxconn", "2"), ("net.ipv4.ip_forward", "0")]
        );
        assert_eq!(c.mtu, Some(1300));
        assert!(!c.promisc);
        assert_eq!(c.txqlen, Some(20));
        assert_eq!(c.allmulti, Some(true));
    }

    #[test]
    fn mac_override_order() {
        let base = json!({"mac": "0a:00:00:00:00:01"});
        let m = |v, env| parse_json(v, env, "eth0").unwrap().mac.unwrap().to_string();
        assert_eq!(m(base.clone(), None), "0a:00:00:00:00:01");
        assert_eq!(
            m(base.clone(), Some("0a:00:00:00:00:02")),
            "0a:00:00:00:00:02"
        );
        let mut rc = base.clone();
        rc["runtimeConfig"] = json!({"mac": "0a:00:00:00:00:03"});
        assert_eq!(
            m(rc.clone(), Some("0a:00:00:00:00:02")),
            "0a:00:00:00:00:03"
        );
        rc["args"] = json!({"cni": {"mac": "0A-00-00-00-00-04"}});
        assert_eq!(m(rc, Some("0a:00:00:00:00:02")), "0a:00:00:00:00:04");
    }

    #[test]
    fn refuses_malformed_mac_naming_key_and_value() {
        let m = err(json!({"mac": "0a:00:00:00:zz:01"}));
        assert!(
            m.contains("0a:00:00:00:zz:01") && m.contains("(mac)"),
            "{m}"
        );
        let m = err(json!({"runtimeConfig": {"mac": "nope"}}));
        assert!(m.contains("nope") && m.contains("runtimeConfig.mac"), "{m}");
    }

    #[test]
    fn mtu_and_txqlen_ranges() {
        assert_eq!(ok(json!({"mtu": 0})).mtu, None);
        assert_eq!(ok(json!({"mtu": 68})).mtu, Some(68));
        for bad in [-1i64, 1, 67, 65536, 1 << 40] {
            let m = err(json!({"mtu": bad}));
            assert!(m.contains(&format!("mtu {bad}")), "{m}");
        }
        assert_eq!(ok(json!({"txQLen": 0})).txqlen, Some(0));
        let m = err(json!({"txQLen": -5}));
        assert!(m.contains("txQLen -5"), "{m}");
        let m = err(json!({"args": {"cni": {"mtu": 70000}}}));
        assert!(m.contains("args.cni.mtu 70000"), "{m}");
    }

    #[test]
    fn wrong_types_are_config_errors() {
        let e = parse_json(json!({"sysctl": {"net.core.somaxconn": 5}}), None, "eth0").unwrap_err();
        assert_eq!(e.code, cni::code::INVALID_CONFIG);
        let e = parse_json(json!({"mtu": "1500"}), None, "eth0").unwrap_err();
        assert_eq!(e.code, cni::code::INVALID_CONFIG);
    }

    #[test]
    fn data_dir_default_and_override() {
        assert_eq!(
            ok(json!({"dataDir": ""})).data_dir,
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            ok(json!({"dataDir": "/tmp/x"})).data_dir,
            PathBuf::from("/tmp/x")
        );
    }
}
