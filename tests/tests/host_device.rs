//! host-device: a veth end of the "host" namespace moves into a container
//! under the requested name and back on DEL (also after being renamed
//! inside), with and without IPAM; differentially against the Go
//! reference (same link attributes and result, cross-DEL).

use integration::{
    Invocation, Netns, Outcome, can_run, normalize_result, plugin, reference_plugin,
};
use serde_json::{Value, json};
use std::path::Path;

fn conf(extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "hdnet", "type": "host-device"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

fn run(bin: &Path, cmd: &str, conf: &Value, host: &Netns, ctr: &str) -> Outcome {
    Invocation::new(bin, cmd)
        .container_id("ctr-hd")
        .netns_path(ctr)
        .ifname("net1")
        .config(conf)
        .run(host)
}

/// The host namespace with veth `hd0` (up) whose peer sits on a LAN
/// namespace at 10.95.0.1/24.
fn host_with_device(lan: &Netns) -> Netns {
    let host = Netns::new("cnit-hd-host");
    host.wire_to(("hd0", "10.95.0.9/24"), lan, ("lanhd", "10.95.0.1/24"));
    host.run_ok("ip", &["addr", "flush", "dev", "hd0"]);
    host
}

/// `ip -d -j link show NAME` of one link, or None.
fn link_json(ns: &Netns, name: &str) -> Option<Value> {
    let out = ns.exec("ip", &["-d", "-j", "link", "show", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// What a person would compare: name, alias, MAC, MTU, flags, kind.
fn attrs(ns: &Netns, name: &str) -> Value {
    let l = link_json(ns, name).unwrap_or_else(|| panic!("no link {name} in {}", ns.name()));
    json!({"ifname": l["ifname"], "ifalias": l.get("ifalias").cloned().unwrap_or(Value::Null),
        "address": l["address"], "mtu": l["mtu"], "flags": l["flags"],
        "kind": l["linkinfo"]["info_kind"]})
}

#[test]
fn a_veth_end_moves_in_with_static_addresses_and_back_on_del() {
    if !can_run() {
        return;
    }
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let ctr = Netns::new("cnit-hd-ctr");
    let mac = attrs(&host, "hd0")["address"].clone();
    let c = conf(json!({"device": "hd0",
        "ipam": {"type": "static", "addresses": [{"address": "10.95.0.5/24", "gateway": "10.95.0.1"}],
                 "routes": [{"dst": "192.168.95.0/24"}]},
        "dns": {"nameservers": ["10.95.0.53"]}}));
    let r = run(&plugin("host-device"), "ADD", &c, &host, &ctr.path_str()).expect_ok();
    assert_eq!(r["interfaces"][0]["name"], "net1", "{r}");
    assert_eq!(r["interfaces"][0]["mac"], mac);
    assert_eq!(r["interfaces"][0]["sandbox"], ctr.path_str().as_str());
    assert_eq!(r["ips"][0]["address"], "10.95.0.5/24");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["dns"]["nameservers"][0], "10.95.0.53");
    assert!(link_json(&host, "hd0").is_none(), "left the host");
    let inside = attrs(&ctr, "net1");
    assert_eq!(inside["ifalias"], "hd0");
    assert_eq!(inside["address"], mac);
    assert!(
        inside["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP"))),
        "{inside}"
    );
    assert!(ctr.addresses("net1").contains(&"10.95.0.5/24".to_string()));
    let routes = ctr.run_ok("ip", &["route", "show", "192.168.95.0/24"]);
    assert!(routes.contains("via 10.95.0.1 dev net1"), "{routes}");
    assert!(
        ctr.ping("10.95.0.1"),
        "the LAN answers through the moved device"
    );
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    run(
        &plugin("host-device"),
        "CHECK",
        &with_prev,
        &host,
        &ctr.path_str(),
    )
    .expect_ok();

    run(
        &plugin("host-device"),
        "DEL",
        &with_prev,
        &host,
        &ctr.path_str(),
    )
    .expect_ok();
    assert!(link_json(&ctr, "net1").is_none());
    let back = attrs(&host, "hd0");
    assert_eq!(back["address"], mac);
    assert_eq!(back["ifalias"], Value::Null, "alias cleared");
    assert!(
        host.addresses("hd0")
            .iter()
            .all(|a| !a.starts_with("10.95.0.5"))
    );
    // Idempotent, also without the namespace.
    run(
        &plugin("host-device"),
        "DEL",
        &with_prev,
        &host,
        &ctr.path_str(),
    )
    .expect_ok();
    run(
        &plugin("host-device"),
        "DEL",
        &with_prev,
        &host,
        "/var/run/netns/cnit-hd-gone",
    )
    .expect_ok();
    // The device can be attached again.
    run(&plugin("host-device"), "ADD", &c, &host, &ctr.path_str()).expect_ok();
    run(&plugin("host-device"), "DEL", &c, &host, &ctr.path_str()).expect_ok();
    assert!(link_json(&host, "hd0").is_some());
}

#[test]
fn renamed_inside_the_container_it_still_goes_back() {
    if !can_run() {
        return;
    }
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let ctr = Netns::new("cnit-hd-ctr");
    let bin = plugin("host-device");
    for c in [conf(json!({"device": "hd0"})), {
        let mac = attrs(&host, "hd0")["address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        conf(json!({ "hwaddr": mac }))
    }] {
        let r = run(&bin, "ADD", &c, &host, &ctr.path_str()).expect_ok();
        ctr.run_ok("ip", &["link", "set", "net1", "down"]);
        ctr.run_ok("ip", &["link", "set", "net1", "name", "renamed7"]);
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r;
        run(&bin, "DEL", &with_prev, &host, &ctr.path_str()).expect_ok();
        assert!(link_json(&ctr, "renamed7").is_none(), "{c}");
        assert!(link_json(&host, "hd0").is_some(), "{c}");
    }
}

#[test]
fn a_failed_add_leaves_the_device_on_the_host_unchanged() {
    if !can_run() {
        return;
    }
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let ctr = Netns::new("cnit-hd-ctr");
    let bin = plugin("host-device");
    let before = (attrs(&host, "hd0"), ctr.snapshot());
    let cases = [
        // IPAM refuses the config.
        (
            conf(json!({"device": "hd0", "ipam": {"type": "static",
            "addresses": [{"address": "10.95.0.5"}]}})),
            7,
        ),
        // IPAM succeeds, then a route cannot be added in the container.
        (
            conf(json!({"device": "hd0", "ipam": {"type": "static",
            "addresses": [{"address": "10.95.0.5/24"}],
            "routes": [{"dst": "192.168.96.0/24", "gw": "10.250.0.1"}]}})),
            999,
        ),
        (conf(json!({"device": "nosuchdev0"})), 999),
        (conf(json!({})), 7),
    ];
    for (c, code) in cases {
        run(&bin, "ADD", &c, &host, &ctr.path_str()).expect_err(code);
        assert_eq!((attrs(&host, "hd0"), ctr.snapshot()), before, "{c}");
    }
    // An address that was allocated is released again.
    let data = integration::temp_dir("cnit-hd-ipam");
    let c = conf(json!({"device": "hd0", "ipam": {"type": "host-local",
        "ranges": [[{"subnet": "10.95.0.0/24"}]], "dataDir": data.path(),
        "routes": [{"dst": "192.168.96.0/24", "gw": "10.250.0.1"}]}}));
    run(&bin, "ADD", &c, &host, &ctr.path_str()).expect_err(999);
    assert_eq!((attrs(&host, "hd0"), ctr.snapshot()), before);
    let left: Vec<String> = integration::dir_entries(&data.path().join("hdnet"))
        .into_iter()
        .filter(|f| f != "lock" && !f.starts_with("last_reserved_ip"))
        .collect();
    assert!(left.is_empty(), "reservations left: {left:?}");
}

#[test]
fn same_link_attributes_and_result_as_the_reference_and_cross_del() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("host-device") else {
        return;
    };
    let ours = plugin("host-device");
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let c = conf(json!({"device": "hd0",
        "ipam": {"type": "static", "addresses": [{"address": "10.95.0.5/24", "gateway": "10.95.0.1"}]}}));
    let mut seen = Vec::new();
    for (adder, deleter) in [(&reference, &ours), (&ours, &reference)] {
        let ctr = Netns::new("cnit-hd-ctr");
        // Each implementation's IPAM from its own directory.
        let dir = adder
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let r = Invocation::new(adder, "ADD")
            .container_id("ctr-hd")
            .netns(&ctr)
            .ifname("net1")
            .cni_path(&dir)
            .config(&c)
            .run(&host)
            .expect_ok();
        let mut r = normalize_result(r);
        r["interfaces"][0]["sandbox"] = json!("<netns>");
        seen.push((r, attrs(&ctr, "net1"), ctr.addresses("net1")));
        let dir = deleter
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Invocation::new(deleter, "DEL")
            .container_id("ctr-hd")
            .netns(&ctr)
            .ifname("net1")
            .cni_path(&dir)
            .config(&c)
            .run(&host)
            .expect_ok();
        assert!(
            link_json(&ctr, "net1").is_none(),
            "{} DEL",
            deleter.display()
        );
        let back = attrs(&host, "hd0");
        // The reference 1.1.1 leaves the alias set (later versions clear
        // it, as we do).
        if deleter == &ours {
            assert_eq!(back["ifalias"], Value::Null, "{} DEL", deleter.display());
        }
    }
    assert_eq!(seen[0], seen[1]);
}

/// The example conflist under cnictl, its `device` pointed at the test's
/// veth: in with its address, CHECK, back on DEL.
#[test]
fn the_example_conflist_runs_under_cnictl() {
    if !can_run() {
        return;
    }
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let ctr = Netns::bare("cnit-hd-ctr");
    let dir = integration::temp_dir("cnit-hd-conf");
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/runtimes/examples/50-cni-rs-host-device.conflist");
    let mut list: Value =
        serde_json::from_slice(&std::fs::read(&example).expect("read example")).expect("JSON");
    list["plugins"][0]["device"] = json!("hd0");
    std::fs::write(dir.path().join("50.conflist"), list.to_string()).expect("write");
    let cache = integration::temp_dir("cnit-hd-cache");
    let cnictl = |verb: &str| {
        let out = host
            .command(plugin("cnictl"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["--conf-dir", &dir.path().display().to_string()])
            .args(["--cni-path", &integration::bin_dir().display().to_string()])
            .args(["--cache-dir", &cache.path().display().to_string()])
            .args(["-i", "net1", verb, "cni-rs-nic", &ctr.path_str()])
            .output()
            .expect("run cnictl");
        assert!(out.status.success(), "cnictl {verb}: {out:?}");
    };
    cnictl("add");
    assert_eq!(attrs(&ctr, "net1")["ifalias"], "hd0");
    assert!(
        ctr.addresses("net1")
            .contains(&"192.168.50.10/24".to_string())
    );
    cnictl("check");
    cnictl("del");
    assert!(link_json(&ctr, "net1").is_none());
    assert!(link_json(&host, "hd0").is_some());
}

#[test]
fn a_name_taken_in_the_container_leaves_the_device_on_the_host() {
    if !can_run() {
        return;
    }
    let lan = Netns::new("cnit-hd-lan");
    let host = host_with_device(&lan);
    let ctr = Netns::new("cnit-hd-ctr");
    ctr.run_ok(
        "ip",
        &[
            "link", "add", "net1", "type", "veth", "peer", "name", "other1",
        ],
    );
    let before = (attrs(&host, "hd0"), ctr.snapshot());
    let e = run(
        &plugin("host-device"),
        "ADD",
        &conf(json!({"device": "hd0"})),
        &host,
        &ctr.path_str(),
    )
    .expect_err(999);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("net1"),
        "{e}"
    );
    assert_eq!((attrs(&host, "hd0"), ctr.snapshot()), before);
}
