//! The bridge plugin's configuration keys, their defaults, and validation
//! with the reference's messages. Everything is checked before anything is
//! created, so bad input never changes the system.

use cni::{Dns, Error, Request, Result};
use link::MacAddr;
use serde::Deserialize;

/// The keys as they appear in the network configuration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Option<Vec<Trunk>>,
    #[serde(default)]
    preserve_default_vlan: bool,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    enabledad: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
}

/// One `vlanTrunk` entry: `{"id": N}` or `{"minID": A, "maxID": B}`.
#[derive(Debug, Deserialize)]
struct Trunk {
    #[serde(rename = "minID", default)]
    min_id: Option<i64>,
    #[serde(rename = "maxID", default)]
    max_id: Option<i64>,
    #[serde(default)]
    id: Option<i64>,
}

/// Validated settings for one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    /// `None`: the reference's default choice.
    pub masq_backend: Option<netfilter::Backend>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN (0 = none).
    pub vlan: u16,
    /// Tagged VLANs allowed on the port, sorted, no duplicates.
    pub trunk: Vec<u16>,
    /// `vlanTrunk` was given at all (even empty): VLAN filtering is wanted.
    pub trunk_configured: bool,
    pub preserve_default_vlan: bool,
    pub macspoofchk: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// IPAM plugin type; `None` is L2-only mode.
    pub ipam: Option<String>,
    pub mac: Option<MacAddr>,
    /// `dns` from the configuration, when it sets anything.
    pub dns: Option<Dns>,
}

pub const DEFAULT_BRIDGE: &str = "cni0";

impl Settings {
    /// Read and validate the configuration of `req`. Used by every verb, so
    /// DEL refuses the same bad input ADD refuses.
    pub fn load(req: &Request) -> Result<Settings> {
        let raw: RawConf = req.plugin_config()?;
        let bridge = match raw.bridge {
            None => DEFAULT_BRIDGE.to_string(),
            Some(b) if b.is_empty() => DEFAULT_BRIDGE.to_string(),
            Some(b) => {
                validate_bridge_name(&b)?;
                b
            }
        };
        if !(0..=4094).contains(&raw.vlan) {
            return Err(Error::invalid_config(format!(
                "invalid VLAN ID {} (must be between 0 and 4094)",
                raw.vlan
            )));
        }
        let trunk_configured = raw.vlan_trunk.is_some();
        let trunk = collect_trunk(raw.vlan_trunk.as_deref().unwrap_or(&[]))?;
        let ipam = req.config.ipam_type().map(str::to_string);
        if ipam.is_some() && raw.disable_container_interface {
            return Err(Error::invalid_config(
                "cannot use IPAM when DisableContainerInterface flag is set",
            ));
        }
        if raw.hairpin_mode && raw.promisc_mode {
            return Err(Error::invalid_config(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        let masq_backend = match raw.ip_masq_backend.as_deref() {
            None => None,
            Some("iptables") => Some(netfilter::Backend::Iptables),
            Some("nftables") => Some(netfilter::Backend::Nftables),
            // The reference only looks at the backend when masquerading.
            Some(_) if !raw.ip_masq => None,
            Some(other) => {
                return Err(Error::invalid_config(format!(
                    "unknown ipmasq backend {other:?}"
                )));
            }
        };
        let mac = requested_mac(req)?;
        let dns = req.config.dns.clone().filter(|d| !d.is_empty());
        Ok(Settings {
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            masq_backend,
            mtu: raw.mtu.filter(|m| *m != 0),
            hairpin: raw.hairpin_mode,
            promisc: raw.promisc_mode,
            vlan: raw.vlan as u16,
            trunk,
            trunk_configured,
            preserve_default_vlan: raw.preserve_default_vlan,
            macspoofchk: raw.macspoofchk,
            enable_dad: raw.enabledad,
            disable_container_interface: raw.disable_container_interface,
            port_isolation: raw.port_isolation,
            ipam,
            mac,
            dns,
        })
    }

    /// The bridge needs VLAN filtering (only applied when it is created).
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || self.trunk_configured
    }

    pub fn is_l3(&self) -> bool {
        self.ipam.is_some()
    }
}

/// Interface names the kernel accepts; checked here so the message names
/// the key instead of surfacing a netlink EINVAL.
fn validate_bridge_name(name: &str) -> Result<()> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if bad {
        return Err(Error::invalid_config(format!(
            "invalid bridge name {name:?}: must be 1-15 characters without '/', ':' or whitespace"
        )));
    }
    Ok(())
}

/// The reference's trunk rules and messages; the result is a sorted set.
fn collect_trunk(items: &[Trunk]) -> Result<Vec<u16>> {
    let mut vids = std::collections::BTreeSet::new();
    let valid = |v: i64| (1..=4094).contains(&v);
    for item in items {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                if !valid(min) {
                    return Err(Error::invalid_config("incorrect trunk minID parameter"));
                }
                if !valid(max) {
                    return Err(Error::invalid_config("incorrect trunk maxID parameter"));
                }
                if max < min {
                    return Err(Error::invalid_config(
                        "minID is greater than maxID in trunk parameter",
                    ));
                }
                vids.extend((min..=max).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_config(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(Error::invalid_config(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ));
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            if !valid(id) {
                return Err(Error::invalid_config("incorrect trunk id parameter"));
            }
            vids.insert(id as u16);
        }
    }
    Ok(vids.into_iter().collect())
}

/// MAC for the container interface: `runtimeConfig.mac` > `args.cni.mac` >
/// CNI_ARGS `MAC=`. CNI_ARGS keys other than `MAC` are refused unless
/// `IgnoreUnknown` is set, as in the reference.
fn requested_mac(req: &Request) -> Result<Option<MacAddr>> {
    req.args.check_known(&["MAC"])?;
    let conf = &req.config;
    let from_runtime = conf.runtime_config.as_ref().and_then(|r| r.mac.as_deref());
    let from_args = conf
        .args
        .as_ref()
        .and_then(|a| a.cni.as_ref())
        .and_then(|c| c.mac.as_deref());
    let (text, field) = match (from_runtime, from_args, req.args.get("MAC")) {
        (Some(m), _, _) if !m.is_empty() => (m, "runtimeConfig.mac"),
        (_, Some(m), _) if !m.is_empty() => (m, "args.cni.mac"),
        (_, _, Some(m)) if !m.is_empty() => (m, "CNI_ARGS MAC"),
        _ => return Ok(None),
    };
    let bad = |why: &str| Error::invalid_config(format!("invalid MAC {text:?} ({field}): {why}"));
    // The reference's message for an unparsable MAC, and where it came from.
    let mac = text
        .parse::<MacAddr>()
        .map_err(|e| Error::invalid_config(e.to_string()).with_details(format!("from {field}")))?;
    // The kernel refuses these only when the veth is created, after IPAM
    // has run; refuse them before anything is touched.
    let octets = mac.octets();
    if octets[0] & 1 == 1 {
        return Err(bad("not a unicast address"));
    }
    if octets == [0; 6] {
        return Err(bad("the all-zero address"));
    }
    Ok(Some(mac))
}

/// IPAM plugins that talk on the container's interface (dhcp runs its
/// exchange there): ADD must create the interface first, DEL must call them
/// before removing it.
pub fn ipam_needs_interface(ipam: &str) -> bool {
    ipam == "dhcp"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(min: Option<i64>, max: Option<i64>, id: Option<i64>) -> Trunk {
        Trunk {
            min_id: min,
            max_id: max,
            id,
        }
    }

    #[test]
    fn trunk_ranges_and_ids_merge_into_a_sorted_set() {
        let v = collect_trunk(&[
            trunk(Some(200), Some(202), None),
            trunk(None, None, Some(101)),
            trunk(None, None, Some(201)),
        ])
        .unwrap();
        assert_eq!(v, vec![101, 200, 201, 202]);
    }

    #[test]
    fn trunk_errors_are_the_reference_messages() {
        let cases = [
            (
                trunk(Some(0), Some(5), None),
                "incorrect trunk minID parameter",
            ),
            (
                trunk(Some(1), Some(4095), None),
                "incorrect trunk maxID parameter",
            ),
            (
                trunk(Some(5), Some(1), None),
                "minID is greater than maxID in trunk parameter",
            ),
            (
                trunk(None, Some(5), None),
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                trunk(Some(5), None, None),
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
            (trunk(None, None, Some(0)), "incorrect trunk id parameter"),
            (
                trunk(None, None, Some(5000)),
                "incorrect trunk id parameter",
            ),
        ];
        for (t, msg) in cases {
            assert_eq!(collect_trunk(&[t]).unwrap_err().msg, msg);
        }
    }

    fn load(conf: serde_json::Value, cni_args: &str) -> Result<Settings> {
        let bytes = serde_json::to_vec(&conf).unwrap();
        Settings::load(&Request::from_config(cni::Command::Add, &bytes, cni_args).unwrap())
    }

    fn net(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    fn error_of(extra: serde_json::Value) -> String {
        load(net(extra), "").unwrap_err().msg
    }

    #[test]
    fn an_empty_configuration_gives_the_defaults() {
        let s = load(net(serde_json::json!({})), "").unwrap();
        let d = tests_support::settings();
        assert_eq!(s.bridge, "cni0");
        assert_eq!(
            (s.is_gateway, s.ip_masq, s.hairpin, s.promisc, s.vlan, s.mtu),
            (d.is_gateway, d.ip_masq, d.hairpin, d.promisc, d.vlan, d.mtu)
        );
        assert!(s.ipam.is_none() && !s.is_l3() && !s.vlan_filtering());
        assert!(s.mac.is_none() && s.dns.is_none() && s.masq_backend.is_none());
        // An empty bridge name and mtu 0 mean the defaults too.
        let s = load(net(serde_json::json!({"bridge": "", "mtu": 0})), "").unwrap();
        assert_eq!((s.bridge.as_str(), s.mtu), ("cni0", None));
    }

    #[test]
    fn keys_are_read_as_the_reference_spells_them() {
        let s = load(
            net(serde_json::json!({
                "bridge": "br-test", "isDefaultGateway": true, "ipMasq": true,
                "ipMasqBackend": "nftables", "mtu": 1400, "hairpinMode": true,
                "vlan": 100, "macspoofchk": true, "enabledad": true, "portIsolation": true,
                "ipam": {"type": "host-local"}, "dns": {"nameservers": ["10.0.0.53"]},
            })),
            "",
        )
        .unwrap();
        assert_eq!(s.bridge, "br-test");
        // isDefaultGateway implies isGateway.
        assert!(s.is_gateway && s.is_default_gateway && s.ip_masq && s.hairpin);
        assert_eq!(s.masq_backend, Some(netfilter::Backend::Nftables));
        assert_eq!((s.mtu, s.vlan), (Some(1400), 100));
        assert!(s.macspoofchk && s.enable_dad && s.port_isolation && s.vlan_filtering());
        assert_eq!(s.ipam.as_deref(), Some("host-local"));
        assert_eq!(
            s.dns.map(|d| d.nameservers),
            Some(vec!["10.0.0.53".to_string()])
        );
        let s = load(net(serde_json::json!({"vlanTrunk": []})), "").unwrap();
        assert!(s.trunk.is_empty() && s.trunk_configured && s.vlan_filtering());
    }

    #[test]
    fn contradictions_and_out_of_range_values_are_refused() {
        assert_eq!(
            error_of(serde_json::json!({"vlan": 4095})),
            "invalid VLAN ID 4095 (must be between 0 and 4094)"
        );
        assert_eq!(
            error_of(serde_json::json!({"vlan": -1})),
            "invalid VLAN ID -1 (must be between 0 and 4094)"
        );
        assert_eq!(
            error_of(serde_json::json!({
                "ipam": {"type": "host-local"}, "disableContainerInterface": true
            })),
            "cannot use IPAM when DisableContainerInterface flag is set"
        );
        assert_eq!(
            error_of(serde_json::json!({"hairpinMode": true, "promiscMode": true})),
            "cannot set hairpin mode and promiscuous mode at the same time"
        );
        assert_eq!(
            error_of(serde_json::json!({"ipMasq": true, "ipMasqBackend": "pf"})),
            "unknown ipmasq backend \"pf\""
        );
        // The reference only looks at the backend when masquerading.
        let s = load(net(serde_json::json!({"ipMasqBackend": "pf"})), "").unwrap();
        assert!(s.masq_backend.is_none());
        assert!(error_of(serde_json::json!({"bridge": "a/b"})).starts_with("invalid bridge name"));
        assert!(error_of(serde_json::json!({"vlanTrunk": [{"id": 0}]})).contains("trunk id"));
        let e = load(net(serde_json::json!({"mtu": "big"})), "").unwrap_err();
        assert!(e.msg.contains("mtu"), "{}", e.msg);
    }

    #[test]
    fn mac_comes_from_runtime_config_then_args_then_cni_args() {
        let mac = |extra: serde_json::Value, cni_args: &str| {
            load(net(extra), cni_args)
                .unwrap()
                .mac
                .map(|m| m.to_string())
        };
        let both = serde_json::json!({
            "runtimeConfig": {"mac": "02:00:00:00:00:01"},
            "args": {"cni": {"mac": "02:00:00:00:00:02"}},
        });
        assert_eq!(
            mac(both, "MAC=02:00:00:00:00:03").as_deref(),
            Some("02:00:00:00:00:01")
        );
        let args = serde_json::json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}}});
        assert_eq!(
            mac(args, "MAC=02:00:00:00:00:03").as_deref(),
            Some("02:00:00:00:00:02")
        );
        assert_eq!(
            mac(serde_json::json!({}), "MAC=02-00-00-00-00-0A").as_deref(),
            Some("02:00:00:00:00:0a")
        );
        assert_eq!(mac(serde_json::json!({}), ""), None);
    }

    #[test]
    fn macs_the_kernel_would_refuse_later_are_refused_now() {
        let e = load(net(serde_json::json!({})), "MAC=01:00:00:00:00:01").unwrap_err();
        assert_eq!(
            e.msg,
            "invalid MAC \"01:00:00:00:00:01\" (CNI_ARGS MAC): not a unicast address"
        );
        let zero = serde_json::json!({"runtimeConfig": {"mac": "00:00:00:00:00:00"}});
        assert_eq!(
            load(net(zero), "").unwrap_err().msg,
            "invalid MAC \"00:00:00:00:00:00\" (runtimeConfig.mac): the all-zero address"
        );
        let e = load(net(serde_json::json!({})), "MAC=zz").unwrap_err();
        assert_eq!(e.details, "from CNI_ARGS MAC");
        // Unknown CNI_ARGS keys are refused unless IgnoreUnknown is set.
        assert!(load(net(serde_json::json!({})), "FOO=1").is_err());
        assert!(load(net(serde_json::json!({})), "IgnoreUnknown=true;FOO=1").is_ok());
    }

    #[test]
    fn bridge_names_the_kernel_would_refuse_are_refused() {
        assert!(validate_bridge_name("cni0").is_ok());
        for bad in ["a/b", "toolongbridgename0", "a b", ".."] {
            assert!(validate_bridge_name(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// Settings as an empty configuration gives them.
    pub fn settings() -> Settings {
        Settings {
            bridge: DEFAULT_BRIDGE.into(),
            is_gateway: false,
            is_default_gateway: false,
            force_address: false,
            ip_masq: false,
            masq_backend: None,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            trunk: vec![],
            trunk_configured: false,
            preserve_default_vlan: false,
            macspoofchk: false,
            enable_dad: false,
            disable_container_interface: false,
            port_isolation: false,
            ipam: None,
            mac: None,
            dns: None,
        }
    }
}
