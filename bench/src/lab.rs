//! One benchmark environment: a throwaway host namespace that this thread
//! enters (so every plugin the runtime execs from it lives there, as on a
//! node), a temporary state directory (result cache, host-local's dataDir),
//! the network configuration for one implementation and backend, and the
//! containers attached so far. Dropping the lab returns the thread to the
//! namespace it came from and removes every namespace it created; the host
//! namespace takes the bridge, the veths and all netfilter rules with it.
//!
//! Several labs may be alive at once (to interleave the implementations'
//! rounds, so a busy machine slows both alike): [`Lab::enter`] moves the
//! thread into a lab before each operation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{NetNs, TempNetns};
use runtime::{Attachment, NetworkConfigList, ResultCache, Runtime};
use serde_json::{Value, json};

use crate::Fallible;

pub const NETWORK: &str = "benchnet";
pub const SUBNET: &str = "10.90.0.0/16";
pub const MEASURED_HOST_PORT: u16 = 8080;
/// The bench chain's bridge.
pub const BRIDGE: &str = "bench0";
/// Background containers map hostPort FIRST_BACKGROUND_PORT + i.
const FIRST_BACKGROUND_PORT: u16 = 20000;

/// Which network configuration a lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// bridge + host-local + portmap, with the backend keys ([`conflist`]).
    Bench,
    /// podman 4's default network: bridge + host-local, portmap, firewall,
    /// tuning ([`podman_conflist`]).
    Podman,
}

/// Which implementation, netfilter backend and chain a lab runs.
#[derive(Debug, Clone)]
pub struct Variant {
    pub implementation: &'static str,
    pub backend: &'static str,
    pub plugin_dir: PathBuf,
    pub chain: Chain,
}

impl Variant {
    pub fn label(&self) -> String {
        match self.chain {
            Chain::Bench => format!("{} / {}", self.implementation, self.backend),
            Chain::Podman => format!("{} / podman chain", self.implementation),
        }
    }

    /// The plugins the chain execs (directly or as a delegate).
    pub fn plugins(&self) -> &'static [&'static str] {
        match self.chain {
            Chain::Bench => &["bridge", "host-local", "portmap"],
            Chain::Podman => &["bridge", "host-local", "portmap", "firewall", "tuning"],
        }
    }

    /// The bridge the chain's containers are attached to.
    pub fn bridge(&self) -> &'static str {
        match self.chain {
            Chain::Bench => BRIDGE,
            Chain::Podman => "cni-podman0",
        }
    }

    fn conflist(&self, data_dir: &Path) -> Value {
        match self.chain {
            Chain::Bench => conflist(self.backend, data_dir),
            Chain::Podman => podman_conflist(data_dir),
        }
    }
}

pub struct Lab {
    pub variant: Variant,
    pub runtime: Runtime,
    pub network: NetworkConfigList,
    state: tempfile::TempDir,
    background: Vec<(TempNetns, Attachment)>,
    host_ns: NetNs,
    host: TempNetns,
}

/// The namespace the bench started in, captured before any lab moved the
/// thread.
static HOME: std::sync::OnceLock<NetNs> = std::sync::OnceLock::new();

/// Return the thread to the namespace the bench started in.
pub fn go_home() {
    if let Some(home) = HOME.get() {
        let _ = nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET);
    }
}

/// The chain under test: bridge (gateway, masquerade) with host-local, then
/// portmap. The Go 1.1.1 plugins ignore the backend keys they do not know.
pub fn conflist(backend: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "ipMasqBackend": backend,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir.display().to_string(),
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "backend": backend,
                "snat": true
            }
        ]
    })
}

/// podman 4's default network as its package ships it
/// (`87-podman-bridge.conflist`: cniVersion 0.4.0, bridge `cni-podman0`,
/// 10.88.0.0/16, then portmap, firewall and tuning with no keys), with two
/// changes so labs stay apart: the network name and host-local's dataDir.
/// No backend keys: each implementation runs its defaults (iptables).
pub fn podman_conflist(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.4.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni-podman0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                    "dataDir": data_dir.display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning"}
        ]
    })
}

pub fn port_mapping(host_port: u16) -> Value {
    json!([{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}])
}

impl Lab {
    pub fn new(variant: Variant) -> Fallible<Lab> {
        if HOME.get().is_none() {
            let home = NetNs::current().map_err(|e| format!("open own namespace: {e}"))?;
            let _ = HOME.set(home);
        }
        let host = TempNetns::new("cni-bench-host").map_err(|e| e.to_string())?;
        let host_ns = host.open().map_err(|e| e.to_string())?;
        let state = tempfile::Builder::new()
            .prefix("cni-bench-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let conf = variant.conflist(&state.path().join("ipam"));
        let network = NetworkConfigList::from_bytes(conf.to_string().as_bytes(), "bench")
            .map_err(|e| e.to_string())?;
        let runtime = Runtime::new(vec![variant.plugin_dir.clone()])
            .with_cache(ResultCache::new(state.path().join("cache")));
        let lab = Lab {
            variant,
            runtime,
            network,
            state,
            background: Vec::new(),
            host_ns,
            host,
        };
        lab.enter()?;
        lab.ip(&["link", "set", "lo", "up"])?;
        Ok(lab)
    }

    /// From here on, this thread and everything it spawns (threads,
    /// plugins) is in the lab's host namespace.
    pub fn enter(&self) -> Fallible<()> {
        nix::sched::setns(&self.host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter {}: {e}", self.host.path().display()))
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.state.path().join("ipam").join(NETWORK)
    }

    /// Run `ip` in the lab's host namespace.
    pub fn ip(&self, args: &[&str]) -> Fallible<String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip {args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A runtime for the same network and cache, but exec'ing the plugins
    /// from `dir` (a wrapper directory).
    pub fn runtime_from(&self, dir: &Path) -> Runtime {
        Runtime::new(vec![dir.to_path_buf()])
            .with_cache(ResultCache::new(self.state.path().join("cache")))
    }

    pub fn attached(&self) -> usize {
        self.background.len()
    }

    /// Attach background containers (a namespace, a veth, an address and a
    /// hostPort each) until `count` are attached, then let the node settle
    /// ([`Lab::settle`]): how long that took, zero if nothing was attached.
    ///
    /// Background containers send no IPv6 router solicitations
    /// (`router_solicitations=0` in their namespace before ADD; everything
    /// else about their IPv6 is a new namespace's default). A container
    /// solicits a router 4, 8, 16, 32, 64 s … after its start (RFC 7559
    /// backoff, up to an hour), and the bridge floods each solicitation to
    /// every port: hundreds of containers attached within seconds would
    /// send those in waves through the whole measurement (at 500: 40 frames
    /// a second at 16–32, 42–70 and 96–146 s after attaching, each
    /// delivered to 500 namespaces), which a node whose containers started
    /// over hours never sees. The measured container keeps them.
    pub fn attach_until(&mut self, count: usize) -> Fallible<Duration> {
        self.enter()?;
        let attaching = self.background.len() < count;
        while self.background.len() < count {
            crate::check_interrupted()?;
            let i = self.background.len();
            let ns = TempNetns::new("cni-bench-bg").map_err(|e| e.to_string())?;
            set_ipv6_conf(&ns, &["default"], "router_solicitations", "0")?;
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| FIRST_BACKGROUND_PORT.checked_add(i))
                .ok_or("too many background containers")?;
            let mut att =
                Attachment::new(&format!("bg{i}"), &ns.path().display().to_string(), "eth0");
            att.capability_args
                .insert("portMappings".into(), port_mapping(port));
            self.runtime
                .add(&self.network, &att)
                .map_err(|e| format!("attach background container {i}: {e}"))?;
            self.background.push((ns, att));
        }
        if !attaching {
            return Ok(Duration::ZERO);
        }
        self.settle()
    }

    /// Wait until the node is quiet again after attaching: each new
    /// container's IPv6 start-up (MLD reports, duplicate address detection,
    /// the last a second or two after its ADD) is flooded by the bridge to every
    /// port, and right after attaching hundreds that traffic takes a good
    /// part of a core. A node whose containers were attached some time ago
    /// has none of it. Quiet: the bridge receives at most
    /// [`QUIET_PACKETS`] frames in [`QUIET_WINDOW`]; at most
    /// [`SETTLE_BOUND`]. Returns how long it waited.
    pub fn settle(&self) -> Fallible<Duration> {
        let started = Instant::now();
        let mut last = self.bridge_rx_packets()?;
        while started.elapsed() < SETTLE_BOUND {
            crate::check_interrupted()?;
            std::thread::sleep(QUIET_WINDOW);
            let now = self.bridge_rx_packets()?;
            if now.saturating_sub(last) <= QUIET_PACKETS {
                break;
            }
            last = now;
        }
        Ok(started.elapsed())
    }

    /// The lab's `/proc/net/dev` (this thread enters the lab's namespace).
    fn net_dev(&self) -> Fallible<String> {
        self.enter()?;
        std::fs::read_to_string("/proc/thread-self/net/dev")
            .map_err(|e| format!("/proc/thread-self/net/dev: {e}"))
    }

    /// Frames the lab's bridge has received (every flooded multicast frame
    /// is also delivered to the bridge device), from `/proc/net/dev` of the
    /// lab's namespace (0 if it has no bridge yet).
    fn bridge_rx_packets(&self) -> Fallible<u64> {
        let dev = self.net_dev()?;
        let bridge = format!("{}:", self.variant.bridge());
        Ok(dev
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(bridge.as_str()))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// Host ends of veths (`veth…`, both implementations' names) in the
    /// lab's namespace, from its `/proc/net/dev`.
    fn host_veths(&self) -> Fallible<usize> {
        Ok(self
            .net_dev()?
            .lines()
            .filter(|l| l.trim_start().starts_with("veth"))
            .count())
    }
}

/// Write `value` to `net/ipv6/conf/<scope>/<key>` in namespace `ns`, for
/// each of `scopes` (`default` reaches the interfaces created later).
pub fn set_ipv6_conf(ns: &TempNetns, scopes: &[&str], key: &str, value: &str) -> Fallible<()> {
    let handle = ns.open().map_err(|e| e.to_string())?;
    handle
        .run(|| -> Fallible<()> {
            for scope in scopes {
                let path = format!("/proc/sys/net/ipv6/conf/{scope}/{key}");
                std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?
}

/// At most this many frames per [`QUIET_WINDOW`] on a settled bridge.
const QUIET_PACKETS: u64 = 5;
const QUIET_WINDOW: Duration = Duration::from_millis(500);
const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// How long a dropped lab waits for the kernel to destroy its containers'
/// namespaces.
const CLEANUP_BOUND: Duration = Duration::from_secs(30);

impl Drop for Lab {
    fn drop(&mut self) {
        // Back home first: the host namespace is about to lose its name.
        go_home();
        let removed = self.background.len();
        for (ns, _) in self.background.drain(..) {
            drop(ns);
        }
        // The kernel destroys removed namespaces later, in one worker, and
        // a measurement started meanwhile shares the machine with it. Each
        // destroyed container takes its veth's host end out of the lab's
        // host namespace (still open here): wait until none is left,
        // within a bound, then remove the host namespace itself.
        if removed > 0 {
            let started = Instant::now();
            loop {
                match self.host_veths() {
                    Ok(0) | Err(_) => break,
                    Ok(left) if started.elapsed() >= CLEANUP_BOUND => {
                        eprintln!(
                            "cni-bench: {left} of a dropped lab's {removed} containers not destroyed after {} s",
                            CLEANUP_BOUND.as_secs()
                        );
                        break;
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            go_home();
        }
        let _ = netns::remove_path(self.host.path());
    }
}
