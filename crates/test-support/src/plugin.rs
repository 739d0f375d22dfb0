//! Spawning a plugin as a runtime does: the `CNI_*` environment and
//! nothing else, the configuration on stdin, stdout and stderr collected.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::{Netns, bin_dir};

/// Clear `cmd`'s environment but for PATH (plugins exec iptables/nft
/// from it): what a runtime hands a plugin, before the `CNI_*` variables.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().env(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
    )
}

/// Give `cmd` exactly a runtime's environment: nothing inherited but PATH,
/// then `env`; stdio piped.
pub fn runtime_env<K, V>(cmd: &mut Command, env: impl IntoIterator<Item = (K, V)>) -> &mut Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    clean_env(cmd)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Spawn `cmd` (stdio piped, see [`runtime_env`]), write `stdin`, wait.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> std::io::Result<Output> {
    let mut child = cmd.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading its input (EPIPE): its exit
        // status and output say why.
        let _ = input.write_all(stdin);
    }
    child.wait_with_output()
}

/// One plugin invocation, built like a runtime builds it.
#[derive(Debug, Clone)]
pub struct Invocation {
    plugin: PathBuf,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
}

impl Invocation {
    /// `plugin` with `CNI_COMMAND=command`, `CNI_IFNAME=eth0`, and
    /// `CNI_PATH` = the project's binaries.
    pub fn new(plugin: impl Into<PathBuf>, command: &str) -> Self {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".into(), command.into());
        env.insert("CNI_IFNAME".into(), "eth0".into());
        env.insert("CNI_PATH".into(), bin_dir().display().to_string());
        Invocation {
            plugin: plugin.into(),
            env,
            stdin: Vec::new(),
        }
    }

    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    pub fn netns(self, ns: &Netns) -> Self {
        let p = ns.path_str();
        self.env("CNI_NETNS", &p)
    }

    pub fn netns_path(self, path: &str) -> Self {
        self.env("CNI_NETNS", path)
    }

    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    pub fn args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    pub fn cni_path(self, path: &str) -> Self {
        self.env("CNI_PATH", path)
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn unset(mut self, k: &str) -> Self {
        self.env.remove(k);
        self
    }

    pub fn config(mut self, conf: &Value) -> Self {
        self.stdin = serde_json::to_vec(conf).expect("serialize config");
        self
    }

    pub fn raw_stdin(mut self, data: &[u8]) -> Self {
        self.stdin = data.to_vec();
        self
    }

    /// Run with the plugin process inside `host` (None: this process's own
    /// namespace, only for plugins that touch no network state).
    pub fn run_in(&self, host: Option<&Netns>) -> Outcome {
        let mut cmd = match host {
            Some(ns) => ns.command(&self.plugin),
            None => Command::new(&self.plugin),
        };
        runtime_env(&mut cmd, &self.env);
        let out = run_with_stdin(&mut cmd, &self.stdin)
            .unwrap_or_else(|e| panic!("run {}: {e}", self.plugin.display()));
        Outcome {
            plugin: self.plugin.clone(),
            command: self.env.get("CNI_COMMAND").cloned().unwrap_or_default(),
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, host: &Netns) -> Outcome {
        self.run_in(Some(host))
    }
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plugin: PathBuf,
    pub command: String,
    /// Exit status; `None` if killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    fn describe(&self) -> String {
        format!(
            "{} {} exited {:?}\nstdout: {}\nstderr: {}",
            self.plugin.display(),
            self.command,
            self.status,
            self.stdout,
            self.stderr
        )
    }

    /// Stdout parsed as JSON (panics if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    /// Assert success; return the parsed result (Null when stdout is empty).
    pub fn expect_ok(&self) -> Value {
        assert!(self.success(), "expected success: {}", self.describe());
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert a CNI error with `code`; return the error JSON.
    pub fn expect_err(&self, code: u64) -> Value {
        assert!(
            self.status.is_some() && !self.success(),
            "expected error {code}: {}",
            self.describe()
        );
        let j = self.json();
        assert_eq!(j["code"].as_u64(), Some(code), "{}", self.describe());
        assert!(
            j["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.describe()
        );
        j
    }
}
