//! Network configurations: a named list of plugin configurations, parsed the
//! way libcni parses them so that a file accepted by one runtime is accepted
//! by the other.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::version;

/// One plugin's configuration inside a list, kept as the JSON object it was
/// written as: keys the runtime does not know are passed on unaltered.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin binary's name (`type`).
    pub plugin_type: String,
    /// The whole object as written.
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// Parse one plugin object; `type` must be a non-empty string.
    pub fn from_value(value: Value) -> std::result::Result<Self, String> {
        let Value::Object(raw) = value else {
            return Err("plugin configuration is not a JSON object".to_string());
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => return Err("missing 'type'".to_string()),
            Some(other) => return Err(format!("'type' is not a string: {other}")),
        };
        Ok(PluginConfig { plugin_type, raw })
    }

    /// Decode one plugin configuration document (a `<network>/*.conf`
    /// file of a conflist's plugin directory).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        Self::from_value(json_document(bytes, origin)?).map_err(|m| invalid_in(origin, m))
    }

    /// Capabilities the plugin declares (`"capabilities": {"portMappings": true}`).
    /// Only these keys of the runtime's capability arguments reach it.
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.raw
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .map(|(name, _)| name.as_str())
    }
}

/// A network: the unit a runtime attaches a container to.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// `cniVersion` as written (may be empty).
    pub cni_version: String,
    /// `cniVersions` as written, limited to versions this runtime implements
    /// (libcni ignores newer ones too). Empty when the key is absent.
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
    /// The configuration as loaded; stored in the result cache.
    pub bytes: Vec<u8>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Parse a `.conflist` document. `origin` names it in errors. Plugins
    /// kept in a sibling directory are not loaded here (see
    /// [`crate::config_dir::load_conflist`]).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let invalid = |message: String| invalid_in(origin, message);
        let Value::Object(top) = json_document(bytes, origin)? else {
            return Err(invalid("not a JSON object".to_string()));
        };

        let name = match top.get("name") {
            Some(Value::String(n)) => n.clone(),
            None => return Err(invalid("no 'name'".to_string())),
            Some(other) => return Err(invalid(format!("'name' is not a string: {other}"))),
        };
        let cni_version = match top.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            None => String::new(),
            Some(other) => {
                return Err(invalid(format!("'cniVersion' is not a string: {other}")));
            }
        };
        if !cni_version.is_empty() && version::parse(&cni_version).is_none() {
            return Err(invalid(format!("invalid cniVersion {cni_version:?}")));
        }

        let mut cni_versions = Vec::new();
        if let Some(raw) = top.get("cniVersions") {
            let Value::Array(items) = raw else {
                return Err(invalid(format!("'cniVersions' is not a list: {raw}")));
            };
            for (i, item) in items.iter().enumerate() {
                let Value::String(v) = item else {
                    return Err(invalid(format!(
                        "'cniVersions'[{i}] is not a string: {item}"
                    )));
                };
                let parsed = version::parse(v).filter(|_| !v.is_empty()).ok_or_else(|| {
                    invalid(format!("invalid cniVersions entry {v:?} at index {i}"))
                })?;
                if version::is_implemented(parsed) {
                    cni_versions.push(v.clone());
                }
            }
        }

        let read_bool = |key: &str| -> Result<bool> {
            match top.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                // libcni accepts the strings "true"/"false" in any case.
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
                Some(other) => Err(invalid(format!("invalid value {other} for '{key}'"))),
            }
        };
        let disable_check = read_bool("disableCheck")?;
        let disable_gc = read_bool("disableGC")?;
        let load_only_inlined_plugins = read_bool("loadOnlyInlinedPlugins")?;

        let plugins = match top.get("plugins") {
            None if load_only_inlined_plugins => {
                return Err(invalid(
                    "'loadOnlyInlinedPlugins' is true and there is no 'plugins' list".to_string(),
                ));
            }
            None => Vec::new(),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(invalid("no plugins in list".to_string()));
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    PluginConfig::from_value(item.clone())
                        .map_err(|m| invalid(format!("plugin {i}: {m}")))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => return Err(invalid(format!("'plugins' is not a list: {other}"))),
        };

        Ok(NetworkConfigList {
            name,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
            bytes: bytes.to_vec(),
            source: None,
        })
    }

    /// Wrap a single-plugin `.conf`/`.json` document into a one-plugin list,
    /// as libcni does for the pre-conflist format.
    pub fn from_single_plugin_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let invalid = |message: String| invalid_in(origin, message);
        let plugin = PluginConfig::from_bytes(bytes, origin)?;
        let name = match plugin.raw.get("name") {
            Some(Value::String(n)) => n.clone(),
            None => String::new(),
            Some(other) => return Err(invalid(format!("'name' is not a string: {other}"))),
        };
        let cni_version = match plugin.raw.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            None => String::new(),
            Some(other) => {
                return Err(invalid(format!("'cniVersion' is not a string: {other}")));
            }
        };
        let mut wrapper = Map::new();
        wrapper.insert("name".into(), Value::String(name));
        wrapper.insert("cniVersion".into(), Value::String(cni_version));
        wrapper.insert(
            "plugins".into(),
            Value::Array(vec![Value::Object(plugin.raw)]),
        );
        let list_bytes = serde_json::to_vec(&Value::Object(wrapper))
            .map_err(|e| invalid(format!("re-encode as a list: {e}")))?;
        Self::from_bytes(&list_bytes, origin)
    }

    /// Versions the configuration allows, newest first: `cniVersions` plus
    /// `cniVersion`, limited to versions this runtime implements.
    pub fn declared_versions(&self) -> Vec<String> {
        let mut all = self.cni_versions.clone();
        if !self.cni_version.is_empty()
            && version::parse(&self.cni_version).is_some_and(version::is_implemented)
        {
            all.push(self.cni_version.clone());
        }
        all.sort_by(|a, b| version::compare(b, a));
        all.dedup();
        all
    }
}

/// An error about the document `origin`.
fn invalid_in(origin: &str, message: String) -> Error {
    Error::InvalidConfig {
        origin: origin.to_string(),
        message,
    }
}

/// JSON text, or an error naming `origin`.
fn json_document(bytes: &[u8], origin: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| invalid_in(origin, format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetworkConfigList> {
        NetworkConfigList::from_bytes(text.as_bytes(), "test.conflist")
    }

    #[test]
    fn parses_a_list() {
        let list = parse(
            r#"{"cniVersion":"1.0.0","name":"n","disableCheck":"TRUE",
                "plugins":[{"type":"bridge","x":1},{"type":"portmap","capabilities":{"portMappings":true,"ips":false}}]}"#,
        )
        .unwrap();
        assert_eq!(list.name, "n");
        assert!(list.disable_check);
        assert!(!list.disable_gc);
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(list.plugins[0].raw["x"], 1);
        let caps: Vec<&str> = list.plugins[1].capabilities().collect();
        assert_eq!(caps, ["portMappings"]);
    }

    #[test]
    fn errors_name_the_origin_and_the_problem() {
        let err = parse(r#"{"name":"n","plugins":[{"type":""}]}"#).unwrap_err();
        assert_eq!(err.to_string(), "test.conflist: plugin 0: missing 'type'");
        let err = parse(r#"{"plugins":[]}"#).unwrap_err();
        assert_eq!(err.to_string(), "test.conflist: no 'name'");
        let err = parse(r#"{"name":"n","plugins":[]}"#).unwrap_err();
        assert_eq!(err.to_string(), "test.conflist: no plugins in list");
        let err = parse(r#"{"name":"n","disableGC":3,"plugins":[{"type":"a"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.conflist: invalid value 3 for 'disableGC'"
        );
        assert!(
            parse("{")
                .unwrap_err()
                .to_string()
                .starts_with("test.conflist: invalid JSON")
        );
    }

    #[test]
    fn declared_versions_skip_newer_than_implemented() {
        let list = parse(
            r#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","9.9.9","1.1.0"],"plugins":[{"type":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(list.declared_versions(), ["1.1.0", "1.0.0", "0.4.0"]);
        let err =
            parse(r#"{"name":"n","cniVersions":["x"],"plugins":[{"type":"a"}]}"#).unwrap_err();
        assert!(err.to_string().contains("invalid cniVersions entry \"x\""));
    }

    #[test]
    fn single_plugin_conf_is_wrapped() {
        let list = NetworkConfigList::from_single_plugin_bytes(
            br#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#,
            "99-lo.conf",
        )
        .unwrap();
        assert_eq!(list.name, "lo");
        assert_eq!(list.cni_version, "0.3.1");
        assert_eq!(list.plugins[0].plugin_type, "loopback");
        let reparsed: Value = serde_json::from_slice(&list.bytes).unwrap();
        assert_eq!(reparsed["plugins"][0]["type"], "loopback");
    }
}
