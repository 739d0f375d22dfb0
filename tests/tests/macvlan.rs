//! macvlan, end to end: the built binary exec'd as a runtime does, in a
//! throwaway "host" namespace whose `lan0` (one end of a veth) is the parent
//! "LAN"; the other end sits in a server namespace at 192.168.50.1. IPAM is
//! the project's host-local. After DEL nothing of the attachment may be
//! left; the Go reference in /usr/lib/cni is the oracle for differential
//! tests.

use integration::{
    Invocation, Netns, Outcome, can_run, dir_entries, normalize_result, plugin, reference_plugin,
    temp_dir,
};
use serde_json::{Value, json};

const SERVER: &str = "192.168.50.1";

/// A host namespace with `lan0` wired to a server namespace (`srv0`).
struct Lan {
    host: Netns,
    server: Netns,
}

impl Lan {
    fn new() -> Lan {
        let host = Netns::new("cnit-mvhost");
        let server = Netns::new("cnit-mvsrv");
        // No DAD on the LAN: tentative flags would flip between snapshots.
        for ns in [&host, &server] {
            ns.run_ok("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
            ns.run_ok("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
        }
        host.wire_to(
            ("lan0", "192.168.50.254/24"),
            &server,
            ("srv0", "192.168.50.1/24"),
        );
        host.wait_settled("lan0");
        Lan { host, server }
    }

    /// A second parent, `lan1` ↔ `srv1` (10.77.0.1/24 on the server).
    fn second_parent(&self) {
        self.host.wire_to(
            ("lan1", "10.77.0.254/24"),
            &self.server,
            ("srv1", "10.77.0.1/24"),
        );
    }
}

/// One network's config and host-local's store.
struct Net {
    conf: Value,
    data: tempfile::TempDir,
    plugin: std::path::PathBuf,
}

impl Net {
    fn new(extra: Value) -> Net {
        Net::with_plugin(plugin("macvlan"), "192.168.50.0/24", extra)
    }

    fn with_plugin(bin: std::path::PathBuf, subnet: &str, extra: Value) -> Net {
        let data = temp_dir("cnit-mv-ipam");
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "mvnet",
            "type": "macvlan",
            "master": "lan0",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet, "rangeStart": first_host(subnet, 10)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": data.path(),
            },
        });
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        Net {
            conf,
            data,
            plugin: bin,
        }
    }

    fn reservations(&self) -> Vec<String> {
        integration::reservations(&self.data.path().join("mvnet"))
    }

    fn inv(&self, cmd: &str, ctr: &Netns, id: &str) -> Invocation {
        Invocation::new(&self.plugin, cmd)
            .container_id(id)
            .netns(ctr)
            .config(&self.conf)
    }

    fn run(&self, cmd: &str, host: &Netns, ctr: &Netns, id: &str) -> Outcome {
        self.inv(cmd, ctr, id).run(host)
    }

    fn check(&self, host: &Netns, ctr: &Netns, id: &str, prev: &Value) -> Outcome {
        let mut conf = self.conf.clone();
        conf["prevResult"] = prev.clone();
        Invocation::new(&self.plugin, "CHECK")
            .container_id(id)
            .netns(ctr)
            .config(&conf)
            .run(host)
    }
}

/// `a.b.c.<n>` of an IPv4 /24 subnet text.
fn first_host(subnet: &str, n: u8) -> String {
    let net = subnet.split('/').next().unwrap_or_default();
    let mut parts: Vec<&str> = net.split('.').collect();
    let last = n.to_string();
    parts.pop();
    let mut s = parts.join(".");
    s.push('.');
    s.push_str(&last);
    s
}

/// `ip -d -j link show <ifname>` of a namespace (first entry).
fn link_details(ns: &Netns, ifname: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", ifname])[0].clone()
}

/// The attributes a person would compare between two macvlan links.
fn link_shape(ns: &Netns, ifname: &str) -> Value {
    let l = link_details(ns, ifname);
    json!({
        "kind": l["linkinfo"]["info_kind"],
        "mode": l["linkinfo"]["info_data"]["mode"],
        "bcqueuelen": l["linkinfo"]["info_data"]["bcqueuelen"],
        "mtu": l["mtu"],
        "operstate": l["operstate"],
        "flags": l["flags"],
    })
}

fn routes(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&ns.exec("ip", &["route", "show"]).stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn only_lo(ns: &Netns) -> bool {
    ns.links() == ["lo"]
}

#[test]
fn reaches_the_server_and_del_leaves_nothing() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    let net = Net::new(json!({}));
    let r = net.run("ADD", &lan.host, &ctr, "c1").expect_ok();

    // The result: one interface in the sandbox, its real MAC, IPs on it.
    let mac = link_details(&ctr, "eth0")["address"].clone();
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["mac"], mac);
    assert_eq!(r["interfaces"][0]["sandbox"], ctr.path_str());
    assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["ips"][0]["address"], "192.168.50.10/24");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");

    // The kernel: a macvlan in bridge mode on lan0, addressed, routed.
    let shape = link_shape(&ctr, "eth0");
    assert_eq!(shape["kind"], "macvlan");
    assert_eq!(shape["mode"], "bridge");
    assert_eq!(ctr.global_addresses("eth0"), ["192.168.50.10/24"]);
    assert!(
        routes(&ctr)
            .iter()
            .any(|r| r.starts_with("default via 192.168.50.1 dev eth0"))
    );
    assert!(ctr.ping(SERVER), "container cannot reach the server");
    // arp_notify as the reference sets it.
    let arp = ctr.run_ok("cat", &["/proc/sys/net/ipv4/conf/eth0/arp_notify"]);
    assert_eq!(arp.trim(), "1");

    net.check(&lan.host, &ctr, "c1", &r).expect_ok();
    assert_eq!(net.reservations(), ["192.168.50.10"]);

    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();
    assert!(only_lo(&ctr), "left behind: {:?}", ctr.links());
    assert!(net.reservations().is_empty());
    // Idempotent, and fine once the namespace is gone.
    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();
    let gone = ctr.path_str();
    drop(ctr);
    net.inv("DEL", &lan.server, "c1")
        .netns_path(&gone)
        .run(&lan.host)
        .expect_ok();
    net.inv("DEL", &lan.server, "c1")
        .netns_path("")
        .run(&lan.host)
        .expect_ok();
}

#[test]
fn every_mode_is_set_and_passthru_works_alone_on_a_parent() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let mut held = Vec::new();
    for (i, mode) in ["bridge", "private", "vepa", "source"].iter().enumerate() {
        let ctr = Netns::bare("cnit-mvctr");
        let net = Net::new(json!({"mode": mode}));
        let id = format!("m{i}");
        net.run("ADD", &lan.host, &ctr, &id).expect_ok();
        assert_eq!(link_shape(&ctr, "eth0")["mode"], *mode);
        // Source mode receives only from listed senders: no reply expected.
        if *mode != "source" {
            assert!(
                ctr.ping(SERVER),
                "{mode}: container cannot reach the server"
            );
        }
        held.push((net, ctr, id));
    }
    // passthru takes the whole parent: a second parent, alone.
    lan.second_parent();
    let ctr = Netns::bare("cnit-mvctr");
    let net = Net::with_plugin(
        plugin("macvlan"),
        "10.77.0.0/24",
        json!({"mode": "passthru", "master": "lan1"}),
    );
    net.run("ADD", &lan.host, &ctr, "pt").expect_ok();
    assert_eq!(link_shape(&ctr, "eth0")["mode"], "passthru");
    assert!(ctr.ping("10.77.0.1"), "passthru: cannot reach the server");
    // A second macvlan on a passthru parent is refused, and leaves nothing.
    let ctr2 = Netns::bare("cnit-mvctr");
    let e = net.run("ADD", &lan.host, &ctr2, "pt2");
    assert!(!e.success());
    assert!(only_lo(&ctr2));
    assert_eq!(net.reservations(), ["10.77.0.10"]);
    net.run("DEL", &lan.host, &ctr, "pt").expect_ok();
    assert!(only_lo(&ctr));
    for (net, ctr, id) in &held {
        net.run("DEL", &lan.host, ctr, id).expect_ok();
        assert!(only_lo(ctr));
        assert!(net.reservations().is_empty());
    }
}

#[test]
fn failed_ipam_leaves_no_link_and_no_reservation() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    // host-local refuses this after the link exists (IPAM runs second).
    let mut net = Net::new(json!({}));
    net.conf["ipam"]["ranges"] = json!([[{"subnet": "192.168.50.0/24", "rangeStart": "10.0.0.1"}]]);
    let host_before = lan.host.snapshot();
    let e = net.run("ADD", &lan.host, &ctr, "c1");
    assert!(!e.success(), "{}", e.stdout);
    assert!(e.json()["msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(only_lo(&ctr), "left behind: {:?}", ctr.links());
    assert_eq!(lan.host.snapshot(), host_before);
    // For the record: the Go plugin, same input (its namespace is dropped,
    // and the link with it).
    if let Some(go) = reference_plugin("macvlan") {
        let go_ctr = Netns::bare("cnit-mvctr");
        let out = Invocation::new(&go, "ADD")
            .container_id("c1")
            .netns(&go_ctr)
            .config(&net.conf)
            .cni_path("/usr/lib/cni")
            .run(&lan.host);
        assert!(!out.success());
        eprintln!(
            "the Go macvlan left {:?} after the same failure",
            go_ctr.links()
        );
    }

    // IPAM succeeds, configuring the address fails (a route the kernel
    // refuses): the link and the reservation both go.
    let mut net = Net::new(json!({}));
    net.conf["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "172.31.0.1"}]);
    let e = net.run("ADD", &lan.host, &ctr, "c2");
    assert!(!e.success(), "{}", e.stdout);
    assert!(only_lo(&ctr), "left behind: {:?}", ctr.links());
    assert!(net.reservations().is_empty(), "{:?}", net.reservations());

    // Bringing the link up fails after IPAM (a second macvlan with the same
    // MAC on one parent: EADDRINUSE): link and reservation go again.
    let net = Net::new(json!({"mac": "02:00:00:00:00:55"}));
    let first = Netns::bare("cnit-mvctr");
    net.run("ADD", &lan.host, &first, "dup1").expect_ok();
    let e = net.run("ADD", &lan.host, &ctr, "dup2");
    assert!(!e.success(), "{}", e.stdout);
    assert!(e.stdout.contains("UP"), "{}", e.stdout);
    assert!(only_lo(&ctr), "left behind: {:?}", ctr.links());
    assert_eq!(net.reservations(), ["192.168.50.10"]);
    net.run("DEL", &lan.host, &first, "dup1").expect_ok();

    // A missing IPAM binary is found out before anything is made.
    let mut net = Net::new(json!({}));
    net.conf["ipam"]["type"] = json!("no-such-ipam");
    net.run("ADD", &lan.host, &ctr, "c3").expect_err(7);
    assert!(only_lo(&ctr));
}

#[test]
fn mtu_mac_and_bcqueuelen_and_bad_input() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    let net = Net::new(json!({"mtu": 1400, "bcqueuelen": 123, "mac": "02:00:00:00:00:01"}));
    let r = net
        .inv("ADD", &ctr, "c1")
        .args("IgnoreUnknown=1;MAC=02:00:00:00:00:02")
        .run(&lan.host)
        .expect_ok();
    let l = link_details(&ctr, "eth0");
    assert_eq!(l["mtu"], 1400);
    assert_eq!(l["linkinfo"]["info_data"]["bcqueuelen"], 123);
    // CNI_ARGS MAC wins over the config's mac.
    assert_eq!(l["address"], "02:00:00:00:00:02");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:02");
    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();

    // runtimeConfig.mac wins over both.
    let mut net = Net::new(json!({"mac": "02:00:00:00:00:01"}));
    net.conf["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
    net.inv("ADD", &ctr, "c2")
        .args("IgnoreUnknown=1;MAC=02:00:00:00:00:02")
        .run(&lan.host)
        .expect_ok();
    assert_eq!(link_details(&ctr, "eth0")["address"], "02:00:00:00:00:03");
    net.run("DEL", &lan.host, &ctr, "c2").expect_ok();

    // Bad input: an error naming the value, nothing changed anywhere.
    let before = (lan.host.snapshot(), ctr.snapshot());
    for (extra, code, want) in [
        (
            json!({"mtu": 9000}),
            7,
            "invalid MTU 9000, must be [0, master MTU(1500)]",
        ),
        (json!({"mode": "l2"}), 7, "unknown macvlan mode: \"l2\""),
        (json!({"mac": "nope"}), 7, "invalid args nope for MAC addr"),
        (json!({"master": "nosuch0"}), 999, "nosuch0"),
        (json!({"mtu": "big"}), 7, "mtu"),
    ] {
        let net = Net::new(extra.clone());
        let e = net.run("ADD", &lan.host, &ctr, "bad").expect_err(code);
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{extra}: {msg:?} !~ {want:?}");
        assert!(net.reservations().is_empty());
    }
    assert_eq!((lan.host.snapshot(), ctr.snapshot()), before);
}

#[test]
fn default_master_is_the_default_route_interface_and_l2_only_comes_up() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    lan.host.run_ok(
        "ip",
        &["route", "add", "default", "via", SERVER, "dev", "lan0"],
    );
    let ctr = Netns::bare("cnit-mvctr");
    let net = Net::new(json!({"master": null, "ipam": {}}));
    let r = net.run("ADD", &lan.host, &ctr, "c1").expect_ok();
    assert!(
        r.get("ips")
            .is_none_or(|v| v.as_array().is_some_and(Vec::is_empty))
    );
    let l = link_details(&ctr, "eth0");
    assert!(l["link_netnsid"].is_number());
    // The parent is lan0: its index is the macvlan's link index.
    let lan0 = link_details(&lan.host, "lan0");
    assert_eq!(l["link_index"], lan0["ifindex"]);
    assert!(
        l["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP")))
    );
    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();
    assert!(only_lo(&ctr));

    // No master and no default route: the reference's message.
    lan.host.run_ok("ip", &["route", "del", "default"]);
    let e = net.run("ADD", &lan.host, &ctr, "c2").expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no default route interface found")
    );
    assert!(only_lo(&ctr));
}

#[test]
fn link_in_container_uses_a_master_inside_the_container() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::new("cnit-mvctr");
    // The container's own uplink to the server, as a previous plugin left it.
    ctr.wire_to(
        ("up0", "10.88.0.2/24"),
        &lan.server,
        ("srv2", "10.88.0.1/24"),
    );
    let net = Net::with_plugin(
        plugin("macvlan"),
        "10.88.0.0/24",
        json!({"master": "up0", "linkInContainer": true}),
    );
    let r = net
        .inv("ADD", &ctr, "c1")
        .ifname("net1")
        .run(&lan.host)
        .expect_ok();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    let l = link_details(&ctr, "net1");
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(l["link"], "up0");
    assert_eq!(ctr.global_addresses("net1"), ["10.88.0.10/24"]);
    let mut conf = net.conf.clone();
    conf["prevResult"] = r;
    Invocation::new(plugin("macvlan"), "CHECK")
        .container_id("c1")
        .netns(&ctr)
        .ifname("net1")
        .config(&conf)
        .run(&lan.host)
        .expect_ok();
    net.inv("DEL", &ctr, "c1")
        .ifname("net1")
        .run(&lan.host)
        .expect_ok();
    assert!(!ctr.has_link("net1"));
    assert!(ctr.has_link("up0"));
}

#[test]
fn check_notices_changes() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    let net = Net::new(json!({"mode": "private"}));
    let r = net.run("ADD", &lan.host, &ctr, "c1").expect_ok();
    net.check(&lan.host, &ctr, "c1", &r).expect_ok();

    // The configured mode differs from the link's.
    let mut other = Net::new(json!({"mode": "vepa"}));
    other.conf["ipam"]["dataDir"] = net.conf["ipam"]["dataDir"].clone();
    let e = other.check(&lan.host, &ctr, "c1", &r).expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("container macvlan mode private does not match expected value: vepa"),
        "{e}"
    );
    // An address removed behind our back.
    ctr.run_ok("ip", &["addr", "flush", "dev", "eth0"]);
    let e = net.check(&lan.host, &ctr, "c1", &r).expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("192.168.50.10/24"),
        "{e}"
    );
    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();
}

#[test]
fn status_says_whether_the_master_exists_and_gc_forwards_to_ipam() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let mut ok = Net::new(json!({}));
    ok.conf["cniVersion"] = json!("1.1.0");
    Invocation::new(plugin("macvlan"), "STATUS")
        .config(&ok.conf)
        .run(&lan.host)
        .expect_ok();
    let mut missing = Net::new(json!({"master": "nosuch0"}));
    missing.conf["cniVersion"] = json!("1.1.0");
    let e = Invocation::new(plugin("macvlan"), "STATUS")
        .config(&missing.conf)
        .run(&lan.host)
        .expect_err(50);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("nosuch0"),
        "{e}"
    );

    // GC: host-local drops reservations of attachments not listed.
    let ctr = Netns::bare("cnit-mvctr");
    ok.run("ADD", &lan.host, &ctr, "gone").expect_ok();
    let mut conf = ok.conf.clone();
    conf["cni.dev/valid-attachments"] = json!([]);
    Invocation::new(plugin("macvlan"), "GC")
        .config(&conf)
        .run(&lan.host)
        .expect_ok();
    assert!(ok.reservations().is_empty(), "{:?}", ok.reservations());
    ok.run("DEL", &lan.host, &ctr, "gone").expect_ok();
}

#[test]
fn same_kernel_state_as_the_go_plugin_and_cross_del() {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("macvlan") else {
        return;
    };
    let lan = Lan::new();
    for extra in [
        json!({}),
        json!({"mode": "vepa", "mtu": 1400}),
        json!({"mode": "private", "mac": "02:00:00:00:00:09"}),
    ] {
        let ours_ctr = Netns::bare("cnit-mvctr");
        let go_ctr = Netns::bare("cnit-mvctr");
        let ours = Net::new(extra.clone());
        // Two links with one MAC cannot share a parent: Go's gets its own.
        let mut go_extra = extra.clone();
        if go_extra.get("mac").is_some() {
            go_extra["mac"] = json!("02:00:00:00:00:0a");
        }
        let theirs = Net::with_plugin(go.clone(), "192.168.50.0/24", go_extra);
        let mut ours_r = ours.run("ADD", &lan.host, &ours_ctr, "o").expect_ok();
        let mut go_r = theirs
            .inv("ADD", &go_ctr, "g")
            .cni_path("/usr/lib/cni")
            .run(&lan.host)
            .expect_ok();
        // Go's result carries the same fields; both name their sandbox.
        ours_r = normalize_result(ours_r);
        go_r = normalize_result(go_r);
        assert_eq!(ours_r, go_r, "{extra}");
        assert_eq!(
            link_shape(&ours_ctr, "eth0"),
            link_shape(&go_ctr, "eth0"),
            "{extra}"
        );
        assert_eq!(
            ours_ctr.global_addresses("eth0"),
            go_ctr.global_addresses("eth0")
        );
        assert_eq!(routes(&ours_ctr), routes(&go_ctr));
        if extra.get("mac").is_some() {
            assert_eq!(
                link_details(&ours_ctr, "eth0")["address"],
                "02:00:00:00:00:09"
            );
            assert_eq!(
                link_details(&go_ctr, "eth0")["address"],
                "02:00:00:00:00:0a"
            );
        }
        // Cross-DEL: each removes what the other made, the link and (with
        // the other's host-local, same store layout) the reservation.
        Invocation::new(&go, "DEL")
            .container_id("o")
            .netns(&ours_ctr)
            .config(&ours.conf)
            .cni_path("/usr/lib/cni")
            .run(&lan.host)
            .expect_ok();
        assert!(only_lo(&ours_ctr));
        assert!(ours.reservations().is_empty());
        Invocation::new(plugin("macvlan"), "DEL")
            .container_id("g")
            .netns(&go_ctr)
            .config(&theirs.conf)
            .run(&lan.host)
            .expect_ok();
        assert!(only_lo(&go_ctr));
        assert!(theirs.reservations().is_empty());
    }
}

/// What podman 4 sends for `podman run --network <macvlan net> --ip … --mac-address …`:
/// CNI_ARGS `IgnoreUnknown=1;K8S_POD_NAME=…;MAC=…;IP=…` and a host-local range with a
/// gateway and a default route (`podman network create -d macvlan --subnet --gateway`).
#[test]
fn podman_style_static_ip_and_mac() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    let mut net = Net::new(json!({}));
    net.conf["ipam"]["ranges"] = json!([[{"subnet": "192.168.50.0/24", "gateway": SERVER}]]);
    let r = net
        .inv("ADD", &ctr, "podman1")
        .args("IgnoreUnknown=1;K8S_POD_NAME=web;MAC=02:00:00:00:00:42;IP=192.168.50.20")
        .run(&lan.host)
        .expect_ok();
    assert_eq!(r["ips"][0]["address"], "192.168.50.20/24");
    assert_eq!(r["ips"][0]["gateway"], SERVER);
    assert_eq!(link_details(&ctr, "eth0")["address"], "02:00:00:00:00:42");
    assert_eq!(ctr.global_addresses("eth0"), ["192.168.50.20/24"]);
    assert!(
        routes(&ctr)
            .iter()
            .any(|r| r.starts_with("default via 192.168.50.1 dev eth0"))
    );
    assert!(ctr.ping(SERVER));
    // The same IP again: host-local refuses it, and the second container is left empty.
    let ctr2 = Netns::bare("cnit-mvctr");
    let e = net
        .inv("ADD", &ctr2, "podman2")
        .args("IgnoreUnknown=1;K8S_POD_NAME=web2;IP=192.168.50.20")
        .run(&lan.host);
    assert!(!e.success(), "{}", e.stdout);
    assert!(only_lo(&ctr2));
    assert_eq!(net.reservations(), ["192.168.50.20"]);
    // Without IgnoreUnknown, an unknown key is refused (as the reference does).
    let e = net
        .inv("ADD", &ctr2, "podman3")
        .args("K8S_POD_NAME=web3")
        .run(&lan.host)
        .expect_err(4);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("K8S_POD_NAME"),
        "{e}"
    );
    net.run("DEL", &lan.host, &ctr, "podman1").expect_ok();
    assert!(only_lo(&ctr));
    assert!(net.reservations().is_empty());
}

/// A conflist directory driven by `cnictl` and, when installed, `cnitool`
/// from the host namespace of a [`Lan`], each with a private cache.
struct Runtimes {
    tmp: tempfile::TempDir,
    conf_dir: std::path::PathBuf,
    var_lib: std::path::PathBuf,
    tools: Vec<String>,
}

impl Runtimes {
    fn new() -> Runtimes {
        let tmp = temp_dir("cnit-mv-rt");
        let conf_dir = tmp.path().join("conf");
        let var_lib = tmp.path().join("var-lib");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::create_dir_all(var_lib.join("cni")).unwrap();
        let mut tools = vec!["cnictl".to_string()];
        match integration::find_cnitool() {
            Some(p) => tools.push(p.display().to_string()),
            None => eprintln!("SKIPPED (cnitool part): cnitool not installed"),
        }
        Runtimes {
            tmp,
            conf_dir,
            var_lib,
            tools,
        }
    }

    /// A bundled example conflist, made 1.0.0 (the installed cnitool may
    /// predate 1.1.0; 1.0.0 has ADD, CHECK and DEL) and its first plugin's
    /// master pointed at the test LAN; `edit` adjusts it before it is
    /// written. Returns the network name.
    fn install_example(&self, file: &str, edit: impl FnOnce(&mut Value)) -> String {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/runtimes/examples")
            .join(file);
        let mut list: Value = serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
        list["cniVersion"] = json!("1.0.0");
        list["plugins"][0]["master"] = json!("lan0");
        edit(&mut list);
        std::fs::write(self.conf_dir.join(file), list.to_string()).unwrap();
        list["name"].as_str().unwrap().to_string()
    }

    /// `program args` in the host namespace with `env` (CNI_ARGS, CAP_ARGS).
    fn run(&self, lan: &Lan, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let cni_path = integration::bin_dir().display().to_string();
        let mut cmd = if program == "cnictl" {
            let mut c = lan.host.command(plugin("cnictl"));
            c.args(args).env("CNI_CACHE_DIR", self.var_lib.join("cni"));
            c
        } else {
            let mut c = lan.host.command(program);
            integration::with_private_var_lib(&mut c, &self.var_lib);
            c.args(args);
            c
        };
        cmd.env("NETCONFPATH", &self.conf_dir)
            .env("CNI_PATH", &cni_path)
            .envs(env.iter().copied());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} {env:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The runtimes' way in: the bundled example conflist (master and subnet
/// pointed at the test LAN) driven by `cnictl`, and by `cnitool` when
/// installed; each ADD reaches the server, CHECK passes, DEL leaves nothing.
#[test]
fn example_conflist_under_cnictl_and_cnitool() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    let rt = Runtimes::new();
    let ipam_dir = rt.tmp.path().join("ipam");
    let name = rt.install_example("40-cni-rs-macvlan.conflist", |list| {
        list["plugins"][0]["ipam"]["ranges"] = json!([[
            {"subnet": "192.168.50.0/24", "rangeStart": "192.168.50.100", "gateway": SERVER}
        ]]);
        list["plugins"][0]["ipam"]["dataDir"] = json!(ipam_dir);
    });
    for (i, tool) in rt.tools.iter().enumerate() {
        let ctr = Netns::bare("cnit-mvctr");
        // host-local hands out the next address after the last one it gave.
        let want = format!("192.168.50.{}/24", 100 + i);
        let ns = ctr.path_str();
        rt.run(&lan, tool, &["add", &name, &ns], &[]);
        assert_eq!(ctr.global_addresses("eth0"), [want], "{tool}");
        assert_eq!(link_shape(&ctr, "eth0")["kind"], "macvlan");
        assert!(ctr.ping(SERVER), "{tool}: cannot reach the server");
        rt.run(&lan, tool, &["check", &name, &ns], &[]);
        rt.run(&lan, tool, &["del", &name, &ns], &[]);
        assert!(only_lo(&ctr), "{tool}: left {:?}", ctr.links());
        assert!(
            dir_entries(&ipam_dir.join(&name))
                .iter()
                .all(|f| f == "lock" || f.starts_with("last_reserved_ip"))
        );
    }
}

/// IPAM runs once the link exists (so a DHCP client sees the MAC the
/// container will use): a recording IPAM plugin looks the interface up in
/// the container's namespace while it runs.
#[test]
fn ipam_sees_the_container_link_and_its_mac() {
    if !can_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let lan = Lan::new();
    let ctr = Netns::bare("cnit-mvctr");
    let tmp = temp_dir("cnit-mv-fakeipam");
    let seen = tmp.path().join("seen.json");
    let script = format!(
        r#"#!/bin/sh
cat > /dev/null
case "$CNI_COMMAND" in
ADD)
  nsenter --net="$CNI_NETNS" ip -j link show "$CNI_IFNAME" > {seen}
  echo '{{"cniVersion":"1.0.0","ips":[{{"address":"192.168.50.77/24"}}]}}' ;;
VERSION)
  echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}}' ;;
esac
exit 0
"#,
        seen = seen.display()
    );
    let fake = tmp.path().join("recording-ipam");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut net = Net::new(json!({"mac": "02:00:00:00:00:77"}));
    net.conf["ipam"] = json!({"type": "recording-ipam"});
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        integration::bin_dir().display()
    );
    let r = net
        .inv("ADD", &ctr, "c1")
        .cni_path(&path)
        .run(&lan.host)
        .expect_ok();
    let during: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(during[0]["ifname"], "eth0");
    assert_eq!(during[0]["address"], "02:00:00:00:00:77");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:77");
    assert_eq!(ctr.global_addresses("eth0"), ["192.168.50.77/24"]);
    net.inv("DEL", &ctr, "c1")
        .cni_path(&path)
        .run(&lan.host)
        .expect_ok();
    assert!(only_lo(&ctr));
}

/// Dual stack: an IPv6 range with a gateway; ADD waits for DAD before the
/// routes (as the reference), and the container reaches the server over
/// both families.
#[test]
fn dual_stack_reaches_the_server_over_both_families() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    lan.server.run_ok(
        "ip",
        &["addr", "add", "fd00:50::1/64", "dev", "srv0", "nodad"],
    );
    let ctr = Netns::bare("cnit-mvctr");
    let mut net = Net::new(json!({}));
    net.conf["ipam"]["ranges"] = json!([
        [{"subnet": "192.168.50.0/24", "rangeStart": "192.168.50.10", "gateway": SERVER}],
        [{"subnet": "fd00:50::/64", "rangeStart": "fd00:50::10", "gateway": "fd00:50::1"}]
    ]);
    net.conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let r = net.run("ADD", &lan.host, &ctr, "c1").expect_ok();
    assert_eq!(r["ips"][1]["address"], "fd00:50::10/64");
    assert!(
        ctr.global_addresses("eth0")
            .contains(&"fd00:50::10/64".to_string())
    );
    // DAD finished before ADD returned.
    let tentative = ctr.ip_json(&["-6", "addr", "show", "dev", "eth0", "tentative"]);
    assert!(
        tentative.as_array().is_some_and(Vec::is_empty),
        "{tentative}"
    );
    let v6routes = ctr.run_ok("ip", &["-6", "route", "show", "default"]);
    assert!(v6routes.contains("via fd00:50::1 dev eth0"), "{v6routes}");
    assert!(ctr.ping(SERVER));
    assert!(ctr.ping("fd00:50::1"));
    net.check(&lan.host, &ctr, "c1", &r).expect_ok();
    net.run("DEL", &lan.host, &ctr, "c1").expect_ok();
    assert!(only_lo(&ctr));
    assert!(net.reservations().is_empty());
}

/// static IPAM on the test LAN: a fixed address with the server as gateway,
/// a default route and a route to 10.77.0.0/16 (the server's loopback
/// 10.77.0.1) via the server.
fn static_ipam() -> Value {
    json!({
        "type": "static",
        "addresses": [{"address": "192.168.50.30/24", "gateway": SERVER}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.77.0.0/16", "gw": SERVER}],
    })
}

/// Issue's "macvlan + static reaches a server namespace on the LAN", the
/// way runtimes do it: the bundled macvlan + static example under `cnictl`
/// and `cnitool` (when installed), with the configured address, with CNI_ARGS
/// `IgnoreUnknown=1;IP=…;GATEWAY=…` (appended; without `IgnoreUnknown`
/// macvlan refuses the keys, as the reference does) and with the `ips` and
/// `mac` capabilities (`runtimeConfig`, replacing the configured address). Each ADD reaches the
/// server over the static routes, CHECK passes, DEL leaves nothing.
#[test]
fn macvlan_and_static_under_cnictl_and_cnitool() {
    if !can_run() {
        return;
    }
    let lan = Lan::new();
    lan.server
        .run_ok("ip", &["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let rt = Runtimes::new();
    let name = rt.install_example("41-cni-rs-macvlan-static.conflist", |list| {
        list["plugins"][0]["ipam"] = static_ipam();
    });
    // (runtime environment, the container's addresses)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 3] = [
        (&[], &["192.168.50.30/24"]),
        (
            &[(
                "CNI_ARGS",
                "IgnoreUnknown=1;IP=192.168.50.31/24;GATEWAY=192.168.50.1",
            )],
            &["192.168.50.30/24", "192.168.50.31/24"],
        ),
        (
            &[(
                "CAP_ARGS",
                r#"{"ips": ["192.168.50.32/24"], "mac": "02:00:00:00:00:32"}"#,
            )],
            &["192.168.50.32/24"],
        ),
    ];
    for tool in &rt.tools {
        for (env, want) in cases {
            let ctr = Netns::bare("cnit-mvctr");
            let ns = ctr.path_str();
            rt.run(&lan, tool, &["add", &name, &ns], env);
            let mut got = ctr.global_addresses("eth0");
            got.sort();
            assert_eq!(got, want, "{tool} {env:?}");
            assert_eq!(link_shape(&ctr, "eth0")["kind"], "macvlan");
            let r = routes(&ctr);
            assert!(
                r.iter()
                    .any(|l| l.starts_with("10.77.0.0/16 via 192.168.50.1 dev eth0")),
                "{tool} {env:?}: {r:?}"
            );
            if env.is_empty() || env[0].0 == "CNI_ARGS" {
                assert!(
                    r.iter()
                        .any(|l| l.starts_with("default via 192.168.50.1 dev eth0")),
                    "{tool} {env:?}: {r:?}"
                );
            } else {
                assert_eq!(
                    link_details(&ctr, "eth0")["address"],
                    "02:00:00:00:00:32",
                    "{tool}"
                );
            }
            assert!(ctr.ping(SERVER), "{tool} {env:?}: cannot reach the server");
            assert!(
                ctr.ping("10.77.0.1"),
                "{tool} {env:?}: the static route does not reach the server"
            );
            rt.run(&lan, tool, &["check", &name, &ns], env);
            rt.run(&lan, tool, &["del", &name, &ns], env);
            assert!(only_lo(&ctr), "{tool} {env:?}: left {:?}", ctr.links());
            assert!(routes(&ctr).is_empty(), "{tool} {env:?}");
        }
    }
}

/// The Go macvlan with the Go static and ours with ours, same
/// configuration: the same result, addresses and routes in the container,
/// with configured addresses, CNI_ARGS `IP`/`GATEWAY`, `args.cni.ips` and
/// `runtimeConfig.ips`; each DELs the other's attachment.
#[test]
fn macvlan_and_static_same_as_the_go_plugins_and_cross_del() {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("macvlan") else {
        return;
    };
    if reference_plugin("static").is_none() {
        return;
    }
    let lan = Lan::new();
    let cases = [
        (json!({}), ""),
        (
            json!({}),
            "IgnoreUnknown=1;IP=192.168.50.31/24,192.168.50.41/24;GATEWAY=192.168.50.1",
        ),
        (json!({"args": {"cni": {"ips": ["192.168.50.33/24"]}}}), ""),
        (json!({"runtimeConfig": {"ips": ["192.168.50.32/24"]}}), ""),
    ];
    for (extra, args) in cases {
        let ours_ctr = Netns::bare("cnit-mvctr");
        let go_ctr = Netns::bare("cnit-mvctr");
        let mut extra = extra;
        extra["ipam"] = static_ipam();
        let ours = Net::new(extra.clone());
        let theirs = Net::with_plugin(go.clone(), "192.168.50.0/24", extra.clone());
        let ours_r = ours
            .inv("ADD", &ours_ctr, "o")
            .args(args)
            .run(&lan.host)
            .expect_ok();
        let go_r = theirs
            .inv("ADD", &go_ctr, "g")
            .args(args)
            .cni_path("/usr/lib/cni")
            .run(&lan.host)
            .expect_ok();
        let what = format!("{extra} {args}");
        assert_eq!(
            normalize_result(ours_r.clone()),
            normalize_result(go_r),
            "{what}"
        );
        let ours_addrs = ours_ctr.global_addresses("eth0");
        assert!(!ours_addrs.is_empty(), "{what}");
        assert_eq!(ours_addrs, go_ctr.global_addresses("eth0"), "{what}");
        assert_eq!(routes(&ours_ctr), routes(&go_ctr), "{what}");
        assert!(
            routes(&ours_ctr)
                .iter()
                .any(|l| l.starts_with("10.77.0.0/16 via 192.168.50.1 dev eth0")),
            "{what}"
        );
        ours.check(&lan.host, &ours_ctr, "o", &ours_r).expect_ok();
        // Cross-DEL: each removes the link the other made.
        Invocation::new(&go, "DEL")
            .container_id("o")
            .netns(&ours_ctr)
            .config(&ours.conf)
            .args(args)
            .cni_path("/usr/lib/cni")
            .run(&lan.host)
            .expect_ok();
        assert!(only_lo(&ours_ctr), "{what}");
        Invocation::new(plugin("macvlan"), "DEL")
            .container_id("g")
            .netns(&go_ctr)
            .config(&theirs.conf)
            .args(args)
            .run(&lan.host)
            .expect_ok();
        assert!(only_lo(&go_ctr), "{what}");
    }
}
