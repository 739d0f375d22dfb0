//! host-local, run as a runtime runs it: the built binary, `CNI_*`
//! environment, config on stdin. host-local touches no network state, so it
//! runs in the test's own namespace; every test uses its own temp dataDir
//! (never /var/lib/cni).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::{Invocation, Outcome, dir_entries, plugin, reference_plugin, temp_dir};
use serde_json::{Value, json};

const NET: &str = "hlnet";

fn ours() -> PathBuf {
    plugin("host-local")
}

/// A network config using `ipam` (with `dataDir` set to `data_dir`).
fn conf(version: &str, data_dir: &Path, mut ipam: Value) -> Value {
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir.display().to_string());
    json!({"cniVersion": version, "name": NET, "type": "bridge", "ipam": ipam})
}

fn simple(data_dir: &Path, subnet: &str) -> Value {
    conf("1.1.0", data_dir, json!({"ranges": [[{"subnet": subnet}]]}))
}

fn call(bin: &Path, verb: &str, id: &str, ifname: &str, conf: &Value) -> Outcome {
    let mut inv = Invocation::new(bin, verb).config(conf).ifname(ifname);
    if matches!(verb, "ADD" | "DEL" | "CHECK") {
        inv = inv.container_id(id);
    }
    if matches!(verb, "ADD" | "CHECK") {
        inv = inv.netns_path("/var/run/netns/unused");
    }
    inv.run_in(None)
}

fn add(conf: &Value, id: &str) -> Outcome {
    call(&ours(), "ADD", id, "eth0", conf)
}

fn del(conf: &Value, id: &str) -> Outcome {
    call(&ours(), "DEL", id, "eth0", conf)
}

/// The addresses of a result, as strings.
fn addrs(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|ip| ip["address"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `<dataDir>/<NET>`: file name → contents.
fn files(data_dir: &Path) -> BTreeMap<String, String> {
    let dir = data_dir.join(NET);
    dir_entries(&dir)
        .into_iter()
        .map(|n| {
            let c = fs::read_to_string(dir.join(&n)).unwrap_or_default();
            (n, c)
        })
        .collect()
}

fn reservation_names(data_dir: &Path) -> BTreeSet<String> {
    files(data_dir)
        .into_keys()
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
        .collect()
}

fn expect_msg(out: &Outcome, code: u64, msg: &str) {
    let err = out.expect_err(code);
    assert_eq!(err["msg"], msg, "{err}");
}

// ---------------------------------------------------------------- validation

#[test]
fn every_validation_message() {
    let d = temp_dir("hl-valid");
    let dd = d.path();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"cniVersion":"1.1.0","name":NET,"type":"host-local"}),
            "IPAM config missing 'ipam' key",
        ),
        (conf("1.1.0", dd, json!({})), "no IP ranges specified"),
        (
            simple(dd, "10.0.0.0/31"),
            "invalid range set 0: Network 10.0.0.0/31 too small to allocate from",
        ),
        (
            simple(dd, "10.0.0.0/32"),
            "invalid range set 0: Network 10.0.0.0/32 too small to allocate from",
        ),
        (
            simple(dd, "2001:db8::/127"),
            "invalid range set 0: Network 2001:db8::/127 too small to allocate from",
        ),
        (
            simple(dd, "2001:db8::/128"),
            "invalid range set 0: Network 2001:db8::/128 too small to allocate from",
        ),
        (
            simple(dd, "10.0.0.7/24"),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}]]}),
            ),
            "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.5"}]]}),
            ),
            "invalid range set 0: RangeEnd 10.0.1.5 not in network 10.0.0.0/24",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"2001:db8::/64"}]]}),
            ),
            "invalid range set 0: mixed address families",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.0.0/16"}]]}),
            ),
            "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.255.254 overlap",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}),
            ),
            "range set 0 overlaps with 1",
        ),
        (
            conf(
                "0.2.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.1.0/24"}]]}),
            ),
            "CNI version 0.2.0 does not support more than 1 address per family",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"}]],"resolvConf":"/etc/missing.conf"}),
            ),
            "open /etc/missing.conf: no such file or directory",
        ),
        (
            conf("1.1.0", dd, json!({"ranges":[[{"subnet":"10.0.0.0"}]]})),
            "invalid range set 0: ipam.ranges[0][0].subnet: invalid CIDR address: 10.0.0.0",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24","gateway":"nope"}]]}),
            ),
            "invalid range set 0: ipam.ranges[0][0].gateway: invalid IP address: nope",
        ),
        (
            conf("1.1.0", dd, json!({"ranges":[[]]})),
            "invalid range set 0: empty range set",
        ),
        (
            conf("1.1.0", dd, json!({"ranges":[[{"rangeStart":"10.0.0.1"}]]})),
            "invalid range set 0: ipam.ranges[0][0].subnet: missing",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"subnet":"10.0.0.0/24","rangeStart":"zz"}),
            ),
            "invalid range set 0: ipam.rangeStart: invalid IP address: zz",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.3"}]]}),
            ),
            "invalid range set 0: RangeStart 10.0.0.9 is after RangeEnd 10.0.0.3",
        ),
        (
            conf("1.1.0", dd, json!({"ranges":"x"})),
            "invalid network config: ipam.ranges: invalid type: string \"x\", expected a sequence",
        ),
        (
            conf("1.1.0", dd, json!({"subnet":5})),
            "invalid network config: ipam.subnet: invalid type: integer `5`, expected a string",
        ),
        (
            conf(
                "1.1.0",
                dd,
                json!({"ranges":[[{"subnet":"10.0.0.0/24"}]],"routes":[{"dst":"x"}]}),
            ),
            "invalid network config: ipam.routes[0].dst: invalid address: x",
        ),
    ];
    for (config, msg) in cases {
        let out = add(&config, "c1");
        let err = out.json();
        assert!(!out.success(), "{config}");
        assert_eq!(err["msg"], msg, "{config}");
    }
    // Nothing was reserved by any of them.
    assert!(reservation_names(dd).is_empty());

    // Requested-address errors.
    let base = simple(dd, "10.1.2.0/24");
    let bad_ip = Invocation::new(ours(), "ADD")
        .container_id("c1")
        .netns_path("/x")
        .args("IP=10.1.2.x")
        .config(&base)
        .run_in(None);
    expect_msg(
        &bad_ip,
        7,
        "cannot understand ip: IP 10.1.2.x not v4 nor v6",
    );
    let gw = Invocation::new(ours(), "ADD")
        .container_id("c1")
        .netns_path("/x")
        .args("IP=10.1.2.1")
        .config(&base)
        .run_in(None);
    expect_msg(
        &gw,
        999,
        "failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway",
    );
    let outside = Invocation::new(ours(), "ADD")
        .container_id("c1")
        .netns_path("/x")
        .args("IP=10.9.9.9")
        .config(&base)
        .run_in(None);
    expect_msg(
        &outside,
        999,
        "failed to allocate all requested IPs: 10.9.9.9",
    );
    let unknown_arg = Invocation::new(ours(), "ADD")
        .container_id("c1")
        .netns_path("/x")
        .args("K8S_POD_NAME=p")
        .config(&base)
        .run_in(None);
    expect_msg(&unknown_arg, 4, "ARGS: unknown args [\"K8S_POD_NAME\"]");
    assert!(reservation_names(dd).is_empty());

    // Taken, duplicate and CHECK miss. The failed ADDs above gave their
    // address back but, as in the reference, round-robin moved on: .3 next.
    assert_eq!(addrs(&add(&base, "c1").expect_ok()), ["10.1.2.3/24"]);
    let taken = Invocation::new(ours(), "ADD")
        .container_id("c2")
        .netns_path("/x")
        .args("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.3")
        .config(&base)
        .run_in(None);
    expect_msg(
        &taken,
        999,
        "failed to allocate for range 0: requested IP address 10.1.2.3 is not available in range set 10.1.2.1-10.1.2.254",
    );
    expect_msg(
        &add(&base, "c1"),
        999,
        "failed to allocate for range 0: 10.1.2.3 has been allocated to c1, duplicate allocation is not allowed",
    );
    expect_msg(
        &call(&ours(), "CHECK", "c9", "eth0", &base),
        999,
        "host-local: Failed to find address added by container c9",
    );
    assert_eq!(
        reservation_names(dd),
        BTreeSet::from(["10.1.2.3".to_string()])
    );
}

// ---------------------------------------------------------------- differential

/// Same ADD/DEL sequence against both implementations, each with its own
/// dataDir: every result and the final directory contents must be equal.
#[test]
fn allocation_order_and_files_match_the_reference() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    // The installed reference (v1.1.1) speaks up to 1.0.0.
    let ipam = json!({
        "ranges": [
            [{"subnet": "10.10.0.0/29"}, {"subnet": "10.10.1.0/29", "rangeStart": "10.10.1.3", "rangeEnd": "10.10.1.4"}],
            [{"subnet": "2001:db8:5::/125"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.1"}]
    });
    let steps: &[(&str, &str, &str)] = &[
        ("ADD", "c1", "eth0"),
        ("ADD", "c2", "eth0"),
        ("ADD", "c2", "eth1"),
        ("ADD", "c3", "eth0"),
        ("DEL", "c2", "eth0"),
        ("ADD", "c4", "eth0"),
        ("ADD", "c5", "eth0"),
        ("ADD", "c6", "eth0"),
        ("ADD", "c7", "eth0"), // v6 /125 has 6 usable addresses: exhausted here
        ("DEL", "c1", "eth0"),
        ("ADD", "c8", "eth0"),
        ("DEL", "nobody", "eth0"),
        ("DEL", "c3", "eth0"),
        ("ADD", "c9", "eth0"),
    ];
    let (dg, dr) = (temp_dir("hl-go"), temp_dir("hl-rs"));
    let (cg, cr) = (
        conf("1.0.0", dg.path(), ipam.clone()),
        conf("1.0.0", dr.path(), ipam),
    );
    for (verb, id, ifname) in steps {
        let g = call(&go, verb, id, ifname, &cg);
        let r = call(&ours(), verb, id, ifname, &cr);
        assert_eq!(
            g.success(),
            r.success(),
            "{verb} {id} {ifname}: go {g:?} ours {r:?}"
        );
        if g.success() {
            if *verb == "ADD" {
                assert_eq!(g.json(), r.json(), "{verb} {id} {ifname}");
            }
        } else {
            assert_eq!(g.json()["msg"], r.json()["msg"], "{verb} {id} {ifname}");
        }
        assert_eq!(
            files(dg.path()),
            files(dr.path()),
            "after {verb} {id} {ifname}"
        );
    }
}

/// Runs one invocation against both implementations (each with its own
/// dataDir in `conf_for`) and asserts the same outcome and the same files.
fn same_as_reference(
    go: &Path,
    dirs: (&Path, &Path),
    conf_for: &dyn Fn(&Path) -> Value,
    verb: &str,
    id: &str,
    cni_args: &str,
) {
    let run = |bin: &Path, dir: &Path| {
        let mut inv = Invocation::new(bin, verb)
            .container_id(id)
            .config(&conf_for(dir));
        if verb == "ADD" {
            inv = inv.netns_path("/var/run/netns/unused");
        }
        if !cni_args.is_empty() {
            inv = inv.args(cni_args);
        }
        inv.run_in(None)
    };
    let (g, r) = (run(go, dirs.0), run(&ours(), dirs.1));
    let what = format!("{verb} {id} {cni_args}");
    assert_eq!(g.success(), r.success(), "{what}: go {g:?} ours {r:?}");
    if g.success() {
        if verb == "ADD" {
            assert_eq!(g.json(), r.json(), "{what}");
        }
    } else {
        assert_eq!(g.json()["msg"], r.json()["msg"], "{what}");
    }
    assert_eq!(files(dirs.0), files(dirs.1), "after {what}");
}

#[test]
fn requested_addresses_and_legacy_config_match_the_reference() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    let (dg, dr) = (temp_dir("hl-go2"), temp_dir("hl-rs2"));
    let dirs = (dg.path(), dr.path());
    // Legacy top-level range plus a v6 set, runtime ipRanges prepended,
    // requested addresses through args and runtimeConfig.
    let conf_for = |dir: &Path| {
        let mut c = conf(
            "1.0.0",
            dir,
            json!({
                "subnet": "10.70.0.0/24", "rangeStart": "10.70.0.10", "rangeEnd": "10.70.0.20",
                "gateway": "10.70.0.15",
                "ranges": [[{"subnet": "2001:db8:70::/64"}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.70.0.15"}]
            }),
        );
        c["runtimeConfig"] =
            json!({"ipRanges": [[{"subnet": "10.71.0.0/28"}]], "ips": ["10.71.0.9"]});
        c["args"] = json!({"cni": {"ips": ["2001:db8:70::99"]}});
        c
    };
    let steps: &[(&str, &str, &str)] = &[
        ("ADD", "a", "IP=10.70.0.12"),
        ("ADD", "b", "IP=10.70.0.15"), // the gateway
        ("ADD", "c", "IP=10.70.0.12"), // taken
        ("ADD", "d", "IP=10.99.0.1"),  // in no set
        ("ADD", "e", ""),              // 10.71.0.9 and ::99 already taken by a
        ("DEL", "a", ""),
        ("ADD", "f", ""),
        ("ADD", "g", "IP=10.70.0.20"),
        ("DEL", "f", ""),
        ("DEL", "g", ""),
    ];
    for (verb, id, args) in steps {
        same_as_reference(&go, dirs, &conf_for, verb, id, args);
    }
}

/// Reservation file names are the address's text: ours must spell IPv6
/// addresses exactly as Go does (RFC 5952 zero compression).
#[test]
fn ipv6_file_names_match_the_reference() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    let (dg, dr) = (temp_dir("hl-go6"), temp_dir("hl-rs6"));
    for (i, ip) in [
        "2001:db8:0:0:1:0:0:1",
        "2001:db8::0:1:0:0:0",
        "2001:db8:0:0:0:1:0:0",
        "2001:db8::ffff:1.2.3.4",
    ]
    .iter()
    .enumerate()
    {
        let conf_for = |dir: &Path| {
            let mut c = conf(
                "1.0.0",
                dir,
                json!({"ranges": [[{"subnet": "2001:db8::/64"}]]}),
            );
            c["runtimeConfig"] = json!({"ips": [ip]});
            c
        };
        same_as_reference(
            &go,
            (dg.path(), dr.path()),
            &conf_for,
            "ADD",
            &format!("v{i}"),
            "",
        );
    }
    assert_eq!(reservation_names(dr.path()).len(), 4);
}

#[test]
fn results_in_every_version_match_the_reference() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let (dg, dr) = (temp_dir("hl-gov"), temp_dir("hl-rsv"));
        let conf_for = |dir: &Path| {
            conf(
                version,
                dir,
                json!({
                    "ranges": [[{"subnet": "10.72.0.0/24"}], [{"subnet": "2001:db8:72::/64"}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
                }),
            )
        };
        same_as_reference(&go, (dg.path(), dr.path()), &conf_for, "ADD", "a", "");
        same_as_reference(&go, (dg.path(), dr.path()), &conf_for, "DEL", "a", "");
    }
}

/// A store written by the Go plugin is read, released and GC'd by ours,
/// and the Go plugin cleans up after ours.
#[test]
fn store_written_by_the_reference_is_used_by_ours_and_back() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    let d = temp_dir("hl-interop");
    let c = conf(
        "1.0.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.20.0.0/24"}]]}),
    );
    for id in ["g1", "g2", "g3"] {
        call(&go, "ADD", id, "eth0", &c).expect_ok();
    }
    // A legacy id-only file, as very old reference versions wrote.
    fs::write(d.path().join(NET).join("10.20.0.50"), "g4").unwrap();

    // Ours sees Go's reservations: CHECK passes, duplicate ADD refused,
    // a new ADD continues Go's round-robin.
    call(&ours(), "CHECK", "g1", "eth0", &c).expect_ok();
    call(&ours(), "CHECK", "g4", "eth0", &c).expect_ok();
    let dup = add(&c, "g2");
    assert!(
        dup.json()["msg"]
            .as_str()
            .unwrap()
            .contains("duplicate allocation")
    );
    assert_eq!(addrs(&add(&c, "r1").expect_ok()), ["10.20.0.5/24"]);

    // Ours releases a Go reservation, and the legacy one.
    del(&c, "g1").expect_ok();
    del(&c, "g4").expect_ok();
    assert_eq!(
        reservation_names(d.path()),
        BTreeSet::from(["10.20.0.3".into(), "10.20.0.4".into(), "10.20.0.5".into()])
    );

    // Go sees ours: releases it, and allocates after our last reservation.
    call(&go, "DEL", "r1", "eth0", &c).expect_ok();
    assert_eq!(
        addrs(&call(&go, "ADD", "g5", "eth0", &c).expect_ok()),
        ["10.20.0.6/24"]
    );

    // Our GC (1.1.0 config, same dataDir) keeps only the valid attachment.
    let mut gc = conf(
        "1.1.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.20.0.0/24"}]]}),
    );
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g2", "ifname": "eth0"}]);
    call(&ours(), "GC", "", "", &gc).expect_ok();
    assert_eq!(
        reservation_names(d.path()),
        BTreeSet::from(["10.20.0.3".into()])
    );
    assert!(files(d.path()).contains_key("lock"));
    assert!(files(d.path()).contains_key("last_reserved_ip.0"));
}

// ---------------------------------------------------------------- requested addresses

#[test]
fn requested_addresses_from_each_source() {
    let d = temp_dir("hl-req");
    let base = conf(
        "1.1.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "2001:db8:30::/64"}]]}),
    );

    let via_env = Invocation::new(ours(), "ADD")
        .container_id("env")
        .netns_path("/x")
        .args("IP=10.30.0.40")
        .config(&base)
        .run_in(None)
        .expect_ok();
    assert_eq!(addrs(&via_env), ["10.30.0.40/24", "2001:db8:30::2/64"]);

    let mut with_args = base.clone();
    with_args["args"] = json!({"cni": {"ips": ["10.30.0.41", "2001:db8:30::41/64"]}});
    assert_eq!(
        addrs(&add(&with_args, "args").expect_ok()),
        ["10.30.0.41/24", "2001:db8:30::41/64"]
    );

    let mut with_rc = base.clone();
    with_rc["runtimeConfig"] = json!({"ips": ["10.30.0.42/24"]});
    assert_eq!(
        addrs(&add(&with_rc, "rc").expect_ok()),
        ["10.30.0.42/24", "2001:db8:30::42/64"]
    );

    // runtimeConfig.ipRanges is prepended: it becomes range set 0 and the
    // configured sets move to 1 and 2. Their last_reserved_ip files now
    // belong to other sets, so (as in the reference) round-robin restarts.
    let mut with_ranges = base.clone();
    with_ranges["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.31.0.0/24"}]]});
    let r = add(&with_ranges, "ranges").expect_ok();
    assert_eq!(
        addrs(&r),
        ["10.31.0.2/24", "10.30.0.2/24", "2001:db8:30::3/64"]
    );
    let f = files(d.path());
    assert_eq!(f["last_reserved_ip.0"], "10.31.0.2");
    assert_eq!(f["last_reserved_ip.1"], "10.30.0.2");
    assert_eq!(f["last_reserved_ip.2"], "2001:db8:30::3");
    assert_eq!(f["10.30.0.40"], "env\r\neth0");
    assert_eq!(f["10.31.0.2"], "ranges\r\neth0");
}

#[test]
fn multi_set_add_is_all_or_nothing() {
    let d = temp_dir("hl-atomic");
    let c = conf(
        "1.1.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "10.41.0.0/30"}]]}),
    );
    assert_eq!(
        addrs(&add(&c, "a").expect_ok()),
        ["10.40.0.2/24", "10.41.0.2/30"]
    );
    // Set 1 has a single address: the second ADD fails there, and the
    // address it took from set 0 is given back.
    expect_msg(
        &add(&c, "b"),
        999,
        "failed to allocate for range 1: no IP addresses available in range set: 10.41.0.1-10.41.0.2",
    );
    assert_eq!(
        reservation_names(d.path()),
        BTreeSet::from(["10.40.0.2".into(), "10.41.0.2".into()])
    );
    // A failed duplicate ADD does not drop the attachment's reservations.
    add(&c, "a").expect_err(999);
    assert_eq!(reservation_names(d.path()).len(), 2);
}

// ---------------------------------------------------------------- verbs

#[test]
fn exhaustion_then_status_then_release() {
    let d = temp_dir("hl-exhaust");
    let c = simple(d.path(), "10.50.0.0/29");
    call(&ours(), "STATUS", "", "", &c).expect_ok();
    let got: Vec<String> = (1..=5)
        .flat_map(|i| addrs(&add(&c, &format!("c{i}")).expect_ok()))
        .collect();
    assert_eq!(
        got,
        [
            "10.50.0.2/29",
            "10.50.0.3/29",
            "10.50.0.4/29",
            "10.50.0.5/29",
            "10.50.0.6/29"
        ]
    );
    expect_msg(
        &add(&c, "c6"),
        999,
        "failed to allocate for range 0: no IP addresses available in range set: 10.50.0.1-10.50.0.6",
    );
    let st = call(&ours(), "STATUS", "", "", &c).expect_err(50);
    assert!(
        st["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{st}"
    );
    del(&c, "c3").expect_ok();
    call(&ours(), "STATUS", "", "", &c).expect_ok();
    // Round-robin continues after .6: wraps, skips the gateway, finds .4.
    assert_eq!(addrs(&add(&c, "c7").expect_ok()), ["10.50.0.4/29"]);
}

/// GC and STATUS get no runtimeConfig: a network whose ranges all come
/// from the `ipRanges` capability must still be collected and checked.
#[test]
fn gc_and_status_work_for_capability_only_ranges() {
    let d = temp_dir("hl-caponly");
    let mut c = conf("1.1.0", d.path(), json!({}));
    c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.59.0.0/24"}]]});
    assert_eq!(addrs(&add(&c, "a").expect_ok()), ["10.59.0.2/24"]);
    assert_eq!(addrs(&add(&c, "b").expect_ok()), ["10.59.0.3/24"]);

    let mut plain = conf("1.1.0", d.path(), json!({}));
    call(&ours(), "STATUS", "", "", &plain).expect_ok();
    plain["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    call(&ours(), "GC", "", "", &plain).expect_ok();
    assert_eq!(
        reservation_names(d.path()),
        BTreeSet::from(["10.59.0.3".into()])
    );
    // ADD without the capability still has nothing to allocate from.
    expect_msg(&add(&plain, "c"), 7, "no IP ranges specified");
}

#[test]
fn status_reports_unwritable_data_dir_and_old_versions() {
    let d = temp_dir("hl-status");
    let file = d.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let c = simple(&file, "10.51.0.0/24");
    let st = call(&ours(), "STATUS", "", "", &c).expect_err(50);
    assert!(st["msg"].as_str().unwrap().contains("not-a-dir"), "{st}");

    let mut old = simple(d.path(), "10.51.0.0/24");
    old["cniVersion"] = json!("1.0.0");
    call(&ours(), "STATUS", "", "", &old).expect_err(1);
}

/// Makes a directory immutable (even root cannot create or remove entries)
/// and undoes it on drop, also when the test fails.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: chattr +i not supported on {}", dir.display());
        }
        ok.then(|| Immutable(dir.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn status_is_50_when_the_network_dir_cannot_be_written() {
    let d = temp_dir("hl-status-ro");
    let c = simple(d.path(), "10.56.0.0/24");
    add(&c, "a").expect_ok();
    call(&ours(), "STATUS", "", "", &c).expect_ok();
    let Some(_guard) = Immutable::new(&d.path().join(NET)) else {
        return;
    };
    let st = call(&ours(), "STATUS", "", "", &c).expect_err(50);
    assert!(
        st["msg"]
            .as_str()
            .unwrap()
            .starts_with("dataDir is not writable"),
        "{st}"
    );
}

#[test]
fn gc_keeps_going_past_errors_and_reports_them() {
    let d = temp_dir("hl-gc-err");
    let c = simple(d.path(), "10.57.0.0/24");
    for id in ["a", "b"] {
        add(&c, id).expect_ok();
    }
    let before = files(d.path());
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    {
        let Some(_guard) = Immutable::new(&d.path().join(NET)) else {
            return;
        };
        let err = call(&ours(), "GC", "", "", &gc).expect_err(5);
        let msg = err["msg"].as_str().unwrap();
        // Both failures are reported, not just the first.
        assert!(
            msg.contains("10.57.0.2") && msg.contains("10.57.0.3"),
            "{msg}"
        );
        assert_eq!(files(d.path()), before);
    }
    call(&ours(), "GC", "", "", &gc).expect_ok();
    assert!(reservation_names(d.path()).is_empty());
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let d = temp_dir("hl-del");
    let c = simple(d.path(), "10.52.0.0/24");
    add(&c, "a").expect_ok();
    for _ in 0..2 {
        Invocation::new(ours(), "DEL")
            .container_id("a")
            .config(&c)
            .run_in(None)
            .expect_ok();
    }
    del(&c, "never-added").expect_ok();
    assert!(reservation_names(d.path()).is_empty());
}

#[test]
fn check_compares_the_reservation_with_prev_result() {
    let d = temp_dir("hl-check");
    let c = simple(d.path(), "10.53.0.0/24");
    let result = add(&c, "a").expect_ok();
    let mut with_prev = c.clone();
    with_prev["prevResult"] = result.clone();
    call(&ours(), "CHECK", "a", "eth0", &with_prev).expect_ok();

    let mut wrong = c.clone();
    let mut prev = result;
    prev["ips"][0]["address"] = json!("10.53.0.77/24");
    wrong["prevResult"] = prev;
    let err = call(&ours(), "CHECK", "a", "eth0", &wrong).expect_err(999);
    assert_eq!(
        err["msg"],
        "host-local: address 10.53.0.77 in prevResult is not reserved for container a"
    );
    // Another ifname of the same container holds nothing.
    call(&ours(), "CHECK", "a", "eth1", &c).expect_err(999);
}

#[test]
fn routes_are_returned_with_every_field() {
    let d = temp_dir("hl-routes");
    let routes = json!([
        {"dst": "0.0.0.0/0", "gw": "10.58.0.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0},
        {"dst": "192.168.0.0/16"}
    ]);
    let c = conf(
        "1.1.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.58.0.0/24"}]], "routes": routes.clone()}),
    );
    assert_eq!(add(&c, "a").expect_ok()["routes"], routes);
}

#[test]
fn resolv_conf_fills_dns() {
    let d = temp_dir("hl-dns");
    let rc = d.path().join("resolv.conf");
    fs::write(
        &rc,
        "nameserver 10.0.0.53\ndomain example.net\nsearch a.example b.example\noptions ndots:2\n",
    )
    .unwrap();
    let c = conf(
        "1.1.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.54.0.0/24"}]], "resolvConf": rc.display().to_string()}),
    );
    let r = add(&c, "a").expect_ok();
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.0.0.53"], "domain": "example.net",
               "search": ["a.example", "b.example"], "options": ["ndots:2"]})
    );
}

#[test]
fn gc_cases() {
    let d = temp_dir("hl-gc");
    let c = simple(d.path(), "10.55.0.0/24");
    for id in ["a", "b", "c"] {
        add(&c, id).expect_ok();
    }
    call(&ours(), "ADD", "a", "eth1", &c).expect_ok();
    fs::write(d.path().join(NET).join("10.55.0.99"), "a").unwrap(); // legacy
    fs::write(d.path().join(NET).join("10.55.0.98"), "z").unwrap(); // legacy, gone
    let before = files(d.path());

    // No key at all: nothing removed.
    call(&ours(), "GC", "", "", &c).expect_ok();
    assert_eq!(files(d.path()), before);

    // Keep (a, eth0) and b: a's eth1, c and z go; a's legacy file stays.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "a", "ifname": "eth0"},
        {"containerID": "b", "ifname": "eth0"}
    ]);
    call(&ours(), "GC", "", "", &gc).expect_ok();
    assert_eq!(
        reservation_names(d.path()),
        BTreeSet::from(["10.55.0.2".into(), "10.55.0.3".into(), "10.55.0.99".into()])
    );

    // The older key name works too; an empty list removes every reservation
    // and never the bookkeeping files.
    let mut all = c.clone();
    all["cni.dev/attachments"] = json!([]);
    call(&ours(), "GC", "", "", &all).expect_ok();
    assert!(reservation_names(d.path()).is_empty());
    let left: Vec<String> = files(d.path()).into_keys().collect();
    assert_eq!(left, ["last_reserved_ip.0", "lock"]);
}

// ---------------------------------------------------------------- concurrency

#[test]
fn sixty_four_parallel_adds_get_sixty_four_addresses() {
    let d = temp_dir("hl-par");
    let c = simple(d.path(), "10.60.0.0/24");
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || add(&c, &format!("p{i}")).expect_ok())
        })
        .collect();
    let got: BTreeSet<String> = handles
        .into_iter()
        .flat_map(|h| addrs(&h.join().unwrap()))
        .collect();
    assert_eq!(got.len(), 64);
    let on_disk: BTreeSet<String> = reservation_names(d.path())
        .into_iter()
        .map(|n| format!("{n}/24"))
        .collect();
    assert_eq!(on_disk, got);
    // Each file names its own container.
    let f = files(d.path());
    let owners: BTreeSet<&str> = f
        .iter()
        .filter(|(n, _)| n.starts_with("10."))
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(owners.len(), 64);
}

/// The Go plugin and ours ADDing at the same time into one directory:
/// flock keeps them apart, and each sees the other's reservations.
#[test]
fn reference_and_ours_in_parallel_never_collide() {
    let Some(go) = reference_plugin("host-local") else {
        return;
    };
    let d = temp_dir("hl-mixed");
    let c = conf(
        "1.0.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.62.0.0/24"}]]}),
    );
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let c = c.clone();
            let bin = if i % 2 == 0 { ours() } else { go.clone() };
            std::thread::spawn(move || {
                let id = format!("m{i}");
                addrs(&call(&bin, "ADD", &id, "eth0", &c).expect_ok())
            })
        })
        .collect();
    let got: BTreeSet<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(got.len(), 32);
    // Ours finds and releases what Go reserved, and vice versa.
    del(&c, "m1").expect_ok();
    call(&go, "DEL", "m0", "eth0", &c).expect_ok();
    assert_eq!(reservation_names(d.path()).len(), 30);
    expect_msg(
        &call(&ours(), "CHECK", "m1", "eth0", &c),
        999,
        "host-local: Failed to find address added by container m1",
    );
    call(&ours(), "CHECK", "m3", "eth0", &c).expect_ok();
}

#[test]
fn parallel_add_del_churn_leaves_exactly_the_expected_files() {
    let d = temp_dir("hl-churn");
    let c = simple(d.path(), "10.61.0.0/26");
    let handles: Vec<_> = (0..8)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                for round in 0..6 {
                    let id = format!("w{w}r{round}");
                    add(&c, &id).expect_ok();
                    // Keep the last container of each worker.
                    if round < 5 {
                        del(&c, &id).expect_ok();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let f = files(d.path());
    let owners: BTreeSet<String> = f
        .iter()
        .filter(|(n, _)| n.starts_with("10."))
        .map(|(_, c)| c.clone())
        .collect();
    let expected: BTreeSet<String> = (0..8).map(|w| format!("w{w}r5\r\neth0")).collect();
    assert_eq!(owners, expected);
    assert_eq!(f.len(), 8 + 2, "{f:?}"); // + lock, last_reserved_ip.0
}

/// SIGKILL ADDs at assorted instants: every reservation file left behind is
/// complete, and the next run cleans up and works (the kernel drops the
/// flock of a dead process).
#[test]
fn killed_adds_never_leave_partial_reservations() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let d = temp_dir("hl-kill");
    let c = simple(d.path(), "10.63.0.0/24");
    let stdin = serde_json::to_vec(&c).unwrap();
    for i in 0..40u64 {
        let mut child = Command::new(ours())
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("k{i}"))
            .env("CNI_NETNS", "/var/run/netns/unused")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        std::thread::sleep(Duration::from_micros((i * 137) % 3000));
        let _ = child.kill();
        child.wait().unwrap();
    }
    for (name, contents) in files(d.path()) {
        if name.starts_with("10.") {
            let (id, ifname) = contents.split_once("\r\n").unwrap_or_default();
            assert!(
                id.starts_with('k') && ifname == "eth0",
                "{name}: {contents:?}"
            );
        }
    }
    // Later calls work and see everything the killed ones completed.
    let survivors = reservation_names(d.path()).len();
    eprintln!("{survivors} of 40 killed ADDs had completed their reservation");
    add(&c, "after").expect_ok();
    assert_eq!(reservation_names(d.path()).len(), survivors + 1);
    let staging = d.path().join(format!(".{NET}.cni-rs-index/tmp"));
    assert!(
        dir_entries(&staging).is_empty(),
        "{:?}",
        dir_entries(&staging)
    );
}

// ---------------------------------------------------------------- benchmark

/// Not a timed assertion: prints ADD and DEL cost with 0 and with 10,000
/// existing reservations for both implementations, in one run.
/// `cargo test -p integration --test host_local -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_add_del_with_ten_thousand_reservations() {
    let mut impls = vec![("ours", ours())];
    if let Some(go) = reference_plugin("host-local") {
        impls.push(("reference", go));
    }
    for (name, bin) in impls {
        let empty = measure(&bin, 0);
        let full = measure(&bin, 10_000);
        println!(
            "{name}: ADD {:?} -> {:?} (x{:.2}); DEL {:?} -> {:?} (x{:.2})",
            empty.0,
            full.0,
            full.0.as_secs_f64() / empty.0.as_secs_f64(),
            empty.1,
            full.1,
            full.1.as_secs_f64() / empty.1.as_secs_f64()
        );
    }
}

fn measure(bin: &Path, existing: u32) -> (Duration, Duration) {
    const ROUNDS: u32 = 100;
    let d = temp_dir("hl-bench");
    let c = conf(
        "1.0.0",
        d.path(),
        json!({"ranges": [[{"subnet": "10.128.0.0/16"}]]}),
    );
    let dir = d.path().join(NET);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..existing {
        let ip = std::net::Ipv4Addr::from(0x0a80_8000 + i);
        fs::write(dir.join(ip.to_string()), format!("old{i}\r\neth0")).unwrap();
    }
    // One untimed call so one-time work (our index build) is excluded.
    call(bin, "DEL", "warmup", "eth0", &c).expect_ok();
    let (mut a, mut r) = (Duration::ZERO, Duration::ZERO);
    for i in 0..ROUNDS {
        let id = format!("b{i}");
        let t = Instant::now();
        call(bin, "ADD", &id, "eth0", &c).expect_ok();
        a += t.elapsed();
        let t = Instant::now();
        call(bin, "DEL", &id, "eth0", &c).expect_ok();
        r += t.elapsed();
    }
    (a / ROUNDS, r / ROUNDS)
}
