//! bandwidth, end to end: bridge + host-local + portmap + bandwidth chained
//! as a runtime chains them (exec'd directly, through `cnictl --cap-args`
//! and through libcni's `cnitool` with `CAP_ARGS`), with real TCP
//! transfers between the host and the container timed against the
//! configured rate; the tc state compared with the Go reference's, DELs
//! crossed both ways, and the container-side shaping used when there is
//! no host veth.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration::{Invocation, Netns, can_run, plugin, reference_plugin, temp_dir};
use integration::{cnitool, with_private_var_lib};
use serde_json::{Value, json};

/// 2,000,000 bytes at 8 Mbit/s (1,000,000 bytes/s): two seconds.
const BYTES: usize = 2_000_000;
const RATE: u64 = 8_000_000;
const BURST: u64 = 800_000;
const GATEWAY: &str = "10.77.0.1";
const NETWORK: &str = "bwnet";

fn bandwidth_cap() -> Value {
    json!({"ingressRate": RATE, "ingressBurst": BURST, "egressRate": RATE, "egressBurst": BURST})
}

/// Send `BYTES` from namespace `from` to `addr` in namespace `to`; the
/// receiver answers with the count once it has read everything. Returns
/// the time from connect to that answer.
fn transfer(from: &Netns, to: &Netns, addr: &str, port: u16) -> Duration {
    let listener = netns::NetNs::open(to.path())
        .unwrap()
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .expect("listen");
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut c, _) = listener.accept()?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            match c.read(&mut buf)? {
                0 => break,
                n => total += n,
            }
        }
        c.write_all(&(total as u64).to_be_bytes())?;
        Ok(total)
    });
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let start = Instant::now();
    let mut s = netns::NetNs::open(from.path())
        .unwrap()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap()
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&vec![0x5a; BYTES]).expect("send");
    s.shutdown(Shutdown::Write).unwrap();
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).expect("receiver's count");
    let took = start.elapsed();
    assert_eq!(u64::from_be_bytes(ack) as usize, BYTES);
    assert_eq!(receiver.join().unwrap().unwrap(), BYTES);
    took
}

/// Both directions take 2.0 s ± 25% (1.5–2.5 s).
fn assert_shaped(host: &Netns, ctr: &Netns, ctr_ip: &str, what: &str) {
    let toward = transfer(host, ctr, ctr_ip, 5201);
    let from = transfer(ctr, host, GATEWAY, 5202);
    for (dir, t) in [("host -> container", toward), ("container -> host", from)] {
        eprintln!("{what}: {dir}: {BYTES} bytes in {t:?}");
        assert!(
            (1.5..=2.5).contains(&t.as_secs_f64()),
            "{what}: {dir} took {t:?}, expected 2.0 s ± 25%"
        );
    }
}

fn assert_unshaped(host: &Netns, ctr: &Netns, ctr_ip: &str, what: &str) {
    let toward = transfer(host, ctr, ctr_ip, 5203);
    let from = transfer(ctr, host, GATEWAY, 5204);
    for (dir, t) in [("host -> container", toward), ("container -> host", from)] {
        eprintln!("{what}: {dir}: {BYTES} bytes in {t:?}");
        assert!(
            t < Duration::from_millis(500),
            "{what}: {dir} took {t:?} without shaping"
        );
    }
}

/// Every tc object in the host namespace except the kernel's defaults,
/// and every ifb.
fn tc_state(ns: &Netns) -> (Vec<String>, Vec<String>) {
    let qdiscs: Vec<String> = ns
        .run_ok("tc", &["qdisc", "show"])
        .lines()
        .filter(|l| !l.starts_with("qdisc noqueue") && !l.starts_with("qdisc pfifo_fast"))
        .map(str::to_string)
        .collect();
    let mut filters = vec![];
    for link in ns.links() {
        let out = ns.run_ok("tc", &["filter", "show", "dev", &link, "ingress"]);
        // Action indices are the kernel's counter, not part of the state.
        filters.extend(
            out.lines()
                .map(|l| match l.trim_start().strip_prefix("index ") {
                    Some(rest) => format!(
                        "{link}: index _ {}",
                        rest.split_once(' ').map_or("", |r| r.1)
                    ),
                    None => format!("{link}: {l}"),
                }),
        );
    }
    (qdiscs, filters)
}

fn ifbs(ns: &Netns) -> Vec<String> {
    ns.links_of_type("ifb")
}

fn assert_clean(ns: &Netns, what: &str) {
    let (q, f) = tc_state(ns);
    assert!(q.is_empty(), "{what}: qdiscs left: {q:#?}");
    assert!(f.is_empty(), "{what}: filters left: {f:#?}");
    assert!(ifbs(ns).is_empty(), "{what}: ifbs left: {:?}", ifbs(ns));
}

/// The chain's configurations, exec'd one plugin at a time as libcni does.
struct Chain {
    plugins: Vec<Value>,
    host: Netns,
    ctr: Netns,
    _data: tempfile::TempDir,
}

impl Chain {
    fn new(prefix: &str) -> Chain {
        let data = temp_dir("cnit-bw-ipam");
        let plugins = vec![
            json!({"type": "bridge", "bridge": "bw0", "isGateway": true,
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]],
                            "dataDir": data.path()}}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        ];
        Chain {
            plugins,
            host: Netns::new(&format!("{prefix}host")),
            ctr: Netns::bare(&format!("{prefix}ctr")),
            _data: data,
        }
    }

    fn conflist(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": self.plugins})
    }

    fn conf(&self, i: usize, prev: Option<&Value>, bw: Option<&Value>) -> Value {
        let mut c = self.plugins[i].clone();
        c["cniVersion"] = json!("1.0.0");
        c["name"] = json!(NETWORK);
        if let Some(caps) = c.as_object_mut().and_then(|o| o.remove("capabilities"))
            && caps.get("bandwidth").is_some()
            && let Some(bw) = bw
        {
            c["runtimeConfig"] = json!({ "bandwidth": bw });
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn bin(&self, i: usize, bandwidth: &Path) -> PathBuf {
        match self.plugins[i]["type"].as_str().unwrap() {
            "bandwidth" => bandwidth.to_path_buf(),
            t => plugin(t),
        }
    }

    fn run(
        &self,
        bw_bin: &Path,
        cmd: &str,
        id: &str,
        i: usize,
        prev: Option<&Value>,
        bw: Option<&Value>,
    ) -> integration::Outcome {
        Invocation::new(self.bin(i, bw_bin), cmd)
            .container_id(id)
            .netns(&self.ctr)
            .config(&self.conf(i, prev, bw))
            .run(&self.host)
    }

    fn add(&self, bw_bin: &Path, id: &str, bw: &Value) -> Value {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let r = self
                .run(bw_bin, "ADD", id, i, prev.as_ref(), Some(bw))
                .expect_ok();
            prev = Some(r);
        }
        prev.unwrap()
    }

    fn check(&self, bw_bin: &Path, id: &str, result: &Value, bw: &Value) {
        for i in 0..self.plugins.len() {
            self.run(bw_bin, "CHECK", id, i, Some(result), Some(bw))
                .expect_ok();
        }
    }

    fn del(&self, bw_bin: &Path, id: &str, result: Option<&Value>, bw: &Value) {
        for i in (0..self.plugins.len()).rev() {
            self.run(bw_bin, "DEL", id, i, result, Some(bw)).expect_ok();
        }
    }
}

fn ctr_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

fn host_veth(result: &Value) -> String {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().starts_with("veth"))
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn chain_shapes_both_directions_at_the_configured_rate_and_del_leaves_nothing() {
    if !can_run() {
        return;
    }
    let chain = Chain::new("cnit-bw");
    let (host, ctr) = (&chain.host, &chain.ctr);
    let ours = plugin("bandwidth");

    // Unshaped first: the same chain with no bandwidth capability.
    let plain = chain.add(&ours, "plain", &json!({}));
    assert_unshaped(host, ctr, &ctr_ip(&plain), "no capability");
    assert_clean(host, "ADD without bandwidth");
    chain.del(&ours, "plain", Some(&plain), &json!({}));

    let result = chain.add(&ours, "shaped", &bandwidth_cap());
    let ifb = bandwidth::ifb_name(NETWORK, "shaped");
    let last = result["interfaces"].as_array().unwrap().last().unwrap();
    assert_eq!(last["name"], json!(ifb), "{result}");
    assert!(
        last["mac"].is_string() && last.get("sandbox").is_none(),
        "{result}"
    );
    assert_eq!(ifbs(host), vec![ifb.clone()]);
    let veth = host_veth(&result);
    let (qdiscs, filters) = tc_state(host);
    assert!(
        qdiscs
            .iter()
            .any(|q| q.starts_with(&format!("qdisc tbf 1: dev {veth} root"))
                && q.contains("rate 8Mbit burst 100000b lat 25ms")),
        "{qdiscs:#?}"
    );
    assert!(
        qdiscs
            .iter()
            .any(|q| q.starts_with(&format!("qdisc ingress ffff: dev {veth}"))),
        "{qdiscs:#?}"
    );
    assert!(
        qdiscs
            .iter()
            .any(|q| q.starts_with(&format!("qdisc tbf 1: dev {ifb} root"))
                && q.contains("rate 8Mbit")),
        "{qdiscs:#?}"
    );
    assert!(
        filters
            .iter()
            .any(|f| f.contains(&format!("mirred (Egress Redirect to device {ifb}) stolen"))),
        "{filters:#?}"
    );
    assert_shaped(host, ctr, &ctr_ip(&result), "bridge+portmap+bandwidth");
    chain.check(&ours, "shaped", &result, &bandwidth_cap());

    // CHECK notices a changed rate.
    let slower = json!({"ingressRate": RATE / 2, "ingressBurst": BURST, "egressRate": RATE, "egressBurst": BURST});
    let e = chain
        .run(&ours, "CHECK", "shaped", 2, Some(&result), Some(&slower))
        .expect_err(999);
    assert!(
        e["msg"].as_str().unwrap().contains("Rate doesn't match"),
        "{e}"
    );

    // DEL of bandwidth alone already removes everything it made.
    chain
        .run(
            &ours,
            "DEL",
            "shaped",
            2,
            Some(&result),
            Some(&bandwidth_cap()),
        )
        .expect_ok();
    assert_clean(host, "bandwidth DEL");
    chain.del(&ours, "shaped", Some(&result), &bandwidth_cap());
    assert_clean(host, "chain DEL");
    // Second DEL, also without prevResult and netns.
    chain.del(&ours, "shaped", Some(&result), &bandwidth_cap());
    Invocation::new(&ours, "DEL")
        .container_id("shaped")
        .config(&chain.conf(2, None, Some(&bandwidth_cap())))
        .run(host)
        .expect_ok();
}

#[test]
fn same_tc_state_as_the_reference_and_dels_cross_both_ways() {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("bandwidth") else {
        return;
    };
    let ours = plugin("bandwidth");
    let chain = Chain::new("cnit-bwd");
    let host = &chain.host;
    // The chain's result without shaping: bandwidth's prevResult.
    let prev = chain.add(&ours, "diff", &json!({}));
    for bw in [
        // Different rates each way, so a swapped direction shows.
        json!({"ingressRate": RATE, "ingressBurst": BURST, "egressRate": 2 * RATE, "egressBurst": 3 * BURST}),
        // What containerd and CRI-O send for the Kubernetes annotations:
        // a burst of 2^32 - 1 bits, whose bucket wraps around in the
        // reference's arithmetic.
        json!({"ingressRate": 10_000_000, "ingressBurst": 4294967295u64, "egressRate": 5_000_000, "egressBurst": 4294967295u64}),
        json!({"egressRate": RATE, "egressBurst": BURST}),
    ] {
        differential(&chain, &go, &ours, host, &prev, &bw);
    }
    chain.del(&ours, "diff", Some(&prev), &json!({}));
}

/// Same container, same veth: ADD with one, read the state, DEL with the
/// other, and the other way round.
fn differential(chain: &Chain, go: &Path, ours: &Path, host: &Netns, prev: &Value, bw: &Value) {
    let run_bw =
        |bin: &Path, cmd: &str, prev: &Value| chain.run(bin, cmd, "diff", 2, Some(prev), Some(bw));
    let state_of = |bin: &Path| {
        let r = run_bw(bin, "ADD", prev).expect_ok();
        let s = tc_state(host);
        let i = ifbs(host);
        (r, s, i)
    };
    let (r_go, s_go, i_go) = state_of(go);
    // Our CHECK accepts the reference's state; our DEL removes its ifb
    // and its qdiscs on the veth.
    run_bw(ours, "CHECK", &r_go).expect_ok();
    run_bw(ours, "DEL", &r_go).expect_ok();
    assert_clean(host, &format!("our DEL after the reference's ADD ({bw})"));
    let (r_ours, s_ours, i_ours) = state_of(ours);
    assert_eq!(s_ours, s_go, "tc state differs from the reference's ({bw})");
    assert_eq!(i_ours, i_go);
    let strip_mac = |mut r: Value| {
        for i in r["interfaces"].as_array_mut().unwrap() {
            i.as_object_mut().unwrap().remove("mac");
        }
        r
    };
    assert_eq!(strip_mac(r_ours.clone()), strip_mac(r_go.clone()));
    // The reference's CHECK accepts ours.
    run_bw(go, "CHECK", &r_ours).expect_ok();
    // The reference's DEL removes our ifb (it leaves the veth's qdiscs,
    // which go with the veth).
    run_bw(go, "DEL", &r_ours).expect_ok();
    assert!(ifbs(host).is_empty(), "reference DEL left {:?}", ifbs(host));
    run_bw(ours, "DEL", &r_ours).expect_ok();
    assert_clean(host, &format!("our DEL after the reference's DEL ({bw})"));
}

#[test]
fn without_a_host_veth_the_container_interface_is_shaped_inside_its_namespace() {
    if !can_run() {
        return;
    }
    let ours = plugin("bandwidth");
    let host = Netns::new("cnit-bwnhost");
    let ctr = Netns::new("cnit-bwnctr");
    // The container's interface leads to another namespace, not the host
    // (as after a main plugin whose interface has no host peer).
    let peer = Netns::new("cnit-bwnpeer");
    peer.wire_to(
        ("p0", &format!("{GATEWAY}/24")),
        &ctr,
        ("eth0", "10.77.0.2/24"),
    );
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": ctr.path_str()}],
        "ips": [{"address": "10.77.0.2/24", "interface": 0}]});
    let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "bandwidth",
        "runtimeConfig": {"bandwidth": bandwidth_cap()}, "prevResult": prev});
    let inv = |cmd: &str, c: &Value| {
        Invocation::new(&ours, cmd)
            .container_id("nohost")
            .netns(&ctr)
            .config(c)
            .run(&host)
    };
    let r = inv("ADD", &conf).expect_ok();
    let ifb = bandwidth::ifb_name(NETWORK, "nohost");
    let last = r["interfaces"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], json!(ifb));
    assert_eq!(last["sandbox"], json!(ctr.path_str()));
    assert!(ifbs(&host).is_empty());
    assert_eq!(ifbs(&ctr), vec![ifb.clone()]);
    assert_shaped(&peer, &ctr, "10.77.0.2", "container-side");
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    inv("CHECK", &check).expect_ok();
    inv("DEL", &check).expect_ok();
    assert_clean(&ctr, "container-side DEL");
    inv("DEL", &check).expect_ok();
}

#[test]
fn bad_values_are_errors_naming_the_key_and_change_nothing() {
    if !can_run() {
        return;
    }
    let ours = plugin("bandwidth");
    let host = Netns::new("cnit-bwbhost");
    let ctr = Netns::new("cnit-bwbctr");
    host.wire_to(("vethb", "10.78.0.1/24"), &ctr, ("eth0", "10.78.0.2/24"));
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "vethb"}, {"name": "eth0", "sandbox": ctr.path_str()}],
        "ips": [{"address": "10.78.0.2/24", "interface": 1}]});
    let before = (host.settled_snapshot(), tc_state(&host));
    for (extra, code, needle) in [
        (json!({"ingressRate": 1000}), 7, "ingressRate 1000"),
        (json!({"egressBurst": 1000}), 7, "egressBurst 1000"),
        (
            json!({"ingressRate": -5, "ingressBurst": 5}),
            7,
            "ingressRate",
        ),
        (
            json!({"egressRate": "fast", "egressBurst": 5}),
            7,
            "egressRate",
        ),
        (
            json!({"egressRate": 1000, "egressBurst": 40_000_000_000u64}),
            7,
            "4GB",
        ),
        (
            json!({"runtimeConfig": {"bandwidth": {"ingressBurst": 9}}}),
            7,
            "runtimeConfig.bandwidth.ingressBurst 9",
        ),
    ] {
        let mut conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "bandwidth", "prevResult": prev});
        conf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        for cmd in ["ADD", "CHECK", "DEL"] {
            let e = Invocation::new(&ours, cmd)
                .container_id("bad")
                .netns(&ctr)
                .config(&conf)
                .run(&host)
                .expect_err(code);
            assert!(
                e["msg"].as_str().unwrap().contains(needle),
                "{cmd} {conf}: {e}"
            );
        }
    }
    // Chained plugin without prevResult.
    let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "bandwidth",
        "ingressRate": 1000, "ingressBurst": 1000});
    Invocation::new(&ours, "ADD")
        .container_id("bad")
        .netns(&ctr)
        .config(&conf)
        .run(&host)
        .expect_err(7);
    assert_eq!(
        (host.settled_snapshot(), tc_state(&host)),
        before,
        "a refused request changed the host"
    );
}

#[test]
fn gc_removes_the_ifbs_of_attachments_that_are_gone() {
    if !can_run() {
        return;
    }
    let ours = plugin("bandwidth");
    let host = Netns::new("cnit-bwghost");
    let mut ctrs = vec![];
    let mut results = vec![];
    for (i, id) in ["keep", "gone"].iter().enumerate() {
        let ctr = Netns::new("cnit-bwgctr");
        let hv = format!("vethg{i}");
        host.wire_to(
            (&hv, &format!("10.79.{i}.1/24")),
            &ctr,
            ("eth0", &format!("10.79.{i}.2/24")),
        );
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": hv}, {"name": "eth0", "sandbox": ctr.path_str()}],
            "ips": [{"address": format!("10.79.{i}.2/24"), "interface": 1}]});
        let conf = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bandwidth",
            "runtimeConfig": {"bandwidth": bandwidth_cap()}, "prevResult": prev});
        results.push(
            Invocation::new(&ours, "ADD")
                .container_id(id)
                .netns(&ctr)
                .config(&conf)
                .run(&host)
                .expect_ok(),
        );
        ctrs.push(ctr);
    }
    // An ifb another network's attachment uses, and a leaked one of the
    // reference (no alias, no filter redirecting to it).
    host.run_ok("ip", &["link", "add", "bwpdeadbeef0001", "type", "ifb"]);
    let other = Netns::new("cnit-bwgctr");
    host.wire_to(("vethg9", "10.79.9.1/24"), &other, ("eth0", "10.79.9.2/24"));
    let other_prev = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "vethg9"}, {"name": "eth0", "sandbox": other.path_str()}],
        "ips": [{"address": "10.79.9.2/24", "interface": 1}]});
    Invocation::new(&ours, "ADD")
        .container_id("other")
        .netns(&other)
        .config(
            &json!({"cniVersion": "1.1.0", "name": "othernet", "type": "bandwidth",
            "runtimeConfig": {"bandwidth": bandwidth_cap()}, "prevResult": other_prev}),
        )
        .run(&host)
        .expect_ok();
    let gc = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bandwidth",
        "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]});
    Invocation::new(&ours, "GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run(&host)
        .expect_ok();
    let mut left = ifbs(&host);
    left.sort();
    let mut want = vec![
        bandwidth::ifb_name(NETWORK, "keep"),
        bandwidth::ifb_name("othernet", "other"),
    ];
    want.sort();
    assert_eq!(left, want);
    // The gone attachment's veth no longer redirects anywhere.
    let f = host.run_ok("tc", &["filter", "show", "dev", "vethg1", "ingress"]);
    assert!(f.trim().is_empty(), "{f}");
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same chain from a configuration directory, through a runtime: the
/// capability arrives as `--cap-args` (cnictl) or `CAP_ARGS` (cnitool).
fn through_runtime(tool: &str) {
    if !can_run() {
        return;
    }
    let cnitool_bin = if tool == "cnitool" {
        match cnitool() {
            Some(p) => Some(p),
            None => return,
        }
    } else {
        None
    };
    let chain = Chain::new("cnit-bwr");
    let state = temp_dir("cnit-bw-rt");
    let conf_dir = state.path().join("net.d");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::create_dir(state.path().join("varlib")).unwrap();
    std::fs::write(
        conf_dir.join("10-bw.conflist"),
        chain.conflist().to_string(),
    )
    .unwrap();
    let (host, ctr) = (&chain.host, &chain.ctr);
    let cap = json!({ "bandwidth": bandwidth_cap() }).to_string();
    let run = |verb: &str| -> String {
        let mut cmd: Command = match &cnitool_bin {
            Some(t) => {
                let mut c = host.command(t);
                with_private_var_lib(&mut c, &state.path().join("varlib"));
                c.env("CAP_ARGS", &cap)
                    .args([verb, NETWORK, &ctr.path_str()]);
                c
            }
            None => {
                let mut c = host.command(plugin("cnictl"));
                c.arg("--cache-dir").arg(state.path().join("cache")).args([
                    "--json",
                    "--cap-args",
                    &cap,
                    verb,
                    NETWORK,
                    &ctr.path_str(),
                ]);
                c
            }
        };
        cmd.env("NETCONFPATH", &conf_dir)
            .env("CNI_PATH", integration::bin_dir());
        ok(
            cmd.output().expect("run the runtime"),
            &format!("{tool} {verb}"),
        )
    };
    let out = run("add");
    let result: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{tool} add printed {out:?}: {e}"));
    let ifb = result["interfaces"].as_array().unwrap().last().unwrap()["name"].clone();
    assert!(ifb.as_str().unwrap().starts_with("bwp"), "{result}");
    assert_shaped(host, ctr, &ctr_ip(&result), tool);
    run("check");
    run("del");
    assert_clean(host, &format!("{tool} del"));
    assert!(!ctr.has_link("eth0"));
    run("del");
}

#[test]
fn cnictl_passes_the_capability_and_the_chain_shapes() {
    through_runtime("cnictl");
}

#[test]
fn cnitool_passes_the_capability_and_the_chain_shapes() {
    through_runtime("cnitool");
}

/// The programs one plugin run exec'd (under `strace -f`), the plugin
/// itself first.
fn execs(inv_env: &[(&str, String)], conf: &Value, host: &Netns) -> Vec<String> {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = host.command("strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(plugin("bandwidth"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_PATH", integration::bin_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in inv_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("execve(\"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn add_check_del_and_gc_run_no_helper_process() {
    if !can_run() {
        return;
    }
    if !Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: strace not installed (apt-get install strace)");
        return;
    }
    let host = Netns::new("cnit-bwshost");
    let ctr = Netns::new("cnit-bwsctr");
    host.wire_to(("vethst", "10.75.0.1/24"), &ctr, ("eth0", "10.75.0.2/24"));
    let prev = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "vethst"}, {"name": "eth0", "sandbox": ctr.path_str()}],
        "ips": [{"address": "10.75.0.2/24", "interface": 1}]});
    let mut conf = json!({"cniVersion": "1.1.0", "name": NETWORK, "type": "bandwidth",
        "runtimeConfig": {"bandwidth": bandwidth_cap()}, "prevResult": prev});
    let env = |verb: &str| {
        vec![
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", "traced".to_string()),
            ("CNI_NETNS", ctr.path_str()),
            ("CNI_IFNAME", "eth0".to_string()),
        ]
    };
    for verb in ["ADD", "CHECK", "DEL"] {
        let progs = execs(&env(verb), &conf, &host);
        assert_eq!(progs.len(), 1, "{verb} exec'd {progs:?}");
    }
    assert_clean(&host, "traced DEL");
    // A DEL without prevResult (a runtime that lost its cache) still
    // clears the host veth, found through the container's interface.
    let inv = |verb: &str, c: &Value| {
        Invocation::new(plugin("bandwidth"), verb)
            .container_id("traced")
            .netns(&ctr)
            .config(c)
            .run(&host)
    };
    inv("ADD", &conf).expect_ok();
    let mut bare = conf.clone();
    bare.as_object_mut().unwrap().remove("prevResult");
    inv("DEL", &bare).expect_ok();
    assert_clean(&host, "DEL without prevResult");
    conf["cni.dev/valid-attachments"] = json!([]);
    let gc = vec![("CNI_COMMAND", "GC".to_string())];
    assert_eq!(execs(&gc, &conf, &host).len(), 1);
}
