//! Teardown at the kernel's point of published removal: DEL returns once
//! the kernel has unlisted the links and committed the netfilter changes,
//! and detached helpers take over the rest of the kernel's wait. The
//! contract, tested on the built binaries exec'd as a runtime does:
//!
//! - when bridge DEL (bridge + host-local + portmap, both netfilter
//!   backends) returns, neither veth end is listed in either namespace, the
//!   bridge has no port for it, no rule names the container, no
//!   reservation is left, and an immediate ADD of the same container id
//!   and ifname into the same namespace succeeds;
//! - 64-way concurrent ADD/DEL churn leaves nothing, and afterwards no
//!   helper outlives its work;
//! - macvlan DEL returns with the link gone;
//! - with `CNI_RS_SYNC_TEARDOWN=1` no helper is started and DEL leaves
//!   nothing, as before.
//!
//! (kill -9 during DEL is in the fault suite, tests/tests/reliability.rs.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use integration::{
    Invocation, Netns, Outcome, bin_dir, can_run, dir_entries, plugin, temp_dir, write_executable,
};
use serde_json::{Value, json};

const NET: &str = "tdnet";
const BRIDGE: &str = "td0";

/// Helpers are counted process-wide: tests that start plugins hold this
/// while the counting test runs (and it holds it exclusively).
static PLUGINS_RUNNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// bridge + host-local + portmap on one network.
struct Chain {
    bridge: Value,
    portmap: Value,
    data: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Chain {
    fn new(backend: &str, subnet: &str) -> Chain {
        let data = temp_dir("cnit-td-ipam");
        Chain {
            bridge: json!({
                "cniVersion": "1.0.0",
                "name": NET,
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "ipMasqBackend": backend,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data.path(),
                },
            }),
            portmap: json!({
                "cniVersion": "1.0.0",
                "name": NET,
                "type": "portmap",
                "backend": backend,
                "capabilities": {"portMappings": true},
            }),
            data,
            env: Vec::new(),
        }
    }

    fn with_env(mut self, k: &str, v: &str) -> Chain {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    fn portmap_conf(&self, prev: &Value, port: u16) -> Value {
        let mut c = self.portmap.clone();
        c["prevResult"] = prev.clone();
        c["runtimeConfig"] =
            json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]});
        c
    }

    fn call(&self, bin: &Path, verb: &str, conf: &Value, id: &str, ctr: &Netns) -> Invocation {
        let mut inv = Invocation::new(bin, verb)
            .container_id(id)
            .netns(ctr)
            .config(conf);
        for (k, v) in &self.env {
            inv = inv.env(k, v);
        }
        inv
    }

    fn add(&self, id: &str, port: u16, ctr: &Netns, host: &Netns) -> Result<Value, String> {
        let out = self
            .call(&plugin("bridge"), "ADD", &self.bridge, id, ctr)
            .run(host);
        if !out.success() {
            return Err(format!("bridge ADD {id}: {}{}", out.stdout, out.stderr));
        }
        let prev = out.json();
        let out = self
            .call(
                &plugin("portmap"),
                "ADD",
                &self.portmap_conf(&prev, port),
                id,
                ctr,
            )
            .run(host);
        if !out.success() {
            return Err(format!("portmap ADD {id}: {}{}", out.stdout, out.stderr));
        }
        Ok(prev)
    }

    /// The chain's DEL in reverse order; bridge runs as `bridge_bin`.
    fn del_with(
        &self,
        bridge_bin: &Path,
        id: &str,
        port: u16,
        prev: &Value,
        ctr: &Netns,
        host: &Netns,
    ) -> Result<(), String> {
        let out = self
            .call(
                &plugin("portmap"),
                "DEL",
                &self.portmap_conf(prev, port),
                id,
                ctr,
            )
            .run(host);
        if !out.success() {
            return Err(format!("portmap DEL {id}: {}{}", out.stdout, out.stderr));
        }
        let mut br = self.bridge.clone();
        br["prevResult"] = prev.clone();
        let out: Outcome = self.call(bridge_bin, "DEL", &br, id, ctr).run(host);
        if !out.success() {
            return Err(format!("bridge DEL {id}: {}{}", out.stdout, out.stderr));
        }
        Ok(())
    }

    fn del(
        &self,
        id: &str,
        port: u16,
        prev: &Value,
        ctr: &Netns,
        host: &Netns,
    ) -> Result<(), String> {
        self.del_with(&plugin("bridge"), id, port, prev, ctr, host)
    }

    /// Address reservations (files named by an address) of the network.
    fn reservations(&self) -> Vec<String> {
        dir_entries(&self.data.path().join(NET))
            .into_iter()
            .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

/// The host end of the container's veth, as the result names it.
fn host_veth(prev: &Value) -> String {
    prev["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["sandbox"].as_str().is_none_or(str::is_empty))
        .filter_map(|i| i["name"].as_str())
        .find(|n| *n != BRIDGE)
        .unwrap_or_else(|| panic!("no host veth in {prev}"))
        .to_string()
}

fn container_ip(prev: &Value) -> String {
    prev["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {prev}"))
        .to_string()
}

/// Ports of the test bridge, by name.
fn bridge_ports(host: &Netns) -> Vec<String> {
    let out = host.exec("ip", &["-o", "link", "show", "master", BRIDGE]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Everything the contract says is gone the moment DEL has returned.
fn assert_gone(chain: &Chain, host: &Netns, ctr: &Netns, id: &str, prev: &Value, when: &str) {
    let veth = host_veth(prev);
    let ip = container_ip(prev);
    assert!(
        !ctr.has_link("eth0"),
        "{when}: eth0 still listed in the container"
    );
    assert!(
        !host.has_link(&veth),
        "{when}: host end {veth} still listed"
    );
    assert!(
        !ctr.links().iter().any(|l| l == &veth),
        "{when}: host end {veth} listed in the container"
    );
    assert!(
        !host.links().iter().any(|l| l == "eth0"),
        "{when}: eth0 listed in the host"
    );
    let ports = bridge_ports(host);
    assert!(ports.is_empty(), "{when}: bridge ports left: {ports:?}");
    let rules = host.netfilter();
    for needle in [id, ip.as_str()] {
        let hits: Vec<&str> = rules.lines().filter(|l| l.contains(needle)).collect();
        assert!(hits.is_empty(), "{when}: rules name {needle}: {hits:#?}");
    }
    assert_eq!(
        chain.reservations(),
        Vec::<String>::new(),
        "{when}: reservation left"
    );
}

fn contract(backend: &str) {
    let _running = PLUGINS_RUNNING.read();
    let host = Netns::new("cnit-td-host");
    let ctr = Netns::bare("cnit-td-ctr");
    let chain = Chain::new(backend, "10.66.0.0/24");
    let id = format!("tdcontract-{backend}");
    let mut prev = chain.add(&id, 18080, &ctr, &host).unwrap();
    for round in 0..5 {
        chain.del(&id, 18080, &prev, &ctr, &host).unwrap();
        assert_gone(
            &chain,
            &host,
            &ctr,
            &id,
            &prev,
            &format!("{backend} round {round}"),
        );
        // At once, the same container id, ifname and namespace again.
        prev = chain
            .add(&id, 18080, &ctr, &host)
            .unwrap_or_else(|e| panic!("{backend} round {round}: ADD right after DEL: {e}"));
        assert!(ctr.has_link("eth0"));
        assert!(
            host.ping(&container_ip(&prev)),
            "{backend}: no traffic after re-ADD"
        );
    }
    chain.del(&id, 18080, &prev, &ctr, &host).unwrap();
    assert_gone(&chain, &host, &ctr, &id, &prev, backend);
}

#[test]
fn bridge_del_returns_with_everything_gone_iptables() {
    if !can_run() {
        return;
    }
    contract("iptables");
}

#[test]
fn bridge_del_returns_with_everything_gone_nftables() {
    if !can_run() {
        return;
    }
    contract("nftables");
}

/// Processes running one of our binaries that no test process or plugin
/// started: detached helpers (re-parented to init or a subreaper).
fn orphan_helpers() -> Vec<String> {
    let bin = bin_dir().canonicalize().unwrap_or_else(|_| bin_dir());
    let ours = |pid: &str| -> Option<PathBuf> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        let plugin = exe.file_name()?.to_str()?;
        (exe.parent() == Some(bin.as_path()) && integration::PLUGINS.contains(&plugin))
            .then_some(exe)
    };
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(exe) = ours(&pid) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command (which is in parentheses): state, ppid.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        if ppid == me || ours(&ppid).is_some() {
            continue;
        }
        found.push(format!("{pid} {} (parent {ppid})", exe.display()));
    }
    found
}

#[test]
fn churn_leaves_nothing_and_no_helper_outlives_its_work() {
    if !can_run() {
        return;
    }
    let _exclusive = PLUGINS_RUNNING.write();
    let host = Netns::new("cnit-td-host");
    let chain = Chain::new("iptables", "10.67.0.0/16");
    let first = Netns::bare("cnit-td-ctr");
    let prev = chain.add("tdwarm", 19000, &first, &host).unwrap();
    chain.del("tdwarm", 19000, &prev, &first, &host).unwrap();
    let workers = 64;
    let cycles = std::env::var("CNI_TD_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let containers: Vec<Netns> = (0..workers).map(|_| Netns::bare("cnit-td-ctr")).collect();
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for (w, ctr) in containers.iter().enumerate() {
            let (chain, host, errors) = (&chain, &host, &errors);
            s.spawn(move || {
                let port = 19001 + w as u16;
                for c in 0..cycles {
                    let id = format!("td{w}x{c}");
                    let result = chain
                        .add(&id, port, ctr, host)
                        .and_then(|prev| chain.del(&id, port, &prev, ctr, host));
                    if let Err(e) = result {
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
            });
        }
    });
    eprintln!(
        "{} containers ({workers} workers) added and deleted in {:?}",
        workers * cycles,
        started.elapsed()
    );
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        errors.is_empty(),
        "{} errors, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(
        chain.reservations(),
        Vec::<String>::new(),
        "leaked reservations"
    );
    let veths: Vec<String> = host
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(veths.is_empty(), "leaked veths: {veths:?}");
    assert!(bridge_ports(&host).is_empty());
    for c in &containers {
        assert!(!c.has_link("eth0"), "eth0 left in {}", c.name());
    }
    let rules = host.netfilter();
    let left: Vec<&str> = rules.lines().filter(|l| l.contains("10.67.")).collect();
    assert!(left.is_empty(), "rules left: {left:#?}");
    for w in 0..workers {
        for c in 0..cycles {
            let id = format!("td{w}x{c}");
            assert!(!rules.lines().any(|l| l.contains(&id)), "a rule names {id}");
        }
    }
    // Every helper ends on its own once its request returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = orphan_helpers();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "helpers still running after 10 s: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `bridge` run under strace; the log counts the processes it forks
/// without exec (a raw fork is `clone(... flags=SIGCHLD)`).
fn traced_bridge(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("strace.log");
    let wrapper = write_executable(
        dir,
        "bridge",
        &format!(
            "#!/bin/sh\nexec strace -f -qq -e trace=clone,clone3,fork -o {} {} \"$@\"\n",
            log.display(),
            plugin("bridge").display()
        ),
    )
    .expect("write the strace wrapper");
    (wrapper, log)
}

/// Raw forks in the strace log: `clone(child_stack=NULL, flags=SIGCHLD)`,
/// or its first half when another traced process's line came in between
/// (`flags=SIGCHLD <unfinished ...>`, resumed on a later line).
fn helpers_forked(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("flags=SIGCHLD)") || l.contains("flags=SIGCHLD <unfinished"))
        .count()
}

fn del_helpers(sync: bool) -> usize {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: strace not installed");
        return usize::MAX;
    }
    let _running = PLUGINS_RUNNING.read();
    let host = Netns::new("cnit-td-host");
    let ctr = Netns::bare("cnit-td-ctr");
    let mut chain = Chain::new(
        "nftables",
        if sync { "10.68.0.0/24" } else { "10.69.0.0/24" },
    );
    if sync {
        chain = chain.with_env("CNI_RS_SYNC_TEARDOWN", "1");
    }
    let dir = temp_dir("cnit-td-trace");
    let (wrapper, log) = traced_bridge(dir.path());
    let id = "tdsync";
    let prev = chain.add(id, 18181, &ctr, &host).unwrap();
    chain
        .del_with(&wrapper, id, 18181, &prev, &ctr, &host)
        .unwrap();
    assert_gone(
        &chain,
        &host,
        &ctr,
        id,
        &prev,
        if sync { "sync" } else { "detached" },
    );
    let prev = chain.add(id, 18181, &ctr, &host).unwrap();
    chain.del(id, 18181, &prev, &ctr, &host).unwrap();
    helpers_forked(&log)
}

#[test]
fn sync_setting_keeps_the_old_teardown() {
    if !can_run() {
        return;
    }
    let n = del_helpers(true);
    if n != usize::MAX {
        assert_eq!(n, 0, "a helper was forked with CNI_RS_SYNC_TEARDOWN=1");
    }
}

#[test]
fn detached_teardown_forks_helpers() {
    if !can_run() {
        return;
    }
    let n = del_helpers(false);
    if n != usize::MAX {
        // One for the veth's RTM_DELLINK, one for the netfilter sockets.
        assert_eq!(n, 2, "helpers forked by bridge DEL");
    }
}

#[test]
fn macvlan_del_returns_with_the_link_gone() {
    if !can_run() {
        return;
    }
    let _running = PLUGINS_RUNNING.read();
    let host = Netns::new("cnit-td-mvhost");
    let server = Netns::new("cnit-td-mvsrv");
    host.wire_to(
        ("lan0", "192.168.60.254/24"),
        &server,
        ("srv0", "192.168.60.1/24"),
    );
    let data = temp_dir("cnit-td-mv");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "tdmv",
        "type": "macvlan",
        "master": "lan0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "192.168.60.0/24", "rangeStart": "192.168.60.10"}]],
            "dataDir": data.path(),
        },
    });
    let ctr = Netns::bare("cnit-td-mvctr");
    for round in 0..3 {
        let inv = |verb: &str| {
            Invocation::new(plugin("macvlan"), verb)
                .container_id("tdmv1")
                .netns(&ctr)
                .config(&conf)
        };
        inv("ADD").run(&host).expect_ok();
        assert!(ctr.has_link("eth0"));
        inv("DEL").run(&host).expect_ok();
        assert!(
            !ctr.has_link("eth0"),
            "round {round}: macvlan still listed after DEL"
        );
        let left: Vec<String> = dir_entries(&data.path().join("tdmv"))
            .into_iter()
            .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
            .collect();
        assert!(left.is_empty(), "round {round}: reservations {left:?}");
    }
}
