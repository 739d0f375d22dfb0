//! tuning, end to end: bridge + host-local + tuning chained as a runtime
//! chains them, each binary exec'd inside a throwaway "host" namespace, the
//! container a namespace too. Link state and sysctls are read from the
//! kernel inside the container; DEL must put back what ADD changed
//! (sysctls too, ours only) and leave nothing behind. The Go reference
//! tuning runs the same rows where it works; the rows where it fails are
//! run as ours-only, with its failure asserted.

use std::path::{Path, PathBuf};

use integration::{
    Invocation, Netns, Outcome, can_run, dir_entries, plugin, reference_plugin, temp_dir,
};
use serde_json::{Value, json};

const VERSION: &str = "1.0.0";

/// One bridge network and a tuning configuration with its own dataDir.
struct Chain {
    bridge: Value,
    tuning: Value,
    ipam: tempfile::TempDir,
    records: tempfile::TempDir,
}

impl Chain {
    fn new(tuning_keys: Value) -> Chain {
        let ipam = temp_dir("cnit-tun-ipam");
        let records = temp_dir("cnit-tun-data");
        let bridge = json!({
            "cniVersion": VERSION,
            "name": "tunnet",
            "type": "bridge",
            "bridge": "tun0",
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.66.0.0/24"}]],
                "dataDir": ipam.path(),
            },
        });
        let mut tuning = json!({
            "cniVersion": VERSION,
            "name": "tunnet",
            "type": "tuning",
            "dataDir": records.path(),
        });
        if let (Some(dst), Value::Object(src)) = (tuning.as_object_mut(), tuning_keys) {
            dst.extend(src);
        }
        Chain {
            bridge,
            tuning,
            ipam,
            records,
        }
    }

    fn bridge(&self, host: &Netns, ctr: &Netns, cmd: &str, id: &str, ifname: &str) -> Outcome {
        Invocation::new(plugin("bridge"), cmd)
            .container_id(id)
            .ifname(ifname)
            .netns(ctr)
            .config(&self.bridge)
            .run(host)
    }

    fn tuning_conf(&self, prev: Option<&Value>) -> Value {
        let mut c = self.tuning.clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn tuning(
        &self,
        bin: &Path,
        host: &Netns,
        ctr: &Netns,
        cmd: &str,
        id: &str,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Outcome {
        Invocation::new(bin, cmd)
            .container_id(id)
            .ifname(ifname)
            .netns(ctr)
            .config(&self.tuning_conf(prev))
            .run(host)
    }

    fn records(&self) -> Vec<String> {
        dir_entries(self.records.path())
    }
}

fn ours() -> PathBuf {
    plugin("tuning")
}

/// The link attributes tuning can change, as the kernel reports them.
fn link_state(ctr: &Netns, ifname: &str) -> String {
    let v = ctr.ip_json(&["-d", "link", "show", "dev", ifname]);
    let l = &v[0];
    let flags: Vec<&str> = l["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|f| matches!(*f, "PROMISC" | "ALLMULTI" | "UP"))
        .collect();
    format!(
        "mac={} mtu={} txqlen={} flags={}",
        l["address"].as_str().unwrap_or("?"),
        l["mtu"],
        l["txqlen"],
        flags.join(",")
    )
}

/// Sysctl values inside the container (a process inside the namespace
/// reads `/proc/sys`, so the values are the container's).
fn sysctls(ctr: &Netns, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            let out = ctr.exec("cat", &[&format!("/proc/sys/{p}")]);
            format!("{p}={}", String::from_utf8_lossy(&out.stdout).trim())
        })
        .collect()
}

const SYSCTL_PATHS: &[&str] = &[
    "net/ipv4/conf/eth0/rp_filter",
    "net/ipv4/conf/eth0/arp_ignore",
    "net/core/somaxconn",
];

fn full_keys() -> Value {
    json!({
        "sysctl": {
            "net.ipv4.conf.IFNAME.rp_filter": "2",
            "net.ipv4.conf.eth0.arp_ignore": "1",
            "net.core.somaxconn": "1234",
        },
        "mac": "0a:58:0a:42:00:99",
        "mtu": 1400,
        "promisc": true,
        "allmulti": true,
        "txQLen": 321,
    })
}

const TUNED_LINK: &str = "mac=0a:58:0a:42:00:99 mtu=1400 txqlen=321 flags=ALLMULTI,PROMISC,UP";

fn tuned_sysctls() -> Vec<String> {
    vec![
        "net/ipv4/conf/eth0/rp_filter=2".to_string(),
        "net/ipv4/conf/eth0/arp_ignore=1".to_string(),
        "net/core/somaxconn=1234".to_string(),
    ]
}

#[test]
fn chain_applies_checks_and_del_restores_everything() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let host_before = host.snapshot();
    let chain = Chain::new(full_keys());
    let prev = chain.bridge(&host, &ctr, "ADD", "ctr1", "eth0").expect_ok();
    let link_before = link_state(&ctr, "eth0");
    let sys_before = sysctls(&ctr, SYSCTL_PATHS);
    assert_ne!(link_before, TUNED_LINK);
    assert_ne!(sys_before, tuned_sysctls());

    let out = chain
        .tuning(&ours(), &host, &ctr, "ADD", "ctr1", "eth0", Some(&prev))
        .expect_ok();
    assert_eq!(link_state(&ctr, "eth0"), TUNED_LINK);
    assert_eq!(sysctls(&ctr, SYSCTL_PATHS), tuned_sysctls());
    // The result is prevResult with the container interface's new MAC.
    let mut want = prev.clone();
    for i in want["interfaces"].as_array_mut().unwrap() {
        if i["name"] == "eth0" {
            i["mac"] = json!("0a:58:0a:42:00:99");
        }
    }
    assert_eq!(out, want);
    assert_eq!(chain.records(), ["ctr1_eth0.json"]);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(chain.records.path().join("ctr1_eth0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["mtu"], json!(1500));
    assert_eq!(rec["promisc"], json!(false));
    assert_eq!(
        rec["sysctl"]["net/core/somaxconn"],
        json!(sys_before[2].split('=').nth(1).unwrap())
    );

    // CHECK passes, IFNAME sysctl included; then fails once state drifts.
    chain
        .tuning(&ours(), &host, &ctr, "CHECK", "ctr1", "eth0", Some(&out))
        .expect_ok();
    ctr.run_ok("ip", &["link", "set", "eth0", "mtu", "1450"]);
    let e = chain
        .tuning(&ours(), &host, &ctr, "CHECK", "ctr1", "eth0", Some(&out))
        .expect_err(999);
    assert!(e["msg"].as_str().unwrap().contains("MTU"), "{e}");
    ctr.run_ok("ip", &["link", "set", "eth0", "mtu", "1400"]);
    ctr.exec(
        "sh",
        &["-c", "echo 0 > /proc/sys/net/ipv4/conf/eth0/rp_filter"],
    );
    let e = chain
        .tuning(&ours(), &host, &ctr, "CHECK", "ctr1", "eth0", Some(&out))
        .expect_err(999);
    assert!(e["msg"].as_str().unwrap().contains("rp_filter"), "{e}");

    // A second ADD (a retried one) keeps the original values on record.
    chain
        .tuning(&ours(), &host, &ctr, "ADD", "ctr1", "eth0", Some(&prev))
        .expect_ok();

    // DEL puts back every link attribute and every sysctl, then twice is fine.
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "ctr1", "eth0", None)
        .expect_ok();
    assert_eq!(link_state(&ctr, "eth0"), link_before);
    assert_eq!(sysctls(&ctr, SYSCTL_PATHS), sys_before);
    assert!(chain.records().is_empty());
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "ctr1", "eth0", None)
        .expect_ok();
    chain.bridge(&host, &ctr, "DEL", "ctr1", "eth0").expect_ok();
    host.run_ok("ip", &["link", "del", "tun0"]);
    assert_eq!(host.snapshot(), host_before);
    assert!(
        dir_entries(&chain.ipam.path().join("tunnet"))
            .iter()
            .all(|f| f == "lock" || f.starts_with("last_reserved_ip"))
    );
}

#[test]
fn empty_config_passes_prev_result_through() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(json!({}));
    let prev = chain.bridge(&host, &ctr, "ADD", "ctr1", "eth0").expect_ok();
    let before = (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS));
    let out = chain
        .tuning(&ours(), &host, &ctr, "ADD", "ctr1", "eth0", Some(&prev))
        .expect_ok();
    assert_eq!(out, prev);
    assert_eq!(
        (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS)),
        before
    );
    assert!(chain.records().is_empty());
    // Without a prevResult it is an error, as in the reference.
    chain
        .tuning(&ours(), &host, &ctr, "ADD", "ctr1", "eth0", None)
        .expect_err(7);
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "ctr1", "eth0", None)
        .expect_ok();
}

/// The reference and ours on the same row, each in its own container:
/// the same link state and sysctls after ADD; after DEL both restore the
/// link, only ours restores the sysctls.
#[test]
fn differential_against_reference() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("tuning") else {
        return;
    };
    let host = Netns::new("cnit-tun-h");
    // txQLen is newer than the reference installed here (1.1.1 ignores
    // it); it is covered by the ours-only test above.
    let mut keys = full_keys();
    keys.as_object_mut().unwrap().remove("txQLen");
    let chain = Chain::new(keys);
    let tuned_link = TUNED_LINK.replace("txqlen=321", "txqlen=1000");
    let mut seen = vec![];
    for (id, bin) in [("ours", ours()), ("ref", reference.clone())] {
        let ctr = Netns::new("cnit-tun-c");
        let prev = chain.bridge(&host, &ctr, "ADD", id, "eth0").expect_ok();
        let link_before = link_state(&ctr, "eth0");
        let sys_before = sysctls(&ctr, SYSCTL_PATHS);
        let out = chain
            .tuning(&bin, &host, &ctr, "ADD", id, "eth0", Some(&prev))
            .expect_ok();
        let after = (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS));
        assert_eq!(after.0, tuned_link, "{id}");
        assert_eq!(after.1, tuned_sysctls(), "{id}");
        // The result: prevResult with the new MAC on eth0 (addresses differ
        // between the two containers, so compare interfaces only).
        let eth0_mac = out["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == "eth0")
            .map(|i| i["mac"].clone());
        let shape = integration::normalize_result(out)["interfaces"].clone();
        seen.push((shape, eth0_mac, after));
        chain
            .tuning(&bin, &host, &ctr, "DEL", id, "eth0", None)
            .expect_ok();
        assert_eq!(link_state(&ctr, "eth0"), link_before, "{id}: link restored");
        let sys_after = sysctls(&ctr, SYSCTL_PATHS);
        if id == "ours" {
            assert_eq!(sys_after, sys_before, "ours restores sysctls");
        } else {
            // ★ The reference never restores sysctls.
            assert_eq!(
                sys_after,
                tuned_sysctls(),
                "reference left the sysctls as ADD set them"
            );
        }
        assert!(chain.records().is_empty(), "{id}: {:?}", chain.records());
        chain.bridge(&host, &ctr, "DEL", id, "eth0").expect_ok();
    }
    assert_eq!(seen[0], seen[1], "same result and state");
}

/// Records are interchangeable: each plugin's DEL undoes the other's ADD
/// (the link attributes; the reference ignores our `sysctl` entry).
#[test]
fn cross_del_with_reference() {
    if !can_run() {
        return;
    }
    let Some(reference) = reference_plugin("tuning") else {
        return;
    };
    let host = Netns::new("cnit-tun-h");
    let keys = json!({"mac": "0a:58:0a:42:00:98", "mtu": 1300, "promisc": true, "allmulti": true});
    let chain = Chain::new(keys);
    for (add, del) in [(ours(), reference.clone()), (reference.clone(), ours())] {
        let ctr = Netns::new("cnit-tun-c");
        let prev = chain.bridge(&host, &ctr, "ADD", "x1", "eth0").expect_ok();
        let before = link_state(&ctr, "eth0");
        chain
            .tuning(&add, &host, &ctr, "ADD", "x1", "eth0", Some(&prev))
            .expect_ok();
        assert_eq!(
            link_state(&ctr, "eth0"),
            "mac=0a:58:0a:42:00:98 mtu=1300 txqlen=1000 flags=ALLMULTI,PROMISC,UP"
        );
        chain
            .tuning(&del, &host, &ctr, "DEL", "x1", "eth0", None)
            .expect_ok();
        assert_eq!(
            link_state(&ctr, "eth0"),
            before,
            "{} ADD, {} DEL",
            add.display(),
            del.display()
        );
        assert!(chain.records().is_empty());
        chain.bridge(&host, &ctr, "DEL", "x1", "eth0").expect_ok();
    }
}

/// ★ `args.cni.sysctl` without a top-level `sysctl`: the reference
/// panics (assignment to a nil map); ours applies and restores it.
#[test]
fn args_cni_sysctl_alone_ours_only() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(json!({"args": {"cni": {"sysctl": {"net.core.somaxconn": "777"}}}}));
    let prev = chain.bridge(&host, &ctr, "ADD", "a1", "eth0").expect_ok();
    let before = sysctls(&ctr, &["net/core/somaxconn"]);
    if let Some(reference) = reference_plugin("tuning") {
        let out = chain.tuning(&reference, &host, &ctr, "ADD", "a1", "eth0", Some(&prev));
        assert!(!out.success());
        assert!(
            out.stderr.contains("assignment to entry in nil map"),
            "{}",
            out.stderr
        );
        assert_eq!(sysctls(&ctr, &["net/core/somaxconn"]), before);
    }
    chain
        .tuning(&ours(), &host, &ctr, "ADD", "a1", "eth0", Some(&prev))
        .expect_ok();
    assert_eq!(
        sysctls(&ctr, &["net/core/somaxconn"]),
        ["net/core/somaxconn=777"]
    );
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "a1", "eth0", None)
        .expect_ok();
    assert_eq!(sysctls(&ctr, &["net/core/somaxconn"]), before);
    chain.bridge(&host, &ctr, "DEL", "a1", "eth0").expect_ok();
}

/// ★ A dotted interface name: `IFNAME` must name the kernel's directory
/// `conf/eth0.100`, and CHECK must substitute `IFNAME` too.
#[test]
fn dotted_ifname_and_check_with_ifname_ours_only() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_ignore": "2"}}));
    let prev = chain
        .bridge(&host, &ctr, "ADD", "d1", "eth0.100")
        .expect_ok();
    let key = ["net/ipv4/conf/eth0.100/arp_ignore"];
    let before = sysctls(&ctr, &key);
    assert_eq!(before, ["net/ipv4/conf/eth0.100/arp_ignore=0"]);
    if let Some(reference) = reference_plugin("tuning") {
        // ★ The reference (1.1.1) turns every dot into a `/`, the one in
        // the name too, and CHECK does not substitute IFNAME at all.
        let e = chain
            .tuning(
                &reference,
                &host,
                &ctr,
                "ADD",
                "d1",
                "eth0.100",
                Some(&prev),
            )
            .expect_err(999);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("conf/eth0/100/arp_ignore"),
            "{e}"
        );
        let e = chain
            .tuning(
                &reference,
                &host,
                &ctr,
                "CHECK",
                "d1",
                "eth0.100",
                Some(&prev),
            )
            .expect_err(999);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("conf/IFNAME/arp_ignore"),
            "{e}"
        );
        assert_eq!(sysctls(&ctr, &key), before);
        chain
            .tuning(&reference, &host, &ctr, "DEL", "d1", "eth0.100", None)
            .expect_ok();
    }
    chain
        .tuning(&ours(), &host, &ctr, "ADD", "d1", "eth0.100", Some(&prev))
        .expect_ok();
    assert_eq!(sysctls(&ctr, &key), ["net/ipv4/conf/eth0.100/arp_ignore=2"]);
    chain
        .tuning(&ours(), &host, &ctr, "CHECK", "d1", "eth0.100", Some(&prev))
        .expect_ok();
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "d1", "eth0.100", None)
        .expect_ok();
    assert_eq!(sysctls(&ctr, &key), before);
    chain
        .bridge(&host, &ctr, "DEL", "d1", "eth0.100")
        .expect_ok();
}

/// Bad input: a CNI error naming the key and the value, and nothing in
/// the container or the record directory changed.
#[test]
fn bad_input_changes_nothing() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let base = Chain::new(json!({}));
    let prev = base.bridge(&host, &ctr, "ADD", "b1", "eth0").expect_ok();
    let allow = temp_dir("cnit-tun-allow");
    let allow_file = allow.path().join("allowlist.conf");
    std::fs::write(
        &allow_file,
        "^net\\.core\\.somaxconn$\n\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n",
    )
    .unwrap();
    let cases: &[(Value, &[&str], bool)] = &[
        (
            json!({"sysctl": {"net.core.somaxconn": "5", "kernel.hostname": "x"}}),
            &["kernel.hostname", "\"x\""],
            false,
        ),
        (
            json!({"sysctl": {"net.core.somaxconn": "5", "net.ipv4.ip_forward": "1"}}),
            &["net.ipv4.ip_forward", "\"1\""],
            true,
        ),
        (
            json!({"sysctl": {"net.core.somaxconn": "5"}, "mac": "0a:58:zz:00:00:01"}),
            &["0a:58:zz:00:00:01", "mac"],
            false,
        ),
        (
            json!({"sysctl": {"net.core.somaxconn": "5"}, "mtu": 70000}),
            &["mtu", "70000"],
            false,
        ),
        (
            json!({"sysctl": {"net.core.somaxconn": "5"}, "args": {"cni": {"mtu": 10}}}),
            &["args.cni.mtu", "10"],
            false,
        ),
        (
            json!({"sysctl": {"net.core.somaxconn": "5"}, "txQLen": -1}),
            &["txQLen", "-1"],
            false,
        ),
    ];
    let before = (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS));
    for (keys, words, with_allowlist) in cases {
        let chain = Chain::new(keys.clone());
        let mut inv = Invocation::new(ours(), "ADD")
            .container_id("b1")
            .netns(&ctr)
            .config(&chain.tuning_conf(Some(&prev)));
        if *with_allowlist {
            inv = inv.env("CNI_TUNING_ALLOWLIST", &allow_file.display().to_string());
        }
        let e = inv.run(&host).expect_err(7);
        let msg = e["msg"].as_str().unwrap();
        for w in *words {
            assert!(msg.contains(w), "{keys}: {msg:?} lacks {w:?}");
        }
        assert_eq!(
            (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS)),
            before,
            "{keys}"
        );
        assert!(chain.records().is_empty(), "{keys}");
    }
    // The allowlist admits what it lists (IFNAME keys match before substitution).
    let chain = Chain::new(
        json!({"sysctl": {"net.core.somaxconn": "555", "net.ipv4.conf.IFNAME.arp_ignore": "2"}}),
    );
    Invocation::new(ours(), "ADD")
        .container_id("b1")
        .netns(&ctr)
        .env("CNI_TUNING_ALLOWLIST", &allow_file.display().to_string())
        .config(&chain.tuning_conf(Some(&prev)))
        .run(&host)
        .expect_ok();
    assert_eq!(
        sysctls(&ctr, &["net/core/somaxconn"]),
        ["net/core/somaxconn=555"]
    );
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "b1", "eth0", None)
        .expect_ok();
    assert_eq!(
        (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS)),
        before
    );
    base.bridge(&host, &ctr, "DEL", "b1", "eth0").expect_ok();
}

/// DEL after the namespace is gone removes the record; GC removes the
/// records of attachments not in `cni.dev/valid-attachments`.
#[test]
fn del_without_netns_and_gc_remove_records() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let chain = Chain::new(json!({"mtu": 1280}));
    let keep = Netns::new("cnit-tun-c");
    let prev_keep = chain
        .bridge(&host, &keep, "ADD", "keep", "eth0")
        .expect_ok();
    chain
        .tuning(
            &ours(),
            &host,
            &keep,
            "ADD",
            "keep",
            "eth0",
            Some(&prev_keep),
        )
        .expect_ok();
    let mut gone = vec![];
    for id in ["gone1", "gone2"] {
        let ctr = Netns::new("cnit-tun-c");
        let prev = chain.bridge(&host, &ctr, "ADD", id, "eth0").expect_ok();
        chain
            .tuning(&ours(), &host, &ctr, "ADD", id, "eth0", Some(&prev))
            .expect_ok();
        gone.push(ctr);
    }
    assert_eq!(
        chain.records(),
        ["gone1_eth0.json", "gone2_eth0.json", "keep_eth0.json"]
    );
    // gone1: its namespace is removed, then the runtime's DEL.
    let path = gone.remove(0).path_str();
    Invocation::new(ours(), "DEL")
        .container_id("gone1")
        .netns_path(&path)
        .config(&chain.tuning_conf(None))
        .run(&host)
        .expect_ok();
    assert_eq!(chain.records(), ["gone2_eth0.json", "keep_eth0.json"]);
    // gone2: forgotten by the runtime; GC keeps only "keep".
    let mut gc = chain.tuning_conf(None);
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    Invocation::new(ours(), "GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run(&host)
        .expect_ok();
    assert_eq!(chain.records(), ["keep_eth0.json"]);
    let mut st = chain.tuning_conf(None);
    st["cniVersion"] = json!("1.1.0");
    Invocation::new(ours(), "STATUS")
        .unset("CNI_IFNAME")
        .config(&st)
        .run(&host)
        .expect_ok();
    chain
        .tuning(&ours(), &host, &keep, "DEL", "keep", "eth0", None)
        .expect_ok();
    assert!(chain.records().is_empty());
    assert!(link_state(&keep, "eth0").contains("mtu=1500"));
    for (id, ctr) in [("keep", &keep), ("gone2", &gone[0])] {
        chain.bridge(&host, ctr, "DEL", id, "eth0").expect_ok();
    }
    Invocation::new(plugin("bridge"), "DEL")
        .container_id("gone1")
        .netns_path(&path)
        .config(&chain.bridge)
        .run(&host)
        .expect_ok();
}

/// Programs one tuning run exec'd (under `strace -f`), besides itself.
fn execs(verb: &str, conf: &Value, ctr: &Netns, host: &Netns) -> Vec<String> {
    use std::io::Write;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = host
        .command("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(ours())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "p1")
        .env("CNI_NETNS", ctr.path_str())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", integration::bin_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{verb}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("execve(\"").map(|(_, r)| r))
        .filter_map(|r| r.split('"').next())
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .filter(|p| p != "tuning")
        .collect()
}

/// Link changes go over rtnetlink and sysctls through /proc: ADD, CHECK
/// and DEL exec nothing.
#[test]
fn no_process_per_verb() {
    if !can_run() {
        return;
    }
    if which_strace().is_none() {
        eprintln!("SKIPPED: strace not installed");
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(full_keys());
    let prev = chain.bridge(&host, &ctr, "ADD", "p1", "eth0").expect_ok();
    let before = (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS));
    let conf = chain.tuning_conf(Some(&prev));
    assert_eq!(execs("ADD", &conf, &ctr, &host), Vec::<String>::new());
    assert_eq!(link_state(&ctr, "eth0"), TUNED_LINK);
    assert_eq!(execs("CHECK", &conf, &ctr, &host), Vec::<String>::new());
    assert_eq!(
        execs("DEL", &chain.tuning_conf(None), &ctr, &host),
        Vec::<String>::new()
    );
    assert_eq!(
        (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS)),
        before
    );
    chain.bridge(&host, &ctr, "DEL", "p1", "eth0").expect_ok();
}

fn which_strace() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("strace"))
            .find(|f| f.is_file())
    })
}

/// The MAC's sources as the reference orders them: `mac` < CNI_ARGS
/// `MAC` < `runtimeConfig.mac` (the `mac` capability) < `args.cni.mac`.
#[test]
fn mac_from_cni_args_and_runtime_config() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(json!({"mac": "0a:58:00:00:00:01"}));
    let prev = chain.bridge(&host, &ctr, "ADD", "m1", "eth0").expect_ok();
    let before = link_state(&ctr, "eth0");
    let mac_of = |ctr: &Netns| {
        link_state(ctr, "eth0")
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let run = |conf: &Value, args: &str| {
        let out = Invocation::new(ours(), "ADD")
            .container_id("m1")
            .netns(&ctr)
            .args(args)
            .config(conf)
            .run(&host)
            .expect_ok();
        let eth0 = out["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "eth0")
            .unwrap()
            .clone();
        assert_eq!(
            format!("mac={}", eth0["mac"].as_str().unwrap()),
            mac_of(&ctr)
        );
    };
    let mut conf = chain.tuning_conf(Some(&prev));
    run(&conf, "");
    assert_eq!(mac_of(&ctr), "mac=0a:58:00:00:00:01");
    run(
        &conf,
        "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=0a:58:00:00:00:02",
    );
    assert_eq!(mac_of(&ctr), "mac=0a:58:00:00:00:02");
    conf["runtimeConfig"] = json!({"mac": "0a:58:00:00:00:03"});
    run(&conf, "MAC=0a:58:00:00:00:02");
    assert_eq!(mac_of(&ctr), "mac=0a:58:00:00:00:03");
    conf["args"] = json!({"cni": {"mac": "0a:58:00:00:00:04"}});
    run(&conf, "MAC=0a:58:00:00:00:02");
    assert_eq!(mac_of(&ctr), "mac=0a:58:00:00:00:04");
    // An unknown CNI_ARGS key without IgnoreUnknown is refused, as in the reference.
    Invocation::new(ours(), "ADD")
        .container_id("m1")
        .netns(&ctr)
        .args("FOO=1")
        .config(&conf)
        .run(&host)
        .expect_err(4);
    // Four ADDs, one record: DEL goes back to the MAC before the first.
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "m1", "eth0", None)
        .expect_ok();
    assert_eq!(link_state(&ctr, "eth0"), before);
    chain.bridge(&host, &ctr, "DEL", "m1", "eth0").expect_ok();
}

/// An ADD the kernel refuses halfway (a multicast MAC passes the syntax
/// check; the kernel refuses it after the sysctls and before the MTU are
/// set) undoes what it did: no sysctl changed, no record.
#[test]
fn add_refused_by_the_kernel_undoes_itself() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let mut keys = full_keys();
    keys["mac"] = json!("01:00:5e:00:00:01");
    let chain = Chain::new(keys);
    let prev = chain.bridge(&host, &ctr, "ADD", "r1", "eth0").expect_ok();
    let before = (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS));
    let out = chain.tuning(&ours(), &host, &ctr, "ADD", "r1", "eth0", Some(&prev));
    let e = out.expect_err(999);
    assert!(e["msg"].as_str().unwrap().contains("MAC"), "{e}");
    assert_eq!(
        (link_state(&ctr, "eth0"), sysctls(&ctr, SYSCTL_PATHS)),
        before
    );
    assert!(chain.records().is_empty(), "{:?}", chain.records());
    chain
        .tuning(&ours(), &host, &ctr, "DEL", "r1", "eth0", None)
        .expect_ok();
    chain.bridge(&host, &ctr, "DEL", "r1", "eth0").expect_ok();
}

/// A sysctl key given twice is refused (as the reference refuses it),
/// before anything changes.
#[test]
fn duplicate_sysctl_key_is_refused() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-tun-h");
    let ctr = Netns::new("cnit-tun-c");
    let chain = Chain::new(json!({}));
    let prev = chain.bridge(&host, &ctr, "ADD", "u1", "eth0").expect_ok();
    let before = sysctls(&ctr, SYSCTL_PATHS);
    let text = format!(
        r#"{{"cniVersion":"{VERSION}","name":"tunnet","type":"tuning","dataDir":{},
            "sysctl":{{"net.core.somaxconn":"100","net.core.somaxconn":"200"}},"prevResult":{}}}"#,
        json!(chain.records.path()),
        prev
    );
    let e = Invocation::new(ours(), "ADD")
        .container_id("u1")
        .netns(&ctr)
        .raw_stdin(text.as_bytes())
        .run(&host)
        .expect_err(7);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("duplicated sysctl keys") && msg.contains("net.core.somaxconn"),
        "{msg}"
    );
    assert_eq!(sysctls(&ctr, SYSCTL_PATHS), before);
    assert!(chain.records().is_empty());
    chain.bridge(&host, &ctr, "DEL", "u1", "eth0").expect_ok();
}
