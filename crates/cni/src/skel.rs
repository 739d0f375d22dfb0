//! The plugin skeleton: read the environment and stdin, validate them as the
//! reference does, call the plugin's verb, print the result or the error.
//!
//! Environment and stdio are parameters of [`dispatch`], so the whole
//! protocol layer is unit-tested without spawning a process.

use crate::args::CniArgs;
use crate::config::{NetConf, parse_config};
use crate::env::{self, Command};
use crate::error::{Error, Result, code};
use crate::result::CniResult;
use crate::version::{self, SUPPORTED, Version};
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::path::PathBuf;

/// One invocation: the validated environment and the decoded configuration.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    /// Empty for GC and STATUS.
    pub container_id: String,
    /// Empty when the runtime passed none (allowed on DEL, GC, STATUS).
    pub netns: String,
    /// Empty for GC and STATUS.
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    pub config: NetConf,
    /// The raw configuration, passed on unchanged when delegating.
    pub stdin: Vec<u8>,
}

impl Request {
    /// A request made of a configuration and `CNI_ARGS` alone, as the
    /// skeleton builds it once the environment is validated (container id
    /// `test`, interface `eth0`, no netns, empty `CNI_PATH`). For unit tests
    /// of a plugin's configuration handling: no process, no namespace.
    pub fn from_config(command: Command, config: &[u8], cni_args: &str) -> Result<Request> {
        Ok(Request {
            command,
            container_id: "test".to_string(),
            netns: String::new(),
            ifname: "eth0".to_string(),
            args: CniArgs::parse(cni_args)?,
            path: Vec::new(),
            config: NetConf::from_slice(config)?,
            stdin: config.to_vec(),
        })
    }

    /// The spec version of the configuration (a missing `cniVersion` is
    /// 0.1.0, as in the reference).
    pub fn version(&self) -> &str {
        effective_version(&self.config.cni_version)
    }

    /// Decode the plugin's own configuration type from stdin. Type errors are
    /// code 7 with the key path in the message.
    pub fn plugin_config<T: DeserializeOwned>(&self) -> Result<T> {
        parse_config(&self.stdin)
    }

    /// `prevResult`, decoded in the configuration's version and converted
    /// to the current format.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match &self.config.prev_result {
            None => Ok(None),
            Some(v) => CniResult::from_value(v.clone(), self.version())
                .map(Some)
                .map_err(|e| e.context("failed to parse prevResult")),
        }
    }

    /// `prevResult`, or the reference's error when a verb requires it.
    pub fn require_prev_result(&self) -> Result<CniResult> {
        self.prev_result()?
            .ok_or_else(|| Error::invalid_config("Required prevResult missing"))
    }
}

fn effective_version(v: &str) -> &str {
    if v.is_empty() { "0.1.0" } else { v }
}

/// A CNI plugin: one method per verb. STATUS and GC default to success.
pub trait Plugin {
    /// Name printed when run by hand (`CNI <NAME> plugin v<VERSION>`).
    const NAME: &'static str;
    const VERSION: &'static str;

    fn add(&self, req: &Request) -> Result<CniResult>;
    fn del(&self, req: &Request) -> Result<()>;
    fn check(&self, req: &Request) -> Result<()>;
    fn status(&self, _req: &Request) -> Result<()> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> Result<()> {
        Ok(())
    }
}

/// The text a person sees when running a plugin with no `CNI_COMMAND`.
pub fn about<P: Plugin>() -> String {
    format!(
        "CNI {} plugin v{}\nCNI protocol versions supported: {}\n",
        P::NAME,
        P::VERSION,
        SUPPORTED.join(", ")
    )
}

/// Run the plugin against the real process environment and stdio, then exit.
pub fn run<P: Plugin>(plugin: &P) -> ! {
    let getenv = |k: &str| std::env::var(k).ok();
    let code = dispatch(
        plugin,
        &getenv,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code)
}

/// The whole protocol for one invocation; returns the exit status.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    getenv: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let cmd = getenv("CNI_COMMAND").unwrap_or_default();
    if cmd.is_empty() {
        let _ = stderr.write_all(about::<P>().as_bytes());
        return 0;
    }
    let mut version_for_errors = version::CURRENT.to_string();
    match handle(plugin, &cmd, getenv, stdin, &mut version_for_errors) {
        Ok(Some(out)) => {
            let text = serde_json::to_string_pretty(&out).unwrap_or_default();
            if writeln!(stdout, "{text}").is_err() {
                return 1;
            }
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let text =
                serde_json::to_string_pretty(&e.to_json(&version_for_errors)).unwrap_or_default();
            let _ = writeln!(stdout, "{text}");
            1
        }
    }
}

/// One invocation, step by step, in the reference's order of checks so that
/// each problem gets the reference's code and message.
fn handle<P: Plugin>(
    plugin: &P,
    cmd: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version_for_errors: &mut String,
) -> Result<Option<serde_json::Value>> {
    let command = Command::parse(cmd)?;
    let get = |k: &str| getenv(k).unwrap_or_default();
    require_env(command, &get)?;
    if command == Command::Version {
        // The request body ({"cniVersion": ...}) carries nothing we need.
        return Ok(Some(version::version_info()));
    }
    let (container_id, ifname) = attachment_ids(command, &get)?;
    let data = read_stdin(stdin)?;
    let conf_version = check_name_and_version(&data)?;
    *version_for_errors = conf_version.to_string();
    check_verb_allowed(command, conf_version)?;

    let config = NetConf::from_slice(&data)?;
    let args = CniArgs::parse(&get("CNI_ARGS"))?;
    let netns = get("CNI_NETNS");
    if command.is_per_attachment() && !netns.is_empty() && !netns_override(&get) {
        refuse_own_netns(&netns)?;
    }
    let req = Request {
        command,
        container_id,
        netns,
        ifname,
        args,
        path: env::split_path(&get("CNI_PATH")),
        config,
        stdin: data,
    };
    call_verb(plugin, &req)
}

/// Every variable the verb cannot do without, all named in one error.
fn require_env(command: Command, get: &dyn Fn(&str) -> String) -> Result<()> {
    let missing: Vec<&str> = command
        .required_env()
        .iter()
        .copied()
        .filter(|k| get(k).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid_env(format!(
            "required env variables [{}] missing",
            missing.join(",")
        )));
    }
    Ok(())
}

/// `CNI_CONTAINERID` and `CNI_IFNAME`, validated, for the per-attachment
/// verbs; empty for GC and STATUS.
fn attachment_ids(command: Command, get: &dyn Fn(&str) -> String) -> Result<(String, String)> {
    if !command.is_per_attachment() {
        return Ok((String::new(), String::new()));
    }
    let id = get("CNI_CONTAINERID");
    env::validate_container_id(&id)?;
    let ifname = get("CNI_IFNAME");
    env::validate_ifname(&ifname)?;
    Ok((id, ifname))
}

fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    stdin
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("error reading from stdin: {e}")))?;
    Ok(data)
}

/// Name and version first, as the reference does, so that these get their
/// specific codes before any other key is looked at. Returns the
/// configuration's (supported) version.
fn check_name_and_version(data: &[u8]) -> Result<Version> {
    let head: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| Error::decoding(format!("error unmarshall network config: {e}")))?;
    let Some(obj) = head.as_object() else {
        return Err(Error::decoding(
            "error unmarshall network config: expected a JSON object",
        ));
    };
    let name = match obj.get("name") {
        None | Some(serde_json::Value::Null) => "",
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(Error::invalid_config(format!(
                "invalid network config: name: expected a string, got {other}"
            )));
        }
    };
    env::validate_network_name(name)?;
    let conf_version = match obj.get("cniVersion") {
        None | Some(serde_json::Value::Null) => "",
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(Error::decoding(format!(
                "invalid network config: cniVersion: expected a string, got {other}"
            )));
        }
    };
    let conf_version = effective_version(conf_version);
    let parsed = Version::parse(conf_version)?;
    if !Version::is_supported(conf_version) {
        return Err(
            Error::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!(
                    "config is {conf_version:?}, plugin supports [{}]",
                    SUPPORTED
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
        );
    }
    Ok(parsed)
}

/// CHECK needs 0.4.0, GC and STATUS need 1.1.0.
fn check_verb_allowed(command: Command, version: Version) -> Result<()> {
    let floor = match command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(floor) = floor
        && version < floor
    {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {command}"),
        )
        .with_details(format!("{command} needs cniVersion {floor} or later")));
    }
    Ok(())
}

/// The plugin's method for the verb; ADD's result in the config's version.
fn call_verb<P: Plugin>(plugin: &P, req: &Request) -> Result<Option<serde_json::Value>> {
    match req.command {
        Command::Add => {
            let result = plugin.add(req)?;
            Ok(Some(result.to_value(req.version())?))
        }
        Command::Del => plugin.del(req).map(|()| None),
        Command::Check => plugin.check(req).map(|()| None),
        Command::Status => plugin.status(req).map(|()| None),
        Command::Gc => plugin.gc(req).map(|()| None),
        Command::Version => Ok(Some(version::version_info())),
    }
}

fn netns_override(get: &dyn Fn(&str) -> String) -> bool {
    matches!(
        get("CNI_NETNS_OVERRIDE").to_ascii_lowercase().as_str(),
        "1" | "true"
    )
}

/// Configuring the plugin's own namespace as if it were a container's is
/// how a runtime bug once took the host's `lo` down; refuse it *before*
/// doing anything (the reference checks only afterwards).
fn refuse_own_netns(netns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), Ok(own)) = (
        std::fs::metadata(netns),
        std::fs::metadata("/proc/self/ns/net"),
    ) else {
        // A missing path is the plugin's to report (or to accept on DEL).
        return Ok(());
    };
    if target.dev() == own.dev() && target.ino() == own.ino() {
        return Err(Error::new(
            code::INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        )
        .with_details(netns.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<(Command, String, String)>>,
        with_ip: bool,
    }

    impl Plugin for Recorder {
        const NAME: &'static str = "test";
        const VERSION: &'static str = "9.9.9";
        fn add(&self, req: &Request) -> Result<CniResult> {
            self.calls.borrow_mut().push((
                req.command,
                req.container_id.clone(),
                req.ifname.clone(),
            ));
            let mut r = CniResult {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            if self.with_ip {
                r.ips.push(IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                });
            }
            Ok(r)
        }
        fn del(&self, req: &Request) -> Result<()> {
            self.calls.borrow_mut().push((
                req.command,
                req.container_id.clone(),
                req.ifname.clone(),
            ));
            Ok(())
        }
        fn check(&self, req: &Request) -> Result<()> {
            self.del(req)
        }
        fn gc(&self, req: &Request) -> Result<()> {
            self.del(req)
        }
    }

    fn base_env(cmd: &str) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("CNI_COMMAND".into(), cmd.into());
        m.insert("CNI_CONTAINERID".into(), "ctr1".into());
        m.insert("CNI_NETNS".into(), "/run/netns/none-such".into());
        m.insert("CNI_IFNAME".into(), "eth0".into());
        m.insert("CNI_PATH".into(), "/opt/cni/bin".into());
        m
    }

    struct Out {
        code: i32,
        stdout: String,
        stderr: String,
    }

    impl Out {
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.stdout).unwrap()
        }
    }

    fn call(p: &Recorder, env: &HashMap<String, String>, stdin: &str) -> Out {
        let getenv = |k: &str| env.get(k).cloned();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = dispatch(p, &getenv, &mut stdin.as_bytes(), &mut out, &mut err);
        Out {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net1","type":"test"}"#;

    fn conf(version: &str) -> String {
        format!(r#"{{"cniVersion":"{version}","name":"net1","type":"test"}}"#)
    }

    fn expect_error(out: &Out, code: u32, msg: &str) {
        assert_ne!(out.code, 0, "stdout: {}", out.stdout);
        let j = out.json();
        assert_eq!(j["code"], code, "{}", out.stdout);
        assert_eq!(j["msg"], msg, "{}", out.stdout);
    }

    #[test]
    fn no_command_prints_about_to_stderr() {
        let p = Recorder::default();
        let out = call(&p, &HashMap::new(), "");
        assert_eq!(out.code, 0);
        assert!(out.stdout.is_empty());
        assert!(out.stderr.starts_with("CNI test plugin v9.9.9\n"));
        assert!(
            out.stderr
                .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
        );
    }

    #[test]
    fn version_lists_all_supported() {
        let p = Recorder::default();
        let mut env = HashMap::new();
        env.insert("CNI_COMMAND".to_string(), "VERSION".to_string());
        let out = call(&p, &env, "");
        assert_eq!(out.code, 0);
        assert_eq!(
            out.json()["supportedVersions"],
            serde_json::json!(SUPPORTED)
        );
    }

    #[test]
    fn add_calls_plugin_and_prints_result_in_config_version() {
        let p = Recorder {
            with_ip: true,
            ..Default::default()
        };
        let out = call(&p, &base_env("ADD"), &conf("0.4.0"));
        assert_eq!(out.code, 0, "{}", out.stdout);
        let j = out.json();
        assert_eq!(j["cniVersion"], "0.4.0");
        assert_eq!(j["ips"][0]["version"], "4");
        assert_eq!(
            p.calls.borrow()[0],
            (Command::Add, "ctr1".into(), "eth0".into())
        );
    }

    #[test]
    fn result_without_ip_cannot_be_printed_as_020() {
        let p = Recorder::default();
        let out = call(&p, &base_env("ADD"), &conf("0.2.0"));
        expect_error(&out, 1, "cannot convert: no valid IP addresses");
    }

    #[test]
    fn bad_inputs_get_their_codes() {
        let p = Recorder::default();
        let with = |k: &str, v: &str, cmd: &str| {
            let mut e = base_env(cmd);
            e.insert(k.into(), v.into());
            e
        };
        let without = |k: &str, cmd: &str| {
            let mut e = base_env(cmd);
            e.remove(k);
            e
        };
        let cases: Vec<(HashMap<String, String>, String, u32, &str)> = vec![
            (base_env("ADD"), "{".into(), 6, ""),
            (base_env("ADD"), "[1]".into(), 6, ""),
            (
                base_env("ADD"),
                r#"{"cniVersion":"1.0.0"}"#.into(),
                7,
                "missing network name",
            ),
            (
                base_env("ADD"),
                r#"{"cniVersion":"1.0.0","name":"../x"}"#.into(),
                7,
                "invalid characters found in network name",
            ),
            (
                base_env("ADD"),
                r#"{"cniVersion":"1.0.0","name":7}"#.into(),
                7,
                "",
            ),
            (
                base_env("ADD"),
                conf("9.9.9"),
                1,
                "incompatible CNI versions",
            ),
            (base_env("ADD"), conf("1.0"), 6, ""),
            (
                with("CNI_CONTAINERID", "bad id", "ADD"),
                CONF.into(),
                4,
                "invalid characters in containerID",
            ),
            (
                with("CNI_IFNAME", "a/b", "ADD"),
                CONF.into(),
                4,
                "interface name contains / or : or whitespace characters",
            ),
            (
                with("CNI_IFNAME", "abcdefghijklmnop", "DEL"),
                CONF.into(),
                4,
                "interface name is too long",
            ),
            (
                without("CNI_NETNS", "ADD"),
                CONF.into(),
                4,
                "required env variables [CNI_NETNS] missing",
            ),
            (
                without("CNI_PATH", "GC"),
                conf("1.1.0"),
                4,
                "required env variables [CNI_PATH] missing",
            ),
            (
                base_env("CHECK"),
                conf("0.3.1"),
                1,
                "config version does not allow CHECK",
            ),
            (
                base_env("GC"),
                conf("1.0.0"),
                1,
                "config version does not allow GC",
            ),
            (
                base_env("STATUS"),
                conf("1.0.0"),
                1,
                "config version does not allow STATUS",
            ),
            (
                base_env("BOGUS"),
                CONF.into(),
                4,
                "unknown CNI_COMMAND: BOGUS",
            ),
            (
                with("CNI_ARGS", "novalue", "ADD"),
                CONF.into(),
                4,
                "ARGS: invalid pair \"novalue\"",
            ),
            (
                base_env("ADD"),
                r#"{"cniVersion":"1.0.0","name":"n","ipMasq":"yes"}"#.into(),
                7,
                "",
            ),
        ];
        for (env, stdin, code, msg) in cases {
            let out = call(&p, &env, &stdin);
            assert_ne!(out.code, 0, "{stdin} {env:?}");
            let j = out.json();
            assert_eq!(j["code"], code, "{stdin} {env:?}: {}", out.stdout);
            if !msg.is_empty() {
                assert_eq!(j["msg"], msg, "{stdin}");
            }
        }
        assert!(
            p.calls.borrow().is_empty(),
            "no bad input may reach the plugin"
        );
    }

    #[test]
    fn incompatible_version_details_list_supported() {
        let p = Recorder::default();
        let out = call(&p, &base_env("ADD"), &conf("9.9.9"));
        let d = out.json()["details"].as_str().unwrap().to_string();
        assert!(
            d.starts_with("config is \"9.9.9\", plugin supports [\"0.1.0\""),
            "{d}"
        );
    }

    #[test]
    fn gc_and_status_need_no_container() {
        let p = Recorder::default();
        let mut env = HashMap::new();
        env.insert("CNI_COMMAND".to_string(), "GC".to_string());
        env.insert("CNI_PATH".to_string(), "/x".to_string());
        let out = call(&p, &env, &conf("1.1.0"));
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert_eq!(
            p.calls.borrow()[0],
            (Command::Gc, String::new(), String::new())
        );
        env.insert("CNI_COMMAND".to_string(), "STATUS".to_string());
        env.remove("CNI_PATH");
        assert_eq!(call(&p, &env, &conf("1.1.0")).code, 0);
    }

    #[test]
    fn del_needs_no_netns_and_missing_version_is_010() {
        let p = Recorder::default();
        let mut env = base_env("DEL");
        env.remove("CNI_NETNS");
        let out = call(&p, &env, r#"{"name":"n"}"#);
        assert_eq!(out.code, 0, "{}", out.stdout);
    }

    #[test]
    fn own_netns_is_refused_unless_overridden() {
        let p = Recorder::default();
        let env = {
            let mut e = base_env("ADD");
            e.insert("CNI_NETNS".into(), "/proc/self/ns/net".into());
            e
        };
        let out = call(&p, &env, CONF);
        expect_error(
            &out,
            8,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        );
        assert!(p.calls.borrow().is_empty());
        let mut env = env;
        env.insert("CNI_NETNS_OVERRIDE".into(), "1".into());
        assert_eq!(call(&p, &env, CONF).code, 0);
    }

    #[test]
    fn errors_carry_the_config_version() {
        let p = Recorder::default();
        let out = call(&p, &base_env("ADD"), &conf("0.2.0"));
        assert_eq!(out.json()["cniVersion"], "0.2.0");
    }
}
