//! The JSON each plugin receives on stdin, derived from its configuration as
//! the spec's "Deriving execution configuration" section says: `name` and
//! `cniVersion` from the network, `runtimeConfig` holding only the
//! capability arguments the plugin declared, `prevResult` when there is one,
//! and never the `capabilities` key itself.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::PluginConfig;

/// An attachment that a GC call must keep (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// The part every verb shares: the plugin's own keys, minus `capabilities`,
/// with the network's `name` and the negotiated `cniVersion`.
fn base(plugin: &PluginConfig, network: &str, cni_version: &str) -> Map<String, Value> {
    let mut request = plugin.raw.clone();
    request.remove("capabilities");
    request.insert("name".into(), Value::String(network.to_string()));
    request.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    request
}

/// The request for ADD, CHECK and DEL.
pub fn attachment_request(
    plugin: &PluginConfig,
    network: &str,
    cni_version: &str,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Map<String, Value> {
    let mut request = base(plugin, network, cni_version);
    if let Some(prev) = prev_result {
        request.insert("prevResult".into(), prev.clone());
    }
    let runtime_config: Map<String, Value> = plugin
        .capabilities()
        .filter_map(|cap| Some((cap.to_string(), capability_args.get(cap)?.clone())))
        .collect();
    // As libcni: a runtimeConfig written in the file is replaced only when
    // the runtime has something to pass.
    if !runtime_config.is_empty() {
        request.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    request
}

/// The request for GC. `valid` is sent under both the spec's key and the
/// older `cni.dev/attachments` (spec 1.1.0 as tagged used that name, and
/// plugins written against it still read it); `None` sends neither, which
/// is how cnitool asks plugins to collect everything.
pub fn gc_request(
    plugin: &PluginConfig,
    network: &str,
    cni_version: &str,
    valid: Option<&[GcAttachment]>,
) -> Map<String, Value> {
    let mut request = base(plugin, network, cni_version);
    if let Some(valid) = valid {
        let list = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
        request.insert("cni.dev/valid-attachments".into(), list.clone());
        request.insert("cni.dev/attachments".into(), list);
    }
    request
}

/// The request for STATUS.
pub fn status_request(
    plugin: &PluginConfig,
    network: &str,
    cni_version: &str,
) -> Map<String, Value> {
    base(plugin, network, cni_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(v: Value) -> PluginConfig {
        PluginConfig::from_value(v).unwrap()
    }

    #[test]
    fn runtime_config_is_filtered_by_declared_capabilities() {
        let p = plugin(
            json!({"type":"portmap","capabilities":{"portMappings":true,"mac":false},"snat":true}),
        );
        let caps = json!({"portMappings":[{"hostPort":80}],"mac":"aa","ips":["1.2.3.4"]});
        let req = attachment_request(
            &p,
            "net",
            "1.0.0",
            Some(&json!({"ips":[]})),
            caps.as_object().unwrap(),
        );
        assert_eq!(
            Value::Object(req),
            json!({"type":"portmap","snat":true,"name":"net","cniVersion":"1.0.0",
                   "prevResult":{"ips":[]},"runtimeConfig":{"portMappings":[{"hostPort":80}]}})
        );
    }

    #[test]
    fn no_runtime_config_without_matching_args() {
        let p = plugin(json!({"type":"bridge","name":"other","cniVersion":"0.3.1"}));
        let req = attachment_request(&p, "net", "1.1.0", None, &Map::new());
        assert_eq!(
            Value::Object(req),
            json!({"type":"bridge","name":"net","cniVersion":"1.1.0"})
        );
    }

    #[test]
    fn gc_sends_both_keys() {
        let p = plugin(json!({"type":"host-local","capabilities":{"ips":true}}));
        let valid = [GcAttachment {
            container_id: "c".into(),
            ifname: "eth0".into(),
        }];
        let req = gc_request(&p, "net", "1.1.0", Some(&valid));
        let expected = json!([{"containerID":"c","ifname":"eth0"}]);
        assert_eq!(req["cni.dev/valid-attachments"], expected);
        assert_eq!(req["cni.dev/attachments"], expected);
        assert!(!req.contains_key("capabilities"));
        let req = gc_request(&p, "net", "1.1.0", None);
        assert!(!req.contains_key("cni.dev/valid-attachments"));
    }
}
