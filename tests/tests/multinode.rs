//! Two "nodes" — each a network namespace with its own bridge and its own
//! host-local pod subnet, exactly what the Kubernetes DaemonSet sets up
//! (deploy/install-cni.sh renders each node's conflist here too) — joined
//! by a veth "wire" carrying the node addresses. With a route on each node
//! to the other node's pod subnet, the pods reach each other; after DEL
//! nothing but the nodes' own setup is left.
//!
//! Node network 10.201.0.0/24 (node1 .1, node2 .2); pod subnets
//! 10.201.1.0/24 on node1 and 10.201.2.0/24 on node2.

use integration::{Invocation, Netns};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NET: &str = "cni-rs";
const BRIDGE: &str = "cni-rs0";

struct Node {
    ns: Netns,
    /// Address on the wire between the nodes.
    addr: &'static str,
    pod_cidr: &'static str,
    /// The bridge plugin's entry of the node's conflist, with the IPAM
    /// store moved into `state`.
    plugin_conf: Value,
    state: tempfile::TempDir,
}

/// The conflist the DaemonSet's installer writes on a node with this pod
/// CIDR.
fn node_conflist(pod_cidr: &str, ip_masq: bool) -> Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = integration::temp_dir("cnit-node-conf");
    let (src, bin, net) = (
        dir.path().join("src"),
        dir.path().join("bin"),
        dir.path().join("net"),
    );
    for d in [&src, &bin, &net] {
        std::fs::create_dir(d).unwrap();
    }
    std::os::unix::fs::symlink(integration::plugin("loopback"), src.join("loopback")).unwrap();
    let out = Command::new("sh")
        .arg(repo.join("deploy/install-cni.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SRC_BIN_DIR", &src)
        .env("HOST_BIN_DIR", &bin)
        .env("HOST_NET_DIR", &net)
        .env(
            "CONFLIST_TEMPLATE",
            repo.join("deploy/10-cni-rs.conflist.template"),
        )
        .env("POD_CIDRS", pod_cidr)
        .env("IP_MASQ", ip_masq.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "install-cni.sh: {out:?}");
    serde_json::from_slice(&std::fs::read(net.join("10-cni-rs.conflist")).unwrap()).unwrap()
}

impl Node {
    fn new(name: &str, addr: &'static str, pod_cidr: &'static str, ip_masq: bool) -> Self {
        let conflist = node_conflist(pod_cidr, ip_masq);
        assert_eq!(conflist["name"], NET);
        let state = integration::temp_dir("cnit-node-ipam");
        let mut plugin_conf = conflist["plugins"][0].clone();
        assert_eq!(plugin_conf["type"], "bridge");
        assert_eq!(plugin_conf["bridge"], BRIDGE);
        plugin_conf["cniVersion"] = conflist["cniVersion"].clone();
        plugin_conf["name"] = json!(NET);
        plugin_conf["ipam"]["dataDir"] = json!(state.path());
        Node {
            ns: Netns::new(name),
            addr,
            pod_cidr,
            plugin_conf,
            state,
        }
    }

    fn reservations(&self) -> Vec<String> {
        integration::dir_entries(&self.state.path().join(NET))
            .into_iter()
            .filter(|f| f.parse::<IpAddr>().is_ok())
            .collect()
    }
}

/// Two nodes on one wire, each routing the other's pod subnet via the
/// other's node address — the static-route ("host-gw") pattern that makes
/// node-local subnets reachable across a flat node network.
fn cluster(ip_masq: bool) -> (Node, Node) {
    let n1 = Node::new("cnit-node1", "10.201.0.1", "10.201.1.0/24", ip_masq);
    let n2 = Node::new("cnit-node2", "10.201.0.2", "10.201.2.0/24", ip_masq);
    n1.ns.run_ok(
        "ip",
        &[
            "link",
            "add",
            "wire0",
            "type",
            "veth",
            "peer",
            "name",
            "wire0",
            "netns",
            n2.ns.name(),
        ],
    );
    for (node, peer) in [(&n1, &n2), (&n2, &n1)] {
        // IPv4 only on the wire: an IPv6 link-local address would still be
        // settling (DAD) when the test records the node's baseline state.
        node.ns
            .run_ok("sysctl", &["-qw", "net.ipv6.conf.wire0.disable_ipv6=1"]);
        node.ns.run_ok(
            "ip",
            &["addr", "add", &format!("{}/24", node.addr), "dev", "wire0"],
        );
        node.ns.run_ok("ip", &["link", "set", "wire0", "up"]);
        node.ns
            .run_ok("ip", &["route", "add", peer.pod_cidr, "via", peer.addr]);
    }
    // The kernel reports carrier through linkwatch, up to a second late:
    // wait for it, or the baseline state would still say NO-CARRIER.
    for node in [&n1, &n2] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while node.ns.ip_json(&["link", "show", "wire0"])[0]["operstate"] != "UP" {
            assert!(
                std::time::Instant::now() < deadline,
                "wire0 down in {}",
                node.ns.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(n1.ns.ping(n2.addr), "the wire between the nodes is down");
    (n1, n2)
}

/// A pod on `node`: the bridge plugin (delegating to host-local) run as a
/// runtime runs it, inside the node's namespace.
struct Pod {
    ns: Netns,
    id: String,
    result: Value,
}

impl Pod {
    fn add(node: &Node, id: &str) -> Self {
        let ns = Netns::bare("cnit-pod");
        let result = Invocation::new(integration::plugin("bridge"), "ADD")
            .container_id(id)
            .netns(&ns)
            .config(&node.plugin_conf)
            .run(&node.ns)
            .expect_ok();
        Pod {
            ns,
            id: id.to_string(),
            result,
        }
    }

    fn ip(&self) -> String {
        let addr = self.result["ips"][0]["address"]
            .as_str()
            .expect("an address");
        addr.split('/').next().unwrap().to_string()
    }

    fn del(&self, node: &Node) {
        let mut conf = node.plugin_conf.clone();
        conf["prevResult"] = self.result.clone();
        Invocation::new(integration::plugin("bridge"), "DEL")
            .container_id(&self.id)
            .netns(&self.ns)
            .config(&conf)
            .run(&node.ns)
            .expect_ok();
    }
}

/// Opens a TCP connection from `from` to `to_ip:port` (a listener inside
/// `to`) and returns the source address `to` saw.
fn tcp_source_seen(from: &Netns, to: &Netns, to_ip: &str, port: u16) -> IpAddr {
    let to_ns = netns::NetNs::open(to.path()).unwrap();
    let from_ns = netns::NetNs::open(from.path()).unwrap();
    let listener = to_ns
        .run(|| TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .expect("listen in the pod");
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hello");
        peer.ip()
    });
    let target: SocketAddr = format!("{to_ip}:{port}").parse().unwrap();
    from_ns
        .run(move || {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
            s.write_all(b"hello").unwrap();
        })
        .unwrap();
    server.join().expect("server thread")
}

/// The node's state without netfilter's empty table skeletons (the first
/// iptables call in a namespace creates the built-in chains for good).
fn node_state(node: &Node) -> String {
    node.ns
        .snapshot()
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with('*')
                || t.starts_with(':')
                || t == "COMMIT"
                || t.starts_with("table ")
                || t.starts_with("chain ")
                || t.starts_with("type ")
                || t == "}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn detach_and_check_nothing_is_left(nodes: [(&Node, &Pod, &str); 2]) {
    for (node, pod, baseline) in nodes {
        pod.del(node);
        assert!(!pod.ns.has_link("eth0"), "eth0 left in {}", pod.id);
        assert!(node.reservations().is_empty(), "{:?}", node.reservations());
        // As with the reference, the bridge outlives its last port; with it
        // gone the node is as it was before the first pod.
        node.ns.run_ok("ip", &["link", "del", BRIDGE]);
        assert_eq!(node_state(node), baseline, "left on {}", node.ns.name());
    }
}

fn ipv4_forwarding(node: &Node) -> String {
    node.ns
        .run_ok("sysctl", &["-n", "net.ipv4.ip_forward"])
        .trim()
        .to_string()
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_node_routes() {
    if !integration::can_run() {
        return;
    }
    // ipMasq off, as in a cluster that masquerades only traffic leaving the
    // cluster: pod-to-pod traffic keeps the pod's address.
    let (n1, n2) = cluster(false);
    let (base1, base2) = (node_state(&n1), node_state(&n2));

    let p1 = Pod::add(&n1, "pod-on-node1");
    let p2 = Pod::add(&n2, "pod-on-node2");
    assert!(p1.ip().starts_with("10.201.1."), "{}", p1.result);
    assert!(p2.ip().starts_with("10.201.2."), "{}", p2.result);
    for (node, pod) in [(&n1, &p1), (&n2, &p2)] {
        assert!(node.ns.has_link(BRIDGE));
        assert_eq!(node.reservations(), vec![pod.ip()]);
        // isGateway makes the node a router for its pods.
        assert_eq!(ipv4_forwarding(node), "1", "{}", node.ns.name());
    }

    assert!(p1.ns.ping(&p2.ip()), "pod1 -> pod2 across nodes");
    assert!(p2.ns.ping(&p1.ip()), "pod2 -> pod1 across nodes");
    // A pod reaches the other node itself too (e.g. a kubelet or a
    // hostNetwork pod there).
    assert!(p1.ns.ping(n2.addr), "pod1 -> node2");
    // The Kubernetes network model: pods see each other's real addresses.
    let seen = tcp_source_seen(&p1.ns, &p2.ns, &p2.ip(), 8080);
    assert_eq!(seen.to_string(), p1.ip());

    detach_and_check_nothing_is_left([(&n1, &p1, &base1), (&n2, &p2, &base2)]);
    assert!(n1.ns.ping(n2.addr), "DEL broke the node network");
}

#[test]
fn with_ip_masq_cross_node_pod_traffic_leaves_with_the_node_address() {
    if !integration::can_run() {
        return;
    }
    // The installer's default (IP_MASQ=true): everything leaving the
    // node's pod subnet is masqueraded, other nodes' pods included.
    let (n1, n2) = cluster(true);
    let (base1, base2) = (node_state(&n1), node_state(&n2));
    let p1 = Pod::add(&n1, "pod-on-node1");
    let p2 = Pod::add(&n2, "pod-on-node2");

    assert!(p1.ns.ping(&p2.ip()), "pod1 -> pod2 across nodes");
    assert!(p2.ns.ping(&p1.ip()), "pod2 -> pod1 across nodes");
    let seen = tcp_source_seen(&p1.ns, &p2.ns, &p2.ip(), 8081);
    assert_eq!(
        seen.to_string(),
        n1.addr,
        "not masqueraded to node1's address"
    );
    // The masquerade rules name the pod's address while it exists.
    assert!(
        n1.ns.netfilter().contains(&p1.ip()),
        "{}",
        n1.ns.netfilter()
    );

    detach_and_check_nothing_is_left([(&n1, &p1, &base1), (&n2, &p2, &base2)]);
}
