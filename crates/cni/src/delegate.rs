//! Delegation: run another plugin (normally the IPAM plugin named by
//! `ipam.type`) with the same stdin and environment, the verb overridden.
//! A child's CNI error is passed through unchanged, code and all.

use crate::env::Command;
use crate::error::{Error, Result, code};
use crate::exec::{self, FindError, Limits, PluginEnv, RunError};
use crate::result::CniResult;
use crate::skel::Request;
use std::path::{Path, PathBuf};

/// Find plugin `name` in the `CNI_PATH` directories.
pub fn find_in_path(name: &str, path: &[PathBuf]) -> Result<PathBuf> {
    exec::find_in_path(name, path).map_err(|e| match e {
        FindError::NoName => Error::invalid_config("no plugin name provided"),
        FindError::InvalidName(name) => {
            Error::invalid_config(format!("invalid plugin name: {name}"))
        }
        FindError::NotFound if path.is_empty() => Error::invalid_env("no paths provided"),
        FindError::NotFound => Error::invalid_config(format!(
            "failed to find plugin {name:?} in path [{}]",
            path.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )),
    })
}

/// Run `plugin` for `command` with `stdin`; the environment is the
/// request's. Returns the child's stdout on success.
pub fn exec(plugin: &Path, command: Command, req: &Request, stdin: &[u8]) -> Result<Vec<u8>> {
    let env = PluginEnv {
        container_id: req.container_id.clone(),
        netns: req.netns.clone(),
        ifname: req.ifname.clone(),
        // Inherited: the child sees the CNI_ARGS this plugin was given.
        args: None,
        path: exec::join_path(&req.path),
    };
    let out = exec::run(plugin, command, &env, stdin, Limits::default()).map_err(|e| match e {
        RunError::Spawn(e) => Error::io(format!("failed to run plugin {}: {e}", plugin.display())),
        RunError::Io { error, .. } => Error::io(format!(
            "failed to wait for plugin {}: {error}",
            plugin.display()
        )),
        RunError::Timeout { limit, .. } => Error::io(format!(
            "plugin {} timed out after {} s",
            plugin.display(),
            limit.as_secs_f64()
        )),
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Ok(e) = serde_json::from_slice::<Error>(&out.stdout) {
        return Err(e);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = match out.status.code() {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    Err(Error::new(
        code::INTERNAL,
        format!("netplugin failed: {:?}: {status}", stderr.trim_end()),
    )
    .with_details(String::from_utf8_lossy(&out.stdout).into_owned()))
}

impl Request {
    /// ADD through the plugin `name` (e.g. `ipam.type`); the child's result
    /// is decoded in the configuration's version.
    pub fn delegate_add(&self, name: &str) -> Result<CniResult> {
        let plugin = find_in_path(name, &self.path)?;
        let out = exec(&plugin, Command::Add, self, &self.stdin)?;
        CniResult::from_slice(&out, self.version())
            .map_err(|e| e.context(format!("invalid result from plugin {name:?}")))
    }

    /// DEL, CHECK, STATUS or GC through the plugin `name`, same stdin.
    pub fn delegate(&self, name: &str, command: Command) -> Result<()> {
        let plugin = find_in_path(name, &self.path)?;
        exec(&plugin, command, self, &self.stdin).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slash_are_refused_before_any_lookup() {
        let path = vec![PathBuf::from("/usr/bin")];
        for bad in ["../sh", "/bin/sh", "a/b", "..", "."] {
            let e = find_in_path(bad, &path).unwrap_err();
            assert!(e.msg.starts_with("invalid plugin name"), "{}", e.msg);
        }
        assert_eq!(
            find_in_path("", &path).unwrap_err().msg,
            "no plugin name provided"
        );
    }

    #[test]
    fn missing_plugin_names_the_path() {
        let path = vec![
            PathBuf::from("/nonexistent-a"),
            PathBuf::from("/nonexistent-b"),
        ];
        let e = find_in_path("host-local", &path).unwrap_err();
        assert_eq!(
            e.msg,
            "failed to find plugin \"host-local\" in path [/nonexistent-a /nonexistent-b]"
        );
    }

    #[test]
    fn finds_first_match() {
        let d = std::env::temp_dir().join(format!("cni-find-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ipam"), b"").unwrap();
        let found = find_in_path("ipam", &[PathBuf::from("/nonexistent"), d.clone()]);
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(found.unwrap(), d.join("ipam"));
    }
}
