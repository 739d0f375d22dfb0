//! vlan, end to end where the kernel can make 802.1Q links. Kernels built
//! without them (no module, "Unknown device type") get the tests that still
//! mean something there — ADD fails with a CNI error and leaves nothing,
//! DEL works without the master, bad input is refused — and the kernel
//! tests print SKIPPED. The exact RTM_NEWLINK bytes are tested in the
//! plugin and in `link`.

use integration::{
    Invocation, Netns, can_run, kernel_has_link_type, link_type_missing, plugin, reservations,
    temp_dir,
};
use serde_json::{Value, json};

struct Setup {
    host: Netns,
    data: tempfile::TempDir,
    conf: Value,
}

fn setup(extra: Value) -> Setup {
    let host = Netns::new("cnit-vlhost");
    host.run_ok("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
    host.run_ok("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
    host.run_ok(
        "ip",
        &[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p",
        ],
    );
    host.run_ok("ip", &["link", "set", "lan0", "up"]);
    host.run_ok("ip", &["link", "set", "lan0p", "up"]);
    host.wait_settled("lan0");
    let data = temp_dir("cnit-vl-ipam");
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "vlnet",
        "type": "vlan",
        "master": "lan0",
        "vlanId": 100,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "192.168.70.0/24", "rangeStart": "192.168.70.10"}]],
            "dataDir": data.path(),
        },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        conf[k] = v.clone();
    }
    Setup { host, data, conf }
}

impl Setup {
    fn reservations(&self) -> Vec<String> {
        reservations(&self.data.path().join("vlnet"))
    }

    fn inv(&self, cmd: &str, ctr: &Netns, id: &str) -> Invocation {
        Invocation::new(plugin("vlan"), cmd)
            .container_id(id)
            .netns(ctr)
            .config(&self.conf)
    }
}

#[test]
fn add_where_vlan_is_missing_fails_cleanly_and_del_needs_no_master() {
    if !can_run() || link_type_missing(&["vlan", "id", "5"]).is_none() {
        return;
    }
    let s = setup(json!({}));
    let ctr = Netns::bare("cnit-vlctr");
    let before = (s.host.snapshot(), ctr.snapshot());
    let e = s.inv("ADD", &ctr, "c1").run(&s.host).expect_err(999);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(msg.starts_with("failed to create vlan"), "{msg}");
    assert_eq!((s.host.snapshot(), ctr.snapshot()), before);
    assert!(s.reservations().is_empty());
    // DEL with the master gone (the reference's DEL fails here).
    s.host.run_ok("ip", &["link", "del", "lan0"]);
    s.inv("DEL", &ctr, "c1").run(&s.host).expect_ok();
    let e = Invocation::new(plugin("vlan"), "STATUS")
        .config(&s.conf)
        .run(&s.host)
        .expect_err(50);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("lan0"),
        "{e}"
    );
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    if !can_run() {
        return;
    }
    let ctr = Netns::bare("cnit-vlctr");
    for (extra, code, want) in [
        (json!({"master": ""}), 7, "\"master\" field is required"),
        (json!({"vlanId": 4095}), 7, "invalid VLAN ID 4095"),
        (
            json!({"mtu": 9000}),
            7,
            "invalid MTU 9000, must be [0, master MTU(1500)]",
        ),
        (json!({"ipam": {}}), 7, "failed to execute IPAM delegate"),
        (
            json!({"master": "nosuch0"}),
            999,
            "failed to lookup master \"nosuch0\"",
        ),
    ] {
        let s = setup(extra.clone());
        let before = (s.host.snapshot(), ctr.snapshot());
        let e = s.inv("ADD", &ctr, "c1").run(&s.host).expect_err(code);
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{extra}: {msg:?} !~ {want:?}");
        assert_eq!((s.host.snapshot(), ctr.snapshot()), before, "{extra}");
        assert!(s.reservations().is_empty());
    }
}

#[test]
fn kernel_vlan_link_has_the_id_and_del_leaves_nothing() {
    if !can_run() || !kernel_has_link_type(&["vlan", "id", "5"]) {
        return;
    }
    let s = setup(json!({"mtu": 1400}));
    let ctr = Netns::bare("cnit-vlctr");
    let r = s.inv("ADD", &ctr, "c1").run(&s.host).expect_ok();
    let l = ctr.ip_json(&["-d", "link", "show", "eth0"])[0].clone();
    assert_eq!(l["linkinfo"]["info_kind"], "vlan");
    assert_eq!(l["linkinfo"]["info_data"]["id"], 100);
    assert_eq!(l["mtu"], 1400);
    assert!(
        ctr.addresses("eth0")
            .contains(&"192.168.70.10/24".to_string())
    );
    let mut conf = s.conf.clone();
    conf["prevResult"] = r;
    Invocation::new(plugin("vlan"), "CHECK")
        .container_id("c1")
        .netns(&ctr)
        .config(&conf)
        .run(&s.host)
        .expect_ok();
    s.inv("DEL", &ctr, "c1").run(&s.host).expect_ok();
    assert_eq!(ctr.links(), ["lo"]);
    assert!(s.reservations().is_empty());
}

/// Reference #243: two attachments on one master and VLAN id. With the VLAN
/// link next to the master (`lan0.100`), each gets a macvlan on it; both
/// come up, and DEL removes only the containers' links.
#[test]
fn kernel_two_attachments_share_a_vlan_link_next_to_the_master() {
    if !can_run() || !kernel_has_link_type(&["vlan", "id", "5"]) {
        return;
    }
    let s = setup(json!({}));
    s.host.run_ok(
        "ip",
        &[
            "link", "add", "link", "lan0", "name", "lan0.100", "type", "vlan", "id", "100",
        ],
    );
    s.host.run_ok("ip", &["link", "set", "lan0.100", "up"]);
    let a = Netns::bare("cnit-vlctr");
    let b = Netns::bare("cnit-vlctr");
    for (ctr, id) in [(&a, "a"), (&b, "b")] {
        let r = s.inv("ADD", ctr, id).run(&s.host).expect_ok();
        let l = ctr.ip_json(&["-d", "link", "show", "eth0"])[0].clone();
        assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
        let mut conf = s.conf.clone();
        conf["prevResult"] = r;
        Invocation::new(plugin("vlan"), "CHECK")
            .container_id(id)
            .netns(ctr)
            .config(&conf)
            .run(&s.host)
            .expect_ok();
    }
    assert_eq!(s.reservations().len(), 2);
    for (ctr, id) in [(&a, "a"), (&b, "b")] {
        s.inv("DEL", ctr, id).run(&s.host).expect_ok();
        assert_eq!(ctr.links(), ["lo"]);
    }
    assert!(s.host.has_link("lan0.100"));
    assert!(s.reservations().is_empty());
}

/// Against the Go vlan where the kernel has vlan links (ids 100 and 101, as
/// one id cannot exist twice on a master): the same link attributes and
/// addresses, and each implementation's DEL removes what the other made.
#[test]
fn kernel_same_state_as_the_go_plugin_and_cross_del() {
    if !can_run() || !kernel_has_link_type(&["vlan", "id", "5"]) {
        return;
    }
    let Some(go) = integration::reference_plugin("vlan") else {
        return;
    };
    let ours = setup(json!({"mtu": 1400}));
    let a = Netns::bare("cnit-vlctr");
    let b = Netns::bare("cnit-vlctr");
    ours.inv("ADD", &a, "a").run(&ours.host).expect_ok();
    let go_data = temp_dir("cnit-vl-ipam");
    let mut go_conf = ours.conf.clone();
    go_conf["vlanId"] = json!(101);
    go_conf["ipam"]["dataDir"] = json!(go_data.path());
    Invocation::new(&go, "ADD")
        .container_id("b")
        .netns(&b)
        .config(&go_conf)
        .cni_path("/usr/lib/cni")
        .run(&ours.host)
        .expect_ok();
    let shape = |ns: &Netns| {
        let l = ns.ip_json(&["-d", "link", "show", "eth0"])[0].clone();
        json!({"kind": l["linkinfo"]["info_kind"], "protocol": l["linkinfo"]["info_data"]["protocol"],
               "mtu": l["mtu"], "flags": l["flags"]})
    };
    assert_eq!(shape(&a), shape(&b));
    let id = |ns: &Netns| {
        ns.ip_json(&["-d", "link", "show", "eth0"])[0]["linkinfo"]["info_data"]["id"].clone()
    };
    assert_eq!((id(&a), id(&b)), (json!(100), json!(101)));
    assert_eq!(a.global_addresses("eth0"), b.global_addresses("eth0"));
    Invocation::new(&go, "DEL")
        .container_id("a")
        .netns(&a)
        .config(&ours.conf)
        .cni_path("/usr/lib/cni")
        .run(&ours.host)
        .expect_ok();
    assert_eq!(a.links(), ["lo"]);
    assert!(ours.reservations().is_empty());
    Invocation::new(plugin("vlan"), "DEL")
        .container_id("b")
        .netns(&b)
        .config(&go_conf)
        .run(&ours.host)
        .expect_ok();
    assert_eq!(b.links(), ["lo"]);
}
