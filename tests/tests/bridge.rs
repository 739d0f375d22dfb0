//! bridge, end to end: the built binary exec'd as a runtime does, with the
//! project's host-local as IPAM. The "host" is a throwaway namespace, so is
//! every container; after DEL nothing of the attachment may be left.

use integration::{
    Invocation, Netns, Outcome, ProcessLog, Topology, can_run, dir_entries, normalize_result,
    plugin, reference_plugin, temp_dir,
};
use serde_json::{Value, json};
use std::path::Path;

/// One network: its name, host-local's data directory, and the config.
struct Net {
    conf: Value,
    data: tempfile::TempDir,
}

impl Net {
    /// `bridge` plugin config on bridge `br0` with host-local over `ranges`
    /// (each a subnet), plus `extra` keys merged at the top level.
    fn new(ranges: &[&str], extra: Value) -> Net {
        let data = temp_dir("cnit-bridge-ipam");
        let ranges: Vec<Value> = ranges.iter().map(|s| json!([{ "subnet": s }])).collect();
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": "bridgenet",
            "type": "bridge",
            "bridge": "br0",
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "dataDir": data.path(),
            },
        });
        merge(&mut conf, extra);
        Net { conf, data }
    }

    /// L2 only: no IPAM.
    fn l2(extra: Value) -> Net {
        let mut n = Net::new(&[], extra);
        n.conf["ipam"] = json!({});
        n
    }

    /// Reserved addresses in host-local's store (lock and bookkeeping aside).
    fn reservations(&self) -> Vec<String> {
        dir_entries(&self.data.path().join("bridgenet"))
            .into_iter()
            .filter(|f| f != "lock" && !f.starts_with("last_reserved_ip"))
            .collect()
    }

    fn run(&self, cmd: &str, host: &Netns, ctr: &Netns, id: &str) -> Outcome {
        Invocation::new(plugin("bridge"), cmd)
            .container_id(id)
            .netns(ctr)
            .config(&self.conf)
            .run(host)
    }

    fn add(&self, host: &Netns, ctr: &Netns, id: &str) -> Value {
        self.run("ADD", host, ctr, id).expect_ok()
    }

    fn del(&self, host: &Netns, ctr: &Netns, id: &str) {
        self.run("DEL", host, ctr, id).expect_ok();
    }

    fn check(&self, host: &Netns, ctr: &Netns, id: &str, prev: &Value) -> Outcome {
        let mut conf = self.conf.clone();
        conf["prevResult"] = prev.clone();
        Invocation::new(plugin("bridge"), "CHECK")
            .container_id(id)
            .netns(ctr)
            .config(&conf)
            .run(host)
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(dst), Value::Object(src)) = (into.as_object_mut(), extra) {
        for (k, v) in src {
            dst.insert(k, v);
        }
    }
}

/// The address (no prefix) of result IP `i`.
fn ip_of(result: &Value, i: usize) -> String {
    let a = result["ips"][i]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

fn veths(host: &Netns) -> Vec<String> {
    host.links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

fn mac_of(ns: &Netns, link: &str) -> String {
    ns.ip_json(&["link", "show", link])[0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Lines of the host's netfilter state mentioning `needle`.
fn rules_with(host: &Netns, needle: &str) -> Vec<String> {
    host.netfilter()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// After DEL: no port, no reservation, no rule of the container (container
/// ids in these tests are distinct strings, so a substring match is exact).
fn assert_nothing_left(net: &Net, host: &Netns, id: &str) {
    wait_for_no_veths(host);
    assert!(
        net.reservations().is_empty(),
        "reservations left: {:?}",
        net.reservations()
    );
    let rules = rules_with(host, id);
    assert!(rules.is_empty(), "netfilter rules left: {rules:?}");
}

/// A veth in a deleted namespace is removed by the kernel's namespace
/// cleanup, which runs asynchronously: wait for it, bounded.
fn wait_for_no_veths(host: &Netns) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !veths(host).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(veths(host).is_empty(), "ports left: {:?}", veths(host));
}

/// Global addresses of a link (link-local ones come and go by themselves).
fn global_addresses(ns: &Netns, link: &str) -> Vec<String> {
    ns.addresses(link)
        .into_iter()
        .filter(|a| !a.starts_with("fe80"))
        .collect()
}

/// Ping with up to 5 s for a reply: a fresh IPv6 gateway address is
/// unusable until the host's duplicate address detection finishes.
fn ping_within(ns: &Netns, addr: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-w", "5", addr])
        .status
        .success()
}

/// What a plugin may change on the host, without what the kernel changes
/// by itself as ports come and go (carrier, operstate, the MAC a
/// pre-existing bridge takes from its ports, DAD flags).
fn host_state(host: &Netns) -> String {
    let mut s = String::new();
    for l in host.ip_json(&["-d", "link", "show"]).as_array().unwrap() {
        s.push_str(&format!(
            "link {} mtu {} master {} kind {}\n",
            l["ifname"], l["mtu"], l["master"], l["linkinfo"]["info_kind"]
        ));
    }
    for l in host.ip_json(&["addr", "show"]).as_array().unwrap() {
        for a in l["addr_info"].as_array().unwrap() {
            // IPv6 link-local addresses (and their routes) are the kernel's
            // own, added when a link first gets a carrier.
            if a["scope"] != "link" {
                s.push_str(&format!(
                    "addr {} {}/{}\n",
                    l["ifname"], a["local"], a["prefixlen"]
                ));
            }
        }
    }
    for fam in ["-4", "-6"] {
        let out = host.run_ok("ip", &[fam, "route", "show", "table", "all"]);
        for line in out.lines() {
            if !line.starts_with("fe80::/64") && !line.starts_with("multicast ff00::/8") {
                s.push_str(&line.replace(" linkdown", ""));
                s.push('\n');
            }
        }
    }
    s.push_str(&host.netfilter());
    s
}

fn bridge_vlan_filtering_supported() -> bool {
    let probe = Netns::bare("cnit-vlanprobe");
    let ok = probe
        .exec(
            "ip",
            &[
                "link",
                "add",
                "brprobe",
                "type",
                "bridge",
                "vlan_filtering",
                "1",
            ],
        )
        .status
        .success();
    if !ok {
        eprintln!(
            "NOTE: this kernel has no bridge VLAN filtering; VLAN tests check the failure path only"
        );
    }
    ok
}

#[test]
fn two_containers_ping_each_other_and_the_gateway_over_ipv4() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(&["10.10.0.0/24"], json!({"isGateway": true}));
    let r1 = net.add(host, c1, "ctr1");
    let r2 = net.add(host, c2, "ctr2");

    // Result shape as the reference: [bridge, host veth, container], IPs on 2.
    assert_eq!(r1["cniVersion"], "1.1.0");
    let ifs = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    assert_eq!(ifs[0]["name"], "br0");
    let host_veth = ifs[1]["name"].as_str().unwrap();
    assert!(
        host_veth.starts_with("veth") && host_veth.len() == 12,
        "{host_veth}"
    );
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], c1.path_str());
    for i in ifs {
        assert_eq!(i["mac"].as_str().unwrap().len(), 17);
    }
    // Reported MACs are the real ones, read after the port joined; the
    // bridge keeps its own MAC.
    assert_eq!(ifs[0]["mac"], mac_of(host, "br0"));
    assert_eq!(ifs[1]["mac"], mac_of(host, host_veth));
    assert_eq!(ifs[2]["mac"], mac_of(c1, "eth0"));
    assert_ne!(ifs[0]["mac"], ifs[1]["mac"]);
    assert_eq!(r1["ips"][0]["address"], "10.10.0.2/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.10.0.1");
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert_eq!(global_addresses(host, "br0"), vec!["10.10.0.1/24"]);
    assert_eq!(
        host.run_ok("sysctl", &["-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );

    // Kernel state: the port is on the bridge, the container end in c1.
    let port = host.ip_json(&["-d", "link", "show", host_veth]);
    assert_eq!(port[0]["master"], "br0");
    assert_eq!(port[0]["operstate"], "UP");
    assert!(c1.addresses("eth0").contains(&"10.10.0.2/24".to_string()));

    assert!(c1.ping(&ip_of(&r2, 0)), "c1 -> c2");
    assert!(c2.ping(&ip_of(&r1, 0)), "c2 -> c1");
    assert!(c1.ping("10.10.0.1"), "c1 -> gateway");

    // CHECK passes on what ADD made.
    net.check(host, c1, "ctr1", &r1).expect_ok();

    net.del(host, c1, "ctr1");
    net.del(host, c2, "ctr2");
    assert!(!c1.has_link("eth0"));
    assert_nothing_left(&net, host, "ctr1");
    // DEL twice is fine.
    net.del(host, c1, "ctr1");
}

#[test]
fn two_containers_ping_each_other_and_the_gateway_over_ipv6() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(&["2001:db8:10::/64"], json!({"isGateway": true}));
    let started = std::time::Instant::now();
    let r1 = net.add(host, c1, "ctr1");
    // DAD is off unless `enabledad`: no settle wait.
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    let r2 = net.add(host, c2, "ctr2");
    assert_eq!(r1["ips"][0]["address"], "2001:db8:10::2/64");
    assert_eq!(r1["ips"][0]["gateway"], "2001:db8:10::1");
    assert!(
        host.addresses("br0")
            .contains(&"2001:db8:10::1/64".to_string())
    );
    assert_eq!(
        c1.run_ok("sysctl", &["-n", "net.ipv6.conf.eth0.accept_dad"])
            .trim(),
        "0"
    );
    // The host ends are bridge ports only: accept_ra=0 as the reference,
    // and no IPv6 of their own (no link-local address, no routes), while
    // IPv6 between the containers and to the gateway works.
    for r in [&r1, &r2] {
        let port = r["interfaces"][1]["name"].as_str().unwrap();
        let conf = |key: &str| {
            host.run_ok("sysctl", &["-n", &format!("net.ipv6.conf.{port}.{key}")])
                .trim()
                .to_string()
        };
        assert_eq!(conf("accept_ra"), "0", "{port}");
        assert_eq!(conf("disable_ipv6"), "1", "{port}");
        assert!(host.addresses(port).is_empty(), "{port}");
        assert!(
            !host
                .run_ok("ip", &["-6", "route", "show", "table", "all"])
                .contains(port),
            "{port}"
        );
    }
    assert!(c1.ping(&ip_of(&r2, 0)), "c1 -> c2");
    assert!(ping_within(c2, "2001:db8:10::1"), "c2 -> gateway");
    net.check(host, c2, "ctr2", &r2).expect_ok();
    net.del(host, c1, "ctr1");
    net.del(host, c2, "ctr2");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn dual_stack_with_default_routes_for_both_families() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(
        &["10.11.0.0/24", "2001:db8:11::/64"],
        json!({"isDefaultGateway": true}),
    );
    let r1 = net.add(host, c1, "ctr1");
    let r2 = net.add(host, c2, "ctr2");
    assert_eq!(r1["ips"].as_array().unwrap().len(), 2);
    let routes = r1["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({"dst": "0.0.0.0/0", "gw": "10.11.0.1"})),
        "{routes:?}"
    );
    assert!(
        routes.contains(&json!({"dst": "::/0", "gw": "2001:db8:11::1"})),
        "{routes:?}"
    );
    let v4 = c1.ip_json(&["route", "show", "default"]);
    assert_eq!(v4[0]["gateway"], "10.11.0.1");
    let v6 = c1.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(v6[0]["gateway"], "2001:db8:11::1");
    assert!(c1.ping(&ip_of(&r2, 0)));
    assert!(c1.ping(&ip_of(&r2, 1)));
    net.check(host, c1, "ctr1", &r1).expect_ok();
    net.del(host, c1, "ctr1");
    net.del(host, c2, "ctr2");
    assert_nothing_left(&net, host, "ctr1");
}

/// Host namespace plus an "outside" namespace reachable from it over a
/// veth (10.99.0.1 host, 10.99.0.2 outside) that has no route back to
/// the container subnet: only masqueraded traffic gets answers.
fn with_outside(host: &Netns) -> Netns {
    let outside = Netns::new("cnit-out");
    host.wire_to(("up0", "10.99.0.1/24"), &outside, ("out0", "10.99.0.2/24"));
    outside
}

fn masquerade_reaches_outside(backend: Option<&str>) {
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let outside = with_outside(host);
    let mut extra = json!({"isDefaultGateway": true, "ipMasq": true});
    if let Some(b) = backend {
        extra["ipMasqBackend"] = json!(b);
    }
    let net = Net::new(&["10.12.0.0/24"], extra);
    let r1 = net.add(host, c1, "ctr1");
    // Same bridge and subnet, no masquerade: the negative control.
    let mut plain = Net::new(&["10.12.0.0/24"], json!({"isDefaultGateway": true}));
    plain.conf["ipam"]["dataDir"] = net.conf["ipam"]["dataDir"].clone();
    let r2 = plain.add(host, c2, "ctr2");

    assert!(
        c1.ping("10.99.0.2"),
        "masqueraded container reaches outside"
    );
    assert!(
        !c2.ping("10.99.0.2"),
        "without masquerade the outside cannot answer"
    );
    // The outside saw the host's address: its neighbour table knows only it.
    let neigh = outside.run_ok("ip", &["neigh", "show", "dev", "out0"]);
    assert!(
        neigh.contains("10.99.0.1") && !neigh.contains("10.12.0."),
        "{neigh}"
    );

    let rules = host.netfilter();
    let c1_ip = ip_of(&r1, 0);
    match backend.unwrap_or("iptables") {
        "iptables" => {
            // Reference layout: chain CNI-<hash>, subnet accepted, multicast
            // excluded from MASQUERADE, jump from POSTROUTING by source.
            assert!(rules.contains(&format!("-A POSTROUTING -s {c1_ip}/32 -m comment --comment \"name: \\\"bridgenet\\\" id: \\\"ctr1\\\"\" -j CNI-")), "{rules}");
            assert!(rules.contains("! -d 224.0.0.0/4"), "{rules}");
            assert!(rules.contains("-d 10.12.0.0/24"), "{rules}");
        }
        _ => {
            assert!(
                rules.contains("table inet cni_plugins_masquerade"),
                "{rules}"
            );
            assert!(
                rules.contains(&format!(
                    "ip saddr {c1_ip} ip daddr != 10.12.0.0/24 masquerade"
                )),
                "{rules}"
            );
            assert!(rules.contains("224.0.0.0/4"), "{rules}");
        }
    }
    assert!(
        !rules.contains(&format!("{} ", ip_of(&r2, 0)))
            && !rules.contains(&format!("{}/32", ip_of(&r2, 0))),
        "no rule for the unmasqueraded container"
    );

    // CHECK also verifies the masquerade rules.
    net.check(host, c1, "ctr1", &r1).expect_ok();

    net.del(host, c1, "ctr1");
    plain.del(host, c2, "ctr2");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn masquerade_with_iptables_is_seen_from_outside_as_the_host() {
    if !can_run() {
        return;
    }
    masquerade_reaches_outside(Some("iptables"));
}

#[test]
fn masquerade_with_nftables_is_seen_from_outside_as_the_host() {
    if !can_run() {
        return;
    }
    masquerade_reaches_outside(Some("nftables"));
}

#[test]
fn masquerade_with_the_default_backend() {
    if !can_run() {
        return;
    }
    masquerade_reaches_outside(None);
}

#[test]
fn port_isolation_blocks_containers_but_not_the_gateway() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(
        &["10.13.0.0/24"],
        json!({"isGateway": true, "portIsolation": true}),
    );
    let r1 = net.add(host, c1, "ctr1");
    let r2 = net.add(host, c2, "ctr2");
    let port = r1["interfaces"][1]["name"].as_str().unwrap();
    let d = host.ip_json(&["-d", "link", "show", port]);
    assert_eq!(d[0]["linkinfo"]["info_slave_data"]["isolated"], true);
    assert!(!c1.ping(&ip_of(&r2, 0)), "isolated ports must not talk");
    assert!(c1.ping("10.13.0.1"), "the gateway is still reachable");
    assert!(c2.ping("10.13.0.1"));
    net.del(host, c1, "ctr1");
    net.del(host, c2, "ctr2");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn hairpin_and_promiscuous_mode_are_applied() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::new(&["10.14.0.0/24"], json!({"hairpinMode": true}));
    let r = net.add(host, c1, "ctr1");
    let port = r["interfaces"][1]["name"].as_str().unwrap();
    let d = host.ip_json(&["-d", "link", "show", port]);
    assert_eq!(d[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    net.del(host, c1, "ctr1");

    let net = Net::new(
        &["10.14.0.0/24"],
        json!({"promiscMode": true, "bridge": "br1"}),
    );
    let r = net.add(host, c1, "ctr1");
    let flags = host.ip_json(&["link", "show", "br1"])[0]["flags"].clone();
    assert!(
        flags.as_array().unwrap().contains(&json!("PROMISC")),
        "{flags}"
    );
    net.check(host, c1, "ctr1", &r).expect_ok();
    net.del(host, c1, "ctr1");
}

#[test]
fn vlan_entries_as_the_reference_sets_them() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::new(
        &["10.15.0.0/24"],
        json!({"vlan": 100, "vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 202}]}),
    );
    if !bridge_vlan_filtering_supported() {
        let before = host_state(host);
        let e = net.run("ADD", host, c1, "ctr1").expect_err(999);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("failed to create bridge"),
            "{e}"
        );
        assert_eq!(host_state(host), before, "a failed ADD changed the host");
        assert!(net.reservations().is_empty());
        return;
    }
    let r = net.add(host, c1, "ctr1");
    let port = r["interfaces"][1]["name"].as_str().unwrap();
    let out = host.run_ok("bridge", &["-j", "vlan", "show", "dev", port]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let vlans = v[0]["vlans"].as_array().unwrap();
    let vids: Vec<u64> = vlans.iter().map(|e| e["vlan"].as_u64().unwrap()).collect();
    assert_eq!(vids, vec![100, 101, 200, 201, 202]);
    let access = vlans.iter().find(|e| e["vlan"] == 100).unwrap();
    let flags = access["flags"].to_string();
    assert!(
        flags.contains("PVID") && flags.contains("Egress Untagged"),
        "{flags}"
    );
    net.del(host, c1, "ctr1");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn mac_precedence_runtime_config_over_args_over_cni_args() {
    if !can_run() {
        return;
    }
    let t = Topology::new(3);
    let host = &t.host;
    let env_mac = "02:00:00:00:00:01";
    let args_mac = "02:00:00:00:00:02";
    let rc_mac = "02:00:00:00:00:03";
    let mut net = Net::l2(json!({}));
    let run = |net: &Net, ctr: &Netns, id: &str| {
        Invocation::new(plugin("bridge"), "ADD")
            .container_id(id)
            .netns(ctr)
            .args(&format!("IgnoreUnknown=1;MAC={env_mac}"))
            .config(&net.conf)
            .run(host)
            .expect_ok()
    };
    let r = run(&net, &t.containers[0], "ctr1");
    assert_eq!(r["interfaces"][2]["mac"], env_mac);
    assert_eq!(mac_of(&t.containers[0], "eth0"), env_mac);
    net.conf["args"] = json!({"cni": {"mac": args_mac}});
    let r = run(&net, &t.containers[1], "ctr2");
    assert_eq!(mac_of(&t.containers[1], "eth0"), args_mac);
    assert_eq!(r["interfaces"][2]["mac"], args_mac);
    net.conf["runtimeConfig"] = json!({"mac": rc_mac});
    let r = run(&net, &t.containers[2], "ctr3");
    assert_eq!(mac_of(&t.containers[2], "eth0"), rc_mac);
    assert_eq!(r["interfaces"][2]["mac"], rc_mac);
    // L2 mode: no IPs, the container end is up anyway.
    assert!(r["ips"].is_null() || r["ips"].as_array().unwrap().is_empty());
    let l = t.containers[2].ip_json(&["link", "show", "eth0"]);
    assert_eq!(l[0]["operstate"], "UP");

    // A bad MAC is refused before anything is created.
    let before = host_state(host);
    net.conf["runtimeConfig"] = json!({"mac": "02:00:zz:00:00:03"});
    let ctr = Netns::bare("cnit-ctr");
    let e = net.run("ADD", host, &ctr, "ctr4").expect_err(7);
    assert_eq!(e["msg"], "address 02:00:zz:00:00:03: invalid MAC address");
    assert_eq!(host_state(host), before);
}

#[test]
fn gateway_conflict_fails_and_undoes_everything_unless_force_address() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    // An existing bridge with another address: reused, not recreated.
    host.run_ok("ip", &["link", "add", "br0", "type", "bridge"]);
    host.run_ok("ip", &["addr", "add", "10.16.9.1/24", "dev", "br0"]);
    host.run_ok("ip", &["link", "set", "br0", "up"]);
    let index_before = host.ip_json(&["link", "show", "br0"])[0]["ifindex"].clone();
    let before = host_state(host);

    let net = Net::new(&["10.16.0.0/24"], json!({"isGateway": true}));
    let e = net.run("ADD", host, c1, "ctr1").expect_err(999);
    assert_eq!(
        e["msg"],
        "failed to set bridge addr: \"br0\" already has an IP address different from 10.16.0.1/24"
    );
    // The failure came after IPAM and the veth: both undone.
    assert_eq!(host_state(host), before, "the failed ADD left state behind");
    assert!(net.reservations().is_empty(), "{:?}", net.reservations());
    assert!(!c1.has_link("eth0"));

    let net = Net::new(
        &["10.16.0.0/24"],
        json!({"isGateway": true, "forceAddress": true}),
    );
    net.add(host, c1, "ctr1");
    assert_eq!(global_addresses(host, "br0"), vec!["10.16.0.1/24"]);
    assert_eq!(
        host.ip_json(&["link", "show", "br0"])[0]["ifindex"],
        index_before
    );
    net.del(host, c1, "ctr1");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn add_failures_in_ipam_leave_nothing() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    // A first ADD/DEL creates the bridge, which stays (as in the reference).
    let net = Net::new(
        &["10.17.0.0/30"],
        json!({"isGateway": true, "ipMasq": true}),
    );
    net.add(host, c1, "ctr0");
    net.del(host, c1, "ctr0");
    let before = host_state(host);

    // IPAM binary missing.
    let mut missing = Net::new(&["10.17.0.0/30"], json!({"ipMasq": true}));
    missing.conf["ipam"]["type"] = json!("no-such-ipam");
    let e = missing.run("ADD", host, c1, "ctr1").expect_err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("failed to find plugin \"no-such-ipam\" in path"),
        "{e}"
    );
    assert_eq!(host_state(host), before);
    assert!(!c1.has_link("eth0"));

    // IPAM error: a /30 has one address to give (.1 is the gateway).
    let c2 = Netns::bare("cnit-ctr");
    net.add(host, &c2, "ctr2");
    let with_one = host_state(host);
    let e = net.run("ADD", host, c1, "ctr1").expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{e}"
    );
    assert_eq!(host_state(host), with_one);
    assert!(!c1.has_link("eth0"));
    assert_eq!(net.reservations(), vec!["10.17.0.2"]);
    net.del(host, &c2, "ctr2");
    assert_nothing_left(&net, host, "ctr2");
}

#[test]
fn del_after_the_namespace_is_gone_leaves_no_rule_reservation_or_port() {
    if !can_run() {
        return;
    }
    let t = Topology::new(0);
    let host = &t.host;
    for backend in ["iptables", "nftables"] {
        let net = Net::new(
            &["10.18.0.0/24"],
            json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": backend}),
        );
        let ctr = Netns::bare("cnit-ctr");
        let path = ctr.path_str();
        net.add(host, &ctr, "ctr1");
        assert!(!rules_with(host, "ctr1").is_empty());
        drop(ctr);
        // The runtime still passes the (now missing) path.
        Invocation::new(plugin("bridge"), "DEL")
            .container_id("ctr1")
            .netns_path(&path)
            .config(&net.conf)
            .run(host)
            .expect_ok();
        assert_nothing_left(&net, host, "ctr1");
        assert!(rules_with(host, "ctr1").is_empty(), "{backend}");

        // And with CNI_NETNS empty, as some runtimes send it.
        let ctr = Netns::bare("cnit-ctr");
        net.add(host, &ctr, "ctr2");
        Invocation::new(plugin("bridge"), "DEL")
            .container_id("ctr2")
            .unset("CNI_NETNS")
            .config(&net.conf)
            .run(host)
            .expect_ok();
        assert!(net.reservations().is_empty());
        assert!(rules_with(host, "ctr2").is_empty(), "{backend}");
        drop(ctr);
        wait_for_no_veths(host);
    }
}

#[test]
fn del_with_prev_result_removes_the_host_port_at_once_when_the_namespace_is_gone() {
    if !can_run() {
        return;
    }
    let t = Topology::new(0);
    let host = &t.host;
    let net = Net::new(&["10.18.1.0/24"], json!({"isGateway": true}));
    let ctr = Netns::bare("cnit-ctr");
    let path = ctr.path_str();
    let result = net.add(host, &ctr, "ctr1");
    assert_eq!(veths(host).len(), 1);
    // Someone (a process still inside, an open handle) keeps the namespace
    // alive after its name is gone: its veth lives on, as it does while the
    // kernel is still destroying a namespace when the runtime's DEL comes.
    let pinned = netns::NetNs::open(&path).unwrap();
    drop(ctr);
    let mut conf = net.conf.clone();
    conf["prevResult"] = result;
    Invocation::new(plugin("bridge"), "DEL")
        .container_id("ctr1")
        .netns_path(&path)
        .config(&conf)
        .run(host)
        .expect_ok();
    assert!(veths(host).is_empty(), "ports left: {:?}", veths(host));
    assert!(net.reservations().is_empty());
    drop(pinned);
}

#[test]
fn check_fails_when_state_is_missing_and_works_for_l2() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(&["10.19.0.0/24"], json!({"isGateway": true}));
    let r = net.add(host, c1, "ctr1");
    net.check(host, c1, "ctr1", &r).expect_ok();
    c1.run_ok("ip", &["addr", "del", "10.19.0.2/24", "dev", "eth0"]);
    let e = net.check(host, c1, "ctr1", &r).expect_err(999);
    assert_eq!(
        e["msg"],
        "Failed to match addr 10.19.0.2/24 on interface eth0"
    );
    let mut bad = net.conf.clone();
    bad.as_object_mut().unwrap().remove("prevResult");
    Invocation::new(plugin("bridge"), "CHECK")
        .container_id("ctr1")
        .netns(c1)
        .config(&bad)
        .run(host)
        .expect_err(7);
    net.del(host, c1, "ctr1");

    // L2 only: the reference fails CHECK here (it asks IPAM ""); we do not.
    let l2 = Net::l2(json!({"bridge": "br2"}));
    let r = l2.add(host, c2, "ctr2");
    l2.check(host, c2, "ctr2", &r).expect_ok();
    c2.run_ok("ip", &["link", "del", "eth0"]);
    let e = l2.check(host, c2, "ctr2", &r).expect_err(999);
    assert_eq!(
        e["msg"],
        "CNI created interface in container eth0 not found"
    );
    l2.del(host, c2, "ctr2");
}

#[test]
fn gc_removes_masquerade_of_attachments_not_listed_and_status_asks_ipam() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(
        &["10.20.0.0/24"],
        json!({"isGateway": true, "ipMasq": true}),
    );
    net.add(host, c1, "ctr1");
    net.add(host, c2, "ctr2");
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr1", "ifname": "eth0"}]);
    Invocation::new(plugin("bridge"), "GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run(host)
        .expect_ok();
    assert!(!rules_with(host, "ctr1").is_empty());
    assert!(rules_with(host, "ctr2").is_empty());
    // GC was forwarded to host-local: ctr2's address is free again.
    assert_eq!(net.reservations(), vec!["10.20.0.2"]);

    Invocation::new(plugin("bridge"), "STATUS")
        .unset("CNI_IFNAME")
        .config(&net.conf)
        .run(host)
        .expect_ok();
    let mut broken = net.conf.clone();
    broken["ipam"]["type"] = json!("no-such-ipam");
    Invocation::new(plugin("bridge"), "STATUS")
        .unset("CNI_IFNAME")
        .config(&broken)
        .run(host)
        .expect_err(7);
    net.del(host, c1, "ctr1");
    net.del(host, c2, "ctr2");
    assert_nothing_left(&net, host, "ctr1");
}

#[test]
fn bad_config_is_refused_without_changing_anything() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let before = host_state(host);
    let cases = [
        (
            json!({"vlan": 5000}),
            "invalid VLAN ID 5000 (must be between 0 and 4094)",
        ),
        (
            json!({"vlanTrunk": [{"minID": 5}]}),
            "minID and maxID should be configured simultaneously, maxID is missing",
        ),
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            "cannot set hairpin mode and promiscuous mode at the same time",
        ),
        (
            json!({"disableContainerInterface": true}),
            "cannot use IPAM when DisableContainerInterface flag is set",
        ),
        (
            json!({"ipMasq": true, "ipMasqBackend": "foo"}),
            "unknown ipmasq backend \"foo\"",
        ),
    ];
    for (extra, msg) in cases {
        let net = Net::new(&["10.21.0.0/24"], extra);
        let e = net.run("ADD", host, c1, "ctr1").expect_err(7);
        assert_eq!(e["msg"], msg);
        // DEL refuses the same input.
        net.run("DEL", host, c1, "ctr1").expect_err(7);
    }
    let net = Net::new(&["10.21.0.0/24"], json!({"isGateway": "yes"}));
    let e = net.run("ADD", host, c1, "ctr1").expect_err(7);
    assert!(e["msg"].as_str().unwrap().contains("isGateway"), "{e}");
    // A non-bridge called like the bridge.
    host.run_ok(
        "ip",
        &[
            "link", "add", "notbr", "type", "veth", "peer", "name", "notbr1",
        ],
    );
    let before_notbr = host_state(host);
    let net = Net::new(&["10.21.0.0/24"], json!({"bridge": "notbr"}));
    let e = net.run("ADD", host, c1, "ctr1").expect_err(999);
    assert_eq!(
        e["msg"],
        "failed to create bridge \"notbr\": \"notbr\" already exists but is not a bridge"
    );
    assert_eq!(host_state(host), before_notbr);
    assert_ne!(before, before_notbr);
    assert!(net.reservations().is_empty());
    // An interface already called CNI_IFNAME in the container.
    c1.run_ok(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth9",
        ],
    );
    let net = Net::new(&["10.21.0.0/24"], json!({}));
    let e = net.run("ADD", host, c1, "ctr1").expect_err(999);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("container veth name (\"eth0\") peer provided (\"veth")
            && msg.ends_with("already exists"),
        "{msg}"
    );
    assert!(veths(host).is_empty());
    assert!(net.reservations().is_empty());
}

#[test]
fn disabled_container_interface_stays_down() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::l2(json!({"disableContainerInterface": true}));
    net.add(host, c1, "ctr1");
    let l = c1.ip_json(&["link", "show", "eth0"]);
    assert_eq!(l[0]["operstate"], "DOWN");
    net.del(host, c1, "ctr1");
    assert!(veths(host).is_empty());
}

/// Run the same ADD with the Go reference (bridge + host-local from
/// /usr/lib/cni) and ours, each in its own host namespace, and compare
/// results, links, addresses, routes and the masquerade rule text.
#[test]
fn differential_against_the_reference_bridge() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("bridge") else {
        return;
    };
    let ref_dir = reference.parent().unwrap().display().to_string();
    let run = |impl_path: &Path, cni_path: &str| {
        let t = Topology::new(1);
        // The reference's iptables code wants the filter table usable.
        let net = Net::new(
            &["10.22.0.0/24", "2001:db8:22::/64"],
            json!({"cniVersion": "1.0.0", "isDefaultGateway": true, "ipMasq": true}),
        );
        let out = Invocation::new(impl_path, "ADD")
            .container_id("ctrdiff")
            .netns(&t.containers[0])
            .cni_path(cni_path)
            .config(&net.conf)
            .run(&t.host);
        let result = normalize_result(out.expect_ok());
        let ctr = &t.containers[0];
        let state = json!({
            "container_addrs": ctr.addresses("eth0").into_iter().filter(|a| !a.starts_with("fe80")).collect::<Vec<_>>(),
            "container_routes4": ctr.run_ok("ip", &["route", "show"]),
            "container_routes6": ctr.run_ok("ip", &["-6", "route", "show"]).lines().filter(|l| !l.starts_with("fe80") && !l.contains("multicast")).collect::<Vec<_>>(),
            "bridge_addrs": t.host.addresses("br0").into_iter().filter(|a| !a.starts_with("fe80")).collect::<Vec<_>>(),
            "host_links": t.host.links().into_iter().map(|l| if l.starts_with("veth") { "veth".to_string() } else { l }).collect::<Vec<_>>(),
            "nat": t.host.exec("iptables-save", &["-t", "nat"]).stdout.iter().map(|b| *b as char).collect::<String>()
                .lines().filter(|l| l.starts_with("-A")).map(str::to_string).collect::<Vec<_>>(),
            "nat6": t.host.exec("ip6tables-save", &["-t", "nat"]).stdout.iter().map(|b| *b as char).collect::<String>()
                .lines().filter(|l| l.starts_with("-A")).map(str::to_string).collect::<Vec<_>>(),
        });
        Invocation::new(impl_path, "DEL")
            .container_id("ctrdiff")
            .netns(&t.containers[0])
            .cni_path(cni_path)
            .config(&net.conf)
            .run(&t.host)
            .expect_ok();
        (result, state)
    };
    let (ref_result, ref_state) = run(&reference, &ref_dir);
    let (our_result, our_state) = run(
        &plugin("bridge"),
        &integration::bin_dir().display().to_string(),
    );
    assert_eq!(our_result, ref_result);
    assert_eq!(our_state, ref_state);
}

/// An upgrade in place: the Go bridge made the attachment (veth, host-local
/// reservation, masquerade chain), ours deletes it — nothing may be left.
#[test]
fn del_removes_what_the_reference_bridge_created() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("bridge") else {
        return;
    };
    let ref_dir = reference.parent().unwrap().display().to_string();
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::new(
        &["10.23.0.0/24"],
        json!({"cniVersion": "1.0.0", "isGateway": true, "ipMasq": true}),
    );
    Invocation::new(&reference, "ADD")
        .container_id("ctrgo")
        .netns(c1)
        .cni_path(&ref_dir)
        .config(&net.conf)
        .run(host)
        .expect_ok();
    assert!(!rules_with(host, "ctrgo").is_empty());
    assert_eq!(net.reservations(), vec!["10.23.0.2"]);
    // Even with the namespace already gone, as after a node reboot.
    let path = c1.path_str();
    drop(t.containers);
    Invocation::new(plugin("bridge"), "DEL")
        .container_id("ctrgo")
        .netns_path(&path)
        .config(&net.conf)
        .run(host)
        .expect_ok();
    assert_nothing_left(&net, host, "ctrgo");
}

/// Our masquerade rules as the reference finds them: once the node's `nat`
/// table exists they are written over netlink, not by `iptables-restore`,
/// and the Go bridge's DEL (`iptables -D` by rule text) still removes every
/// one, in both families.
#[test]
fn the_reference_bridge_del_removes_what_ours_created() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("bridge") else {
        return;
    };
    let ref_dir = reference.parent().unwrap().display().to_string();
    let t = Topology::new(2);
    let host = &t.host;
    let net = Net::new(
        &["10.24.0.0/24", "2001:db8:24::/64"],
        json!({"cniVersion": "1.0.0", "isGateway": true, "ipMasq": true,
               "ipMasqBackend": "iptables"}),
    );
    // The first ADD on the node makes the nat tables; the second is the
    // common case.
    for (ctr, id) in [(&t.containers[0], "ctrrs1"), (&t.containers[1], "ctrrs2")] {
        let r = net.add(host, ctr, id);
        net.check(host, ctr, id, &r).expect_ok();
        assert_eq!(
            rules_with(host, id).len(),
            2 * 3,
            "{:?}",
            rules_with(host, id)
        );
    }
    for (ctr, id) in [(&t.containers[0], "ctrrs1"), (&t.containers[1], "ctrrs2")] {
        Invocation::new(&reference, "DEL")
            .container_id(id)
            .netns(ctr)
            .cni_path(&ref_dir)
            .config(&net.conf)
            .run(host)
            .expect_ok();
        assert!(
            rules_with(host, id).is_empty(),
            "{:?}",
            rules_with(host, id)
        );
    }
}

#[test]
fn macspoofchk_drops_frames_from_another_mac_and_del_removes_its_chains() {
    if !can_run() {
        return;
    }
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(
        &["10.24.0.0/24"],
        json!({"isGateway": true, "macspoofchk": true}),
    );
    let r1 = net.add(host, c1, "ctrspoof1");
    let r2 = net.add(host, c2, "ctrspoof2");
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(
        nft.contains("chain cni-br-iface-ctrspoof1-eth0-mac"),
        "{nft}"
    );
    assert!(
        nft.contains("comment \"macspoofchk-ctrspoof1-eth0\""),
        "{nft}"
    );
    net.check(host, c1, "ctrspoof1", &r1).expect_ok();
    assert!(c1.ping(&ip_of(&r2, 0)));
    // The container changes its MAC: its frames no longer pass the port.
    c1.run_ok(
        "ip",
        &["link", "set", "eth0", "address", "02:11:22:33:44:55"],
    );
    assert!(!c1.ping(&ip_of(&r2, 0)), "spoofed MAC must be dropped");
    net.del(host, c1, "ctrspoof1");
    net.del(host, c2, "ctrspoof2");
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(!nft.contains("ctrspoof"), "{nft}");
    assert_nothing_left(&net, host, "ctrspoof1");
}

#[test]
fn gc_removes_macspoofchk_chains_of_unlisted_attachments_on_its_own_bridge_only() {
    if !can_run() {
        return;
    }
    let t = Topology::new(3);
    let (host, c1, c2, c3) = (
        &t.host,
        &t.containers[0],
        &t.containers[1],
        &t.containers[2],
    );
    let net = Net::new(
        &["10.25.0.0/24"],
        json!({"isGateway": true, "macspoofchk": true}),
    );
    // A second network on another bridge: its chains are not ours to collect.
    let mut other = Net::new(
        &["10.26.0.0/24"],
        json!({"isGateway": true, "macspoofchk": true}),
    );
    other.conf["name"] = json!("othernet");
    other.conf["bridge"] = json!("br1");
    net.add(host, c1, "keep1");
    net.add(host, c2, "stale2");
    other.add(host, c3, "other3");
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep1", "ifname": "eth0"}]);
    Invocation::new(plugin("bridge"), "GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run(host)
        .expect_ok();
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(nft.contains("cni-br-iface-keep1-eth0"), "{nft}");
    assert!(!nft.contains("stale2"), "{nft}");
    assert!(nft.contains("cni-br-iface-other3-eth0"), "{nft}");
    net.del(host, c1, "keep1");
    net.del(host, c2, "stale2");
    other.del(host, c3, "other3");
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(!nft.contains("cni-br-iface"), "{nft}");
}

/// `nft --debug=netlink list table bridge nat`: each rule's expressions,
/// under its chain's name (handles left out).
fn bridge_nat_expressions(ns: &Netns) -> String {
    ns.run_ok(
        "nft",
        &["--debug=netlink", "list", "table", "bridge", "nat"],
    )
    .lines()
    .map(|l| match l.strip_prefix("bridge nat ") {
        Some(rest) => rest.split(' ').next().unwrap_or_default().to_string(),
        None => l.to_string(),
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// macspoofchk is written over netlink: the same expressions as `nft`
/// makes of the reference's rule text, no `nft` process, and the Go
/// bridge's DEL removes our rules and ours the Go bridge's.
#[test]
fn macspoofchk_rules_are_the_references_over_netlink_and_either_bridge_removes_the_others() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("bridge") else {
        return;
    };
    let ref_dir = reference.parent().unwrap().display().to_string();
    let t = Topology::new(2);
    let (host, c1, c2) = (&t.host, &t.containers[0], &t.containers[1]);
    let net = Net::new(
        &["10.27.0.0/24"],
        json!({"cniVersion": "1.0.0", "isGateway": true, "macspoofchk": true}),
    );
    // No nft in PATH: the plugin must not need it.
    let r = Invocation::new(plugin("bridge"), "ADD")
        .container_id("ctrmac1")
        .netns(c1)
        .config(&net.conf)
        .env("PATH", "/nonexistent")
        .run(host)
        .expect_ok();
    let host_veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let mac = r["interfaces"][2]["mac"].as_str().unwrap().to_string();
    let id = "ctrmac1-eth0";
    let script = format!(
        "add table bridge nat\n\
         add chain bridge nat PREROUTING {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add chain bridge nat cni-br-iface-{id}\n\
         add chain bridge nat cni-br-iface-{id}-mac\n\
         add rule bridge nat PREROUTING iifname \"{host_veth}\" jump cni-br-iface-{id} comment \"macspoofchk-{id}\"\n\
         add rule bridge nat cni-br-iface-{id} jump cni-br-iface-{id}-mac comment \"macspoofchk-{id}\"\n\
         add rule bridge nat cni-br-iface-{id}-mac ether saddr {mac} return comment \"macspoofchk-{id}\"\n\
         add rule bridge nat cni-br-iface-{id}-mac drop comment \"macspoofchk-{id}\"\n"
    );
    let twin = Netns::new("cnit-host");
    let mut load = twin.command("nft");
    load.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = load.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(bridge_nat_expressions(host), bridge_nat_expressions(&twin));
    net.check(host, c1, "ctrmac1", &r).expect_ok();

    // The Go bridge adds a second container; ours removes it.
    Invocation::new(&reference, "ADD")
        .container_id("ctrmac2")
        .netns(c2)
        .cni_path(&ref_dir)
        .config(&net.conf)
        .run(host)
        .expect_ok();
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(nft.contains("cni-br-iface-ctrmac2-eth0-mac"), "{nft}");
    net.del(host, c2, "ctrmac2");
    // And the Go bridge removes ours.
    Invocation::new(&reference, "DEL")
        .container_id("ctrmac1")
        .netns(c1)
        .cni_path(&ref_dir)
        .config(&net.conf)
        .run(host)
        .expect_ok();
    let nft = host.run_ok("nft", &["list", "table", "bridge", "nat"]);
    assert!(!nft.contains("ctrmac"), "{nft}");
}

/// A fake IPAM plugin (a shell script) that logs each verb it is run for
/// and answers ADD with `add_result`.
fn fake_ipam(dir: &Path, add_result: &Value) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND\" >> '{}'\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{}'; fi\n",
        log.display(),
        add_result
    );
    let path = dir.join("fake-ipam");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

#[test]
fn failures_after_ipam_release_the_reservation_and_remove_the_veth() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let dir = temp_dir("cnit-fakeipam");
    let cases = [
        (
            json!({"cniVersion": "1.1.0", "ips": []}),
            "IPAM plugin returned missing IP config".to_string(),
        ),
        (
            // A route through a gateway outside every local subnet.
            json!({"cniVersion": "1.1.0",
                   "ips": [{"address": "10.25.0.2/24", "gateway": "10.25.0.1"}],
                   "routes": [{"dst": "192.168.50.0/24", "gw": "172.31.0.1"}]}),
            "failed to add route '192.168.50.0/24 via 172.31.0.1 dev eth0".to_string(),
        ),
    ];
    // Bridge made once, so the comparison sees only per-container state.
    host.run_ok("ip", &["link", "add", "br0", "type", "bridge"]);
    host.run_ok("ip", &["link", "set", "br0", "up"]);
    for (answer, msg) in cases {
        let log = fake_ipam(dir.path(), &answer);
        let _ = std::fs::remove_file(&log);
        let before = host_state(host);
        let mut conf = Net::new(&["10.25.0.0/24"], json!({"ipMasq": true})).conf;
        conf["ipam"] = json!({"type": "fake-ipam"});
        let e = Invocation::new(plugin("bridge"), "ADD")
            .container_id("ctrfake")
            .netns(c1)
            .cni_path(&dir.path().display().to_string())
            .config(&conf)
            .run(host)
            .expect_err(999);
        assert!(e["msg"].as_str().unwrap().starts_with(&msg), "{e}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "ADD\nDEL\n",
            "IPAM was not released"
        );
        assert_eq!(host_state(host), before);
        assert!(!c1.has_link("eth0"));
    }
}

#[test]
fn eight_concurrent_adds_get_distinct_addresses_and_all_talk() {
    if !can_run() {
        return;
    }
    let t = Topology::new(8);
    let host = &t.host;
    let net = Net::new(
        &["10.26.0.0/24"],
        json!({"isGateway": true, "ipMasq": true}),
    );
    let results: Vec<Value> = std::thread::scope(|s| {
        let jobs: Vec<_> = t
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let net = &net;
                s.spawn(move || net.add(host, c, &format!("ctrpar{i}")))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results.iter().map(|r| ip_of(r, 0)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8);
    assert_eq!(veths(host).len(), 8);
    assert_eq!(global_addresses(host, "br0"), vec!["10.26.0.1/24"]);
    for (c, r) in t.containers.iter().zip(&results).skip(1) {
        assert!(t.containers[0].ping(&ip_of(r, 0)));
        assert!(c.ping("10.26.0.1"));
    }
    std::thread::scope(|s| {
        for (i, c) in t.containers.iter().enumerate() {
            let net = &net;
            s.spawn(move || net.del(host, c, &format!("ctrpar{i}")));
        }
    });
    assert_nothing_left(&net, host, "ctrpar");
}

#[test]
fn older_spec_versions_get_results_in_their_format() {
    if !can_run() {
        return;
    }
    let t = Topology::new(3);
    let host = &t.host;
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let mut net = Net::new(&["10.27.0.0/24"], json!({"isGateway": true}));
        net.conf["cniVersion"] = json!(version);
        let ctr = &t.containers[i];
        let id = format!("ctrv{i}");
        let r = net.add(host, ctr, &id);
        assert_eq!(r["cniVersion"], *version);
        if version.starts_with("0.3") {
            assert_eq!(r["ips"][0]["version"], "4");
        }
        if *version != "0.3.1" {
            net.check(host, ctr, &id, &r).expect_ok();
        }
        net.del(host, ctr, &id);
        assert_nothing_left(&net, host, &id);
    }
    // L2 results have no IP, which 0.2.0 cannot express.
    let mut l2 = Net::l2(json!({}));
    l2.conf["cniVersion"] = json!("0.2.0");
    let ctr = Netns::bare("cnit-ctr");
    let e = l2.run("ADD", host, &ctr, "ctrv020").json();
    assert!(e["msg"].as_str().unwrap().contains("cannot convert"), "{e}");
    l2.del(host, &ctr, "ctrv020");
}

#[test]
fn enabledad_waits_for_duplicate_address_detection() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::new(
        &["2001:db8:28::/64"],
        json!({"isGateway": true, "enabledad": true}),
    );
    net.add(host, c1, "ctrdad");
    assert_eq!(
        c1.run_ok("sysctl", &["-n", "net.ipv6.conf.eth0.accept_dad"])
            .trim(),
        "1"
    );
    // When ADD returns, the address is usable: no longer tentative.
    let a = c1.ip_json(&["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    let info = &a[0]["addr_info"][0];
    assert_eq!(info["local"], "2001:db8:28::2");
    assert!(info.get("tentative").is_none(), "{info}");
    net.del(host, c1, "ctrdad");
    assert_nothing_left(&net, host, "ctrdad");
}

/// `<program> -t nat <spec>` (or `nft <spec>`), the spec as the listing
/// printed it (quoted comments included), read by a shell.
fn shell(host: &Netns, line: &str) {
    host.run_ok("sh", &["-c", line]);
}

/// The handle of the first `masq_checks` rule whose listing contains
/// every one of `needles`.
fn masq_handle(host: &Netns, needles: &[&str]) -> String {
    let listing = host.run_ok(
        "nft",
        &[
            "-a",
            "list",
            "chain",
            "inet",
            "cni_plugins_masquerade",
            "masq_checks",
        ],
    );
    let line = listing
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("{needles:?} not in {listing}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// CHECK of ipMasq reads the kernel over netlink: no process on a good
/// attachment among others, and a rule of the container deleted or
/// altered, or its chain gone, behind its back fails it.
fn masquerade_check_over_netlink(backend: &str) {
    let t = Topology::new(3);
    let net = Net::new(
        &["10.23.0.0/24"],
        json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": backend}),
    );
    let ids = ["mck1", "mck2", "mck3"];
    let results: Vec<Value> = (0..3)
        .map(|i| net.add(&t.host, &t.containers[i], ids[i]))
        .collect();
    let ips: Vec<String> = results.iter().map(|r| ip_of(r, 0)).collect();
    let log = ProcessLog::new();
    let check = |i: usize| {
        let mut conf = net.conf.clone();
        conf["prevResult"] = results[i].clone();
        Invocation::new(plugin("bridge"), "CHECK")
            .container_id(ids[i])
            .netns(&t.containers[i])
            .config(&conf)
            .env("PATH", &log.path_env())
            .run(&t.host)
    };
    for i in 0..3 {
        check(i).expect_ok();
    }
    assert_eq!(log.take(), Vec::<String>::new(), "CHECK started processes");
    let msg = |e: Value| e["msg"].as_str().unwrap_or_default().to_string();
    let host = &t.host;
    // The POSTROUTING jump of container `i` (iptables).
    let jump_of = |i: usize| {
        host.run_ok("iptables", &["-t", "nat", "-S", "POSTROUTING"])
            .lines()
            .find(|l| l.contains(&format!("-s {}/32", ips[i])))
            .unwrap()
            .to_string()
    };
    let chain_of = |i: usize| jump_of(i).rsplit(' ').next().unwrap().to_string();

    // 1. Altered: mck1's own subnet is no longer exempt (another subnet).
    if backend == "iptables" {
        let chain = chain_of(0);
        let rule = host
            .run_ok("iptables", &["-t", "nat", "-S", &chain])
            .lines()
            .find(|l| l.contains("-j ACCEPT"))
            .unwrap()
            .to_string();
        let altered = rule
            .replacen(&format!("-A {chain}"), &format!("-R {chain} 1"), 1)
            .replace("10.23.0.0/24", "10.24.0.0/24");
        shell(host, &format!("iptables -t nat {altered}"));
        let m = msg(check(0).expect_err(999));
        assert!(
            m.starts_with(&format!(
                "IP masquerade check failed: masquerade rules in chain {chain}"
            )) && m.contains("[-d 10.23.0.0/24 -j ACCEPT")
                && m.ends_with(&format!("in chain {chain} not found in table nat")),
            "{m}"
        );
    } else {
        let h = masq_handle(host, &[&format!("saddr {} ", ips[0])]);
        let comment = host
            .run_ok(
                "nft",
                &[
                    "list",
                    "chain",
                    "inet",
                    "cni_plugins_masquerade",
                    "masq_checks",
                ],
            )
            .lines()
            .find(|l| l.contains(&format!("saddr {} ", ips[0])))
            .and_then(|l| l.split("comment ").nth(1).map(str::to_string))
            .unwrap();
        shell(
            host,
            &format!(
                "nft replace rule inet cni_plugins_masquerade masq_checks handle {h} \
                 ip saddr {} ip daddr != 10.24.0.0/24 masquerade comment '{comment}'",
                ips[0]
            ),
        );
        assert_eq!(
            msg(check(0).expect_err(999)),
            format!(
                "IP masquerade check failed: masquerade rule for {} of container \"mck1\" on \
                 network \"bridgenet\" missing in inet cni_plugins_masquerade masq_checks",
                ips[0]
            )
        );
    }
    check(1).expect_ok();

    // 2. Deleted: mck2's POSTROUTING jump, or its masq_checks rule.
    if backend == "iptables" {
        shell(
            host,
            &format!("iptables -t nat {}", jump_of(1).replacen("-A", "-D", 1)),
        );
        let m = msg(check(1).expect_err(999));
        assert!(
            m.ends_with("in chain POSTROUTING not found in table nat"),
            "{m}"
        );
    } else {
        let h = masq_handle(host, &[&format!("saddr {} ", ips[1])]);
        host.run_ok(
            "nft",
            &[
                "delete",
                "rule",
                "inet",
                "cni_plugins_masquerade",
                "masq_checks",
                "handle",
                &h,
            ],
        );
        let m = msg(check(1).expect_err(999));
        assert!(
            m.contains(&format!("masquerade rule for {} ", ips[1])),
            "{m}"
        );
    }
    check(2).expect_ok();
    assert_eq!(log.take(), Vec::<String>::new(), "CHECK started processes");

    // 3. The chain gone: mck3's CNI-<hash> chain, or the whole table.
    if backend == "iptables" {
        let chain = chain_of(2);
        shell(
            host,
            &format!("iptables -t nat {}", jump_of(2).replacen("-A", "-D", 1)),
        );
        host.run_ok("iptables", &["-t", "nat", "-F", &chain]);
        host.run_ok("iptables", &["-t", "nat", "-X", &chain]);
        let m = msg(check(2).expect_err(999));
        assert!(
            m.ends_with(&format!("chain {chain} not found in iptables table nat")),
            "{m}"
        );
    } else {
        host.run_ok(
            "nft",
            &["delete", "table", "inet", "cni_plugins_masquerade"],
        );
        let m = msg(check(2).expect_err(999));
        assert!(
            m.contains(&format!("masquerade rule for {} ", ips[2])),
            "{m}"
        );
    }
    for (ctr, id) in t.containers.iter().zip(ids) {
        net.del(host, ctr, id);
    }
    for id in ids {
        assert_nothing_left(&net, host, id);
    }
}

#[test]
fn masquerade_check_over_netlink_with_iptables() {
    if !can_run() {
        return;
    }
    masquerade_check_over_netlink("iptables");
}

#[test]
fn masquerade_check_over_netlink_with_nftables() {
    if !can_run() {
        return;
    }
    masquerade_check_over_netlink("nftables");
}

/// CHECK finds the host end by the name in the result: detached from the
/// bridge, it is reported missing, as the reference words it.
#[test]
fn check_fails_when_the_host_veth_left_the_bridge() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1);
    let (host, c1) = (&t.host, &t.containers[0]);
    let net = Net::new(&["10.25.0.0/24"], json!({"isGateway": true}));
    let r = net.add(host, c1, "vck1");
    net.check(host, c1, "vck1", &r).expect_ok();
    let veth = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_null() && i["name"] != "br0")
        .and_then(|i| i["name"].as_str())
        .unwrap()
        .to_string();
    host.run_ok("ip", &["link", "set", &veth, "nomaster"]);
    let e = net.check(host, c1, "vck1", &r).expect_err(999);
    assert_eq!(e["msg"], "CNI veth created for bridge br0 was not found");
    host.run_ok("ip", &["link", "set", &veth, "master", "br0"]);
    net.check(host, c1, "vck1", &r).expect_ok();
    net.del(host, c1, "vck1");
    assert_nothing_left(&net, host, "vck1");
}
