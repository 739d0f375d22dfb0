//! loopback, end to end: the built binary exec'd as a runtime does.

use integration::{Invocation, Netns, can_run, plugin, reference_plugin};
use serde_json::{Value, json};

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-net", "type": "loopback"})
}

fn lo_up(ns: &Netns) -> bool {
    let v = ns.ip_json(&["link", "show", "lo"]);
    v[0]["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn add(ns: &Netns, version: &str) -> integration::Outcome {
    Invocation::new(plugin("loopback"), "ADD")
        .container_id("ctr-lo")
        .netns(ns)
        .config(&conf(version))
        .run_in(None)
}

#[test]
fn add_brings_lo_up_and_reports_its_addresses() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-lo");
    assert!(!lo_up(&ctr));
    let r = add(&ctr, "1.1.0").expect_ok();
    assert!(lo_up(&ctr));
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][0]["mac"], "00:00:00:00:00:00");
    assert_eq!(r["interfaces"][0]["sandbox"], ctr.path_str());
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][1]["address"], "::1/128");
}

#[test]
fn check_passes_when_up_and_fails_when_down() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-lo");
    let check = || {
        Invocation::new(plugin("loopback"), "CHECK")
            .container_id("ctr-lo")
            .netns(&ctr)
            .config(&conf("1.0.0"))
            .run_in(None)
    };
    let e = check().expect_err(999);
    assert_eq!(e["msg"], "loopback interface is down");
    add(&ctr, "1.0.0").expect_ok();
    check().expect_ok();
}

#[test]
fn del_brings_lo_down_and_is_idempotent() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-lo");
    add(&ctr, "1.0.0").expect_ok();
    let del = Invocation::new(plugin("loopback"), "DEL")
        .container_id("ctr-lo")
        .netns(&ctr)
        .config(&conf("1.0.0"));
    del.run_in(None).expect_ok();
    assert!(!lo_up(&ctr));
    del.run_in(None).expect_ok();
}

#[test]
fn del_succeeds_without_netns_or_when_it_is_gone() {
    if !can_run() {
        return;
    }
    let base = Invocation::new(plugin("loopback"), "DEL")
        .container_id("ctr-lo")
        .config(&conf("1.0.0"));
    base.clone().run_in(None).expect_ok();
    let path = {
        let ctr = Netns::bare("cnit-lo");
        ctr.path_str()
    };
    base.netns_path(&path).run_in(None).expect_ok();
}

#[test]
fn chained_add_echoes_prev_result() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-lo");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": ctr.path_str()}],
        "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}],
        "dns": {"nameservers": ["10.9.0.1"]}
    });
    let mut c = conf("1.0.0");
    c["prevResult"] = prev.clone();
    let r = Invocation::new(plugin("loopback"), "ADD")
        .container_id("ctr-lo")
        .netns(&ctr)
        .config(&c)
        .run_in(None)
        .expect_ok();
    assert!(lo_up(&ctr));
    assert_eq!(r, prev);
}

#[test]
fn non_loopback_address_on_lo_is_an_error() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-lo");
    ctr.run_ok("ip", &["addr", "add", "10.0.0.1/32", "dev", "lo"]);
    let e = add(&ctr, "1.0.0").expect_err(999);
    assert_eq!(
        e["msg"],
        "loopback interface found with non-loopback address \"10.0.0.1\""
    );
}

#[test]
fn missing_netns_on_add_is_invalid_netns() {
    if !can_run() {
        return;
    }
    let e = Invocation::new(plugin("loopback"), "ADD")
        .container_id("ctr-lo")
        .netns_path("/run/netns/cnit-does-not-exist")
        .config(&conf("1.0.0"))
        .run_in(None)
        .expect_err(8);
    assert!(e["msg"].as_str().unwrap().contains("cnit-does-not-exist"));
}

#[test]
fn the_hosts_own_namespace_is_refused() {
    if !can_run() {
        return;
    }
    // The plugin runs inside `host`; pointing CNI_NETNS at `host` itself
    // must not take its lo down.
    let host = Netns::new("cnit-host");
    let out = Invocation::new(plugin("loopback"), "DEL")
        .container_id("ctr-lo")
        .netns(&host)
        .config(&conf("1.0.0"))
        .run(&host);
    out.expect_err(8);
    assert!(lo_up(&host));
}

#[test]
fn same_result_as_the_reference_for_every_version_from_030() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("loopback") else {
        return;
    };
    // The Go plugin of Debian's package speaks up to 1.0.0.
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let a = Netns::bare("cnit-lo");
        let b = Netns::bare("cnit-lo");
        let ours = add(&a, version).expect_ok();
        let theirs = Invocation::new(&reference, "ADD")
            .container_id("ctr-lo")
            .netns(&b)
            .config(&conf(version))
            .run_in(None)
            .expect_ok();
        // Differences allowed: the sandbox path, and the 0.3.x/0.4.0 `ips[].version`
        // field, which the spec requires and the Go loopback omits (it prints
        // the 1.0 shape under any version); ours includes it.
        let strip = |mut v: Value| {
            v["interfaces"][0]["sandbox"] = json!("<netns>");
            for ip in v["ips"].as_array_mut().into_iter().flatten() {
                if let Some(m) = ip.as_object_mut() {
                    m.remove("version");
                }
            }
            v
        };
        if version != "1.0.0" {
            assert_eq!(ours["ips"][0]["version"], "4", "version {version}");
        }
        assert_eq!(strip(ours), strip(theirs), "version {version}");
        assert!(lo_up(&a) && lo_up(&b));
    }
}
