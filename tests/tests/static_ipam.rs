//! static IPAM: through bridge, exec'd as a runtime runs a chain, and
//! differentially against the Go reference (same result JSON for the same
//! input, in every result version).

use integration::{Invocation, Netns, Outcome, Topology, can_run, plugin, reference_plugin};
use serde_json::{Value, json};

fn bridge_conf(ipam: Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "staticnet",
        "type": "bridge",
        "bridge": "brst0",
        "isGateway": true,
        "ipam": ipam,
    })
}

fn bridge(cmd: &str, conf: &Value, host: &Netns, ctr: &Netns, id: &str) -> Outcome {
    Invocation::new(plugin("bridge"), cmd)
        .container_id(id)
        .netns(ctr)
        .config(conf)
        .run(host)
}

fn static_run(bin: &std::path::Path, cmd: &str, conf: &Value, args: &str) -> Outcome {
    Invocation::new(bin, cmd)
        .container_id("ctr-static")
        .netns_path("/var/run/netns/unused")
        .args(args)
        .config(conf)
        .run_in(None)
}

fn global_v4(ns: &Netns, link: &str) -> Vec<String> {
    ns.addresses(link)
        .into_iter()
        .filter(|a| a.contains('.'))
        .collect()
}

#[test]
fn two_containers_with_static_addresses_ping_each_other_and_the_gateway() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let ipam = |addr: &str| {
        json!({"type": "static",
            "addresses": [{"address": addr, "gateway": "10.77.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.77.0.53"]}})
    };
    let confs = [
        bridge_conf(ipam("10.77.0.5/24")),
        bridge_conf(ipam("10.77.0.6/24")),
    ];
    for (i, (conf, ctr)) in confs.iter().zip(&topo.containers).enumerate() {
        let r = bridge("ADD", conf, &topo.host, ctr, &format!("c{i}")).expect_ok();
        let want = format!("10.77.0.{}/24", 5 + i);
        assert_eq!(r["ips"][0]["address"], want.as_str(), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.77.0.53");
        assert_eq!(global_v4(ctr, "eth0"), vec![want]);
        let routes = ctr.run_ok("ip", &["route", "show", "default"]);
        assert!(
            routes.contains("default via 10.77.0.1 dev eth0"),
            "{routes}"
        );
    }
    assert!(topo.containers[0].ping("10.77.0.1"), "gateway");
    assert!(topo.containers[0].ping("10.77.0.6"), "other container");
    assert!(topo.containers[1].ping("10.77.0.5"), "other container");

    for (i, (conf, ctr)) in confs.iter().zip(&topo.containers).enumerate() {
        let id = format!("c{i}");
        bridge("DEL", conf, &topo.host, ctr, &id).expect_ok();
        assert!(!ctr.has_link("eth0"));
        // Idempotent, also once the namespace is gone.
        bridge("DEL", conf, &topo.host, ctr, &id).expect_ok();
        Invocation::new(plugin("bridge"), "DEL")
            .container_id(&id)
            .netns_path("/var/run/netns/cnit-gone-static")
            .config(conf)
            .run(&topo.host)
            .expect_ok();
    }
}

#[test]
fn runtime_config_ips_replace_the_configured_address_in_the_container() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let ctr = &topo.containers[0];
    let mut conf = bridge_conf(json!({"type": "static",
        "addresses": [{"address": "10.78.0.5/24", "gateway": "10.78.0.1"}]}));
    conf["args"] = json!({"cni": {"ips": ["10.78.0.7/24"]}});
    conf["runtimeConfig"] = json!({"ips": ["10.78.0.9/24"]});
    let r = bridge("ADD", &conf, &topo.host, ctr, "c-rc").expect_ok();
    assert_eq!(r["ips"][0]["address"], "10.78.0.9/24", "{r}");
    assert_eq!(global_v4(ctr, "eth0"), vec!["10.78.0.9/24"]);
    bridge("DEL", &conf, &topo.host, ctr, "c-rc").expect_ok();
    assert!(!ctr.has_link("eth0"));
}

#[test]
fn cni_args_ip_and_gateway_reach_the_container() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let ctr = &topo.containers[0];
    let conf = bridge_conf(json!({"type": "static", "routes": [{"dst": "0.0.0.0/0"}]}));
    let r = Invocation::new(plugin("bridge"), "ADD")
        .container_id("c-args")
        .netns(ctr)
        .args("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.79.0.5/24;GATEWAY=10.79.0.1")
        .config(&conf)
        .run(&topo.host)
        .expect_ok();
    assert_eq!(r["ips"][0]["gateway"], "10.79.0.1", "{r}");
    assert_eq!(global_v4(ctr, "eth0"), vec!["10.79.0.5/24"]);
    assert!(ctr.ping("10.79.0.1"));
    bridge("DEL", &conf, &topo.host, ctr, "c-args").expect_ok();
}

#[test]
fn a_bad_address_is_a_cni_error_naming_it_and_leaves_no_interface() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let ctr = &topo.containers[0];
    let before = ctr.snapshot();
    let conf = bridge_conf(json!({"type": "static",
        "addresses": [{"address": "10.80.0.5"}]}));
    let e = bridge("ADD", &conf, &topo.host, ctr, "c-bad").expect_err(7);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("'10.80.0.5'"), "{e}");
    assert_eq!(ctr.snapshot(), before);

    let direct = static_run(
        &plugin("static"),
        "ADD",
        &conf,
        "IP=10.80.0.5/24;GATEWAY=bad",
    );
    let e = direct.expect_err(7);
    assert_eq!(e["msg"], "invalid gateway address: bad");
    let e = static_run(&plugin("static"), "ADD", &conf, "FOO=1").expect_err(4);
    assert!(e["msg"].as_str().unwrap_or_default().contains("FOO"), "{e}");
}

#[test]
fn check_compares_with_prev_result_and_del_gc_status_succeed() {
    let conf = bridge_conf(json!({"type": "static",
        "addresses": [{"address": "10.81.0.5/24", "gateway": "10.81.0.1"}]}));
    let bin = plugin("static");
    let added = static_run(&bin, "ADD", &conf, "").expect_ok();
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = added.clone();
    static_run(&bin, "CHECK", &with_prev, "").expect_ok();
    static_run(&bin, "CHECK", &conf, "").expect_err(7);
    with_prev["prevResult"]["ips"][0]["gateway"] = json!("10.81.0.254");
    static_run(&bin, "CHECK", &with_prev, "").expect_err(999);
    with_prev["prevResult"]["ips"] = json!([]);
    static_run(&bin, "CHECK", &with_prev, "").expect_err(999);
    static_run(
        &bin,
        "DEL",
        &json!({"cniVersion": "1.0.0", "name": "x"}),
        "",
    )
    .expect_ok();
    let no_attachment = |cmd: &str, conf: &Value| {
        Invocation::new(&bin, cmd)
            .unset("CNI_IFNAME")
            .config(conf)
            .run_in(None)
    };
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    no_attachment("GC", &gc).expect_ok();
    no_attachment("STATUS", &gc).expect_ok();
    gc["ipam"]["addresses"][0]["address"] = json!("bad");
    no_attachment("STATUS", &gc).expect_err(7);
}

/// Same input to both implementations, same result JSON.
#[test]
fn results_match_the_reference() {
    let Some(reference) = reference_plugin("static") else {
        return;
    };
    let ours = plugin("static");
    let full = json!({"type": "static",
        "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
                      {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"},
                   {"dst": "3ffe:ffff:0:01ff::1/64"}],
        "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com",
                "search": ["example.com"], "options": ["ndots:2"]}});
    let one = json!({"type": "static", "addresses": [{"address": "10.10.0.5/24"}]});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let mut c = bridge_conf(full.clone());
        c["cniVersion"] = json!(v);
        cases.push((c, ""));
    }
    for v in ["0.1.0", "0.2.0"] {
        let mut c = bridge_conf(one.clone());
        c["cniVersion"] = json!(v);
        cases.push((c, ""));
    }
    cases.push((
        bridge_conf(one.clone()),
        "IP=10.20.0.5/24,2001:db8::5/64;GATEWAY=10.20.0.1",
    ));
    cases.push((
        bridge_conf(json!({"type": "static"})),
        "IgnoreUnknown=true;X=1",
    ));
    let mut c = bridge_conf(one.clone());
    c["args"] = json!({"cni": {"ips": ["10.30.0.5/24", "2001:db8::30/64"]}});
    cases.push((c.clone(), "IP=10.20.0.5/24"));
    c["runtimeConfig"] = json!({"ips": ["10.40.0.5/16"]});
    cases.push((c, ""));
    for (conf, args) in &cases {
        let want = static_run(&reference, "ADD", conf, args).expect_ok();
        let got = static_run(&ours, "ADD", conf, args).expect_ok();
        assert_eq!(got, want, "config {conf} args {args:?}");
    }

    // CHECK: both accept their own result and refuse a changed gateway.
    let conf = bridge_conf(full.clone());
    for bin in [&reference, &ours] {
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = static_run(bin, "ADD", &conf, "").expect_ok();
        static_run(bin, "CHECK", &with_prev, "").expect_ok();
        with_prev["prevResult"]["ips"][0]["gateway"] = json!("10.10.0.254");
        let out = static_run(bin, "CHECK", &with_prev, "");
        assert!(
            !out.success(),
            "{} accepted a changed gateway",
            bin.display()
        );
        let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("Failed to match addr 10.10.0.5"), "{msg}");
    }

    // Inputs the reference refuses, we refuse too (our codes are more
    // specific than its 999; the messages name the same value).
    let bad: Vec<(Value, &str, &str)> = vec![
        (
            bridge_conf(json!({"addresses": [{"address": "10.0.0.5"}]})),
            "",
            "'10.0.0.5'",
        ),
        (
            bridge_conf(json!({"addresses": [{"address": "10.0.0.5/24", "gateway": "x"}]})),
            "",
            "x",
        ),
        (bridge_conf(one.clone()), "IP=10.0.0.7", "'10.0.0.7'"),
        (bridge_conf(one.clone()), "IP=10.0.0.7/24;GATEWAY=y", "y"),
        (bridge_conf(one.clone()), "K8S_POD_NAME=p", "K8S_POD_NAME"),
        (json!({"cniVersion": "1.0.0", "name": "n"}), "", "'ipam'"),
    ];
    for (conf, args, needle) in &bad {
        for bin in [&reference, &ours] {
            let out = static_run(bin, "ADD", conf, args);
            assert!(!out.success(), "{} accepted {conf} {args:?}", bin.display());
            let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
            assert!(msg.contains(needle), "{}: {msg}", bin.display());
        }
    }
}
