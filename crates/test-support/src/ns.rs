//! Throwaway network namespaces and commands run inside them.

use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use netns::{NetNs, TempNetns};

/// A `Command` whose process runs inside `ns` (entered between fork and
/// exec; this process's threads never move).
pub fn command_in(ns: &NetNs, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    let fd = ns.raw_fd();
    // SAFETY: between fork and exec only the async-signal-safe setns
    // syscall runs, on a descriptor the caller keeps open (`ns`).
    unsafe {
        cmd.pre_exec(move || netns::enter_for_exec(fd));
    }
    cmd
}

/// iptables (both families) and nftables rules as text, without comments,
/// counters and timestamps; each tool is run as `command(tool)` makes it
/// (in a namespace or not). A tool that cannot run contributes nothing.
pub fn netfilter_rules(mut command: impl FnMut(&str) -> Command) -> String {
    let mut s = String::new();
    for prog in ["iptables-save", "ip6tables-save"] {
        let Ok(out) = command(prog).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.starts_with('#') {
                s.push_str(&strip_counters(line));
                s.push('\n');
            }
        }
    }
    if let Ok(out) = command("nft").args(["list", "ruleset"]).output() {
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    s
}

fn strip_counters(line: &str) -> String {
    // `:CHAIN POLICY [pkts:bytes]`
    match line.find(" [") {
        Some(i) if line.starts_with(':') => line[..i].to_string(),
        _ => line.to_string(),
    }
}

/// A throwaway network namespace, removed on drop. `lo` is brought up.
#[derive(Debug)]
pub struct Netns {
    tmp: TempNetns,
    handle: NetNs,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let tmp = TempNetns::new(prefix).expect("create netns");
        let handle = tmp.open().expect("open netns");
        let ns = Netns { tmp, handle };
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace whose `lo` stays down (as a runtime hands it to loopback).
    pub fn bare(prefix: &str) -> Self {
        let tmp = TempNetns::new(prefix).expect("create netns");
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
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.handle, program)
    }

    /// The open namespace, for [`netns::NetNs::run`] and the like.
    pub fn handle(&self) -> &NetNs {
        &self.handle
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

    /// Wait until `ifname` has carrier and no address is tentative, so
    /// snapshots taken before and after a plugin run do not differ by the
    /// link settling on its own.
    pub fn wait_settled(&self, ifname: &str) {
        for _ in 0..100 {
            let l = self.ip_json(&["link", "show", ifname]);
            let tentative = self.ip_json(&["-6", "addr", "show", "tentative"]);
            if l[0]["operstate"] == "UP" && tentative.as_array().is_some_and(Vec::is_empty) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{ifname} never came up");
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

    /// Addresses of `link` other than the kernel's IPv6 link-local one.
    pub fn global_addresses(&self, link: &str) -> Vec<String> {
        self.addresses(link)
            .into_iter()
            .filter(|a| !a.starts_with("fe80:"))
            .collect()
    }

    /// Names of all links.
    pub fn links(&self) -> Vec<String> {
        self.link_names(&["link", "show"])
    }

    /// Names of the links of one kind (`ip link show type <kind>`).
    pub fn links_of_type(&self, kind: &str) -> Vec<String> {
        self.link_names(&["link", "show", "type", kind])
    }

    fn link_names(&self, args: &[&str]) -> Vec<String> {
        self.ip_json(args)
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

    /// [`Self::snapshot`] once freshly made links have settled: no link
    /// still without carrier, no IPv6 address still in DAD, and two reads
    /// 100 ms apart the same (at most 5 s). A "nothing changed" assertion
    /// compares against this, so a veth coming up is not mistaken for a change.
    pub fn settled_snapshot(&self) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut last = self.snapshot();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = self.snapshot();
            let busy = now.contains("NO-CARRIER") || now.contains("tentative");
            if (now == last && !busy) || std::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
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
        netfilter_rules(|program| self.command(program))
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

/// Why this kernel cannot stack a `kind` link on a veth (`type_args`: what
/// follows `type` in `ip link add`, e.g. `["vlan", "id", "5"]`), probed in
/// a throwaway namespace; `None` when it can.
pub fn link_type_missing(type_args: &[&str]) -> Option<String> {
    let kind = type_args.first().copied().unwrap_or_default();
    let ns = Netns::new("cnit-probe");
    ns.run_ok(
        "ip",
        &["link", "add", "p0", "type", "veth", "peer", "name", "p1"],
    );
    let mut args = vec!["link", "add", "link", "p0", "name", "probe0", "type"];
    args.extend_from_slice(type_args);
    let out = ns.exec("ip", &args);
    if out.status.success() {
        return None;
    }
    Some(format!(
        "this kernel cannot create {kind} links: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// For the tests that need a link type: false (after saying SKIPPED) when
/// the kernel lacks it (see [`link_type_missing`]).
pub fn kernel_has_link_type(type_args: &[&str]) -> bool {
    match link_type_missing(type_args) {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}
