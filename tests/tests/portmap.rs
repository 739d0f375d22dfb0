//! portmap, end to end: bridge + host-local + portmap chained as a runtime
//! chains them, the binaries exec'd inside a throwaway "host" namespace,
//! containers and an outside client as namespaces too. Traffic is real
//! (TCP and UDP servers inside the containers), and after DEL nothing of the
//! container is left in iptables or nftables — on both backends, and across
//! the Go reference portmap.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use integration::ProcessLog;
use integration::{Invocation, Netns, Outcome, can_run, plugin, reference_plugin, temp_dir};
use serde_json::{Value, json};

const HOST_OUT: &str = "10.99.0.1"; // the host's address towards the outside
const GATEWAY: &str = "10.88.0.1"; // the bridge's address

/// One bridge network with host-local and a portmap configuration.
struct Net {
    bridge_conf: Value,
    portmap_conf: Value,
    _data: tempfile::TempDir,
}

impl Net {
    fn new(backend: Option<&str>, extra_portmap: Value) -> Net {
        let data = temp_dir("cnit-portmap-ipam");
        let name = "pmnet".to_string();
        let bridge_conf = json!({
            "cniVersion": "1.1.0",
            "name": name,
            "type": "bridge",
            "bridge": "br0",
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.88.0.0/24"}]],
                "dataDir": data.path(),
            },
        });
        let mut portmap_conf = json!({
            "cniVersion": "1.1.0",
            "name": name,
            "type": "portmap",
            "capabilities": {"portMappings": true},
        });
        if let Some(b) = backend {
            portmap_conf["backend"] = json!(b);
        }
        if let (Some(dst), Value::Object(src)) = (portmap_conf.as_object_mut(), extra_portmap) {
            dst.extend(src);
        }
        Net {
            bridge_conf,
            portmap_conf,
            _data: data,
        }
    }

    fn portmap_config(&self, mappings: Option<&Value>, prev: Option<&Value>) -> Value {
        let mut c = self.portmap_conf.clone();
        if let Some(m) = mappings {
            c["runtimeConfig"] = json!({ "portMappings": m });
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn portmap(&self, bin: PathBuf, cmd: &str, id: &str, ctr: &Netns, conf: &Value) -> Invocation {
        Invocation::new(bin, cmd)
            .container_id(id)
            .netns(ctr)
            .config(conf)
    }

    /// The chain's ADD: bridge (with host-local), then portmap with the
    /// bridge's result as prevResult. Returns portmap's result.
    fn add(&self, host: &Netns, ctr: &Netns, id: &str, mappings: &Value) -> Value {
        let prev = Invocation::new(plugin("bridge"), "ADD")
            .container_id(id)
            .netns(ctr)
            .config(&self.bridge_conf)
            .run(host)
            .expect_ok();
        let conf = self.portmap_config(Some(mappings), Some(&prev));
        let out = self
            .portmap(plugin("portmap"), "ADD", id, ctr, &conf)
            .run(host)
            .expect_ok();
        assert_eq!(out, prev, "portmap must pass prevResult through unchanged");
        out
    }

    /// The chain's DEL in reverse order; portmap gets no mappings (a
    /// runtime that lost its cache), which must still remove everything.
    fn del(&self, host: &Netns, ctr: &Netns, id: &str) {
        let conf = self.portmap_config(None, None);
        self.portmap(plugin("portmap"), "DEL", id, ctr, &conf)
            .run(host)
            .expect_ok();
        Invocation::new(plugin("bridge"), "DEL")
            .container_id(id)
            .netns(ctr)
            .config(&self.bridge_conf)
            .run(host)
            .expect_ok();
    }
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// An outside client namespace routed to the host (and, through it, to
/// the container subnet, for the "forwarded traffic" case).
fn outside_of(host: &Netns) -> Netns {
    let outside = Netns::new("cnit-out");
    host.wire_to(
        ("up0", &format!("{HOST_OUT}/24")),
        &outside,
        ("out0", "10.99.0.2/24"),
    );
    host.run_ok("ip", &["addr", "add", "10.99.0.3/24", "dev", "up0"]);
    outside.run_ok("ip", &["route", "add", "10.88.0.0/24", "via", HOST_OUT]);
    host.run_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    outside
}

/// A server inside a namespace answering every TCP connection or UDP
/// datagram with `reply`; stopped and joined on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, port: u16, udp: bool, reply: &'static str) -> Server {
        let path = ns.path().to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let ns = netns::NetNs::open(&path).unwrap();
            ns.run(move || {
                // `[::]` takes IPv4 too (bindv6only is 0 in a new namespace).
                let addr: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
                if udp {
                    let s = UdpSocket::bind(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    while !flag.load(Ordering::Relaxed) {
                        if let Ok((_, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(reply.as_bytes(), from);
                        }
                    }
                } else {
                    let l = TcpListener::bind(addr).unwrap();
                    l.set_nonblocking(true).unwrap();
                    ready_tx.send(()).unwrap();
                    while !flag.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok((mut c, _)) => {
                                let _ = c.write_all(reply.as_bytes());
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                }
            })
            .unwrap();
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server did not start");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a TCP connection from inside `ns` to `addr:port` reads, or `None`
/// when it cannot connect.
fn tcp_get(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    let target = SocketAddr::new(addr.parse().unwrap(), port);
    let h = netns::NetNs::open(ns.path()).unwrap();
    h.run(move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .unwrap()
}

/// The reply to one UDP datagram sent from inside `ns`, if any.
fn udp_get(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    let target = SocketAddr::new(addr.parse().unwrap(), port);
    let h = netns::NetNs::open(ns.path()).unwrap();
    h.run(move || {
        let any: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .ok()?;
        let s = UdpSocket::bind(any).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.send_to(b"ping", target).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}

/// Lines of the host's netfilter state that belong to a container: its id,
/// its address, or its per-container chains.
fn rules_of(host: &Netns, id: &str, ip: &str) -> Vec<String> {
    let chain_dn = dn_chain("pmnet", id);
    host.netfilter()
        .lines()
        .filter(|l| {
            l.contains(id)
                || l.contains(&format!("{ip}:"))
                || l.contains(&format!("daddr {ip} "))
                || l.contains(&chain_dn)
        })
        .map(str::to_string)
        .collect()
}

/// `CNI-DN-` + 21 hex of sha512(network + id), as the reference names it
/// (recomputed with `sha512sum`, so the test also pins the name format).
fn dn_chain(network: &str, id: &str) -> String {
    let mut child = std::process::Command::new("sha512sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{network}{id}").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!("CNI-DN-{}", &String::from_utf8_lossy(&out.stdout)[..21])
}

/// The whole scenario of the issue on one backend.
fn hostports_work_from_everywhere_and_del_leaves_nothing(backend: &str) {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let c1 = Netns::bare("cnit-ctr");
    let c2 = Netns::bare("cnit-ctr");
    let outside = outside_of(&host);
    let net = Net::new(Some(backend), json!({}));

    let r1 = net.add(
        &host,
        &c1,
        "pm-c1",
        &json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8081, "containerPort": 81, "protocol": "tcp", "hostIP": HOST_OUT},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ]),
    );
    let r2 = net.add(
        &host,
        &c2,
        "pm-c2",
        &json!([{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]),
    );
    let (ip1, ip2) = (ip_of(&r1), ip_of(&r2));

    let _s80 = Server::start(&c1, 80, false, "c1:80");
    let _s81 = Server::start(&c1, 81, false, "c1:81");
    let _s53 = Server::start(&c1, 53, true, "c1:53/udp");
    let _s2 = Server::start(&c2, 80, false, "c2:80");
    // c2 also listens on 8080 itself: traffic *forwarded* to c2:8080 must
    // reach it, not be taken by c1's hostPort 8080 (CVE-2025-67499).
    let _s2_8080 = Server::start(&c2, 8080, false, "c2:8080");

    // From outside, via the host's address.
    assert_eq!(tcp_get(&outside, HOST_OUT, 8080).as_deref(), Some("c1:80"));
    assert_eq!(tcp_get(&outside, HOST_OUT, 8090).as_deref(), Some("c2:80"));
    // hostIP restricts the destination: the host's other address does not map 8081.
    assert_eq!(tcp_get(&outside, HOST_OUT, 8081).as_deref(), Some("c1:81"));
    assert_eq!(tcp_get(&outside, "10.99.0.3", 8081), None);
    assert_eq!(
        tcp_get(&outside, "10.99.0.3", 8080).as_deref(),
        Some("c1:80")
    );
    // UDP.
    assert_eq!(
        udp_get(&outside, HOST_OUT, 5353).as_deref(),
        Some("c1:53/udp")
    );
    // Forwarded to another address on the same port: not redirected.
    assert_eq!(tcp_get(&outside, &ip2, 8080).as_deref(), Some("c2:8080"));
    // From the host itself: localhost (route_localnet + masquerade) and the
    // bridge address.
    assert_eq!(tcp_get(&host, "127.0.0.1", 8080).as_deref(), Some("c1:80"));
    assert_eq!(tcp_get(&host, GATEWAY, 8080).as_deref(), Some("c1:80"));
    assert_eq!(
        host.run_ok("sysctl", &["-n", "net.ipv4.conf.br0.route_localnet"])
            .trim(),
        "1"
    );
    // Hairpin: c1 reaches its own hostPort through the host.
    assert_eq!(tcp_get(&c1, HOST_OUT, 8080).as_deref(), Some("c1:80"));
    assert_eq!(tcp_get(&c1, GATEWAY, 8080).as_deref(), Some("c1:80"));
    // And c2 reaches c1's hostPort.
    assert_eq!(tcp_get(&c2, GATEWAY, 8080).as_deref(), Some("c1:80"));

    // CHECK passes with the mappings, and fails once a rule is gone.
    let check = |id: &str, ctr: &Netns, prev: &Value, maps: &Value| {
        let conf = net.portmap_config(Some(maps), Some(prev));
        net.portmap(plugin("portmap"), "CHECK", id, ctr, &conf)
            .run(&host)
    };
    let maps2 = json!([{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]);
    check("pm-c2", &c2, &r2, &maps2).expect_ok();

    net.del(&host, &c1, "pm-c1");
    assert!(
        rules_of(&host, "pm-c1", &ip1).is_empty(),
        "{:#?}",
        rules_of(&host, "pm-c1", &ip1)
    );
    assert_eq!(tcp_get(&outside, HOST_OUT, 8080), None);
    // c2 is untouched.
    assert_eq!(tcp_get(&outside, HOST_OUT, 8090).as_deref(), Some("c2:80"));
    net.del(&host, &c2, "pm-c2");
    assert!(
        rules_of(&host, "pm-c2", &ip2).is_empty(),
        "{:#?}",
        rules_of(&host, "pm-c2", &ip2)
    );
    check("pm-c2", &c2, &r2, &maps2).expect_err(999);
    // DEL again: nothing to do, success.
    net.del(&host, &c2, "pm-c2");
}

#[test]
fn hostports_work_from_everywhere_and_del_leaves_nothing_with_iptables() {
    hostports_work_from_everywhere_and_del_leaves_nothing("iptables");
}

#[test]
fn hostports_work_from_everywhere_and_del_leaves_nothing_with_nftables() {
    hostports_work_from_everywhere_and_del_leaves_nothing("nftables");
}

#[test]
fn the_default_backend_is_iptables_when_installed() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let c1 = Netns::bare("cnit-ctr");
    let net = Net::new(None, json!({}));
    let r = net.add(
        &host,
        &c1,
        "pm-def",
        &json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let rules = host.run_ok("iptables-save", &["-t", "nat"]);
    assert!(rules.contains(&dn_chain("pmnet", "pm-def")), "{rules}");
    assert!(
        !host
            .run_ok("nft", &["list", "tables"])
            .contains("cni_hostport")
    );
    net.del(&host, &c1, "pm-def");
    assert!(rules_of(&host, "pm-def", &ip_of(&r)).is_empty());
}

/// Processes started by a first ADD, a later ADD and a DEL of `bin`
/// (`backend` None = the Go reference: CNI 1.0.0, no backend key, DEL with
/// the mappings since it does nothing without them).
fn processes_per_verb(
    bin: PathBuf,
    backend: Option<&str>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let host = Netns::new("cnit-host");
    let ctrs: Vec<Netns> = (0..2).map(|_| Netns::bare("cnit-ctr")).collect();
    let mut net = Net::new(backend, json!({}));
    if backend.is_none() {
        net.bridge_conf["cniVersion"] = json!("1.0.0");
        net.portmap_conf["cniVersion"] = json!("1.0.0");
    }
    let log = ProcessLog::new();
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let mut results = vec![];
    let mut first_add = vec![];
    let mut add = vec![];
    for (i, c) in ctrs.iter().enumerate() {
        let prev = Invocation::new(plugin("bridge"), "ADD")
            .container_id(&format!("pc{i}"))
            .netns(c)
            .config(&net.bridge_conf)
            .run(&host)
            .expect_ok();
        log.take();
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        net.portmap(bin.clone(), "ADD", &format!("pc{i}"), c, &conf)
            .env("PATH", &log.path_env())
            .run(&host)
            .expect_ok();
        if i == 0 {
            first_add = log.take();
        } else {
            add = log.take();
        }
        results.push(prev);
    }
    let conf = if backend.is_none() {
        net.portmap_config(Some(&maps), Some(&results[1]))
    } else {
        net.portmap_config(None, None)
    };
    net.portmap(bin, "DEL", "pc1", &ctrs[1], &conf)
        .env("PATH", &log.path_env())
        .run(&host)
        .expect_ok();
    let del = log.take();
    eprintln!(
        "PROCESSES {}: first ADD {} {first_add:?}, ADD {} {add:?}, DEL {} {del:?}",
        backend.unwrap_or("reference"),
        first_add.len(),
        add.len(),
        del.len()
    );
    for (i, c) in ctrs.iter().enumerate() {
        net.del(&host, c, &format!("pc{i}"));
    }
    (first_add, add, del)
}

#[test]
fn processes_per_verb_stay_within_budget_on_both_backends() {
    if !can_run() {
        return;
    }
    let (first, add, del) = processes_per_verb(plugin("portmap"), Some("iptables"));
    assert!(first.len() <= 2, "first ADD on iptables: {first:?}");
    // Once the shared chains exist, ADD writes over nf_tables netlink too.
    assert!(add.is_empty(), "ADD on iptables: {add:?}");
    // DEL finds and deletes the rules over nf_tables netlink (iptables-nft).
    assert!(del.is_empty(), "DEL on iptables: {del:?}");
    let (first, add, del) = processes_per_verb(plugin("portmap"), Some("nftables"));
    // nftables is written and read over netlink: no process at all.
    assert!(first.is_empty(), "first ADD on nftables: {first:?}");
    assert!(add.is_empty(), "ADD on nftables: {add:?}");
    assert!(del.is_empty(), "DEL on nftables: {del:?}");
    // For the record (README): the Go reference's counts.
    if let Some(go) = reference_plugin("portmap") {
        let (first, add, del) = processes_per_verb(go, None);
        assert!(add.len() > 2 && !first.is_empty() && !del.is_empty());
    }
}

/// Go portmap (v1.1.1 here: iptables only, CNI ≤ 1.0.0) against ours.
fn go_and_rust_interop(go_adds: bool) {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("portmap") else {
        return;
    };
    let host = Netns::new("cnit-host");
    let c1 = Netns::bare("cnit-ctr");
    let outside = outside_of(&host);
    let mut net = Net::new(Some("iptables"), json!({}));
    net.bridge_conf["cniVersion"] = json!("1.0.0");
    net.portmap_conf["cniVersion"] = json!("1.0.0");
    net.portmap_conf.as_object_mut().unwrap().remove("backend");
    let id = if go_adds { "go-adds" } else { "rust-adds" };
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    ]);
    let prev = Invocation::new(plugin("bridge"), "ADD")
        .container_id(id)
        .netns(&c1)
        .config(&net.bridge_conf)
        .run(&host)
        .expect_ok();
    let ip = ip_of(&prev);
    let conf = net.portmap_config(Some(&maps), Some(&prev));
    let adder = if go_adds {
        go.clone()
    } else {
        plugin("portmap")
    };
    net.portmap(adder, "ADD", id, &c1, &conf)
        .run(&host)
        .expect_ok();
    let _s = Server::start(&c1, 80, false, "c1:80");
    assert_eq!(tcp_get(&outside, HOST_OUT, 8080).as_deref(), Some("c1:80"));
    assert!(!rules_of(&host, id, &ip).is_empty());
    // Each implementation's CHECK accepts the other's rules — except that
    // the Go v1.1.1 CHECK also checks IPv6 for an IPv4-only result and
    // fails there (plugins#819), after its IPv4 check passed.
    if go_adds {
        net.portmap(plugin("portmap"), "CHECK", id, &c1, &conf)
            .run(&host)
            .expect_ok();
    } else {
        let out = net.portmap(go.clone(), "CHECK", id, &c1, &conf).run(&host);
        if !out.success() {
            let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
            assert!(msg.starts_with("could not check ipv6 dnat"), "{msg}");
        }
    }

    if go_adds {
        // Our DEL, without the mappings.
        let conf = net.portmap_config(None, None);
        net.portmap(plugin("portmap"), "DEL", id, &c1, &conf)
            .run(&host)
            .expect_ok();
    } else {
        // The Go DEL needs the mappings to do anything.
        net.portmap(go, "DEL", id, &c1, &conf)
            .run(&host)
            .expect_ok();
    }
    let left = rules_of(&host, id, &ip);
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(tcp_get(&outside, HOST_OUT, 8080), None);
    Invocation::new(plugin("bridge"), "DEL")
        .container_id(id)
        .netns(&c1)
        .config(&net.bridge_conf)
        .run(&host)
        .expect_ok();
}

#[test]
fn go_portmap_add_then_our_del_leaves_nothing() {
    go_and_rust_interop(true);
}

#[test]
fn our_add_then_go_portmap_del_leaves_nothing() {
    go_and_rust_interop(false);
}

fn parallel_dels(backend: &str) {
    let host = Netns::new("cnit-host");
    let ctrs: Vec<Netns> = (0..4).map(|_| Netns::bare("cnit-ctr")).collect();
    let net = Net::new(Some(backend), json!({}));
    let mut ips = vec![];
    for (i, c) in ctrs.iter().enumerate() {
        let maps = json!([{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"}]);
        ips.push(ip_of(&net.add(&host, c, &format!("par{i}"), &maps)));
    }
    // Every container's DEL twice, all at once.
    let conf = net.portmap_config(None, None);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|k| {
                let (i, c) = (k % 4, &ctrs[k % 4]);
                let inv = net.portmap(plugin("portmap"), "DEL", &format!("par{i}"), c, &conf);
                let host = &host;
                s.spawn(move || inv.run(host))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outcomes {
        o.expect_ok();
    }
    for (i, ip) in ips.iter().enumerate() {
        let left = rules_of(&host, &format!("par{i}"), ip);
        assert!(left.is_empty(), "{backend}: {left:#?}");
    }
    for (i, c) in ctrs.iter().enumerate() {
        net.del(&host, c, &format!("par{i}"));
    }
}

#[test]
fn parallel_dels_all_succeed_and_leave_nothing_with_iptables() {
    if can_run() {
        parallel_dels("iptables");
    }
}

#[test]
fn parallel_dels_all_succeed_and_leave_nothing_with_nftables() {
    if can_run() {
        parallel_dels("nftables");
    }
}

/// A result as bridge would return it, for runs of portmap alone.
fn fake_prev(ctr: &Netns, ip: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "br0"},
            {"name": "veth12345678"},
            {"name": "eth0", "sandbox": ctr.path_str()},
        ],
        "ips": [{"address": ip, "gateway": GATEWAY, "interface": 2}],
        "dns": {},
    })
}

#[test]
fn bad_config_is_refused_with_the_reference_messages_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let ctr = Netns::bare("cnit-ctr");
    let prev = fake_prev(&ctr, "10.88.0.5/24");
    let tcp = |h: i64, c: i64| json!([{"hostPort": h, "containerPort": c, "protocol": "tcp"}]);
    let cases: Vec<(Value, Value, &str)> = vec![
        (
            json!({"markMasqBit": 32}),
            tcp(80, 80),
            "failed to parse config: MasqMarkBit must be between 0 and 31",
        ),
        (
            json!({"markMasqBit": -1}),
            tcp(80, 80),
            "failed to parse config: MasqMarkBit must be between 0 and 31",
        ),
        (
            json!({"markMasqBit": 5, "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            tcp(80, 80),
            "failed to parse config: Cannot specify externalSetMarkChain and markMasqBit",
        ),
        (
            json!({"backend": "x"}),
            tcp(80, 80),
            "failed to parse config: unrecognized backend \"x\"",
        ),
        (
            json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            tcp(80, 80),
            "failed to parse config: nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]",
        ),
        (
            json!({"backend": "iptables", "conditionsV4": ["ip", "saddr", "10.0.0.0/8"]}),
            tcp(80, 80),
            "failed to parse config: iptables backend was requested but configuration contains nftables-specific options [conditionsV4]",
        ),
        (
            json!({}),
            tcp(0, 80),
            "failed to parse config: Invalid host port number: 0",
        ),
        (
            json!({}),
            tcp(80, 0),
            "failed to parse config: Invalid container port number: 0",
        ),
        (
            json!({}),
            tcp(70000, 80),
            "failed to parse config: Invalid host port number: 70000",
        ),
        (
            json!({}),
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]),
            "failed to parse config: Invalid protocol \"icmp\" for host port 80: must be tcp, udp or sctp",
        ),
        (
            json!({}),
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3"}]),
            "failed to parse config: Invalid host IP \"1.2.3\" for host port 80",
        ),
        (
            json!({"backend": "nftables", "conditionsV4": ["tcp", "dport 1 ; flush ruleset"]}),
            tcp(80, 80),
            "failed to parse config: invalid nftables condition \"dport 1 ; flush ruleset\"",
        ),
        (
            json!({"backend": "iptables", "conditionsV4": ["-s", "10.0.0.0/8\n-A INPUT -j DROP"]}),
            tcp(80, 80),
            "failed to parse config: invalid iptables condition",
        ),
        (
            json!({"externalSetMarkChain": "X -j DROP"}),
            tcp(80, 80),
            "failed to parse config: invalid iptables chain name \"X -j DROP\"",
        ),
        (
            json!({"markMasqBit": "13"}),
            tcp(80, 80),
            "failed to parse config: invalid network config: markMasqBit",
        ),
    ];
    let before = host.snapshot();
    for (extra, maps, msg) in cases {
        let net = Net::new(None, extra.clone());
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        let err = net
            .portmap(plugin("portmap"), "ADD", "bad", &ctr, &conf)
            .run(&host)
            .expect_err(7);
        let got = err["msg"].as_str().unwrap();
        assert!(
            got.starts_with(msg),
            "{extra} {maps}: {got:?} does not start with {msg:?}"
        );
    }
    // Chained only.
    let net = Net::new(None, json!({}));
    let conf = net.portmap_config(Some(&tcp(80, 80)), None);
    let err = net
        .portmap(plugin("portmap"), "ADD", "bad", &ctr, &conf)
        .run(&host)
        .expect_err(7);
    assert_eq!(err["msg"], "must be called as chained plugin");
    let err = net
        .portmap(plugin("portmap"), "CHECK", "bad", &ctr, &conf)
        .run(&host)
        .expect_err(7);
    assert_eq!(err["msg"], "Required prevResult missing");
    assert_eq!(host.snapshot(), before, "a refused config changed the host");
}

#[test]
fn add_without_mappings_passes_the_result_through_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let ctr = Netns::bare("cnit-ctr");
    let prev = fake_prev(&ctr, "10.88.0.5/24");
    let net = Net::new(None, json!({}));
    let before = host.snapshot();
    let conf = net.portmap_config(None, Some(&prev));
    let out = net
        .portmap(plugin("portmap"), "ADD", "nomaps", &ctr, &conf)
        .run(&host)
        .expect_ok();
    assert_eq!(out, prev);
    net.portmap(plugin("portmap"), "CHECK", "nomaps", &ctr, &conf)
        .run(&host)
        .expect_ok();
    assert_eq!(host.snapshot(), before);
}

/// containerd's CRI plugin sends `portMappings` with Go's field names and an
/// empty `HostIP`; the Go portmap accepts that (Go decodes JSON keys
/// case-insensitively), so must we — on ADD and on DEL.
#[test]
fn port_mappings_spelled_the_way_containerd_sends_them_work() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let ctr = Netns::bare("cnit-ctr");
    let prev = fake_prev(&ctr, "10.88.0.7/24");
    let net = Net::new(Some("iptables"), json!({}));
    let before = host.snapshot();
    let maps = json!([{"HostPort": 8083, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]);
    let conf = net.portmap_config(Some(&maps), Some(&prev));
    net.portmap(plugin("portmap"), "ADD", "ctrd", &ctr, &conf)
        .run(&host)
        .expect_ok();
    let rules = rules_of(&host, "ctrd", "10.88.0.7");
    assert!(
        rules
            .iter()
            .any(|r| r.contains("--dport 8083") && r.contains("10.88.0.7:80")),
        "{rules:#?}"
    );
    let del = net.portmap_config(Some(&maps), None);
    net.portmap(plugin("portmap"), "DEL", "ctrd", &ctr, &del)
        .run(&host)
        .expect_ok();
    assert!(rules_of(&host, "ctrd", "10.88.0.7").is_empty());
    let after = host.snapshot();
    // Shared chains stay by design; nothing of this container does.
    assert!(!after.contains("ctrd") && before.lines().all(|l| after.contains(l)));
}

#[test]
fn status_is_50_when_no_backend_is_usable() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let empty = temp_dir("cnit-emptypath");
    for backend in [None, Some("iptables"), Some("nftables")] {
        let net = Net::new(backend, json!({}));
        let status = |path: Option<&str>| {
            let mut inv = Invocation::new(plugin("portmap"), "STATUS")
                .unset("CNI_IFNAME")
                .config(&net.portmap_conf);
            if let Some(p) = path {
                inv = inv.env("PATH", p);
            }
            inv.run(&host)
        };
        status(None).expect_ok();
        let err = status(Some(&empty.path().display().to_string())).expect_err(50);
        assert!(
            err["msg"].as_str().unwrap().contains("not found in PATH"),
            "{err}"
        );
    }
}

fn gc_keeps_only_valid_attachments(backend: &str) {
    let host = Netns::new("cnit-host");
    let ctrs: Vec<Netns> = (0..2).map(|_| Netns::bare("cnit-ctr")).collect();
    let net = Net::new(Some(backend), json!({}));
    let mut ips = vec![];
    for (i, c) in ctrs.iter().enumerate() {
        let prev = fake_prev(c, &format!("10.88.0.{}/24", 10 + i));
        let maps = json!([{"hostPort": 9100 + i, "containerPort": 80, "protocol": "tcp"}]);
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        net.portmap(plugin("portmap"), "ADD", &format!("gc{i}"), c, &conf)
            .run(&host)
            .expect_ok();
        ips.push(format!("10.88.0.{}", 10 + i));
    }
    let gc = |valid: Option<Value>| {
        let mut conf = net.portmap_conf.clone();
        if let Some(v) = valid {
            conf["cni.dev/valid-attachments"] = v;
        }
        Invocation::new(plugin("portmap"), "GC")
            .unset("CNI_IFNAME")
            .config(&conf)
            .run(&host)
            .expect_ok();
    };
    // Without the key, nothing is removed.
    gc(None);
    assert!(!rules_of(&host, "gc0", &ips[0]).is_empty());
    assert!(!rules_of(&host, "gc1", &ips[1]).is_empty());
    gc(Some(json!([{"containerID": "gc0", "ifname": "eth0"}])));
    assert!(
        !rules_of(&host, "gc0", &ips[0]).is_empty(),
        "{backend}: kept container lost its rules"
    );
    assert!(
        rules_of(&host, "gc1", &ips[1]).is_empty(),
        "{backend}: {:#?}",
        rules_of(&host, "gc1", &ips[1])
    );
    gc(Some(json!([])));
    assert!(rules_of(&host, "gc0", &ips[0]).is_empty());
}

#[test]
fn gc_keeps_only_valid_attachments_with_iptables() {
    if can_run() {
        gc_keeps_only_valid_attachments("iptables");
    }
}

#[test]
fn gc_keeps_only_valid_attachments_with_nftables() {
    if can_run() {
        gc_keeps_only_valid_attachments("nftables");
    }
}

/// A UDP "connection" to the host port that existed before the mapping
/// would otherwise keep going to the host: ADD flushes it.
fn stale_udp_conntrack_is_flushed_on_add(backend: &str) {
    let host = Netns::new("cnit-host");
    let c1 = Netns::bare("cnit-ctr");
    let c2 = Netns::bare("cnit-ctr");
    let outside = outside_of(&host);
    let net = Net::new(Some(backend), json!({}));
    // A first mapping loads NAT and conntrack into the host namespace.
    net.add(
        &host,
        &c1,
        "udp-c1",
        &json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let _srv = Server::start(&c2, 53, true, "c2:53/udp");
    // The client talks to host:5353 from a fixed port before any mapping.
    let h = netns::NetNs::open(outside.path()).unwrap();
    let client = h
        .run(|| UdpSocket::bind("10.99.0.2:40000").unwrap())
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client.send_to(b"ping", format!("{HOST_OUT}:5353")).unwrap();
    let entries = host.run_ok("conntrack", &["-L", "-p", "udp", "--orig-port-dst", "5353"]);
    assert!(
        entries.contains("sport=40000"),
        "no conntrack entry to flush: {entries}"
    );
    net.add(
        &host,
        &c2,
        "udp-c2",
        &json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]),
    );
    client.send_to(b"ping", format!("{HOST_OUT}:5353")).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("no reply: stale conntrack entry kept");
    assert_eq!(&buf[..n], b"c2:53/udp");
    net.del(&host, &c1, "udp-c1");
    net.del(&host, &c2, "udp-c2");
}

#[test]
fn stale_udp_conntrack_is_flushed_on_add_with_iptables() {
    if can_run() {
        stale_udp_conntrack_is_flushed_on_add("iptables");
    }
}

#[test]
fn stale_udp_conntrack_is_flushed_on_add_with_nftables() {
    if can_run() {
        stale_udp_conntrack_is_flushed_on_add("nftables");
    }
}

#[test]
fn del_after_the_namespace_is_gone_still_removes_everything() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let ctr = Netns::bare("cnit-ctr");
    let ctr_path = ctr.path_str();
    let net = Net::new(Some("nftables"), json!({}));
    let prev = fake_prev(&ctr, "10.88.0.7/24");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let conf = net.portmap_config(Some(&maps), Some(&prev));
    net.portmap(plugin("portmap"), "ADD", "gone", &ctr, &conf)
        .run(&host)
        .expect_ok();
    drop(ctr);
    let conf = net.portmap_config(None, None);
    Invocation::new(plugin("portmap"), "DEL")
        .container_id("gone")
        .netns_path(&ctr_path)
        .config(&conf)
        .run(&host)
        .expect_ok();
    assert!(rules_of(&host, "gone", "10.88.0.7").is_empty());
}

fn dual_stack_mappings(backend: &str) {
    let host = Netns::new("cnit-host");
    let c1 = Netns::bare("cnit-ctr");
    let outside = outside_of(&host);
    host.run_ok(
        "ip",
        &["addr", "add", "fd00:99::1/64", "dev", "up0", "nodad"],
    );
    outside.run_ok(
        "ip",
        &["addr", "add", "fd00:99::2/64", "dev", "out0", "nodad"],
    );
    host.run_ok("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    let mut net = Net::new(Some(backend), json!({}));
    net.bridge_conf["ipam"]["ranges"] =
        json!([[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd00:88::/64"}]]);
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "fd00:99::1"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    ]);
    let r = net.add(&host, &c1, "v6c1", &maps);
    let ip6 = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .find(|a| a.contains(':'))
        .expect("no IPv6 address in the result");
    let _s80 = Server::start(&c1, 80, false, "c1:80");
    let _s443 = Server::start(&c1, 443, false, "c1:443");
    let _s53 = Server::start(&c1, 53, true, "c1:53/udp");
    // Container addresses may still be tentative (DAD): allow a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tcp_get(&outside, "fd00:99::1", 8080).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        tcp_get(&outside, "fd00:99::1", 8080).as_deref(),
        Some("c1:80")
    );
    assert_eq!(tcp_get(&outside, HOST_OUT, 8080).as_deref(), Some("c1:80"));
    assert_eq!(
        udp_get(&outside, "fd00:99::1", 5353).as_deref(),
        Some("c1:53/udp")
    );
    // An IPv6 hostIP maps only IPv6.
    assert_eq!(
        tcp_get(&outside, "fd00:99::1", 8443).as_deref(),
        Some("c1:443")
    );
    assert_eq!(tcp_get(&outside, HOST_OUT, 8443), None);
    // From the host through the bridge's IPv6 address, and hairpin.
    assert_eq!(tcp_get(&host, "fd00:88::1", 8080).as_deref(), Some("c1:80"));
    assert_eq!(tcp_get(&c1, "fd00:99::1", 8080).as_deref(), Some("c1:80"));
    // CHECK with the same mappings as ADD (an IPv4-and-IPv6 result).
    let conf = net.portmap_config(Some(&maps), Some(&r));
    net.portmap(plugin("portmap"), "CHECK", "v6c1", &c1, &conf)
        .run(&host)
        .expect_ok();
    net.del(&host, &c1, "v6c1");
    assert!(
        rules_of(&host, "v6c1", &ip6).is_empty(),
        "{:#?}",
        rules_of(&host, "v6c1", &ip6)
    );
    assert!(rules_of(&host, "v6c1", &ip_of(&r)).is_empty());
}

#[test]
fn dual_stack_mappings_with_iptables() {
    if can_run() {
        dual_stack_mappings("iptables");
    }
}

#[test]
fn dual_stack_mappings_with_nftables() {
    if can_run() {
        dual_stack_mappings("nftables");
    }
}

/// `snat: false` installs no masquerade; `masqAll` masquerades any source.
#[test]
fn snat_off_and_masq_all_shape_the_masquerade_rules() {
    if !can_run() {
        return;
    }
    for backend in ["iptables", "nftables"] {
        let host = Netns::new("cnit-host");
        let ctr = Netns::bare("cnit-ctr");
        let prev = fake_prev(&ctr, "10.88.0.5/24");
        let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);

        let net = Net::new(Some(backend), json!({"snat": false}));
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        net.portmap(plugin("portmap"), "ADD", "nosnat", &ctr, &conf)
            .run(&host)
            .expect_ok();
        let rules = rules_of(&host, "nosnat", "10.88.0.5").join("\n");
        assert!(
            !rules.contains("SETMARK") && !rules.contains("masquerade"),
            "{backend}: {rules}"
        );
        assert!(rules.contains("10.88.0.5:80"), "{backend}: {rules}");
        net.portmap(plugin("portmap"), "DEL", "nosnat", &ctr, &conf)
            .run(&host)
            .expect_ok();

        let net = Net::new(Some(backend), json!({"masqAll": true}));
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        net.portmap(plugin("portmap"), "ADD", "masqall", &ctr, &conf)
            .run(&host)
            .expect_ok();
        let all = host.netfilter();
        // iptables prints `-s 0.0.0.0/0` as no source match at all.
        let expected = if backend == "iptables" {
            format!(
                "-A {} -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK\n",
                dn_chain("pmnet", "masqall")
            )
        } else {
            "ip saddr 0.0.0.0/0 ip daddr 10.88.0.5 masquerade comment \"masqall\"".to_string()
        };
        assert!(
            all.contains(&expected),
            "{backend}: {expected} not in {all}"
        );
        assert!(
            !all.contains("127.0.0.1"),
            "{backend}: localhost rule with masqAll: {all}"
        );
        net.portmap(plugin("portmap"), "CHECK", "masqall", &ctr, &conf)
            .run(&host)
            .expect_ok();
        net.portmap(plugin("portmap"), "DEL", "masqall", &ctr, &conf)
            .run(&host)
            .expect_ok();
        assert!(rules_of(&host, "masqall", "10.88.0.5").is_empty());
    }
}

/// Median wall time of `f` over `n` runs.
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[n / 2]
}

/// Install `count` mappings of other containers with our plugin (same
/// layout as the reference's on iptables), as a busy node has them.
fn preload(host: &Netns, net: &Net, ctr: &Netns, count: usize) {
    for i in 0..count {
        let prev = fake_prev(ctr, &format!("10.77.{}.{}/16", i / 250, i % 250 + 2));
        let maps = json!([{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]);
        let conf = net.portmap_config(Some(&maps), Some(&prev));
        net.portmap(plugin("portmap"), "ADD", &format!("load{i}"), ctr, &conf)
            .run(host)
            .expect_ok();
    }
}

/// portmap ADD+DEL, and the bridge + host-local + portmap chain ADD+DEL,
/// ours against the Go reference, with 0 and 500 other mappings present.
/// `cargo test -p integration --test portmap -- --ignored --nocapture bench`
#[test]
#[ignore = "benchmark: run explicitly"]
fn bench_portmap_and_chain_against_the_reference() {
    if !can_run() {
        return;
    }
    let go = reference_plugin("portmap");
    let runs = 7;
    for backend in ["iptables", "nftables"] {
        let host = Netns::new("cnit-host");
        let ctr = Netns::bare("cnit-ctr");
        let mut net = Net::new(Some(backend), json!({}));
        net.bridge_conf["cniVersion"] = json!("1.0.0");
        net.portmap_conf["cniVersion"] = json!("1.0.0");
        let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        for load in [0usize, 500] {
            if load > 0 {
                preload(&host, &net, &ctr, load);
            }
            let mut prev = fake_prev(&ctr, "10.88.0.5/24");
            prev["cniVersion"] = json!("1.0.0");
            let add_del = |bin: PathBuf, conf_base: &Value| {
                let conf = {
                    let mut c = conf_base.clone();
                    c["runtimeConfig"] = json!({"portMappings": maps});
                    c["prevResult"] = prev.clone();
                    c
                };
                net.portmap(bin.clone(), "ADD", "bench", &ctr, &conf)
                    .run(&host)
                    .expect_ok();
                net.portmap(bin, "DEL", "bench", &ctr, &conf)
                    .run(&host)
                    .expect_ok();
            };
            let ours = median_ms(runs, || add_del(plugin("portmap"), &net.portmap_conf));
            let mut line = format!("{backend} load={load}: portmap ADD+DEL ours {ours:.1} ms");
            if let (Some(go), "iptables") = (&go, backend) {
                let mut go_conf = net.portmap_conf.clone();
                go_conf.as_object_mut().unwrap().remove("backend");
                let theirs = median_ms(runs, || add_del(go.clone(), &go_conf));
                line.push_str(&format!(
                    ", reference {theirs:.1} ms, ratio {:.2}",
                    ours / theirs
                ));
            }
            // The whole chain with a real container.
            let chain = |bridge: PathBuf, pm: PathBuf, cni_path: String, pm_conf: &Value| {
                let c = Netns::bare("cnit-ctr");
                let r = Invocation::new(bridge.clone(), "ADD")
                    .container_id("benchc")
                    .netns(&c)
                    .cni_path(&cni_path)
                    .config(&net.bridge_conf)
                    .run(&host)
                    .expect_ok();
                let mut conf = pm_conf.clone();
                conf["runtimeConfig"] = json!({"portMappings": maps});
                conf["prevResult"] = r;
                let start = std::time::Instant::now();
                net.portmap(pm.clone(), "ADD", "benchc", &c, &conf)
                    .run(&host)
                    .expect_ok();
                net.portmap(pm, "DEL", "benchc", &c, &conf)
                    .run(&host)
                    .expect_ok();
                let pm_time = start.elapsed();
                Invocation::new(bridge, "DEL")
                    .container_id("benchc")
                    .netns(&c)
                    .cni_path(&cni_path)
                    .config(&net.bridge_conf)
                    .run(&host)
                    .expect_ok();
                pm_time
            };
            let ours_bin = integration::bin_dir().display().to_string();
            let ours_chain = median_ms(runs, || {
                chain(
                    plugin("bridge"),
                    plugin("portmap"),
                    ours_bin.clone(),
                    &net.portmap_conf,
                );
            });
            line.push_str(&format!("; chain ADD+DEL ours {ours_chain:.1} ms"));
            if let (Some(go), Some(go_bridge), "iptables") =
                (&go, reference_plugin("bridge"), backend)
            {
                let mut go_conf = net.portmap_conf.clone();
                go_conf.as_object_mut().unwrap().remove("backend");
                let theirs = median_ms(runs, || {
                    chain(
                        go_bridge.clone(),
                        go.clone(),
                        integration::REFERENCE_DIR.to_string(),
                        &go_conf,
                    );
                });
                line.push_str(&format!(
                    ", reference {theirs:.1} ms, ratio {:.2}",
                    ours_chain / theirs
                ));
            }
            eprintln!("BENCH {line}");
        }
    }
}

/// The `-A` rules of `chain` in the host's nat table, as `iptables -S`
/// prints them.
fn nat_rules(host: &Netns, chain: &str) -> Vec<String> {
    host.run_ok("iptables", &["-t", "nat", "-S", chain])
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

/// `iptables -t nat <spec>`, the spec as `iptables -S` printed it (quoted
/// comments included), read by a shell.
fn iptables_spec(host: &Netns, spec: &str) {
    host.run_ok("sh", &["-c", &format!("iptables -t nat {spec}")]);
}

/// The handle of the first rule of `ip cni_hostport <chain>` whose listing
/// contains every one of `needles`.
fn nft_handle(host: &Netns, chain: &str, needles: &[&str]) -> String {
    let listing = host.run_ok("nft", &["-a", "list", "chain", "ip", "cni_hostport", chain]);
    let line = listing
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("{needles:?} not in {listing}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// CHECK reads the kernel over netlink: no process on a good attachment
/// among others, and the container's own rule deleted, altered or its
/// chain gone behind its back fails it with the rule named.
fn check_over_netlink_names_what_is_gone(backend: &str) {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let ctrs: Vec<Netns> = (0..3).map(|_| Netns::bare("cnit-ctr")).collect();
    let net = Net::new(Some(backend), json!({}));
    let maps = |i: u16| {
        json!([
            {"hostPort": 8080 + i, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353 + i, "containerPort": 53, "protocol": "udp"},
        ])
    };
    let ids = ["pmck-1", "pmck-2", "pmck-3"];
    let results: Vec<Value> = (0..3)
        .map(|i| net.add(&host, &ctrs[i], ids[i], &maps(i as u16)))
        .collect();
    let ips: Vec<String> = results.iter().map(ip_of).collect();
    let log = ProcessLog::new();
    let check = |i: usize| {
        let conf = net.portmap_config(Some(&maps(i as u16)), Some(&results[i]));
        net.portmap(plugin("portmap"), "CHECK", ids[i], &ctrs[i], &conf)
            .env("PATH", &log.path_env())
            .run(&host)
    };
    for i in 0..3 {
        check(i).expect_ok();
    }
    assert_eq!(log.take(), Vec::<String>::new(), "CHECK started processes");
    let msg = |e: Value| e["msg"].as_str().unwrap_or_default().to_string();

    // 1. A rule altered: pmck-1's DNAT goes to port 81.
    let dn1 = dn_chain("pmnet", ids[0]);
    if backend == "iptables" {
        let rules = nat_rules(&host, &dn1);
        let n = rules
            .iter()
            .position(|r| r.contains("-j DNAT") && r.contains("--dport 8080"))
            .unwrap();
        let altered = rules[n]
            .replacen(&format!("-A {dn1}"), &format!("-R {dn1} {}", n + 1), 1)
            .replace(&format!("{}:80", ips[0]), &format!("{}:81", ips[0]));
        iptables_spec(&host, &altered);
    } else {
        let h = nft_handle(&host, "hostports", &[&format!("{}:80", ips[0]), "8080"]);
        let to = format!("{}:81", ips[0]);
        let comment = format!("\"{}\"", ids[0]);
        host.run_ok(
            "nft",
            &[
                "replace",
                "rule",
                "ip",
                "cni_hostport",
                "hostports",
                "handle",
                &h,
                "tcp",
                "dport",
                "8080",
                "dnat",
                "to",
                &to,
                "comment",
                &comment,
            ],
        );
    }
    let m = msg(check(0).expect_err(999));
    let want = if backend == "iptables" {
        format!(
            "port mappings check failed: could not check ipv4 dnat: rule [-p tcp --dport 8080 \
             -j DNAT --to-destination {}:80] in chain {dn1} not found in table nat",
            ips[0]
        )
    } else {
        format!(
            "port mappings check failed: missing hostport rule \"tcp dport 8080 dnat to {}:80 \
             comment \\\"{}\\\"\" in \"hostports\" chain of table ip cni_hostport",
            ips[0], ids[0]
        )
    };
    assert_eq!(m, want);
    check(1).expect_ok();

    // 2. A rule deleted: pmck-2's entry (iptables) or DNAT rule (nftables).
    let dn2 = dn_chain("pmnet", ids[1]);
    if backend == "iptables" {
        let entry = nat_rules(&host, "CNI-HOSTPORT-DNAT")
            .into_iter()
            .find(|r| r.contains(&dn2) && r.contains("-p udp"))
            .unwrap();
        iptables_spec(&host, &entry.replacen("-A", "-D", 1));
    } else {
        let h = nft_handle(&host, "hostports", &[&format!("{}:53", ips[1])]);
        host.run_ok(
            "nft",
            &[
                "delete",
                "rule",
                "ip",
                "cni_hostport",
                "hostports",
                "handle",
                &h,
            ],
        );
    }
    let m = msg(check(1).expect_err(999));
    if backend == "iptables" {
        assert!(
            m.contains("-p udp --destination-ports 5354] in chain CNI-HOSTPORT-DNAT not found"),
            "{m}"
        );
    } else {
        assert!(
            m.contains(&format!(
                "missing hostport rule \"udp dport 5354 dnat to {}:53",
                ips[1]
            )),
            "{m}"
        );
    }
    check(2).expect_ok();
    assert_eq!(log.take(), Vec::<String>::new(), "CHECK started processes");

    // 3. The chain gone: pmck-3's own chain (iptables), the table (nftables).
    let dn3 = dn_chain("pmnet", ids[2]);
    if backend == "iptables" {
        for entry in nat_rules(&host, "CNI-HOSTPORT-DNAT") {
            if entry.contains(&dn3) {
                iptables_spec(&host, &entry.replacen("-A", "-D", 1));
            }
        }
        host.run_ok("iptables", &["-t", "nat", "-F", &dn3]);
        host.run_ok("iptables", &["-t", "nat", "-X", &dn3]);
        assert_eq!(
            msg(check(2).expect_err(999)),
            format!(
                "port mappings check failed: could not check ipv4 dnat: chain {dn3} not found \
                 in iptables table nat"
            )
        );
    } else {
        host.run_ok("nft", &["delete", "table", "ip", "cni_hostport"]);
        let m = msg(check(2).expect_err(999));
        assert!(
            m.starts_with("port mappings check failed: missing entry rule"),
            "{m}"
        );
    }
    for i in 0..3 {
        net.del(&host, &ctrs[i], ids[i]);
        assert!(rules_of(&host, ids[i], &ips[i]).is_empty());
    }
}

#[test]
fn check_over_netlink_names_what_is_gone_with_iptables() {
    check_over_netlink_names_what_is_gone("iptables");
}

#[test]
fn check_over_netlink_names_what_is_gone_with_nftables() {
    check_over_netlink_names_what_is_gone("nftables");
}
