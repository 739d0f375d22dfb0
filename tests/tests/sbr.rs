//! sbr: a container with two interfaces, sbr on the second; its traffic is
//! routed by source. Differentially against the Go reference: same rules
//! and routes for the same namespace and prevResult, and each
//! implementation's DEL cleans up after the other's ADD.

use integration::{Invocation, Netns, Outcome, Topology, can_run, plugin, reference_plugin};
use serde_json::{Value, json};
use std::path::Path;

fn sbr_conf(prev: &Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr",
        "prevResult": prev});
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

fn sbr(bin: &Path, cmd: &str, conf: &Value, host: &Netns, ctr_path: &str) -> Outcome {
    Invocation::new(bin, cmd)
        .container_id("ctr-sbr")
        .netns_path(ctr_path)
        .ifname("eth1")
        .config(conf)
        .run(host)
}

/// Rules of both families and every route but the local table's.
fn routing_state(ns: &Netns) -> String {
    let mut s = String::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        for line in ns.run_ok("ip", args).lines() {
            if !line.contains("table local") {
                s.push_str(line.trim_end());
                s.push('\n');
            }
        }
    }
    s
}

fn source_rules(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = ns
        .run_ok("ip", &["rule"])
        .lines()
        .map(str::to_string)
        .collect();
    v.extend(ns.run_ok("ip", &["-6", "rule"]).lines().map(str::to_string));
    v.retain(|l| !l.contains("from all"));
    v
}

/// A container whose `eth1` is wired to a LAN namespace, with an IPv4 and
/// an IPv6 address, a gateway route and a default route on it, and the
/// prevResult a main plugin would have printed for it.
fn wired_container(lan: &Netns, lan_if: &str) -> (Netns, Value) {
    let ctr = Netns::new("cnit-sbr-ctr");
    ctr.wire_to(("eth1", "10.93.0.5/24"), lan, (lan_if, "10.93.0.1/24"));
    ctr.run_ok(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:93::5/64",
            "dev",
            "eth1",
            "nodad",
        ],
    );
    ctr.run_ok(
        "ip",
        &[
            "route",
            "add",
            "192.168.93.0/24",
            "via",
            "10.93.0.254",
            "dev",
            "eth1",
        ],
    );
    ctr.run_ok(
        "ip",
        &["route", "add", "default", "via", "10.93.0.1", "dev", "eth1"],
    );
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth1", "sandbox": ctr.path_str()}],
        "ips": [{"address": "10.93.0.5/24", "gateway": "10.93.0.1", "interface": 0},
                {"address": "2001:db8:93::5/64", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}]});
    (ctr, prev)
}

fn bridge_conf(name: &str, bridge: &str, addr: &str, gw: &str, routes: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
        "isGateway": true,
        "ipam": {"type": "static", "addresses": [{"address": addr, "gateway": gw}],
                 "routes": routes}})
}

#[test]
fn sbr_on_the_second_interface_routes_its_traffic_by_source() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let (host, ctr) = (&topo.host, &topo.containers[0]);
    // A remote address behind the host, reachable over either network; the
    // host drops packets whose source belongs to the other network (strict
    // reverse-path filter), so a reply proves which interface was used.
    host.run_ok("ip", &["addr", "add", "10.99.0.1/32", "dev", "lo"]);
    host.run_ok("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=1"]);
    let net_a = bridge_conf(
        "neta",
        "brsa",
        "10.91.0.5/24",
        "10.91.0.1",
        json!([{"dst": "0.0.0.0/0"}]),
    );
    let net_b = bridge_conf("netb", "brsb", "10.92.0.5/24", "10.92.0.1", json!([]));
    let run = |cmd: &str, conf: &Value, ifname: &str| {
        Invocation::new(plugin("bridge"), cmd)
            .container_id("ctr-sbr")
            .netns(ctr)
            .ifname(ifname)
            .config(conf)
            .run(host)
    };
    run("ADD", &net_a, "eth0").expect_ok();
    let prev_b = run("ADD", &net_b, "eth1").expect_ok();
    let ping_from = |src: &str| {
        ctr.exec("ping", &["-c", "1", "-W", "1", "-I", src, "10.99.0.1"])
            .status
            .success()
    };
    assert!(ping_from("10.91.0.5"), "eth0's address reaches the remote");
    assert!(
        !ping_from("10.92.0.5"),
        "without sbr eth1's address leaves by eth0"
    );

    let conf = sbr_conf(&prev_b, json!({}));
    let out = sbr(&plugin("sbr"), "ADD", &conf, host, &ctr.path_str()).expect_ok();
    assert_eq!(out["ips"], prev_b["ips"], "prevResult passes through");
    assert_eq!(source_rules(ctr), vec!["32765:\tfrom 10.92.0.5 lookup 100"]);
    let table = ctr.run_ok("ip", &["route", "show", "table", "100"]);
    assert!(table.contains("default via 10.92.0.1 dev eth1"), "{table}");
    assert!(
        table.contains("10.92.0.0/24 dev eth1 proto kernel scope link src 10.92.0.5"),
        "{table}"
    );
    let main = ctr.run_ok("ip", &["route", "show"]);
    assert!(!main.contains("eth1"), "eth1's routes left main: {main}");
    assert!(
        ping_from("10.92.0.5"),
        "with sbr eth1's address leaves by eth1"
    );
    assert!(ping_from("10.91.0.5"), "eth0 is unaffected");
    sbr(&plugin("sbr"), "CHECK", &conf, host, &ctr.path_str()).expect_ok();

    sbr(&plugin("sbr"), "DEL", &conf, host, &ctr.path_str()).expect_ok();
    assert!(source_rules(ctr).is_empty());
    assert_eq!(ctr.run_ok("ip", &["route", "show", "table", "100"]), "");
    assert!(!ping_from("10.92.0.5"));
    sbr(&plugin("sbr"), "DEL", &conf, host, &ctr.path_str()).expect_ok();
    run("DEL", &net_b, "eth1").expect_ok();
    run("DEL", &net_a, "eth0").expect_ok();
    assert!(!ctr.has_link("eth0") && !ctr.has_link("eth1"));
}

#[test]
fn same_rules_and_routes_as_the_reference_and_each_dels_the_others_add() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("sbr") else {
        return;
    };
    let ours = plugin("sbr");
    let host = Netns::new("cnit-sbr-host");
    let lan = Netns::new("cnit-sbr-lan");
    let mut states = Vec::new();
    for (i, (adder, deleter)) in [(&reference, &ours), (&ours, &reference)]
        .iter()
        .enumerate()
    {
        let (ctr, prev) = wired_container(&lan, &format!("lan{i}"));
        // A rule to table 100 already exists: both must pick 101.
        ctr.run_ok("ip", &["rule", "add", "fwmark", "7", "lookup", "100"]);
        let conf = sbr_conf(&prev, json!({}));
        let before = source_rules(&ctr);
        sbr(adder, "ADD", &conf, &host, &ctr.path_str()).expect_ok();
        states.push(routing_state(&ctr));
        sbr(deleter, "DEL", &conf, &host, &ctr.path_str()).expect_ok();
        assert_eq!(
            source_rules(&ctr),
            before,
            "{} DEL after {} ADD",
            deleter.display(),
            adder.display()
        );
    }
    assert_eq!(states[0], states[1]);
    assert!(
        states[0].contains("from 10.93.0.5 lookup 101"),
        "{}",
        states[0]
    );
    assert!(
        states[0].contains("from 2001:db8:93::5 lookup 102"),
        "{}",
        states[0]
    );
    assert!(
        states[0].contains("192.168.93.0/24 via 10.93.0.254 dev eth1 table 101"),
        "{}",
        states[0]
    );
}

#[test]
fn fixed_table_adds_only_rules_and_gateways_and_source_hints_apply() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sbr-host");
    let lan = Netns::new("cnit-sbr-lan");
    let bin = plugin("sbr");

    let (ctr, prev) = wired_container(&lan, "lan11");
    let main_before = ctr.run_ok("ip", &["route", "show"]);
    let conf = sbr_conf(&prev, json!({"table": 300}));
    sbr(&bin, "ADD", &conf, &host, &ctr.path_str()).expect_ok();
    assert_eq!(
        source_rules(&ctr),
        vec![
            "32765:\tfrom 10.93.0.5 lookup 300",
            "32765:\tfrom 2001:db8:93::5 lookup 300"
        ]
    );
    assert_eq!(
        ctr.run_ok("ip", &["route", "show"]),
        main_before,
        "routes stay"
    );
    sbr(&bin, "CHECK", &conf, &host, &ctr.path_str()).expect_ok();
    sbr(&bin, "DEL", &conf, &host, &ctr.path_str()).expect_ok();
    assert!(source_rules(&ctr).is_empty());
    drop(ctr);

    let (ctr, prev) = wired_container(&lan, "lan12");
    // Without a default route in main (which sbr would copy over its own,
    // as the reference does), the table's default comes from `gateways`.
    ctr.run_ok("ip", &["route", "del", "default"]);
    let conf = sbr_conf(
        &prev,
        json!({"gateways": ["10.93.0.254"], "addSourceHints": true}),
    );
    sbr(&bin, "ADD", &conf, &host, &ctr.path_str()).expect_ok();
    let t100 = ctr.run_ok("ip", &["route", "show", "table", "100"]);
    assert!(t100.contains("default via 10.93.0.254 dev eth1"), "{t100}");
    let main = ctr.run_ok("ip", &["route", "show"]);
    assert!(
        main.contains("10.93.0.0/24 dev eth1 scope link src 10.93.0.5"),
        "{main}"
    );
    assert!(
        !main.contains("default") && !main.contains("192.168.93.0"),
        "{main}"
    );
    sbr(&bin, "DEL", &conf, &host, &ctr.path_str()).expect_ok();
    assert!(source_rules(&ctr).is_empty());
}

#[test]
fn del_is_idempotent_and_needs_neither_the_netns_nor_the_interface() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sbr-host");
    let lan = Netns::new("cnit-sbr-lan");
    let bin = plugin("sbr");
    let (ctr, prev) = wired_container(&lan, "lan13");
    let conf = sbr_conf(&prev, json!({}));
    sbr(&bin, "ADD", &conf, &host, &ctr.path_str()).expect_ok();
    assert_eq!(source_rules(&ctr).len(), 2);
    // The interface is gone (renamed away here, so the routes stay):
    // prevResult's addresses still find the rules.
    ctr.run_ok("ip", &["link", "set", "eth1", "down"]);
    ctr.run_ok("ip", &["link", "set", "eth1", "name", "gone1"]);
    sbr(&bin, "DEL", &conf, &host, &ctr.path_str()).expect_ok();
    assert!(source_rules(&ctr).is_empty());
    sbr(&bin, "DEL", &conf, &host, &ctr.path_str()).expect_ok();
    sbr(&bin, "DEL", &conf, &host, "/var/run/netns/cnit-sbr-missing").expect_ok();
    assert!(
        !Path::new("/var/run/netns/cnit-sbr-missing").exists(),
        "no file created"
    );
    Invocation::new(&bin, "DEL")
        .container_id("ctr-sbr")
        .unset("CNI_NETNS")
        .ifname("eth1")
        .config(&conf)
        .run(&host)
        .expect_ok();
}

#[test]
fn a_failed_add_leaves_no_rule_and_no_route_and_bad_input_changes_nothing() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sbr-host");
    let lan = Netns::new("cnit-sbr-lan");
    let bin = plugin("sbr");
    let (ctr, prev) = wired_container(&lan, "lan14");
    let before = routing_state(&ctr);
    // A gateway off every subnet: the table's default route is refused
    // after the rule went in.
    let conf = sbr_conf(&prev, json!({"gateways": ["10.250.0.1"]}));
    let e = sbr(&bin, "ADD", &conf, &host, &ctr.path_str()).expect_err(999);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("10.250.0.1"),
        "{e}"
    );
    assert_eq!(routing_state(&ctr), before);

    let bad = [
        (sbr_conf(&prev, json!({"gateways": ["nope"]})), 7, "nope"),
        (sbr_conf(&prev, json!({"table": 254})), 7, "254"),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr"}),
            7,
            "chained",
        ),
    ];
    for (conf, code, needle) in bad {
        let e = sbr(&bin, "ADD", &conf, &host, &ctr.path_str()).expect_err(code);
        assert!(
            e["msg"].as_str().unwrap_or_default().contains(needle),
            "{e}"
        );
        assert_eq!(routing_state(&ctr), before);
    }
    let conf = sbr_conf(&prev, json!({}));
    sbr(&bin, "CHECK", &conf, &host, &ctr.path_str()).expect_err(999);
    sbr(&bin, "ADD", &conf, &host, "/var/run/netns/cnit-sbr-missing").expect_err(8);
}

/// The example conflist (bridge + static + sbr) under cnictl, as a person
/// would run it: ADD, CHECK, DEL, and nothing left.
#[test]
fn the_example_conflist_runs_under_cnictl() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sbr-host");
    let ctr = Netns::bare("cnit-sbr-ctr");
    let dir = integration::temp_dir("cnit-sbr-conf");
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/runtimes/examples/40-cni-rs-sbr.conflist");
    std::fs::copy(&example, dir.path().join("40-cni-rs-sbr.conflist")).expect("copy example");
    let cache = integration::temp_dir("cnit-sbr-cache");
    let cnictl = |verb: &str| {
        let out = host
            .command(plugin("cnictl"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["--conf-dir", &dir.path().display().to_string()])
            .args(["--cni-path", &integration::bin_dir().display().to_string()])
            .args(["--cache-dir", &cache.path().display().to_string()])
            .args(["-i", "eth1", verb, "cni-rs-second", &ctr.path_str()])
            .output()
            .expect("run cnictl");
        assert!(out.status.success(), "cnictl {verb}: {out:?}");
    };
    cnictl("add");
    assert_eq!(
        source_rules(&ctr),
        vec!["32765:\tfrom 10.89.4.5 lookup 100"]
    );
    let t100 = ctr.run_ok("ip", &["route", "show", "table", "100"]);
    assert!(t100.contains("default via 10.89.4.1 dev eth1"), "{t100}");
    cnictl("check");
    cnictl("del");
    assert!(source_rules(&ctr).is_empty());
    assert!(!ctr.has_link("eth1"));
}
