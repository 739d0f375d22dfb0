//! podman 4 (CNI backend) on this project's plugins alone.
//!
//! podman runs with `cni_plugin_dirs` = a directory holding only our
//! binaries (bridge, host-local, portmap, firewall, tuning) and its own
//! default network configuration, unchanged. podman itself runs inside a
//! throwaway "host" namespace (entered with setns only, so `/sys` and the
//! cgroup mounts stay the machine's), so its bridges and rules never touch
//! the machine's network. The image is a local busybox root filesystem
//! (`podman import`), no registry involved.
//!
//! Checked: two containers talk; `-p 8080:80` answers from the host and
//! from a container; two `--opt isolate=true` networks cannot reach each
//! other while the default network reaches both; `podman rm` leaves no
//! veth, rule, reservation or record. The host namespace forwards only
//! what the firewall plugin accepts (FORWARD policy DROP). The same
//! scenario runs on the Go plugins, and both must see the same
//! reachability.
//!
//! A macvlan network (`-d macvlan -o parent=lan0`, `lan0` a veth to a LAN
//! namespace) with host-local and `--ip`, and one with static IPAM from a
//! hand-written conflist: the container reaches the LAN, `podman rm`
//! leaves no link and no reservation.
//!
//! Needs podman, runc (cgroup v1 hosts: crun refuses hybrid mode) and a
//! static busybox (`busybox-static`); SKIPPED otherwise.

use std::path::{Path, PathBuf};
use std::process::Output;

use integration::{Netns, bin_dir, can_run, dir_entries, temp_dir};

const IMAGE: &str = "localhost/cnirs-busybox:test";
const PAGE: &str = "hello-from-cnirs";
const ISO_A: &str = "cnirs-isoa";
const ISO_B: &str = "cnirs-isob";
const LAN_NET: &str = "cnirs-lan";
const LAN_STATIC: &str = "cnirs-lan-static";
/// podman's default network, as the Debian package ships it in
/// `/etc/cni/net.d/87-podman-bridge.conflist` (copied from there when
/// present, so the test runs what podman runs).
const DEFAULT_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "podman",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni-podman0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "routes": [{ "dst": "0.0.0.0/0" }],
        "ranges": [
          [
            {
              "subnet": "10.88.0.0/16",
              "gateway": "10.88.0.1"
            }
          ]
        ]
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    },
    {
      "type": "firewall"
    },
    {
      "type": "tuning"
    }
  ]
}
"#;

/// The chain's plugins (loopback is podman's own business).
const CHAIN: &[&str] = &["bridge", "host-local", "portmap", "firewall", "tuning"];

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.is_file())
    })
}

/// A statically linked busybox, or why there is none.
fn static_busybox() -> Result<PathBuf, String> {
    let p = which("busybox").ok_or("busybox not installed (apt-get install busybox-static)")?;
    let data = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
    // A dynamic ELF names its interpreter; a static one does not.
    if data.windows(14).any(|w| w == b"/lib64/ld-linu") {
        return Err(format!(
            "{} is dynamic (apt-get install busybox-static)",
            p.display()
        ));
    }
    Ok(p)
}

/// One podman installation: storage, configuration and plugin directory
/// of its own, under a temporary directory.
struct Podman {
    dir: tempfile::TempDir,
    conf: PathBuf,
    host: Netns,
}

impl Podman {
    fn new(plugins: &[(&str, PathBuf)]) -> Podman {
        let dir = temp_dir("cnit-podman");
        let root = dir.path();
        let plugin_dir = root.join("plugins");
        let net_dir = root.join("net.d");
        for d in [&plugin_dir, &net_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (name, src) in plugins {
            std::fs::copy(src, plugin_dir.join(name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
        let default = std::fs::read_to_string("/etc/cni/net.d/87-podman-bridge.conflist")
            .unwrap_or_else(|_| DEFAULT_CONFLIST.to_string());
        std::fs::write(net_dir.join("87-podman-bridge.conflist"), default).unwrap();
        let conf = root.join("containers.conf");
        // cgroupfs and file events: no systemd here. The ulimits stay
        // below this machine's hard limits (podman's defaults exceed them).
        std::fs::write(
            &conf,
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
pids_limit = 0

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{}"]
network_config_dir = "{}"
"#,
                plugin_dir.display(),
                net_dir.display()
            ),
        )
        .unwrap();
        let host = Netns::new("cnit-pm-host");
        // Forwarding only where the firewall plugin allows it, so its rules
        // (not a permissive default) carry the traffic.
        host.run_ok("iptables", &["-P", "FORWARD", "DROP"]);
        Podman { dir, conf, host }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.path();
        let mut cmd = self.host.command("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd.output().expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Import a root filesystem of one static busybox and a web page.
    fn import_image(&self, busybox: &Path) {
        let rootfs = self.dir.path().join("rootfs");
        for d in ["bin", "www", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "nc", "sleep", "printf", "ip", "ping"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("www/index.html"), format!("{PAGE}\n")).unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        self.ok(&["import", &tar.display().to_string(), IMAGE]);
    }

    /// A web server container on `network`, optionally publishing 8080.
    fn web(&self, name: &str, network: &str, publish: bool) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        if publish {
            args.extend(["-p", "8080:80"]);
        }
        args.extend([IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
        self.ok(&args);
        self.ok(&[
            "inspect",
            name,
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        ])
    }

    /// Whether an HTTP GET from inside container `from` gets the page.
    fn reaches(&self, from: &str, addr: &str, port: u16) -> bool {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} {port}");
        let out = self.run(&["exec", from, "sh", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).contains(PAGE)
    }

    /// Whether an HTTP GET from the host namespace gets the page.
    fn host_reaches(&self, busybox: &Path, addr: &str, port: u16) -> bool {
        let script = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {} nc -w 2 {addr} {port}",
            busybox.display()
        );
        let out = self.host.exec("sh", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).contains(PAGE)
    }

    /// What a container could leave in the host namespace: links, routes,
    /// iptables rules (counters aside).
    fn host_state(&self) -> String {
        let mut s = String::new();
        let mut links = self.host.links();
        links.sort();
        s.push_str(&links.join("\n"));
        s.push('\n');
        // IPv6 link-local routes appear when a bridge first gets a carrier.
        for line in self
            .host
            .run_ok("ip", &["route", "show", "table", "all"])
            .lines()
        {
            if !line.contains("fe80") && !line.contains("ff00::") {
                // A bridge's carrier comes and goes with its ports.
                s.push_str(&line.replace(" linkdown", ""));
                s.push('\n');
            }
        }
        for prog in ["iptables-save", "ip6tables-save"] {
            for line in self.host.run_ok(prog, &[]).lines() {
                if line.starts_with('#') {
                    continue;
                }
                let line = match line.find(" [") {
                    Some(i) if line.starts_with(':') => &line[..i],
                    _ => line,
                };
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        for n in [ISO_A, ISO_B, LAN_NET, LAN_STATIC] {
            let _ = self.run(&["network", "rm", "-f", n]);
        }
        let _ = self.run(&["rmi", "-af"]);
    }
}

/// A directory removed on drop (a test's end, passed or failed) unless it
/// existed when the guard was made.
struct RemovedIfNew {
    path: PathBuf,
    existed: bool,
}

impl RemovedIfNew {
    fn new(path: &Path) -> RemovedIfNew {
        RemovedIfNew {
            path: path.to_path_buf(),
            existed: path.exists(),
        }
    }
}

impl Drop for RemovedIfNew {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Host-local reservations (files other than its bookkeeping) of a network.
fn reservations(network: &str) -> Vec<String> {
    dir_entries(&Path::new("/var/lib/cni/networks").join(network))
        .into_iter()
        .filter(|f| f != "lock" && !f.starts_with("last_reserved_ip"))
        .collect()
}

/// What one run of the scenario saw.
#[derive(Debug, PartialEq)]
struct Seen {
    container_to_container: bool,
    host_to_published_loopback: bool,
    host_to_published_gateway: bool,
    container_to_published: bool,
    isolated_a_to_b: bool,
    isolated_b_to_a: bool,
    default_to_isolated: (bool, bool),
}

fn scenario(p: &Podman, busybox: &Path) -> Seen {
    p.import_image(busybox);
    // A first round creates the bridges and the shared chains (host-port
    // chains, isolation stages, per-bridge isolation rules), which stay
    // as with the Go plugins; what remains after it is the baseline.
    p.web("warmup", "podman", true);
    for n in [ISO_A, ISO_B] {
        p.ok(&["network", "create", "--opt", "isolate=true", n]);
    }
    p.web("warmup-a", ISO_A, false);
    p.web("warmup-b", ISO_B, false);
    p.ok(&["rm", "-f", "-t", "0", "warmup", "warmup-a", "warmup-b"]);
    for n in [ISO_A, ISO_B] {
        p.ok(&["network", "rm", n]);
    }
    let baseline = p.host_state();

    let a = p.web("a", "podman", true);
    let _b = p.web("b", "podman", false);
    for n in [ISO_A, ISO_B] {
        p.ok(&["network", "create", "--opt", "isolate=true", n]);
    }
    let ia = p.web("ia", ISO_A, false);
    let ib = p.web("ib", ISO_B, false);
    let seen = Seen {
        container_to_container: p.reaches("b", &a, 80),
        host_to_published_loopback: p.host_reaches(busybox, "127.0.0.1", 8080),
        host_to_published_gateway: p.host_reaches(busybox, "10.88.0.1", 8080),
        container_to_published: p.reaches("b", "10.88.0.1", 8080),
        isolated_a_to_b: p.reaches("ia", &ib, 80),
        isolated_b_to_a: p.reaches("ib", &ia, 80),
        default_to_isolated: (p.reaches("b", &ia, 80), p.reaches("b", &ib, 80)),
    };

    p.ok(&["rm", "-f", "-t", "0", "a", "b", "ia", "ib"]);
    for n in [ISO_A, ISO_B] {
        p.ok(&["network", "rm", n]);
    }
    // podman removes a network's bridge with the network; per-container
    // state is gone, shared chains are as the first round left them.
    assert_eq!(
        p.host_state(),
        baseline,
        "podman rm left something in the host namespace"
    );
    assert!(
        !p.host.links().iter().any(|l| l.starts_with("veth")),
        "veth left"
    );
    for n in ["podman", ISO_A, ISO_B] {
        assert_eq!(
            reservations(n),
            Vec::<String>::new(),
            "{n}: reservation left"
        );
    }
    assert_eq!(
        dir_entries(Path::new("/run/cni/tuning")),
        Vec::<String>::new(),
        "tuning record left"
    );
    for n in [ISO_A, ISO_B] {
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(n));
    }
    seen
}

/// This project's built binaries of `names`, for a plugin directory.
fn our_plugins<'a>(names: &[&'a str]) -> Vec<(&'a str, PathBuf)> {
    let ours: Vec<(&str, PathBuf)> = names.iter().map(|n| (*n, bin_dir().join(n))).collect();
    for (n, p) in &ours {
        assert!(p.is_file(), "{n} is not built: cargo build -p {n}");
    }
    ours
}

fn prerequisites() -> Option<PathBuf> {
    if !can_run() {
        return None;
    }
    for prog in ["podman", "runc", "conmon"] {
        if which(prog).is_none() && !Path::new("/usr/libexec/podman").join(prog).is_file() {
            eprintln!("SKIPPED: {prog} not installed (apt-get install podman runc)");
            return None;
        }
    }
    match static_busybox() {
        Ok(b) => Some(b),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

#[test]
fn podman_default_network_on_our_plugins_alone() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    // podman's default network has no `dataDir`: host-local keeps its
    // reservations in /var/lib/cni/networks/podman, which this test
    // removes again unless it was there before.
    let _data = RemovedIfNew::new(Path::new("/var/lib/cni/networks/podman"));
    let ours = our_plugins(CHAIN);
    let seen_ours = {
        let p = Podman::new(&ours);
        scenario(&p, &busybox)
    };
    let want = Seen {
        container_to_container: true,
        host_to_published_loopback: true,
        host_to_published_gateway: true,
        container_to_published: true,
        isolated_a_to_b: false,
        isolated_b_to_a: false,
        default_to_isolated: (true, true),
    };
    assert_eq!(seen_ours, want, "our plugins");

    // The same scenario on the Go plugins sees the same.
    let go: Vec<(&str, PathBuf)> = CHAIN
        .iter()
        .map(|n| (*n, Path::new(integration::REFERENCE_DIR).join(n)))
        .collect();
    if go.iter().all(|(_, p)| p.is_file()) {
        let p = Podman::new(&go);
        assert_eq!(scenario(&p, &busybox), want, "Go plugins");
    } else {
        eprintln!("SKIPPED (Go half): reference plugins not installed");
    }
}

/// The plugins a podman macvlan network runs (and the default network's,
/// since podman loads that configuration too).
const MACVLAN_PLUGINS: &[&str] = &[
    "macvlan",
    "host-local",
    "static",
    "bridge",
    "portmap",
    "firewall",
    "tuning",
];

/// The conflist podman wrote for `network`.
fn written_conflist(p: &Podman, network: &str) -> serde_json::Value {
    let path = p
        .dir
        .path()
        .join("net.d")
        .join(format!("{network}.conflist"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// podman's `eth0` address list inside container `name`.
fn container_addresses(p: &Podman, name: &str) -> String {
    p.ok(&["exec", name, "ip", "-o", "-4", "addr", "show", "eth0"])
}

/// Runs a container with static address `ip` (passed as `--ip` when
/// `pass_ip`, else configured in the network) on macvlan network `network`,
/// checks it reaches the LAN server and back, removes it and checks that
/// nothing is left in the host or LAN namespace and no reservation.
fn static_address_on_lan(p: &Podman, server: &Netns, network: &str, ip: &str, pass_ip: bool) {
    let host_links = p.host.links();
    let lan_links = server.links();
    let ctr = format!("{network}-c");
    let mut args = vec!["run", "-d", "--name", &ctr, "--network", network];
    if pass_ip {
        args.extend(["--ip", ip]);
    }
    args.extend(["--cap-add", "NET_RAW", IMAGE, "sleep", "1000"]);
    p.ok(&args);
    let addrs = container_addresses(p, &ctr);
    assert!(
        addrs.contains(&format!("inet {ip}/24")),
        "{network}: eth0 is {addrs}"
    );
    let route = p.ok(&["exec", &ctr, "ip", "route"]);
    assert!(
        route.contains("default via 192.168.77.1 dev eth0"),
        "{network}: routes {route}"
    );
    let ping = p.run(&["exec", &ctr, "ping", "-c", "1", "-W", "2", "192.168.77.1"]);
    assert!(
        ping.status.success(),
        "{network}: container cannot ping the LAN server: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(server.ping(ip), "{network}: LAN server cannot ping {ip}");
    // macvlan: the container's link lives in the container only.
    assert_eq!(
        p.host.links(),
        host_links,
        "{network}: link added to the host"
    );
    assert_eq!(
        server.links(),
        lan_links,
        "{network}: link added to the LAN"
    );

    p.ok(&["rm", "-f", "-t", "0", &ctr]);
    assert_eq!(
        p.host.links(),
        host_links,
        "{network}: link left in the host"
    );
    assert_eq!(server.links(), lan_links, "{network}: link left in the LAN");
    assert!(
        !server.ping(ip),
        "{network}: {ip} still answers after podman rm"
    );
    assert_eq!(
        reservations(network),
        Vec::<String>::new(),
        "{network}: reservation left"
    );
}

#[test]
fn podman_macvlan_network_with_static_addresses_on_our_plugins_alone() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    let p = Podman::new(&our_plugins(MACVLAN_PLUGINS));
    p.import_image(&busybox);
    // The LAN: `lan0` in podman's host namespace, its peer `srv0` in a
    // server namespace holding the gateway address.
    let server = Netns::new("cnit-pm-lan");
    p.host.wire_to(
        ("lan0", "192.168.77.254/24"),
        &server,
        ("srv0", "192.168.77.1/24"),
    );

    // --subnet: podman writes macvlan + host-local; --ip becomes CNI_ARGS IP.
    p.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=lan0",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        LAN_NET,
    ]);
    let conf = written_conflist(&p, LAN_NET);
    let plugins = conf["plugins"].as_array().cloned().unwrap_or_default();
    assert_eq!(plugins.len(), 1, "{conf}");
    assert_eq!(plugins[0]["type"], "macvlan", "{conf}");
    assert_eq!(plugins[0]["master"], "lan0", "{conf}");
    assert_eq!(plugins[0]["ipam"]["type"], "host-local", "{conf}");
    static_address_on_lan(&p, &server, LAN_NET, "192.168.77.10", true);
    p.ok(&["network", "rm", LAN_NET]);
    let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(LAN_NET));

    // podman 4.3's CNI backend knows the IPAM drivers host-local, dhcp and
    // none only: `--ipam-driver static` is refused, nothing is written.
    let out = p.run(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=lan0",
        "--ipam-driver",
        "static",
        "--subnet",
        "192.168.77.0/24",
        LAN_STATIC,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unsupported ipam driver \"static\""),
        "--ipam-driver static: {} {err}",
        out.status
    );
    assert!(
        !p.dir
            .path()
            .join("net.d")
            .join(format!("{LAN_STATIC}.conflist"))
            .exists(),
        "a refused network was written"
    );

    // static IPAM through a conflist written by hand: the addresses come
    // from the configuration; podman passes `--ip` as CNI_ARGS `IP=` without
    // a prefix length, which static refuses (as the Go plugin does).
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": LAN_STATIC,
        "plugins": [{
            "type": "macvlan",
            "master": "lan0",
            "ipam": {
                "type": "static",
                "addresses": [{"address": "192.168.77.11/24", "gateway": "192.168.77.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        }]
    });
    std::fs::write(
        p.dir
            .path()
            .join("net.d")
            .join(format!("{LAN_STATIC}.conflist")),
        conf.to_string(),
    )
    .unwrap();
    static_address_on_lan(&p, &server, LAN_STATIC, "192.168.77.11", false);
    let host_links = p.host.links();
    let out = p.run(&[
        "run",
        "--rm",
        "--network",
        LAN_STATIC,
        "--ip",
        "192.168.77.12",
        IMAGE,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "the 'ip' field is expected to be in CIDR notation, got: '192.168.77.12'"
            ),
        "--ip on a static network: {} {err}",
        out.status
    );
    assert_eq!(p.host.links(), host_links, "failed ADD left a link");
    p.ok(&["network", "rm", LAN_STATIC]);
}
