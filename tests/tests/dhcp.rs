//! dhcp IPAM against a real DHCP server: dnsmasq serves a throwaway "LAN"
//! namespace on a bridge; each container namespace gets a veth whose other
//! end is a port of that bridge (what macvlan on the LAN would give it).
//! The plugin is exec'd as a delegating main plugin would exec it, and the
//! test then configures the result on the interface as that plugin would.
//! The daemon runs from the test in a throwaway "host" namespace with its
//! own socket and state directory, and is killed by PID when the test ends.
//! The runtime tests run bridge and macvlan chains with dhcp IPAM under
//! cnictl and cnitool; macvlan's parent is a veth in the host namespace
//! whose peer is a port of the LAN's bridge.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use integration::{Invocation, Netns, Outcome, can_run, plugin, reference_plugin, temp_dir};
use serde_json::{Value, json};

const NET: &str = "lan";
const SERVER: &str = "10.77.0.1";

fn have_dnsmasq() -> bool {
    let found = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        eprintln!("SKIPPED: dnsmasq is not installed (Debian package dnsmasq-base)");
    }
    found
}

/// A process started by the test, killed (by its PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `ok` holds within `timeout` (asked every 50 ms).
fn within(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, timeout: Duration, ok: impl FnMut() -> bool) {
    assert!(within(timeout, ok), "timed out waiting for {what}");
}

/// The LAN: a bridge with the server address, dnsmasq on it (unless
/// `serve` is false: a LAN where nobody answers DHCP).
struct Lan {
    _dnsmasq: Option<Proc>,
    ns: Netns,
    log: PathBuf,
    _dir: tempfile::TempDir,
    ports: std::sync::atomic::AtomicUsize,
}

impl Lan {
    fn new(serve: bool) -> Lan {
        let ns = Netns::new("dhlan");
        ns.run_ok("ip", &["link", "add", "br0", "type", "bridge"]);
        ns.run_ok(
            "ip",
            &["addr", "add", &format!("{SERVER}/24"), "dev", "br0"],
        );
        ns.run_ok("ip", &["link", "set", "br0", "up"]);
        let dir = temp_dir("dhcp-lan");
        let log = dir.path().join("dnsmasq.log");
        let dnsmasq = serve.then(|| {
            let child = ns
                .command("dnsmasq")
                .args([
                    "--no-daemon",
                    "--port=0",
                    "--interface=br0",
                    "--bind-interfaces",
                    "--dhcp-range=10.77.0.50,10.77.0.150,255.255.255.0,2m",
                    // Renew after 4 s, so renewal is seen within a test.
                    "--dhcp-option=option:T1,4s",
                    "--dhcp-option=option:dns-server,10.77.0.1",
                    "--log-dhcp",
                ])
                .arg(format!("--log-facility={}", log.display()))
                .arg(format!(
                    "--dhcp-leasefile={}",
                    dir.path().join("leases").display()
                ))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let p = Proc(child);
            wait_for("dnsmasq to start", Duration::from_secs(10), || {
                fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP, IP range"))
            });
            p
        });
        Lan {
            _dnsmasq: dnsmasq,
            ns,
            log,
            _dir: dir,
            ports: Default::default(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server goes away (killed by its PID).
    fn stop_server(&mut self) {
        self._dnsmasq = None;
    }

    /// A container namespace with `eth0` on the LAN (down, no address).
    fn container(&self) -> Netns {
        let ctr = Netns::new("dhctr");
        let n = self.ports.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port = format!("p{n}");
        self.ns.run_ok(
            "ip",
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ctr.name(),
            ],
        );
        self.ns
            .run_ok("ip", &["link", "set", &port, "master", "br0", "up"]);
        ctr
    }

    /// `name` in `host`: a veth whose peer is a port of the LAN's bridge
    /// (the parent a macvlan on the LAN is made on), up, no address.
    fn uplink(&self, host: &Netns, name: &str) {
        let n = self.ports.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port = format!("p{n}");
        self.ns.run_ok(
            "ip",
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                name,
                "netns",
                host.name(),
            ],
        );
        self.ns
            .run_ok("ip", &["link", "set", &port, "master", "br0", "up"]);
        host.run_ok("ip", &["link", "set", name, "up"]);
    }

    /// Whether the server logged a DHCPRELEASE of `addr`, waiting up to
    /// 3 s for it: a release is one datagram, sent before DEL returns and
    /// logged when the server gets to it.
    fn released(&self, addr: &str) -> bool {
        within(Duration::from_secs(3), || self.released_yet(addr))
    }

    /// Whether the log holds a DHCPRELEASE of `addr` now: for a "not
    /// released" check right after a release the same server logged (a
    /// lone "not released" check waits, with `!released`).
    fn released_yet(&self, addr: &str) -> bool {
        self.log()
            .lines()
            .any(|l| l.contains("DHCPRELEASE") && l.contains(&format!(" {addr} ")))
    }
}

/// `dhcp daemon` (ours or the reference's) in the host namespace.
struct Daemon {
    proc: Option<Proc>,
    binary: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    fn start(host: &Netns, dir: &Path, binary: PathBuf, extra: &[&str]) -> Daemon {
        let mut d = Daemon {
            proc: None,
            binary,
            socket: dir.join("dhcp.sock"),
            state: dir.join("state"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.restart(host);
        d
    }

    fn restart(&mut self, host: &Netns) {
        self.proc = None;
        let _ = fs::remove_file(&self.socket);
        let mut cmd = host.command(&self.binary);
        cmd.arg("daemon")
            .arg("-socketpath")
            .arg(&self.socket)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.binary == plugin("dhcp") {
            cmd.arg("-statedir").arg(&self.state);
        }
        self.proc = Some(Proc(cmd.spawn().expect("start dhcp daemon")));
        let sock = self.socket.clone();
        wait_for("the daemon's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    fn kill(&mut self) {
        self.proc = None;
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().expect("daemon running").0.id()
    }

    /// SIGTERM, as systemd stops the service, and wait for the exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut p = self.proc.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(p.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        p.0.wait().expect("wait for the daemon")
    }

    fn records(&self) -> usize {
        fs::read_dir(&self.state).map(|d| d.count()).unwrap_or(0)
    }
}

fn conf(socket: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("dhcp");
    ipam["daemonSocketPath"] = json!(socket.display().to_string());
    json!({"cniVersion": "1.1.0", "name": NET, "type": "macvlan", "ipam": ipam})
}

fn call(
    bin: &Path,
    cmd: &str,
    id: &str,
    ctr: Option<&Netns>,
    conf: &Value,
    host: &Netns,
) -> Outcome {
    let mut inv = Invocation::new(bin, cmd).container_id(id).config(conf);
    if let Some(c) = ctr {
        inv = inv.netns(c);
    }
    inv.run(host)
}

/// What the main plugin does with the IPAM result.
fn configure(ctr: &Netns, result: &Value) {
    let addr = result["ips"][0]["address"].as_str().expect("address");
    ctr.run_ok("ip", &["addr", "add", addr, "dev", "eth0"]);
    for r in result["routes"].as_array().into_iter().flatten() {
        let (dst, gw) = (r["dst"].as_str().unwrap(), r["gw"].as_str().unwrap());
        ctr.run_ok("ip", &["route", "add", dst, "via", gw, "dev", "eth0"]);
    }
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("address");
    a.split('/').next().unwrap().to_string()
}

fn in_range(ip: &str) -> bool {
    let last: u32 = ip
        .strip_prefix("10.77.0.")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (50..=150).contains(&last)
}

fn setup() -> Option<(Lan, Netns, tempfile::TempDir)> {
    if !can_run() || !have_dnsmasq() {
        return None;
    }
    Some((
        Lan::new(true),
        Netns::new("dhhost"),
        temp_dir("dhcp-daemon"),
    ))
}

#[test]
fn lease_from_dnsmasq_gives_route_reaches_server_checks_and_releases() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let ctr = lan.container();
    // Option 6 (DNS) is asked for on top of the default routers and mask.
    let c = conf(&d.socket, json!({"request": [{"option": "6"}]}));
    let r = call(&plugin("dhcp"), "ADD", "c1", Some(&ctr), &c, &host).expect_ok();
    let ip = ip_of(&r);
    assert!(in_range(&ip), "{r}");
    assert_eq!(r["ips"][0]["address"], format!("{ip}/24"));
    assert_eq!(r["ips"][0]["gateway"], SERVER);
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": SERVER}]));
    assert_eq!(r["dns"]["nameservers"], json!([SERVER]));
    assert_eq!(d.records(), 1);
    configure(&ctr, &r);
    let routes = ctr.run_ok("ip", &["route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {SERVER} dev eth0")),
        "{routes}"
    );
    assert!(
        ctr.ping(SERVER),
        "the server is not reachable from the lease"
    );
    // ADD again for the same attachment returns the lease it holds.
    let again = call(&plugin("dhcp"), "ADD", "c1", Some(&ctr), &c, &host).expect_ok();
    assert_eq!(ip_of(&again), ip);

    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    call(
        &plugin("dhcp"),
        "CHECK",
        "c1",
        Some(&ctr),
        &with_prev,
        &host,
    )
    .expect_ok();

    // Renewal before expiry: T1 is 4 s.
    wait_for("a renewal", Duration::from_secs(15), || {
        lan.log()
            .lines()
            .filter(|l| l.contains("DHCPACK") && l.contains(&format!(" {ip} ")))
            .count()
            >= 2
    });

    call(&plugin("dhcp"), "DEL", "c1", Some(&ctr), &c, &host).expect_ok();
    assert!(
        lan.released(&ip),
        "no DHCPRELEASE in the log:\n{}",
        lan.log()
    );
    assert_eq!(d.records(), 0, "a lease record is left");
    call(
        &plugin("dhcp"),
        "CHECK",
        "c1",
        Some(&ctr),
        &with_prev,
        &host,
    )
    .expect_err(999);
    // DEL is idempotent.
    call(&plugin("dhcp"), "DEL", "c1", Some(&ctr), &c, &host).expect_ok();
}

#[test]
fn daemon_restart_between_add_and_del_keeps_the_lease_and_releases_it() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let mut d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let ctr = lan.container();
    let c = conf(&d.socket, json!({}));
    let r = call(&plugin("dhcp"), "ADD", "c1", Some(&ctr), &c, &host).expect_ok();
    configure(&ctr, &r);
    let ip = ip_of(&r);
    d.kill();
    let down = call(&plugin("dhcp"), "DEL", "c1", Some(&ctr), &c, &host).expect_err(999);
    assert!(
        down["details"]
            .as_str()
            .unwrap_or("")
            .contains("dhcp daemon"),
        "the error says how to start the daemon: {down}"
    );
    d.restart(&host);
    // The restarted daemon keeps renewing the lease it read back (T1 4 s).
    let acks = |lan: &Lan| {
        lan.log()
            .lines()
            .filter(|l| l.contains("DHCPACK") && l.contains(&format!(" {ip} ")))
            .count()
    };
    let before = acks(&lan);
    wait_for(
        "a renewal after the restart",
        Duration::from_secs(15),
        || acks(&lan) > before,
    );
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    call(
        &plugin("dhcp"),
        "CHECK",
        "c1",
        Some(&ctr),
        &with_prev,
        &host,
    )
    .expect_ok();
    call(&plugin("dhcp"), "DEL", "c1", Some(&ctr), &c, &host).expect_ok();
    assert!(
        lan.released(&ip),
        "no DHCPRELEASE after restart:\n{}",
        lan.log()
    );
    assert_eq!(d.records(), 0);
}

#[test]
fn two_containers_get_distinct_leases() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let c = conf(&d.socket, json!({}));
    let (a, b) = (lan.container(), lan.container());
    let ra = call(&plugin("dhcp"), "ADD", "ca", Some(&a), &c, &host).expect_ok();
    let rb = call(&plugin("dhcp"), "ADD", "cb", Some(&b), &c, &host).expect_ok();
    assert_ne!(ip_of(&ra), ip_of(&rb));
    configure(&a, &ra);
    configure(&b, &rb);
    assert!(
        a.ping(&ip_of(&rb)),
        "containers on the LAN reach each other"
    );
    for (id, ns) in [("ca", &a), ("cb", &b)] {
        call(&plugin("dhcp"), "DEL", id, Some(ns), &c, &host).expect_ok();
    }
    assert!(lan.released(&ip_of(&ra)) && lan.released(&ip_of(&rb)));
}

#[test]
fn sixteen_concurrent_adds_all_get_leases() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let c = conf(&d.socket, json!({}));
    let ctrs: Vec<Netns> = (0..16).map(|_| lan.container()).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = ctrs
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (c, host) = (&c, &host);
                s.spawn(move || {
                    call(&plugin("dhcp"), "ADD", &format!("c{i}"), Some(ns), c, host).expect_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results.iter().map(ip_of).collect();
    assert!(ips.iter().all(|ip| in_range(ip)), "{ips:?}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 16, "leases are not distinct: {ips:?}");
    assert_eq!(d.records(), 16);
    for (i, ns) in ctrs.iter().enumerate() {
        call(
            &plugin("dhcp"),
            "DEL",
            &format!("c{i}"),
            Some(ns),
            &c,
            &host,
        )
        .expect_ok();
    }
    assert!(ips.iter().all(|ip| lan.released(ip)));
    assert_eq!(d.records(), 0);
}

#[test]
fn gc_releases_leases_of_attachments_that_are_gone_and_status_asks_the_daemon() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let mut d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let c = conf(&d.socket, json!({}));
    let (a, b) = (lan.container(), lan.container());
    let ra = call(&plugin("dhcp"), "ADD", "ka", Some(&a), &c, &host).expect_ok();
    let rb = call(&plugin("dhcp"), "ADD", "kb", Some(&b), &c, &host).expect_ok();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ka", "ifname": "eth0"}]);
    Invocation::new(plugin("dhcp"), "GC")
        .config(&gc)
        .run(&host)
        .expect_ok();
    assert!(lan.released(&ip_of(&rb)), "GC did not release kb");
    assert!(
        !lan.released_yet(&ip_of(&ra)),
        "GC released a listed attachment"
    );
    assert_eq!(d.records(), 1);
    Invocation::new(plugin("dhcp"), "STATUS")
        .config(&c)
        .run(&host)
        .expect_ok();
    call(&plugin("dhcp"), "DEL", "ka", Some(&a), &c, &host).expect_ok();
    d.kill();
    let e = Invocation::new(plugin("dhcp"), "STATUS")
        .config(&c)
        .run(&host)
        .expect_err(50);
    assert!(e["msg"].as_str().unwrap().contains("dhcp.sock"), "{e}");
}

#[test]
fn bad_input_fails_within_the_timeout_and_leaves_nothing() {
    if !can_run() || !have_dnsmasq() {
        return;
    }
    let host = Netns::new("dhhost");
    let dir = temp_dir("dhcp-daemon");
    let d = Daemon::start(
        &host,
        dir.path(),
        plugin("dhcp"),
        &["-timeout", "1s", "-resendtimeout", "3s"],
    );
    let silent = Lan::new(false);
    let ctr = silent.container();
    // Unknown option names: code 7 naming the field, before any exchange.
    let bad = conf(
        &d.socket,
        json!({"request": [{"option": "no-such-option"}]}),
    );
    let e = call(&plugin("dhcp"), "ADD", "b1", Some(&ctr), &bad, &host).expect_err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("ipam.request[0].option"),
        "{e}"
    );
    // No daemon on the socket: a clear error saying how to start one.
    let nowhere = conf(&dir.path().join("none.sock"), json!({}));
    let e = call(&plugin("dhcp"), "ADD", "b1", Some(&ctr), &nowhere, &host).expect_err(999);
    assert!(
        e["details"].as_str().unwrap().contains("dhcp daemon"),
        "{e}"
    );
    // A LAN where no server answers: error within the resend timeout.
    let t = Instant::now();
    let c = conf(&d.socket, json!({}));
    let e = call(&plugin("dhcp"), "ADD", "b1", Some(&ctr), &c, &host).expect_err(11);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(e["msg"].as_str().unwrap().contains("no DHCP answer"), "{e}");
    assert_eq!(d.records(), 0);
    assert!(ctr.addresses("eth0").iter().all(|a| a.starts_with("fe80")));
    // A netns that does not exist.
    let e = Invocation::new(plugin("dhcp"), "ADD")
        .container_id("b2")
        .netns_path("/run/netns/dhcp-no-such-ns")
        .config(&c)
        .run(&host);
    assert!(!e.success());
    assert_eq!(d.records(), 0);
}

/// The Go reference daemon and plugin against the same server. Recorded
/// differences: the reference keeps leases in memory only (a restart loses
/// them, so DEL after a restart releases nothing, asserted below), returns
/// no DNS, and its CHECK re-runs ADD instead of checking the lease.
#[test]
fn reference_daemon_gets_the_same_result_and_client_id() {
    let Some(reference) = reference_plugin("dhcp") else {
        return;
    };
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let ours = Daemon::start(&host, &dir.path().join("ours"), plugin("dhcp"), &[]);
    fs::create_dir_all(dir.path().join("go")).unwrap();
    let go = Daemon::start(&host, &dir.path().join("go"), reference.clone(), &[]);
    let (a, b) = (lan.container(), lan.container());
    // The reference plugin speaks up to 1.0.0 (1.1.1 has no STATUS/GC).
    let v100 = |mut v: Value| {
        v["cniVersion"] = json!("1.0.0");
        v
    };
    let co = v100(conf(&ours.socket, json!({})));
    let ra = call(&plugin("dhcp"), "ADD", "same", Some(&a), &co, &host).expect_ok();
    let cg = v100(conf(&go.socket, json!({})));
    let rb = call(&reference, "ADD", "same", Some(&b), &cg, &host).expect_ok();
    let strip = |mut v: Value| {
        v["ips"][0]["address"] = json!("X");
        v.as_object_mut().unwrap().remove("dns");
        v
    };
    assert_eq!(strip(ra.clone()), strip(rb.clone()));
    // Both send the client id 0x00 + "same/lan/eth0": dnsmasq keys leases
    // by client id, so it gives the second MAC the first one's address.
    assert_eq!(ip_of(&ra), ip_of(&rb), "client ids differ");
    call(&reference, "DEL", "same", Some(&b), &cg, &host).expect_ok();
    assert!(lan.released(&ip_of(&rb)));
    call(&plugin("dhcp"), "DEL", "same", Some(&a), &co, &host).expect_ok();
    let releases = lan.log().matches("DHCPRELEASE").count();
    assert_eq!(releases, 2, "{}", lan.log());

    // Our plugin and the Go daemon do not speak the same protocol: a clear
    // error, and no lease taken.
    let before = lan.log().matches("DHCPDISCOVER").count();
    let e = call(&plugin("dhcp"), "ADD", "mixed", Some(&b), &cg, &host).expect_err(5);
    assert!(
        e["details"].as_str().unwrap().contains("Go reference"),
        "{e}"
    );
    assert_eq!(lan.log().matches("DHCPDISCOVER").count(), before);

    // The recorded difference: the reference daemon forgets its leases
    // when restarted, so its DEL afterwards succeeds without a release.
    let mut go = go;
    let c = lan.container();
    let rc = call(&reference, "ADD", "gone", Some(&c), &cg, &host).expect_ok();
    go.kill();
    go.restart(&host);
    call(&reference, "DEL", "gone", Some(&c), &cg, &host).expect_ok();
    assert!(
        !lan.released(&ip_of(&rc)),
        "the reference released after a restart: {}",
        lan.log()
    );
}

/// The socket comes from systemd (`LISTEN_FDS`, fd 3), here from
/// `systemd-socket-activate`, which execs the daemon on the first request.
#[test]
fn socket_activation_serves_on_the_passed_socket() {
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    if !activate.exists() {
        eprintln!("SKIPPED: systemd-socket-activate is not installed");
        return;
    }
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let socket = dir.path().join("activated.sock");
    let state = dir.path().join("state");
    let _activator = Proc(
        host.command(activate)
            .arg("-l")
            .arg(&socket)
            .arg(plugin("dhcp"))
            .args(["daemon", "-statedir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-socket-activate"),
    );
    wait_for("the activation socket", Duration::from_secs(10), || {
        socket.exists()
    });
    let ctr = lan.container();
    let c = conf(&socket, json!({}));
    let r = call(&plugin("dhcp"), "ADD", "sa", Some(&ctr), &c, &host).expect_ok();
    assert!(in_range(&ip_of(&r)), "{r}");
    assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
    call(&plugin("dhcp"), "DEL", "sa", Some(&ctr), &c, &host).expect_ok();
    assert!(lan.released(&ip_of(&r)));
}

/// A runtime exec'ing the plugin chains of a configuration directory:
/// the project's cnictl, or libcni's cnitool.
enum Runtime {
    Cnictl,
    Cnitool(PathBuf),
}

impl Runtime {
    /// libcni's cnitool, when it is installed.
    fn cnitool() -> Option<Runtime> {
        integration::find_cnitool().map(Runtime::Cnitool)
    }

    /// The highest CNI version the runtime speaks (Debian's libcni: 1.0.0).
    fn version(&self) -> &'static str {
        match self {
            Runtime::Cnictl => "1.1.0",
            Runtime::Cnitool(_) => "1.0.0",
        }
    }

    /// Runs `args` (`add|check|del NETWORK NETNS`) in `ns` with the
    /// configurations of `conf_dir`; its cache lives under `dir`. Returns
    /// stdout: the CNI result for `add`.
    fn run(&self, ns: &Netns, conf_dir: &Path, dir: &Path, args: &[&str]) -> String {
        let mut cmd = match self {
            Runtime::Cnictl => {
                let mut cmd = ns.command(plugin("cnictl"));
                cmd.arg("--conf-dir")
                    .arg(conf_dir)
                    .arg("--cni-path")
                    .arg(integration::bin_dir())
                    .arg("--cache-dir")
                    .arg(dir.join("cache"));
                if args.first() == Some(&"add") {
                    cmd.arg("--json");
                }
                cmd
            }
            Runtime::Cnitool(tool) => {
                let var_lib = dir.join("var-lib");
                fs::create_dir_all(&var_lib).expect("create the cnitool cache directory");
                let mut cmd = ns.command(tool);
                cmd.env("NETCONFPATH", conf_dir)
                    .env("CNI_PATH", integration::bin_dir());
                integration::with_private_var_lib(&mut cmd, &var_lib);
                cmd
            }
        };
        let out = cmd.args(args).output().expect("run the runtime");
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            self.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn name(&self) -> &'static str {
        match self {
            Runtime::Cnictl => "cnictl",
            Runtime::Cnitool(_) => "cnitool",
        }
    }
}

/// A runtime's view: cnictl, then cnitool, run bridge with dhcp IPAM. The bridge is the
/// LAN's (dnsmasq serves it), so the container's veth is on the LAN; the
/// bridge plugin configures the lease on `eth0`.
#[test]
fn bridge_with_dhcp_ipam_under_cnictl_and_cnitool() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let conf_dir = dir.path().join("net.d");
    fs::create_dir_all(&conf_dir).unwrap();
    let list = json!({"cniVersion": "1.1.0", "name": NET, "plugins": [{
        "type": "bridge", "bridge": "br0",
        "ipam": {"type": "dhcp", "daemonSocketPath": d.socket.display().to_string()}
    }]});
    fs::write(conf_dir.join("10-lan.conflist"), list.to_string()).unwrap();
    let ctr = Netns::new("dhctr");
    let cnictl = |args: &[&str]| Runtime::Cnictl.run(&lan.ns, &conf_dir, dir.path(), args);
    let path = ctr.path_str();
    let r: Value = serde_json::from_str(&cnictl(&["add", NET, &path])).unwrap();
    let ip = ip_of(&r);
    assert!(in_range(&ip), "{r}");
    assert!(ctr.addresses("eth0").iter().any(|a| a.starts_with(&ip)));
    let routes = ctr.run_ok("ip", &["route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {SERVER}")),
        "{routes}"
    );
    assert!(ctr.ping(SERVER));
    cnictl(&["check", NET, &path]);
    cnictl(&["del", NET, &path]);
    assert!(lan.released(&ip), "{}", lan.log());
    assert_eq!(d.records(), 0);
    assert!(!ctr.has_link("eth0"));

    // The same through libcni's cnitool, when it is installed.
    let Some(tool) = Runtime::cnitool() else {
        eprintln!("SKIPPED (cnitool part): cnitool is not installed");
        return;
    };
    let mut list = list;
    list["cniVersion"] = json!(tool.version());
    fs::write(conf_dir.join("10-lan.conflist"), list.to_string()).unwrap();
    let cnitool = |args: &[&str]| tool.run(&lan.ns, &conf_dir, dir.path(), args);
    let r: Value = serde_json::from_str(&cnitool(&["add", NET, &path])).unwrap();
    let ip = ip_of(&r);
    assert!(in_range(&ip), "{r}");
    assert!(ctr.ping(SERVER));
    cnitool(&["check", NET, &path]);
    cnitool(&["del", NET, &path]);
    assert!(lan.released(&ip), "{}", lan.log());
    assert_eq!(d.records(), 0);
}

/// macvlan with dhcp IPAM as a runtime runs it: the macvlan's parent is
/// `lan0` in the host namespace, a veth whose peer is a port of the LAN's
/// bridge. Two containers get distinct leases, each a default route from
/// option 3 and the server in reach; the daemon is killed and restarted
/// between ADD and DEL, and CHECK and DEL (with its DHCPRELEASE) still work
/// from the leases it read back. After DEL no macvlan and no lease record
/// is left.
fn macvlan_with_dhcp_ipam(rt: &Runtime) {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    lan.uplink(&host, "lan0");
    let mut d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let conf_dir = dir.path().join("net.d");
    fs::create_dir_all(&conf_dir).unwrap();
    let list = json!({"cniVersion": rt.version(), "name": NET, "plugins": [{
        "type": "macvlan", "master": "lan0", "mode": "bridge",
        "ipam": {"type": "dhcp", "daemonSocketPath": d.socket.display().to_string()}
    }]});
    fs::write(conf_dir.join("10-lan.conflist"), list.to_string()).unwrap();
    let runtime = |args: &[&str]| rt.run(&host, &conf_dir, dir.path(), args);
    let ctrs = [Netns::new("dhctr"), Netns::new("dhctr")];
    let mut ips = Vec::new();
    for ctr in &ctrs {
        let path = ctr.path_str();
        let r: Value = serde_json::from_str(&runtime(&["add", NET, &path])).unwrap();
        let ip = ip_of(&r);
        assert!(in_range(&ip), "{r}");
        assert_eq!(r["ips"][0]["gateway"], SERVER, "{r}");
        let link = ctr.ip_json(&["-d", "link", "show", "eth0"]);
        assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan", "{link}");
        assert!(
            ctr.addresses("eth0").contains(&format!("{ip}/24")),
            "{:?}",
            ctr.addresses("eth0")
        );
        let routes = ctr.run_ok("ip", &["route", "show", "default"]);
        assert!(
            routes.contains(&format!("default via {SERVER} dev eth0")),
            "{routes}"
        );
        assert!(ctr.ping(SERVER), "the server is not reachable from {ip}");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "two containers got the same lease");
    assert!(
        ctrs[0].ping(&ips[1]),
        "the macvlans on one parent reach each other"
    );
    assert_eq!(d.records(), 2);

    d.kill();
    d.restart(&host);
    for (ctr, ip) in ctrs.iter().zip(&ips) {
        let path = ctr.path_str();
        runtime(&["check", NET, &path]);
        runtime(&["del", NET, &path]);
        assert!(lan.released(ip), "no DHCPRELEASE for {ip}:\n{}", lan.log());
        assert_eq!(ctr.links(), ["lo"], "left in the container");
    }
    assert_eq!(d.records(), 0, "a lease record is left");
    // The parent is untouched.
    assert!(host.has_link("lan0"));
}

#[test]
fn macvlan_with_dhcp_ipam_under_cnictl() {
    macvlan_with_dhcp_ipam(&Runtime::Cnictl);
}

#[test]
fn macvlan_with_dhcp_ipam_under_cnitool() {
    let Some(tool) = Runtime::cnitool() else {
        eprintln!("SKIPPED: cnitool is not installed");
        return;
    };
    macvlan_with_dhcp_ipam(&tool);
}

/// An expired lease brings the interface down (the reference's behaviour).
/// The expiry is staged through the state directory: the daemon is stopped,
/// the record's ACK time moved an hour back, and the daemon restarted.
#[test]
fn expired_lease_sets_the_interface_down() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let mut d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let ctr = lan.container();
    let c = conf(&d.socket, json!({}));
    let r = call(&plugin("dhcp"), "ADD", "ex", Some(&ctr), &c, &host).expect_ok();
    configure(&ctr, &r);
    d.kill();
    let record = fs::read_dir(&d.state)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut lease: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    let bound = lease["binding"]["bound_at"].as_u64().unwrap();
    lease["binding"]["bound_at"] = json!(bound - 3600);
    fs::write(&record, lease.to_string()).unwrap();
    d.restart(&host);
    wait_for("eth0 to go down", Duration::from_secs(10), || {
        !ctr.run_ok("ip", &["-o", "link", "show", "eth0"])
            .contains(",UP")
    });
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    let e = call(
        &plugin("dhcp"),
        "CHECK",
        "ex",
        Some(&ctr),
        &with_prev,
        &host,
    )
    .expect_err(999);
    assert!(e["msg"].as_str().unwrap().contains("expired"), "{e}");
    call(&plugin("dhcp"), "DEL", "ex", Some(&ctr), &c, &host).expect_ok();
    assert_eq!(d.records(), 0);
}

/// Stopping the daemon (SIGTERM) removes its socket and pidfile but keeps
/// the leases, unreleased, for the next daemon.
#[test]
fn sigterm_keeps_leases_and_removes_socket_and_pidfile() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let pidfile = dir.path().join("dhcp.pid");
    let pidarg = pidfile.display().to_string();
    let mut d = Daemon::start(&host, dir.path(), plugin("dhcp"), &["-pidfile", &pidarg]);
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), d.pid().to_string());
    let ctr = lan.container();
    let c = conf(&d.socket, json!({}));
    let r = call(&plugin("dhcp"), "ADD", "st", Some(&ctr), &c, &host).expect_ok();
    assert!(d.terminate().success());
    assert!(!d.socket.exists() && !pidfile.exists());
    assert_eq!(d.records(), 1);
    assert!(
        !lan.released(&ip_of(&r)),
        "stopping the daemon released a lease"
    );
    d.restart(&host);
    call(&plugin("dhcp"), "DEL", "st", Some(&ctr), &c, &host).expect_ok();
    assert!(lan.released(&ip_of(&r)));
    // A relative pidfile is refused, as by the reference.
    let out = host
        .command(plugin("dhcp"))
        .args(["daemon", "-pidfile", "rel.pid", "-socketpath"])
        .arg(dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("path not absolute"));
}

/// With the server gone, a renewal keeps retrying for `-resendtimeout`
/// (3m28s); DEL cancels it instead of waiting.
#[test]
fn del_during_a_failing_renewal_returns_promptly() {
    let Some((mut lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let ctr = lan.container();
    let c = conf(&d.socket, json!({}));
    let r = call(&plugin("dhcp"), "ADD", "rn", Some(&ctr), &c, &host).expect_ok();
    configure(&ctr, &r);
    lan.stop_server();
    // Past T1 (4 s): the renewal is resending to nobody.
    std::thread::sleep(Duration::from_secs(6));
    let t = Instant::now();
    call(&plugin("dhcp"), "DEL", "rn", Some(&ctr), &c, &host).expect_ok();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "DEL took {:?}",
        t.elapsed()
    );
    assert_eq!(d.records(), 0);
}

/// `provide` options reach the server: host-name from `CNI_ARGS`, a vendor
/// class by number; `request` adds to the parameter request list.
#[test]
fn provided_options_reach_the_server() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let ctr = lan.container();
    let c = conf(
        &d.socket,
        json!({
            "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"},
                        {"option": "60", "value": "cni-rs-test"}],
            "request": [{"option": "15"}]
        }),
    );
    let r = Invocation::new(plugin("dhcp"), "ADD")
        .container_id("po")
        .netns(&ctr)
        .args("IgnoreUnknown=1;K8S_POD_NAME=web-1")
        .config(&c)
        .run(&host)
        .expect_ok();
    let log = lan.log();
    assert!(log.contains("client provides name: web-1"), "{log}");
    assert!(log.contains("vendor class: cni-rs-test"), "{log}");
    assert!(
        log.contains("requested options: 15:domain-name, 3:router, 1:netmask"),
        "{log}"
    );
    Invocation::new(plugin("dhcp"), "DEL")
        .container_id("po")
        .netns(&ctr)
        .args("IgnoreUnknown=1;K8S_POD_NAME=web-1")
        .config(&c)
        .run(&host)
        .expect_ok();
    assert!(lan.released(&ip_of(&r)));
}

/// A namespace path reused by another namespace (a named netns deleted and
/// created again; a /proc/<pid>/ns/net after pid reuse) is not the lease's:
/// DEL forgets the lease without sending a release from a stranger's
/// interface.
#[test]
fn a_reused_namespace_path_is_not_the_lease_namespace() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let c = conf(&d.socket, json!({}));
    let ctr = lan.container();
    let name = ctr.name().to_string();
    let path = ctr.path_str();
    let r = call(&plugin("dhcp"), "ADD", "ru", Some(&ctr), &c, &host).expect_ok();
    drop(ctr);
    struct Named(String);
    impl Drop for Named {
        fn drop(&mut self) {
            let _ = netns::remove_named(&self.0);
        }
    }
    netns::create_named(&name).expect("recreate the namespace");
    let _again = Named(name.clone());
    lan.ns.run_ok(
        "ip",
        &[
            "link", "add", "ru0", "type", "veth", "peer", "name", "eth0", "netns", &name,
        ],
    );
    lan.ns
        .run_ok("ip", &["link", "set", "ru0", "master", "br0", "up"]);
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    let e = Invocation::new(plugin("dhcp"), "CHECK")
        .container_id("ru")
        .netns_path(&path)
        .config(&with_prev)
        .run(&host)
        .expect_err(8);
    assert!(e["msg"].as_str().unwrap().contains("no longer"), "{e}");
    Invocation::new(plugin("dhcp"), "DEL")
        .container_id("ru")
        .netns_path(&path)
        .config(&c)
        .run(&host)
        .expect_ok();
    assert!(!lan.released(&ip_of(&r)), "released from another namespace");
    assert_eq!(d.records(), 0);
}

/// ADD again for the same attachment in another namespace (a runtime
/// retrying with a fresh netns) takes a lease there instead of returning
/// the old namespace's.
#[test]
fn add_again_from_another_namespace_takes_a_new_lease_there() {
    let Some((lan, host, dir)) = setup() else {
        return;
    };
    let d = Daemon::start(&host, dir.path(), plugin("dhcp"), &[]);
    let c = conf(&d.socket, json!({}));
    let (a, b) = (lan.container(), lan.container());
    call(&plugin("dhcp"), "ADD", "re", Some(&a), &c, &host).expect_ok();
    let rb = call(&plugin("dhcp"), "ADD", "re", Some(&b), &c, &host).expect_ok();
    configure(&b, &rb);
    assert_eq!(d.records(), 1);
    let record = fs::read_dir(&d.state)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lease: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(lease["attachment"]["netns"], b.path_str());
    let mut with_prev = c.clone();
    with_prev["prevResult"] = rb.clone();
    call(&plugin("dhcp"), "CHECK", "re", Some(&b), &with_prev, &host).expect_ok();
    call(&plugin("dhcp"), "DEL", "re", Some(&b), &c, &host).expect_ok();
    assert!(lan.released(&ip_of(&rb)));
}
