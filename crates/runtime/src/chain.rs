//! The verbs on a whole network: ADD runs the plugin chain in order, DEL in
//! reverse and best-effort, CHECK honours `disableCheck`, GC first deletes
//! cached attachments that are no longer valid and then asks every plugin to
//! collect, STATUS asks every plugin. Version negotiation and the result
//! cache happen here too.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cni::CniResult;
use serde_json::{Map, Value};

use crate::attachment::{Attachment, validate_network_name};
use crate::cache::ResultCache;
use crate::config::{NetworkConfigList, PluginConfig};
use crate::error::{Error, PluginError, PluginFailure, Result, Verb};
use crate::exec::{PluginEnv, find_in_path, run_plugin};
use crate::request::{GcAttachment, attachment_request, gc_request, status_request};
use crate::version::{self, Version};

/// How long one plugin may run unless the caller says otherwise. Generous:
/// a portmap ADD on a busy host with the reference's iptables backend takes
/// a few hundred milliseconds, and a wedged xtables lock should still fail
/// eventually instead of hanging the runtime forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What CHECK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every plugin passed.
    Checked,
    /// The network sets `disableCheck`; no plugin was run.
    Disabled,
}

/// What STATUS found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Every plugin is ready for ADD.
    Ready,
    /// The negotiated version predates STATUS (1.1.0); no plugin was asked.
    NotSupported { cni_version: String },
}

/// What GC did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The network sets `disableGC`; nothing was done.
    pub disabled: bool,
    /// Cached attachments that were not valid and were deleted with DEL.
    pub deleted: Vec<GcAttachment>,
    /// Whether the plugins were sent GC (needs cniVersion 1.1.0 or later).
    pub plugins_called: bool,
}

/// A CNI runtime: where plugins live, where results are cached, and how
/// long a plugin may run.
#[derive(Debug)]
pub struct Runtime {
    plugin_dirs: Vec<PathBuf>,
    cache: ResultCache,
    timeout: Option<Duration>,
    /// VERSION answers by binary path; a plugin binary does not change its
    /// supported versions while we run.
    supported: Mutex<HashMap<PathBuf, Vec<String>>>,
    /// Copy what a succeeding plugin writes on stderr to ours (libcni does;
    /// plugins warn there). A failing plugin's stderr is in its error.
    forward_stderr: bool,
}

/// What every plugin of the chain is run with for one attachment verb.
struct Step<'a> {
    list: &'a NetworkConfigList,
    cni_version: &'a str,
    attachment: &'a Attachment,
    env: &'a PluginEnv,
}

impl Runtime {
    /// A runtime looking for plugins in `plugin_dirs` (in order), caching in
    /// the default `/var/lib/cni`, with [`DEFAULT_TIMEOUT`].
    pub fn new(plugin_dirs: Vec<PathBuf>) -> Self {
        Runtime {
            plugin_dirs,
            cache: ResultCache::default(),
            timeout: Some(DEFAULT_TIMEOUT),
            supported: Mutex::new(HashMap::new()),
            forward_stderr: false,
        }
    }

    /// Copy the stderr of succeeding plugins to this process's stderr,
    /// each line prefixed with the plugin's name.
    pub fn with_forwarded_stderr(mut self, forward: bool) -> Self {
        self.forward_stderr = forward;
        self
    }

    pub fn with_cache(mut self, cache: ResultCache) -> Self {
        self.cache = cache;
        self
    }

    /// `None` lets plugins run forever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }

    fn cni_path(&self) -> String {
        cni::exec::join_path(&self.plugin_dirs)
    }

    /// Run one plugin; its stdout on success.
    fn invoke(
        &self,
        network: &str,
        plugin_type: &str,
        verb: Verb,
        env: &PluginEnv,
        request: &[u8],
    ) -> std::result::Result<Vec<u8>, Box<PluginError>> {
        let error = |failure, stderr| {
            Box::new(PluginError {
                network: network.to_string(),
                plugin: plugin_type.to_string(),
                verb,
                failure,
                stderr,
            })
        };
        let binary =
            find_in_path(plugin_type, &self.plugin_dirs).map_err(|f| error(f, String::new()))?;
        match run_plugin(&binary, verb, env, request, self.timeout) {
            Ok(success) => {
                if self.forward_stderr {
                    for line in success.stderr.lines() {
                        eprintln!("{plugin_type} ({verb}): {line}");
                    }
                }
                Ok(success.stdout)
            }
            Err(failed) => Err(error(failed.failure, failed.stderr)),
        }
    }

    fn attachment_env(&self, attachment: &Attachment) -> PluginEnv {
        PluginEnv {
            container_id: attachment.container_id.clone(),
            netns: attachment.netns.clone(),
            ifname: attachment.ifname.clone(),
            args: Some(attachment.args_env()),
            path: self.cni_path(),
        }
    }

    fn network_env(&self) -> PluginEnv {
        PluginEnv {
            args: Some(String::new()),
            path: self.cni_path(),
            ..Default::default()
        }
    }

    /// The spec versions the plugin `plugin_type` supports (asked with VERSION).
    pub fn plugin_versions(&self, network: &str, plugin_type: &str) -> Result<Vec<String>> {
        let binary =
            find_in_path(plugin_type, &self.plugin_dirs).map_err(|failure| PluginError {
                network: network.to_string(),
                plugin: plugin_type.to_string(),
                verb: Verb::Version,
                failure,
                stderr: String::new(),
            })?;
        if let Ok(known) = self.supported.lock()
            && let Some(versions) = known.get(&binary)
        {
            return Ok(versions.clone());
        }
        // Dummy netns/ifname: plugins built on old skeletons demand them
        // even for VERSION (libcni sends the same).
        let env = PluginEnv {
            netns: "dummy".into(),
            ifname: "dummy".into(),
            args: Some(String::new()),
            path: self.cni_path(),
            ..Default::default()
        };
        let request = format!(r#"{{"cniVersion":"{}"}}"#, version::CURRENT);
        let versions = match self.invoke(
            network,
            plugin_type,
            Verb::Version,
            &env,
            request.as_bytes(),
        ) {
            Ok(stdout) => parse_version_info(&stdout).map_err(|reason| PluginError {
                network: network.to_string(),
                plugin: plugin_type.to_string(),
                verb: Verb::Version,
                failure: PluginFailure::BadOutput {
                    reason,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                },
                stderr: String::new(),
            })?,
            // Plugins from before VERSION existed speak only 0.1.0.
            Err(e) if matches!(&e.failure, PluginFailure::Cni(c) if c.msg == "unknown CNI_COMMAND: VERSION") =>
            {
                vec!["0.1.0".to_string()]
            }
            Err(e) => return Err(e.into()),
        };
        if let Ok(mut known) = self.supported.lock() {
            known.insert(binary, versions.clone());
        }
        Ok(versions)
    }

    /// The version to run the network's plugins with: its `cniVersion`, or,
    /// when it lists `cniVersions`, the newest listed version that every
    /// plugin of the chain supports (each is asked with VERSION).
    pub fn negotiate_version(&self, list: &NetworkConfigList) -> Result<String> {
        if list.cni_versions.is_empty() {
            return Ok(list.cni_version.clone());
        }
        let mut candidates = list.declared_versions();
        let mut unsupported = Vec::new();
        for plugin in &list.plugins {
            let supported = self.plugin_versions(&list.name, &plugin.plugin_type)?;
            candidates.retain(|v| supported.contains(v));
            if candidates.is_empty() {
                unsupported.push(format!("{} supports {:?}", plugin.plugin_type, supported));
                break;
            }
        }
        candidates.into_iter().next().ok_or_else(|| Error::Version {
            network: list.name.clone(),
            message: format!(
                "no version of {:?} is supported by every plugin ({})",
                list.declared_versions(),
                unsupported.join(", ")
            ),
        })
    }

    /// Fill the arguments the caller left empty from the cached ADD, so a
    /// DEL or CHECK without `CAP_ARGS`/`CNI_ARGS` still reaches, say,
    /// portmap with the port mappings it must remove. libcni's DEL does not
    /// do this (a cnitool DEL without CAP_ARGS leaves portmap rules behind).
    fn with_cached_arguments(attachment: &Attachment, cached: &Attachment) -> Attachment {
        let mut merged = attachment.clone();
        if merged.netns.is_empty() {
            merged.netns = cached.netns.clone();
        }
        if merged.args.is_empty() {
            merged.args = cached.args.clone();
        }
        if merged.capability_args.is_empty() {
            merged.capability_args = cached.capability_args.clone();
        }
        merged
    }

    fn request_bytes(request: Map<String, Value>) -> Vec<u8> {
        // Serializing a Map of Values cannot fail.
        serde_json::to_vec(&Value::Object(request)).unwrap_or_default()
    }

    /// One plugin of the chain for one attachment verb (ADD, CHECK, DEL).
    fn invoke_step(
        &self,
        step: &Step,
        plugin: &PluginConfig,
        verb: Verb,
        prev_result: Option<&Value>,
    ) -> std::result::Result<Vec<u8>, Box<PluginError>> {
        let request = attachment_request(
            plugin,
            &step.list.name,
            step.cni_version,
            prev_result,
            &step.attachment.capability_args,
        );
        self.invoke(
            &step.list.name,
            &plugin.plugin_type,
            verb,
            step.env,
            &Self::request_bytes(request),
        )
    }

    /// ADD the attachment: run the chain in order, each plugin getting the
    /// previous one's result, then cache the final result. On failure the
    /// chain is not undone here: call [`Self::del`] (as a runtime must).
    pub fn add(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<Value> {
        validate_network_name(&list.name)?;
        attachment.validate()?;
        let cni_version = self.negotiate_version(list)?;
        let env = self.attachment_env(attachment);
        let step = Step {
            list,
            cni_version: &cni_version,
            attachment,
            env: &env,
        };
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            let stdout = self.invoke_step(&step, plugin, Verb::Add, result.as_ref())?;
            result = Some(parse_result(&list.name, plugin, &stdout)?);
        }
        let result = result.unwrap_or_else(|| Value::Object(Map::new()));
        self.cache
            .save(&list.name, attachment, &list.bytes, &result)?;
        Ok(result)
    }

    /// CHECK the attachment against the cached result of its ADD.
    pub fn check(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<CheckOutcome> {
        attachment.validate()?;
        let cni_version = self.negotiate_version(list)?;
        if !version::parse(&cni_version).is_some_and(Version::has_check) {
            return Err(Error::Version {
                network: list.name.clone(),
                message: format!(
                    "configuration version {cni_version:?} does not support the CHECK command"
                ),
            });
        }
        if list.disable_check {
            return Ok(CheckOutcome::Disabled);
        }
        let Some(cached) =
            self.cache
                .load(&list.name, &attachment.container_id, &attachment.ifname)?
        else {
            return Err(Error::NotAdded {
                network: list.name.clone(),
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
            });
        };
        let attachment = Self::with_cached_arguments(attachment, &cached.attachment);
        let prev_result = match cached.result {
            Some(result) => Some(cached_result_as(result, &cni_version).map_err(|message| {
                Error::Cache {
                    path: self
                        .cache
                        .path_for(&list.name, &attachment.container_id, &attachment.ifname)
                        .unwrap_or_default(),
                    message,
                }
            })?),
            None => None,
        };
        let env = self.attachment_env(&attachment);
        let step = Step {
            list,
            cni_version: &cni_version,
            attachment: &attachment,
            env: &env,
        };
        for plugin in &list.plugins {
            self.invoke_step(&step, plugin, Verb::Check, prev_result.as_ref())?;
        }
        Ok(CheckOutcome::Checked)
    }

    /// DEL the attachment: every plugin in reverse order, even after one
    /// fails; all failures are reported. The cache entry is removed only when
    /// every plugin succeeded, so a retry still has the `prevResult`.
    pub fn del(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<()> {
        attachment.validate()?;
        // An unreadable cache entry must not block the DEL (libcni drops it too).
        let cached = self
            .cache
            .load(&list.name, &attachment.container_id, &attachment.ifname)
            .unwrap_or(None);
        // Negotiation asks every plugin; one that has gone missing must not
        // stop the others' DEL. Then use the version the ADD ran with.
        let cni_version = match self.negotiate_version(list) {
            Ok(version) => version,
            Err(negotiation) => {
                let added_with = cached
                    .as_ref()
                    .and_then(|c| c.result.as_ref())
                    .and_then(|r| r.get("cniVersion"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match added_with.or_else(|| list.declared_versions().into_iter().next()) {
                    Some(version) => version,
                    None => return Err(negotiation),
                }
            }
        };
        let attachment = match &cached {
            Some(c) => Self::with_cached_arguments(attachment, &c.attachment),
            None => attachment.clone(),
        };
        // An unconvertible cached result is dropped, not fatal: DEL must
        // still run (plugins cope with a missing prevResult on DEL).
        let prev_result = cached
            .and_then(|c| c.result)
            .filter(|_| version::parse(&cni_version).is_some_and(Version::has_check))
            .and_then(|r| cached_result_as(r, &cni_version).ok());
        let env = self.attachment_env(&attachment);
        let step = Step {
            list,
            cni_version: &cni_version,
            attachment: &attachment,
            env: &env,
        };
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.invoke_step(&step, plugin, Verb::Del, prev_result.as_ref()) {
                errors.push(Error::from(e));
            }
        }
        if errors.is_empty() {
            self.cache
                .remove(&list.name, &attachment.container_id, &attachment.ifname)?;
        }
        Error::from_list(errors)
    }

    /// GC the network. Cached attachments of this network not in `valid`
    /// are deleted first (all of them when `valid` is `None`, as cnitool
    /// does); then, from spec 1.1.0 on, every plugin gets GC with the valid
    /// list. Keeps going on errors and reports them all.
    pub fn gc(&self, list: &NetworkConfigList, valid: Option<&[GcAttachment]>) -> Result<GcReport> {
        let mut report = GcReport::default();
        if list.disable_gc {
            report.disabled = true;
            return Ok(report);
        }
        let keep: BTreeSet<&GcAttachment> = valid.unwrap_or_default().iter().collect();
        let mut errors = Vec::new();
        for cached in self.cache.list()? {
            if cached.network != list.name {
                continue;
            }
            let id = GcAttachment {
                container_id: cached.attachment.container_id.clone(),
                ifname: cached.attachment.ifname.clone(),
            };
            if keep.contains(&id) {
                continue;
            }
            match self.del(list, &cached.attachment) {
                Ok(()) => report.deleted.push(id),
                Err(e) => errors.push(Error::StaleAttachment {
                    container_id: id.container_id,
                    ifname: id.ifname,
                    source: Box::new(e),
                }),
            }
        }

        let cni_version = self.negotiate_version(list)?;
        if version::parse(&cni_version).is_some_and(Version::has_gc_and_status) {
            report.plugins_called = true;
            let env = self.network_env();
            for plugin in &list.plugins {
                let request = gc_request(plugin, &list.name, &cni_version, valid);
                if let Err(e) = self.invoke(
                    &list.name,
                    &plugin.plugin_type,
                    Verb::Gc,
                    &env,
                    &Self::request_bytes(request),
                ) {
                    errors.push(e.into());
                }
            }
        }
        Error::from_list(errors).map(|()| report)
    }

    /// STATUS: ask each plugin in order whether it is ready for ADD; the
    /// first that is not decides (its error carries code 50 or 51).
    pub fn status(&self, list: &NetworkConfigList) -> Result<StatusOutcome> {
        let cni_version = self.negotiate_version(list)?;
        if !version::parse(&cni_version).is_some_and(Version::has_gc_and_status) {
            return Ok(StatusOutcome::NotSupported { cni_version });
        }
        let env = self.network_env();
        for plugin in &list.plugins {
            let request = status_request(plugin, &list.name, &cni_version);
            self.invoke(
                &list.name,
                &plugin.plugin_type,
                Verb::Status,
                &env,
                &Self::request_bytes(request),
            )?;
        }
        Ok(StatusOutcome::Ready)
    }
}

/// A cached result as `prevResult` for `cni_version`. When the network's
/// version changed since the ADD (a plugin upgrade moved the negotiated
/// version), the result is converted, as libcni converts it.
fn cached_result_as(result: Value, cni_version: &str) -> std::result::Result<Value, String> {
    let from = result
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(cni_version)
        .to_string();
    if from == cni_version || cni_version.is_empty() {
        return Ok(result);
    }
    CniResult::from_value(result, &from)
        .and_then(|parsed| parsed.to_value(cni_version))
        .map_err(|e| format!("convert the cached {from} result to {cni_version}: {e}"))
}

/// A plugin's ADD output must be a JSON object (its result).
fn parse_result(network: &str, plugin: &PluginConfig, stdout: &[u8]) -> Result<Value> {
    let bad = |reason: String| PluginError {
        network: network.to_string(),
        plugin: plugin.plugin_type.clone(),
        verb: Verb::Add,
        failure: PluginFailure::BadOutput {
            reason,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
        },
        stderr: String::new(),
    };
    match serde_json::from_slice::<Value>(stdout) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(bad("the result is not a JSON object".to_string()).into()),
        Err(e) => Err(bad(format!("the result is not JSON: {e}")).into()),
    }
}

/// `{"cniVersion": "...", "supportedVersions": [...]}`; a plugin that
/// omits the list supports only its `cniVersion`.
fn parse_version_info(stdout: &[u8]) -> std::result::Result<Vec<String>, String> {
    let value: Value =
        serde_json::from_slice(stdout).map_err(|e| format!("VERSION output is not JSON: {e}"))?;
    if let Some(list) = value.get("supportedVersions") {
        let list = list.as_array().ok_or("'supportedVersions' is not a list")?;
        return list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("'supportedVersions' entry {v} is not a string"))
            })
            .collect();
    }
    match value.get("cniVersion").and_then(Value::as_str) {
        Some(v) => Ok(vec![v.to_string()]),
        None => Err("neither 'supportedVersions' nor 'cniVersion'".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_info_forms() {
        assert_eq!(
            parse_version_info(br#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}"#)
                .unwrap(),
            ["0.4.0", "1.0.0"]
        );
        assert_eq!(
            parse_version_info(br#"{"cniVersion":"0.2.0"}"#).unwrap(),
            ["0.2.0"]
        );
        assert!(parse_version_info(b"{}").is_err());
    }

    #[test]
    fn cached_results_are_converted_to_the_current_version() {
        let cached = serde_json::json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.0.0.2/24"}], "dns": {}});
        let same = cached_result_as(cached.clone(), "1.0.0").unwrap();
        assert_eq!(same, cached);
        let old = cached_result_as(cached, "0.4.0").unwrap();
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(cached_result_as(serde_json::json!({"cniVersion": "1.0.0"}), "0.2.0").is_err());
    }
}
