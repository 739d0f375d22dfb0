//! Network configuration as a runtime sends it to one plugin, and the
//! network configuration list (`.conflist`) a runtime loads from disk.
//!
//! Only the keys the spec defines for every plugin are typed here; each
//! plugin reads its own keys with [`crate::Request::plugin_config`]. Every
//! key is preserved, so delegating to IPAM passes stdin on unchanged.

use crate::error::{Error, Result};
use crate::result::Dns;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `ipam` section: a `type` plus keys that belong to the IPAM plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `portMappings` entry (capability `portMappings`). Ports are kept wide
/// so that out-of-range values reach the plugin's validation and get a
/// message naming them instead of a decode error.
///
/// containerd's CRI plugin sends these with Go's field names
/// (`{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`),
/// which the reference accepts because Go decodes keys case-insensitively:
/// the aliases accept that spelling too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort", alias = "HostPort", alias = "hostport")]
    pub host_port: i64,
    #[serde(
        rename = "containerPort",
        alias = "ContainerPort",
        alias = "containerport"
    )]
    pub container_port: i64,
    #[serde(default, alias = "Protocol")]
    pub protocol: String,
    #[serde(
        rename = "hostIP",
        alias = "HostIP",
        alias = "hostIp",
        alias = "hostip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_ip: Option<String>,
}

/// `runtimeConfig`: capability arguments the runtime passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Requested addresses, `"10.0.0.5"` or `"10.0.0.5/24"` (capability `ips`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// Extra range sets (capability `ipRanges`), in host-local's range syntax.
    #[serde(rename = "ipRanges", default, skip_serializing_if = "Option::is_none")]
    pub ip_ranges: Option<Vec<Vec<Value>>>,
    /// Container MAC address (capability `mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `args.cni` (CONVENTIONS.md): per-attachment arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArgsCni {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `args` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Args {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<ArgsCni>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One (container id, ifname) pair of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The configuration one plugin receives on stdin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Args>,
    #[serde(rename = "ipMasq", default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<RuntimeConfig>,
    /// Kept raw: it is decoded in the config's `cniVersion` on demand.
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The key's name in spec 1.1.0 as tagged; runtimes send both.
    #[serde(
        rename = "cni.dev/attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NetConf {
    /// Decode from JSON text; a wrong type is an invalid configuration
    /// (code 7) and the message names the field.
    pub fn from_slice(data: &[u8]) -> Result<Self> {
        parse_config(data)
    }

    /// The IPAM plugin to delegate to, if any (`{}` or no `type` = none).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .filter(|t| !t.is_empty())
    }

    /// GC's list of attachments to keep: `cni.dev/valid-attachments`, or the
    /// older `cni.dev/attachments`. `None` when neither key is present —
    /// which must remove nothing, unlike a present but empty list.
    pub fn gc_attachments(&self) -> Option<&[Attachment]> {
        self.valid_attachments
            .as_deref()
            .or(self.attachments.as_deref())
    }

    /// MAC requested for the container: `runtimeConfig.mac` over
    /// `args.cni.mac` (CNI_ARGS `MAC=` is the caller's last fallback).
    pub fn requested_mac(&self) -> Option<&str> {
        self.runtime_config
            .as_ref()
            .and_then(|r| r.mac.as_deref())
            .or_else(|| {
                self.args
                    .as_ref()
                    .and_then(|a| a.cni.as_ref())
                    .and_then(|c| c.mac.as_deref())
            })
    }

    /// `runtimeConfig.portMappings`, empty when absent.
    pub fn port_mappings(&self) -> &[PortMapping] {
        self.runtime_config
            .as_ref()
            .and_then(|r| r.port_mappings.as_deref())
            .unwrap_or(&[])
    }
}

/// Decode a configuration type from JSON text. Syntax errors are code 6
/// (decoding); type errors are code 7 and name the offending key path.
pub fn parse_config<T: DeserializeOwned>(data: &[u8]) -> Result<T> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| Error::decoding(format!("error unmarshall network config: {e}")))?;
    config_from_value(value)
}

/// Decode a configuration type from a JSON value (code 7 on type errors).
pub fn config_from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::invalid_config(format!("invalid network config: {inner}"))
        } else {
            Error::invalid_config(format!("invalid network config: {path}: {inner}"))
        }
    })
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(
        rename = "cniVersions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_versions: Option<Vec<String>>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    #[serde(default)]
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_preserved() {
        let data = br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"br9","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}"#;
        let c = NetConf::from_slice(data).unwrap();
        assert_eq!(c.extra["bridge"], "br9");
        assert_eq!(c.ipam_type(), Some("host-local"));
        assert_eq!(c.ipam.as_ref().unwrap().extra["subnet"], "10.0.0.0/24");
        let back = serde_json::to_value(&c).unwrap();
        let orig: Value = serde_json::from_slice(data).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn syntax_error_is_6_type_error_is_7_and_names_the_field() {
        let e = NetConf::from_slice(b"{\"name\":").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        assert!(e.msg.starts_with("error unmarshall network config"));
        let e = NetConf::from_slice(br#"{"name":"n","ipMasq":"yes"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("ipMasq"), "{}", e.msg);
        let e = NetConf::from_slice(br#"{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":"x","containerPort":1}]}}"#).unwrap_err();
        assert!(
            e.msg.contains("runtimeConfig.portMappings[0].hostPort"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn port_mappings_in_containerds_go_spelling_are_accepted() {
        let c = NetConf::from_slice(
            br#"{"name":"n","runtimeConfig":{"portMappings":[
            {"HostPort":8083,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]}}"#,
        )
        .unwrap();
        let m = &c.port_mappings()[0];
        assert_eq!(
            (m.host_port, m.container_port, m.protocol.as_str()),
            (8083, 80, "tcp")
        );
        assert_eq!(m.host_ip.as_deref(), Some(""));
    }

    #[test]
    fn empty_ipam_means_no_ipam() {
        let c = NetConf::from_slice(br#"{"name":"n","ipam":{}}"#).unwrap();
        assert_eq!(c.ipam_type(), None);
    }

    #[test]
    fn gc_attachments_prefers_valid_attachments_and_distinguishes_absent_from_empty() {
        let c: NetConf = serde_json::from_value(json!({"name":"n"})).unwrap();
        assert!(c.gc_attachments().is_none());
        let c: NetConf =
            serde_json::from_value(json!({"name":"n","cni.dev/valid-attachments":[]})).unwrap();
        assert_eq!(c.gc_attachments().unwrap().len(), 0);
        let c: NetConf = serde_json::from_value(json!({"name":"n",
            "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}))
        .unwrap();
        assert_eq!(c.gc_attachments().unwrap()[0].container_id, "a");
    }

    #[test]
    fn mac_precedence_runtime_config_over_args() {
        let c: NetConf = serde_json::from_value(json!({"name":"n",
            "args":{"cni":{"mac":"02:00:00:00:00:02"}},
            "runtimeConfig":{"mac":"02:00:00:00:00:01"}}))
        .unwrap();
        assert_eq!(c.requested_mac(), Some("02:00:00:00:00:01"));
        let c: NetConf = serde_json::from_value(json!({"name":"n",
            "args":{"cni":{"mac":"02:00:00:00:00:02"}}}))
        .unwrap();
        assert_eq!(c.requested_mac(), Some("02:00:00:00:00:02"));
    }

    #[test]
    fn conflist_parses() {
        let l: NetConfList = parse_config(
            br#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"x","disableGC":true,"plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(l.disable_gc && !l.disable_check);
        assert_eq!(l.plugins[0]["type"], "bridge");
        assert_eq!(l.cni_versions.unwrap().len(), 2);
    }
}
