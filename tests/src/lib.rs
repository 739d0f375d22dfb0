//! The integration-test harness every plugin's tests reuse.
//!
//! Tests run the *built* plugin binaries exactly as a runtime does: `CNI_*`
//! environment, configuration on stdin, result or error JSON on stdout. The
//! plugin process runs inside a throwaway "host" namespace ([`Netns`]), so
//! the machine's own interfaces, routes and netfilter rules are never
//! touched; containers are throwaway namespaces too. Every namespace is
//! removed when its guard drops — also when the test fails.
//!
//! Binaries come from `target/debug` (`make test` builds them first) or from
//! the directory in `CNI_TEST_BIN_DIR`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project's plugin binaries.
pub const PLUGINS: &[&str] = &[
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "tuning",
    "firewall",
];

/// Where the Go reference plugins live (Debian's `containernetworking-plugins`).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Directory holding the project's built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// Path of one of the project's binaries; panics with a hint if not built.
pub fn plugin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --bins` (or `make test`) first",
        p.display()
    );
    p
}

/// Path of a Go reference plugin, or `None` (with a visible message) when
/// the reference plugins are not installed.
pub fn reference_plugin(name: &str) -> Option<PathBuf> {
    let p = Path::new(REFERENCE_DIR).join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: reference plugin {} not installed (apt-get install containernetworking-plugins)",
            p.display()
        );
        None
    }
}

/// Whether the tests can create namespaces; prints why not otherwise.
pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED: integration tests need root (network namespaces)");
    }
    root
}

/// A throwaway network namespace, removed on drop. `lo` is brought up.
#[derive(Debug)]
pub struct Netns {
    tmp: netns::TempNetns,
    handle: netns::NetNs,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let tmp = netns::TempNetns::new(prefix).expect("create netns");
        let handle = tmp.open().expect("open netns");
        let ns = Netns { tmp, handle };
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace whose `lo` stays down (as a runtime hands it to loopback).
    pub fn bare(prefix: &str) -> Self {
        let tmp = netns::TempNetns::new(prefix).expect("create netns");
        let handle = tmp.open().expect("open netns");
        Netns { tmp, handle }
    }

    pub fn name(&self) -> &str {
        self.tmp.name()
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// A `Command` whose process runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.handle.raw_fd();
        // SAFETY: between fork and exec only the async-signal-safe setns
        // syscall runs, on a descriptor this process keeps open.
        unsafe {
            cmd.pre_exec(move || netns::enter_for_exec(fd));
        }
        cmd
    }

    /// Run a program inside the namespace and return its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Run a program inside the namespace; panic with its stderr on failure.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "`{program} {}` in {} failed: {}{}",
            args.join(" "),
            self.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -j <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.run_ok("ip", &full);
        if text.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
    }

    /// Names of all links.
    pub fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a link exists.
    pub fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|l| l == name)
    }

    /// `ADDR/PREFIX` strings on a link.
    pub fn addresses(&self, link: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", link]);
        let mut out = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                    out.push(format!("{ip}/{len}"));
                }
            }
        }
        out
    }

    /// A veth pair from this namespace to `other`: `local` = (interface,
    /// address/prefix) here, `remote` the same there; both ends up.
    pub fn wire_to(&self, local: (&str, &str), other: &Netns, remote: (&str, &str)) {
        let (lif, laddr) = local;
        let (rif, raddr) = remote;
        self.run_ok(
            "ip",
            &[
                "link",
                "add",
                lif,
                "type",
                "veth",
                "peer",
                "name",
                rif,
                "netns",
                other.name(),
            ],
        );
        for (ns, ifname, addr) in [(self, lif, laddr), (other, rif, raddr)] {
            ns.run_ok("ip", &["addr", "add", addr, "dev", ifname]);
            ns.run_ok("ip", &["link", "set", ifname, "up"]);
        }
    }

    /// Whether `ping` to `addr` from inside this namespace gets a reply.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec("ping", &["-c", "1", "-W", "2", addr])
            .status
            .success()
    }

    /// A textual snapshot of everything a plugin may change in this
    /// namespace: links, addresses, routes, iptables and nftables rules, and
    /// the forwarding sysctls. Comparing snapshots proves "no change".
    pub fn snapshot(&self) -> String {
        let mut s = String::new();
        for args in [
            &["-o", "link", "show"][..],
            &["-o", "addr", "show"],
            &["route", "show", "table", "all"],
            &["-6", "route", "show", "table", "all"],
        ] {
            let out = self.exec("ip", args);
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        s.push_str(&self.netfilter());
        s
    }

    /// iptables (both families) and nftables rules, without counters and
    /// timestamps.
    pub fn netfilter(&self) -> String {
        let mut s = String::new();
        for prog in ["iptables-save", "ip6tables-save"] {
            let out = self.exec(prog, &[]);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if !line.starts_with('#') {
                    s.push_str(&strip_counters(line));
                    s.push('\n');
                }
            }
        }
        let out = self.exec("nft", &["list", "ruleset"]);
        s.push_str(&String::from_utf8_lossy(&out.stdout));
        s
    }
}

fn strip_counters(line: &str) -> String {
    // `:CHAIN POLICY [pkts:bytes]`
    match line.find(" [") {
        Some(i) if line.starts_with(':') => line[..i].to_string(),
        _ => line.to_string(),
    }
}

/// A host namespace with containers: the usual test topology.
pub struct Topology {
    pub host: Netns,
    pub containers: Vec<Netns>,
}

impl Topology {
    pub fn new(containers: usize) -> Self {
        Topology {
            host: Netns::new("cnit-host"),
            containers: (0..containers).map(|_| Netns::bare("cnit-ctr")).collect(),
        }
    }
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
        // Exactly the runtime's environment: nothing inherited but PATH
        // (plugins exec iptables/nft from it).
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        cmd.envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.plugin.display()));
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(&self.stdin);
        }
        let out = child.wait_with_output().expect("wait for plugin");
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

/// A temporary directory (e.g. a host-local `dataDir`), removed on drop.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

/// Files in a directory (names only, sorted), empty if it does not exist.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every path under `dir` (files and directories), relative, sorted: a
/// whole state directory at a glance, for "nothing changed" assertions.
pub fn dir_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Strip fields that legitimately differ between two runs (MACs, sandbox
/// paths, random veth names) so results of two implementations compare.
pub fn normalize_result(mut v: Value) -> Value {
    if let Some(ifaces) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifaces {
            if let Some(m) = i.as_object_mut() {
                m.remove("mac");
                if m.contains_key("sandbox") {
                    m.insert("sandbox".into(), Value::String("<netns>".into()));
                }
                if let Some(name) = m.get("name").and_then(Value::as_str)
                    && name.starts_with("veth")
                {
                    m.insert("name".into(), Value::String("veth<rand>".into()));
                }
            }
        }
    }
    v
}
