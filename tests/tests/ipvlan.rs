//! ipvlan, end to end where the kernel can make ipvlan links. Kernels built
//! without them (no module, "Unknown device type") get the tests that still
//! mean something there — ADD fails with a CNI error and leaves nothing,
//! DEL/STATUS/bad input work — and the kernel tests print SKIPPED. The
//! exact RTM_NEWLINK bytes are tested in the plugin and in `link`.

use integration::{
    Invocation, Netns, can_run, kernel_has_link_type, link_type_missing, plugin, reservations,
    temp_dir,
};
use serde_json::{Value, json};

struct Setup {
    host: Netns,
    server: Netns,
    data: tempfile::TempDir,
    conf: Value,
}

fn setup(extra: Value) -> Setup {
    let host = Netns::new("cnit-ivhost");
    let server = Netns::new("cnit-ivsrv");
    // No DAD: tentative flags would flip between snapshots.
    host.run_ok("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
    host.run_ok("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
    server.run_ok("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
    host.wire_to(
        ("lan0", "192.168.60.254/24"),
        &server,
        ("srv0", "192.168.60.1/24"),
    );
    host.wait_settled("lan0");
    let data = temp_dir("cnit-iv-ipam");
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "ivnet",
        "type": "ipvlan",
        "master": "lan0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "192.168.60.0/24", "rangeStart": "192.168.60.10"}]],
            "dataDir": data.path(),
        },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        conf[k] = v.clone();
    }
    Setup {
        host,
        server,
        data,
        conf,
    }
}

impl Setup {
    fn reservations(&self) -> Vec<String> {
        reservations(&self.data.path().join("ivnet"))
    }

    fn inv(&self, cmd: &str, ctr: &Netns) -> Invocation {
        Invocation::new(plugin("ipvlan"), cmd)
            .container_id("c1")
            .netns(ctr)
            .config(&self.conf)
    }
}

#[test]
fn add_where_ipvlan_is_missing_fails_cleanly_and_del_status_still_work() {
    if !can_run() || link_type_missing(&["ipvlan", "mode", "l2"]).is_none() {
        return;
    }
    let s = setup(json!({}));
    let ctr = Netns::bare("cnit-ivctr");
    let before = (s.host.snapshot(), ctr.snapshot());
    let e = s.inv("ADD", &ctr).run(&s.host).expect_err(999);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(msg.starts_with("failed to create ipvlan"), "{msg}");
    assert_eq!((s.host.snapshot(), ctr.snapshot()), before);
    // The link comes before IPAM: nothing was reserved.
    assert!(s.reservations().is_empty());
    s.inv("DEL", &ctr).run(&s.host).expect_ok();
    Invocation::new(plugin("ipvlan"), "STATUS")
        .config(&s.conf)
        .run(&s.host)
        .expect_ok();
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-ivctr");
    for (extra, code, want) in [
        (json!({"mode": "l4"}), 7, "unknown ipvlan mode: \"l4\""),
        (json!({"mtu": -1}), 7, "invalid MTU -1"),
        (
            json!({"ipam": {}}),
            7,
            "no IPAM plugin configured and no IPs in prevResult",
        ),
        (
            json!({"master": "nosuch0"}),
            999,
            "failed to lookup master \"nosuch0\"",
        ),
    ] {
        let s = setup(extra.clone());
        let before = (s.host.snapshot(), ctr.snapshot());
        let e = s.inv("ADD", &ctr).run(&s.host).expect_err(code);
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{extra}: {msg:?} !~ {want:?}");
        assert_eq!((s.host.snapshot(), ctr.snapshot()), before, "{extra}");
        assert!(s.reservations().is_empty());
    }
    // STATUS names a missing master.
    let s = setup(json!({"master": "nosuch0"}));
    let e = Invocation::new(plugin("ipvlan"), "STATUS")
        .config(&s.conf)
        .run(&s.host)
        .expect_err(50);
    assert!(e["msg"].as_str().unwrap_or_default().contains("nosuch0"));
}

#[test]
fn kernel_ipvlan_reaches_the_server_in_each_mode_and_del_leaves_nothing() {
    if !can_run() || !kernel_has_link_type(&["ipvlan", "mode", "l2"]) {
        return;
    }
    for mode in ["l2", "l3", "l3s"] {
        let s = setup(json!({"mode": mode, "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "192.168.60.0/24", "rangeStart": "192.168.60.10"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": temp_dir("cnit-iv-ipam").path(),
        }}));
        let ctr = Netns::bare("cnit-ivctr");
        let r = s.inv("ADD", &ctr).run(&s.host).expect_ok();
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["ips"][0]["interface"], 0);
        let l = ctr.ip_json(&["-d", "link", "show", "eth0"])[0].clone();
        assert_eq!(l["linkinfo"]["info_kind"], "ipvlan");
        assert_eq!(l["linkinfo"]["info_data"]["mode"], mode);
        let mut conf = s.conf.clone();
        conf["prevResult"] = r;
        Invocation::new(plugin("ipvlan"), "CHECK")
            .container_id("c1")
            .netns(&ctr)
            .config(&conf)
            .run(&s.host)
            .expect_ok();
        if mode == "l2" {
            assert!(ctr.ping("192.168.60.1"));
        }
        s.inv("DEL", &ctr).run(&s.host).expect_ok();
        assert_eq!(ctr.links(), ["lo"]);
        let _ = &s.server;
    }
}

#[test]
fn kernel_ipvlan_chained_takes_master_and_addresses_from_prev_result() {
    if !can_run() || !kernel_has_link_type(&["ipvlan", "mode", "l2"]) {
        return;
    }
    let s = setup(json!({"master": null, "ipam": null}));
    let ctr = Netns::bare("cnit-ivctr");
    let mut conf = s.conf.clone();
    if let Some(m) = conf.as_object_mut() {
        m.remove("master");
        m.remove("ipam");
    }
    conf["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lan0"}],
        "ips": [{"address": "192.168.60.77/24", "interface": 0}],
    });
    let r = Invocation::new(plugin("ipvlan"), "ADD")
        .container_id("c1")
        .netns(&ctr)
        .config(&conf)
        .run(&s.host)
        .expect_ok();
    assert_eq!(r["ips"][0]["address"], "192.168.60.77/24");
    assert!(
        ctr.addresses("eth0")
            .contains(&"192.168.60.77/24".to_string())
    );
    Invocation::new(plugin("ipvlan"), "DEL")
        .container_id("c1")
        .netns(&ctr)
        .config(&conf)
        .run(&s.host)
        .expect_ok();
    assert_eq!(ctr.links(), ["lo"]);
}

/// Against the Go ipvlan where the kernel has ipvlan: the same link
/// attributes, addresses and routes for the same configuration, and each
/// implementation's DEL removes what the other made.
#[test]
fn kernel_same_state_as_the_go_plugin_and_cross_del() {
    if !can_run() || !kernel_has_link_type(&["ipvlan", "mode", "l2"]) {
        return;
    }
    let Some(go) = integration::reference_plugin("ipvlan") else {
        return;
    };
    for mode in ["l2", "l3"] {
        let ours = setup(json!({"mode": mode, "mtu": 1400}));
        let a = Netns::bare("cnit-ivctr");
        let b = Netns::bare("cnit-ivctr");
        ours.inv("ADD", &a).run(&ours.host).expect_ok();
        let mut go_conf = ours.conf.clone();
        let go_data = temp_dir("cnit-iv-ipam");
        go_conf["ipam"]["dataDir"] = json!(go_data.path());
        Invocation::new(&go, "ADD")
            .container_id("c1")
            .netns(&b)
            .config(&go_conf)
            .cni_path("/usr/lib/cni")
            .run(&ours.host)
            .expect_ok();
        let shape = |ns: &Netns| {
            let l = ns.ip_json(&["-d", "link", "show", "eth0"])[0].clone();
            json!({"kind": l["linkinfo"]["info_kind"], "mode": l["linkinfo"]["info_data"]["mode"],
                   "mtu": l["mtu"], "flags": l["flags"]})
        };
        assert_eq!(shape(&a), shape(&b), "{mode}");
        assert_eq!(a.global_addresses("eth0"), b.global_addresses("eth0"));
        let routes = |ns: &Netns| ns.run_ok("ip", &["route", "show"]);
        assert_eq!(routes(&a), routes(&b));
        // Cross-DEL.
        Invocation::new(&go, "DEL")
            .container_id("c1")
            .netns(&a)
            .config(&ours.conf)
            .cni_path("/usr/lib/cni")
            .run(&ours.host)
            .expect_ok();
        assert_eq!(a.links(), ["lo"]);
        assert!(ours.reservations().is_empty());
        Invocation::new(plugin("ipvlan"), "DEL")
            .container_id("c1")
            .netns(&b)
            .config(&go_conf)
            .run(&ours.host)
            .expect_ok();
        assert_eq!(b.links(), ["lo"]);
    }
}
