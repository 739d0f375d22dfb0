//! firewall, end to end: bridge + host-local + firewall chained as a
//! runtime chains them, the binaries exec'd inside a throwaway "host"
//! namespace whose FORWARD policy is DROP (so only the firewall's rules let
//! traffic through), containers and an outside client as namespaces too.
//! Against the Go reference (`/usr/lib/cni/firewall`, v1.1.1 here): the same
//! `iptables-save` and the same nf_tables expressions after ADD, and each
//! plugin's DEL removes the other's rules.

use std::path::PathBuf;

use integration::ProcessLog;
use integration::{Invocation, Netns, can_run, plugin, reference_plugin, temp_dir};
use serde_json::{Value, json};

/// One bridge network with host-local and a firewall configuration.
struct Net {
    name: String,
    bridge_conf: Value,
    fw_conf: Value,
    _ipam: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Net {
    /// Network `name` on bridge `br` with subnet `10.<octet>.0.0/24`.
    fn new(name: &str, br: &str, octet: u8, fw_extra: Value) -> Net {
        let ipam = temp_dir("cnit-fw-ipam");
        let data = temp_dir("cnit-fw-data");
        let bridge_conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": br,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.{octet}.0.0/24")}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam.path(),
            },
        });
        let mut fw_conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "firewall",
            "dataDir": data.path(),
        });
        if let (Some(dst), Value::Object(src)) = (fw_conf.as_object_mut(), fw_extra) {
            dst.extend(src);
        }
        Net {
            name: name.to_string(),
            bridge_conf,
            fw_conf,
            _ipam: ipam,
            data,
        }
    }

    fn fw_config(&self, prev: Option<&Value>) -> Value {
        let mut c = self.fw_conf.clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn fw(
        &self,
        bin: PathBuf,
        cmd: &str,
        id: &str,
        ctr: &Netns,
        prev: Option<&Value>,
    ) -> Invocation {
        Invocation::new(bin, cmd)
            .container_id(id)
            .netns(ctr)
            .config(&self.fw_config(prev))
    }

    fn bridge_add(&self, host: &Netns, ctr: &Netns, id: &str) -> Value {
        Invocation::new(plugin("bridge"), "ADD")
            .container_id(id)
            .netns(ctr)
            .config(&self.bridge_conf)
            .run(host)
            .expect_ok()
    }

    /// The chain's ADD with `bin` as the firewall; returns its result.
    fn add_with(&self, bin: PathBuf, host: &Netns, ctr: &Netns, id: &str) -> Value {
        let prev = self.bridge_add(host, ctr, id);
        let out = self
            .fw(bin, "ADD", id, ctr, Some(&prev))
            .run(host)
            .expect_ok();
        assert_eq!(out, prev, "firewall must pass prevResult through unchanged");
        out
    }

    fn add(&self, host: &Netns, ctr: &Netns, id: &str) -> Value {
        self.add_with(plugin("firewall"), host, ctr, id)
    }

    /// The chain's DEL in reverse order, with the prevResult as a runtime
    /// sends it.
    fn del_with(&self, bin: PathBuf, host: &Netns, ctr: &Netns, id: &str, prev: &Value) {
        self.fw(bin, "DEL", id, ctr, Some(prev))
            .run(host)
            .expect_ok();
        Invocation::new(plugin("bridge"), "DEL")
            .container_id(id)
            .netns(ctr)
            .config(&self.bridge_conf)
            .run(host)
            .expect_ok();
    }

    fn del(&self, host: &Netns, ctr: &Netns, id: &str, prev: &Value) {
        self.del_with(plugin("firewall"), host, ctr, id, prev);
    }
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// A host whose FORWARD chain drops what no rule accepts, with an outside
/// client routed to it (10.99.0.2, the host being 10.99.0.1) that reaches
/// every container subnet through it.
fn drop_forward_host() -> (Netns, Netns) {
    let host = Netns::new("cnit-host");
    let outside = Netns::new("cnit-out");
    host.wire_to(("up0", "10.99.0.1/24"), &outside, ("out0", "10.99.0.2/24"));
    outside.run_ok("ip", &["route", "add", "10.0.0.0/8", "via", "10.99.0.1"]);
    host.run_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    host.run_ok("iptables", &["-P", "FORWARD", "DROP"]);
    (host, outside)
}

/// Rules of the `filter` table (both families) naming `ip`.
fn rules_naming(host: &Netns, ip: &str) -> Vec<String> {
    let mut out = vec![];
    for prog in ["iptables-save", "ip6tables-save"] {
        let text = host.run_ok(prog, &["-t", "filter"]);
        out.extend(
            text.lines()
                .filter(|l| l.starts_with("-A ") && l.contains(&format!(" {ip}/")))
                .map(str::to_string),
        );
    }
    out
}

/// `iptables-save -t filter` of both families without comments lines and
/// counters: what two hosts must agree on.
fn filter_tables(host: &Netns) -> String {
    let mut s = String::new();
    for prog in ["iptables-save", "ip6tables-save"] {
        for line in host.run_ok(prog, &["-t", "filter"]).lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.find(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

/// `nft --debug=netlink` of the iptables-nft filter tables: the
/// expressions each rule really holds, handles left out.
fn filter_expressions(host: &Netns) -> String {
    let mut s = String::new();
    for family in ["ip", "ip6"] {
        let out = host.exec(
            "nft",
            &["--debug=netlink", "list", "table", family, "filter"],
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix(&format!("{family} filter ")) {
                // `<family> filter <chain> <handle> [<position>]`
                let chain = rest.split(' ').next().unwrap_or_default();
                s.push_str(&format!("{family} filter {chain}\n"));
            } else if line.trim_start().starts_with('[') || line.trim_start().starts_with("type ") {
                s.push_str(line);
                s.push('\n');
            } else if line.is_empty() {
                s.push('\n');
            }
        }
    }
    s
}

#[test]
fn forwarded_traffic_is_allowed_out_and_replies_in_and_del_leaves_nothing() {
    if !can_run() {
        return;
    }
    let (host, outside) = drop_forward_host();
    let c = Netns::bare("cnit-ctr");
    let net = Net::new("fwnet", "fwbr0", 88, json!({"backend": "iptables"}));
    let prev = net.bridge_add(&host, &c, "fw-a");
    let ip = ip_of(&prev);
    // FORWARD drops: nothing leaves the container yet.
    assert!(!c.ping("10.99.0.2"), "FORWARD DROP should stop the ping");
    let out = net
        .fw(plugin("firewall"), "ADD", "fw-a", &c, Some(&prev))
        .run(&host)
        .expect_ok();
    assert_eq!(out, prev);
    assert!(c.ping("10.99.0.2"), "the container reaches the outside");
    // Only replies come in: a new connection from outside is dropped.
    assert!(
        !outside.ping(&ip),
        "outside must not open connections to {ip}"
    );
    net.fw(plugin("firewall"), "CHECK", "fw-a", &c, Some(&prev))
        .run(&host)
        .expect_ok();
    assert_eq!(
        rules_naming(&host, &ip).len(),
        2,
        "{:?}",
        rules_naming(&host, &ip)
    );

    net.del(&host, &c, "fw-a", &prev);
    assert!(
        rules_naming(&host, &ip).is_empty(),
        "{:?}",
        rules_naming(&host, &ip)
    );
    // The shared chains stay, as the reference leaves them.
    let saved = filter_tables(&host);
    assert!(
        saved.contains(
            "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"
        ),
        "{saved}"
    );
    // DEL again, and DEL without a prevResult: idempotent.
    net.fw(plugin("firewall"), "DEL", "fw-a", &c, Some(&prev))
        .run(&host)
        .expect_ok();
    net.fw(plugin("firewall"), "DEL", "fw-a", &c, None)
        .run(&host)
        .expect_ok();
    assert!(integration::dir_entries(&net.data.path().join(&net.name)).is_empty());
}

#[test]
fn del_without_prev_result_uses_the_record() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let c = Netns::bare("cnit-ctr");
    let net = Net::new("fwrec", "fwbr0", 87, json!({}));
    let prev = net.add(&host, &c, "fw-r");
    let ip = ip_of(&prev);
    assert_eq!(rules_naming(&host, &ip).len(), 2);
    // A runtime that lost its cache sends no prevResult.
    net.fw(plugin("firewall"), "DEL", "fw-r", &c, None)
        .run(&host)
        .expect_ok();
    assert!(
        rules_naming(&host, &ip).is_empty(),
        "{:?}",
        rules_naming(&host, &ip)
    );
    net.del(&host, &c, "fw-r", &prev);
}

#[test]
fn same_bridge_networks_cannot_reach_each_other_but_an_open_one_reaches_them() {
    if !can_run() {
        return;
    }
    let (host, outside) = drop_forward_host();
    let iso_a = Net::new(
        "fwisoa",
        "fwbra",
        81,
        json!({"ingressPolicy": "same-bridge"}),
    );
    let iso_b = Net::new("fwisob", "fwbrb", 82, json!({"ingressPolicy": "isolated"}));
    let open = Net::new("fwopen", "fwbro", 83, json!({}));
    let (ca, cb, co) = (
        Netns::bare("cnit-ctr"),
        Netns::bare("cnit-ctr"),
        Netns::bare("cnit-ctr"),
    );
    let ra = iso_a.add(&host, &ca, "fw-ia");
    let rb = iso_b.add(&host, &cb, "fw-ib");
    let ro = open.add(&host, &co, "fw-io");
    let (ipa, ipb, ipo) = (ip_of(&ra), ip_of(&rb), ip_of(&ro));
    assert!(!ca.ping(&ipb), "same-bridge → isolated network");
    assert!(!cb.ping(&ipa), "isolated → same-bridge network");
    assert!(co.ping(&ipa), "the open network reaches a same-bridge one");
    assert!(co.ping(&ipb), "the open network reaches an isolated one");
    assert!(
        ca.ping("10.99.0.2") && cb.ping("10.99.0.2"),
        "both still reach the outside"
    );
    // Docker's semantics: isolation drops traffic *into* an isolated
    // bridge from another one; an open network is still reachable.
    assert!(ca.ping(&ipo), "a same-bridge network reaches an open one");
    assert!(!outside.ping(&ipa));
    let saved = filter_tables(&host);
    for line in [
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j CNI-ISOLATION-STAGE-1",
        "-A CNI-ISOLATION-STAGE-1 -i fwbrb -o fwbrb -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j DROP",
        "-A CNI-ISOLATION-STAGE-1 -i fwbra ! -o fwbra -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-2",
        "-A CNI-ISOLATION-STAGE-2 -o fwbrb -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\" -j DROP",
    ] {
        assert!(saved.contains(line), "missing {line}:\n{saved}");
    }
    // The jump to the isolation chains comes before CNI-FORWARD's.
    let forward: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("-A FORWARD "))
        .collect();
    assert_eq!(forward.len(), 2, "{forward:?}");
    assert!(
        forward[0].ends_with("-j CNI-ISOLATION-STAGE-1"),
        "{forward:?}"
    );
    // A second ADD on the same bridge adds no isolation rule twice.
    let ca2 = Netns::bare("cnit-ctr");
    let ra2 = iso_a.add(&host, &ca2, "fw-ia2");
    assert_eq!(
        filter_tables(&host).lines().count(),
        saved.lines().count() + 2
    );
    for (net, ctr, id, r) in [
        (&iso_a, &ca, "fw-ia", &ra),
        (&iso_a, &ca2, "fw-ia2", &ra2),
        (&iso_b, &cb, "fw-ib", &rb),
        (&open, &co, "fw-io", &ro),
    ] {
        net.fw(plugin("firewall"), "CHECK", id, ctr, Some(r))
            .run(&host)
            .expect_ok();
        net.del(&host, ctr, id, r);
        assert!(rules_naming(&host, &ip_of(r)).is_empty());
    }
}

#[test]
fn no_process_once_the_chains_exist() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let net = Net::new(
        "fwproc",
        "fwbr0",
        86,
        json!({"ingressPolicy": "same-bridge"}),
    );
    let log = ProcessLog::new();
    let ctrs: Vec<Netns> = (0..2).map(|_| Netns::bare("cnit-ctr")).collect();
    let mut counts = vec![];
    let mut results = vec![];
    for (i, c) in ctrs.iter().enumerate() {
        let id = format!("fw-p{i}");
        let prev = net.bridge_add(&host, c, &id);
        log.take();
        for cmd in ["ADD", "CHECK"] {
            net.fw(plugin("firewall"), cmd, &id, c, Some(&prev))
                .env("PATH", &log.path_env())
                .run(&host)
                .expect_ok();
            counts.push((format!("{cmd} {i}"), log.take()));
        }
        results.push(prev);
    }
    for (i, c) in ctrs.iter().enumerate() {
        net.fw(
            plugin("firewall"),
            "DEL",
            &format!("fw-p{i}"),
            c,
            Some(&results[i]),
        )
        .env("PATH", &log.path_env())
        .run(&host)
        .expect_ok();
        counts.push((format!("DEL {i}"), log.take()));
    }
    eprintln!("PROCESSES {counts:?}");
    // Also the first ADD in a namespace without a filter table: it is
    // made over netlink as iptables-nft would make it.
    for (what, procs) in &counts {
        assert!(procs.is_empty(), "{what}: {procs:?}");
    }
    for (i, c) in ctrs.iter().enumerate() {
        net.del(&host, c, &format!("fw-p{i}"), &results[i]);
    }
}

/// The same chain on two hosts, one with the Go firewall, one with ours:
/// the same `iptables-save` and the same nf_tables expressions.
#[test]
fn iptables_state_matches_the_reference() {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("firewall") else {
        return;
    };
    for extra in [json!({}), json!({"ingressPolicy": "same-bridge"})] {
        let hosts = [Netns::new("cnit-host"), Netns::new("cnit-host")];
        let mut states = vec![];
        for (host, bin) in hosts.iter().zip([go.clone(), plugin("firewall")]) {
            let net = Net::new("fwdiff", "fwbr0", 85, extra.clone());
            let ctrs = [Netns::bare("cnit-ctr"), Netns::bare("cnit-ctr")];
            let results: Vec<Value> = ctrs
                .iter()
                .enumerate()
                .map(|(i, c)| net.add_with(bin.clone(), host, c, &format!("fw-d{i}")))
                .collect();
            // Debian's Go release names the shared rules after the only
            // policy it knows; upstream (and we) after both.
            let saved = filter_tables(host).replace(
                "(ingressPolicy: same-bridge|isolated)",
                "(ingressPolicy: same-bridge)",
            );
            states.push((saved, filter_expressions(host)));
            for (i, c) in ctrs.iter().enumerate() {
                net.del_with(bin.clone(), host, c, &format!("fw-d{i}"), &results[i]);
            }
        }
        assert_eq!(
            states[0].0, states[1].0,
            "iptables-save differs for {extra}"
        );
        if extra == json!({}) {
            assert_eq!(states[0].1, states[1].1, "nf_tables expressions differ");
        } else {
            // Only the comments' text differs; compare the rest.
            let strip = |s: &str| {
                s.lines()
                    .filter(|l| !l.contains("match name comment"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(strip(&states[0].1), strip(&states[1].1));
        }
    }
}

/// Go ADD then our DEL, and our ADD then Go DEL: nothing of the container
/// is left either way; the shared chains stay.
#[test]
fn each_plugins_del_removes_the_others_rules() {
    if !can_run() {
        return;
    }
    let Some(go) = reference_plugin("firewall") else {
        return;
    };
    let host = Netns::new("cnit-host");
    let net = Net::new("fwcross", "fwbr0", 84, json!({}));
    for (adder, deleter, id) in [
        (go.clone(), plugin("firewall"), "fw-go-adds"),
        (plugin("firewall"), go.clone(), "fw-rust-adds"),
    ] {
        let c = Netns::bare("cnit-ctr");
        let prev = net.add_with(adder.clone(), &host, &c, id);
        let ip = ip_of(&prev);
        assert_eq!(rules_naming(&host, &ip).len(), 2);
        // Each CHECK accepts the other's rules.
        net.fw(deleter.clone(), "CHECK", id, &c, Some(&prev))
            .run(&host)
            .expect_ok();
        net.del_with(deleter, &host, &c, id, &prev);
        assert!(
            rules_naming(&host, &ip).is_empty(),
            "{id}: {:?}",
            rules_naming(&host, &ip)
        );
    }
    let saved = filter_tables(&host);
    assert!(
        saved.contains(":CNI-FORWARD -") && saved.contains(":CNI-ADMIN -"),
        "{saved}"
    );
}

#[test]
fn check_names_the_missing_rule() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let c = Netns::bare("cnit-ctr");
    let net = Net::new("fwcheck", "fwbr0", 80, json!({}));
    let prev = net.add(&host, &c, "fw-c");
    let ip = ip_of(&prev);
    host.run_ok(
        "iptables",
        &[
            "-D",
            "CNI-FORWARD",
            "-s",
            &format!("{ip}/32"),
            "-j",
            "ACCEPT",
        ],
    );
    let out = net
        .fw(plugin("firewall"), "CHECK", "fw-c", &c, Some(&prev))
        .run(&host);
    assert!(!out.success());
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains(&format!("expected rule [-s {ip}/32 -j ACCEPT] not found")),
        "{msg}"
    );
    net.del(&host, &c, "fw-c", &prev);
    assert!(rules_naming(&host, &ip).is_empty());
}

#[test]
fn gc_removes_only_attachments_that_are_not_valid() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let net = Net::new("fwgc", "fwbr0", 79, json!({}));
    let ctrs = [Netns::bare("cnit-ctr"), Netns::bare("cnit-ctr")];
    let results: Vec<Value> = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| net.add(&host, c, &format!("fw-g{i}")))
        .collect();
    let mut conf = net.fw_config(None);
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "fw-g0", "ifname": "eth0"}]);
    Invocation::new(plugin("firewall"), "GC")
        .config(&conf)
        .run(&host)
        .expect_ok();
    assert_eq!(rules_naming(&host, &ip_of(&results[0])).len(), 2);
    assert!(rules_naming(&host, &ip_of(&results[1])).is_empty());
    for (i, c) in ctrs.iter().enumerate() {
        net.del(&host, c, &format!("fw-g{i}"), &results[i]);
    }
    assert!(rules_naming(&host, &ip_of(&results[0])).is_empty());
}

/// A prevResult without a bridge plugin before: addresses only.
fn fake_prev(ip: &str) -> Value {
    json!({"cniVersion": "1.0.0", "ips": [{"address": format!("{ip}/24")}]})
}

#[test]
fn bad_config_is_refused_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let c = Netns::bare("cnit-ctr");
    let net = Net::new("fwbad", "fwbr0", 78, json!({}));
    let before = host.snapshot();
    let cases: Vec<(Value, Option<Value>, u64, &str)> = vec![
        (
            json!({}),
            None,
            999,
            "missing prevResult from earlier plugin",
        ),
        (
            json!({"ingressPolicy": "bogus"}),
            Some(fake_prev("10.78.0.5")),
            7,
            "unknown ingress policy: \"bogus\"",
        ),
        (
            json!({"backend": "pf"}),
            Some(fake_prev("10.78.0.5")),
            7,
            "unknown backend \"pf\"",
        ),
        (
            json!({"ingressPolicy": "same-bridge"}),
            Some(fake_prev("10.78.0.5")),
            7,
            "interface needs to be set for ingress policy \"same-bridge\"",
        ),
        (
            json!({"iptablesAdminChainName": "-j ACCEPT"}),
            Some(fake_prev("10.78.0.5")),
            7,
            "iptablesAdminChainName",
        ),
        (
            json!({"iptablesAdminChainName": "FORWARD"}),
            Some(fake_prev("10.78.0.5")),
            7,
            "iptablesAdminChainName \"FORWARD\"",
        ),
    ];
    for (extra, prev, code, msg) in cases {
        let mut conf = net.fw_config(prev.as_ref());
        if let (Some(dst), Value::Object(src)) = (conf.as_object_mut(), extra.clone()) {
            dst.extend(src);
        }
        let out = Invocation::new(plugin("firewall"), "ADD")
            .container_id("fw-bad")
            .netns(&c)
            .config(&conf)
            .run(&host);
        assert!(!out.success(), "{extra} accepted");
        let err = out.json();
        assert_eq!(err["code"], code, "{extra}: {err}");
        assert!(
            err["msg"].as_str().unwrap_or_default().contains(msg),
            "{extra}: {err}"
        );
        assert_eq!(host.snapshot(), before, "{extra} changed the host");
    }
    assert!(integration::dir_entries(net.data.path()).is_empty());
}

#[test]
fn status_reports_a_usable_backend() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    let net = Net::new("fwstatus", "fwbr0", 77, json!({"backend": "iptables"}));
    let mut conf = net.fw_config(None);
    conf["cniVersion"] = json!("1.1.0");
    Invocation::new(plugin("firewall"), "STATUS")
        .config(&conf)
        .run(&host)
        .expect_ok();
}

/// The nftables backend's table, listed.
fn nft_table(host: &Netns) -> String {
    let out = host.exec("nft", &["list", "table", "inet", "cni_firewall"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// nftables (ours only): isolation drops are final whatever else the host
/// runs, so they are what traffic can show; the accepts are checked as
/// rules. Everything is netlink: no process on any verb.
#[test]
fn nftables_backend_isolates_and_del_leaves_nothing_without_a_process() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    host.run_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let nft = |policy: &str| json!({"backend": "nftables", "ingressPolicy": policy});
    let iso_a = Net::new("fwnisoa", "fwbra", 76, nft("same-bridge"));
    let iso_b = Net::new("fwnisob", "fwbrb", 75, nft("isolated"));
    let open = Net::new("fwnopen", "fwbro", 74, nft("open"));
    let log = ProcessLog::new();
    let (ca, cb, co) = (
        Netns::bare("cnit-ctr"),
        Netns::bare("cnit-ctr"),
        Netns::bare("cnit-ctr"),
    );
    let mut results = vec![];
    for (net, ctr, id) in [
        (&iso_a, &ca, "fw-na"),
        (&iso_b, &cb, "fw-nb"),
        (&open, &co, "fw-no"),
    ] {
        let prev = net.bridge_add(&host, ctr, id);
        log.take();
        for cmd in ["ADD", "CHECK"] {
            net.fw(plugin("firewall"), cmd, id, ctr, Some(&prev))
                .env("PATH", &log.path_env())
                .run(&host)
                .expect_ok();
        }
        assert!(log.take().is_empty(), "{id}: a process was started");
        results.push(prev);
    }
    let (ipa, ipb, ipo) = (ip_of(&results[0]), ip_of(&results[1]), ip_of(&results[2]));
    assert!(!ca.ping(&ipb), "same-bridge → isolated network");
    assert!(!cb.ping(&ipa), "isolated → same-bridge network");
    assert!(
        co.ping(&ipa) && co.ping(&ipb),
        "the open network reaches both"
    );
    assert!(ca.ping(&ipo), "a same-bridge network reaches an open one");
    let table = nft_table(&host);
    for line in [
        format!(
            "ip daddr {ipa} ct state established,related accept comment \"cni firewall net=fwnisoa id=fw-na ifname=eth0\""
        ),
        format!("ip saddr {ipb} accept comment \"cni firewall net=fwnisob id=fw-nb ifname=eth0\""),
        "iifname \"fwbra\" oifname != \"fwbra\" jump isolation_stage_2".to_string(),
        "iifname \"fwbrb\" oifname \"fwbrb\" drop".to_string(),
        "oifname \"fwbrb\" drop".to_string(),
        "type filter hook forward priority filter; policy accept;".to_string(),
    ] {
        assert!(table.contains(&line), "missing {line}:\n{table}");
    }
    assert!(!table.contains("oifname \"fwbro\""), "{table}");
    // The netlink-built table is what nft makes of its own listing.
    let twin = Netns::new("cnit-host");
    let mut load = twin.command("nft");
    load.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = load.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let exprs = |ns: &Netns| {
        let out = ns.run_ok(
            "nft",
            &["--debug=netlink", "list", "table", "inet", "cni_firewall"],
        );
        out.lines()
            .map(|l| match l.strip_prefix("inet cni_firewall ") {
                Some(rest) => rest.split(' ').next().unwrap_or_default().to_string(),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (ours, nfts) = (exprs(&host), exprs(&twin));
    let first_difference = ours.lines().zip(nfts.lines()).find(|(a, b)| a != b);
    assert_eq!(first_difference, None, "netlink-built vs nft's own");
    assert_eq!(ours.lines().count(), nfts.lines().count());
    // CHECK notices a missing rule.
    let handle = host
        .run_ok(
            "nft",
            &["-a", "list", "chain", "inet", "cni_firewall", "containers"],
        )
        .lines()
        .find(|l| l.contains(&format!("ip saddr {ipa} ")))
        .and_then(|l| l.rsplit(' ').next().map(str::to_string))
        .unwrap();
    host.run_ok(
        "nft",
        &[
            "delete",
            "rule",
            "inet",
            "cni_firewall",
            "containers",
            "handle",
            &handle,
        ],
    );
    let out = iso_a
        .fw(plugin("firewall"), "CHECK", "fw-na", &ca, Some(&results[0]))
        .run(&host);
    assert!(!out.success(), "CHECK passed without a rule");
    for (i, (net, ctr, id)) in [
        (&iso_a, &ca, "fw-na"),
        (&iso_b, &cb, "fw-nb"),
        (&open, &co, "fw-no"),
    ]
    .into_iter()
    .enumerate()
    {
        // DEL without a prevResult: found by the attachment's comment.
        net.fw(plugin("firewall"), "DEL", id, ctr, None)
            .env("PATH", &log.path_env())
            .run(&host)
            .expect_ok();
        assert!(log.take().is_empty(), "DEL {id}: a process was started");
        net.del(&host, ctr, id, &results[i]);
    }
    let table = nft_table(&host);
    assert!(!table.contains("cni firewall net="), "{table}");
}

/// A firewalld of its own: a private D-Bus daemon (socket in a temporary
/// directory) and firewalld inside the host namespace, configured from a
/// temporary directory so the machine's /etc/firewalld is never read or
/// written. Both processes are ended by PID on drop.
struct Firewalld {
    dir: tempfile::TempDir,
    bus: std::process::Child,
    daemon: std::process::Child,
}

impl Firewalld {
    /// The bus socket in `dir`. `None` (with a visible message) when
    /// dbus-daemon or firewalld is not installed, or firewalld does not
    /// come up.
    fn start_at(host: &Netns, dir: tempfile::TempDir) -> Option<Firewalld> {
        for program in ["dbus-daemon", "firewalld", "firewall-cmd"] {
            if !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(program).exists())
            {
                eprintln!("SKIPPED: {program} not installed (apt-get install firewalld)");
                return None;
            }
        }
        let socket = dir.path().join("bus");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let bus = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let config = dir.path().join("etc");
        std::fs::create_dir(&config).unwrap();
        let daemon = host
            .command("firewalld")
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .args(["--nofork", "--nopid", "--log-target", "file", "--log-file"])
            .arg(dir.path().join("firewalld.log"))
            .arg("--system-config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let fw = Firewalld { dir, bus, daemon };
        for _ in 0..120 {
            let state = fw.cmd(host, &["--state"]);
            if state.status.success() {
                return Some(fw);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        eprintln!("SKIPPED: firewalld did not come up in 30 s");
        None
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    fn cmd(&self, host: &Netns, args: &[&str]) -> std::process::Output {
        host.command("firewall-cmd")
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            .args(args)
            .output()
            .unwrap()
    }

    fn sources(&self, host: &Netns, zone: &str) -> Vec<String> {
        let out = self.cmd(host, &[&format!("--zone={zone}"), "--list-sources"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        for child in [&mut self.daemon, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// firewalld (a real one, on a private bus): the default backend when it
/// answers; addresses become sources of the zone; the Go plugin's CHECK
/// and DEL agree with ours both ways; the ingress policy still uses
/// iptables, as in the reference.
#[test]
fn firewalld_backend_against_a_real_firewalld_and_the_go_plugin() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-host");
    // No `backend` key: iptables while firewalld does not run …
    let net = Net::new("fwdnet", "fwbr0", 73, json!({"firewalldZone": "trusted"}));
    let dir = temp_dir("cnit-firewalld-bus");
    let bus = format!("unix:path={}", dir.path().join("bus").display());
    let with_bus = |inv: Invocation| inv.env("DBUS_SYSTEM_BUS_ADDRESS", &bus);
    let c0 = Netns::bare("cnit-ctr");
    let prev0 = net.bridge_add(&host, &c0, "fw-fd0");
    with_bus(net.fw(plugin("firewall"), "ADD", "fw-fd0", &c0, Some(&prev0)))
        .run(&host)
        .expect_ok();
    assert_eq!(rules_naming(&host, &ip_of(&prev0)).len(), 2);
    let Some(fwd) = Firewalld::start_at(&host, dir) else {
        return;
    };
    // … firewalld once it answers; its DEL still removes what the ADD
    // made with iptables before firewalld ran.
    with_bus(net.fw(plugin("firewall"), "DEL", "fw-fd0", &c0, Some(&prev0)))
        .run(&host)
        .expect_ok();
    assert!(rules_naming(&host, &ip_of(&prev0)).is_empty());
    net.del(&host, &c0, "fw-fd0", &prev0);
    let c = Netns::bare("cnit-ctr");
    let prev = net.bridge_add(&host, &c, "fw-fd");
    let ip = ip_of(&prev);
    with_bus(net.fw(plugin("firewall"), "ADD", "fw-fd", &c, Some(&prev)))
        .run(&host)
        .expect_ok();
    assert_eq!(fwd.sources(&host, "trusted"), vec![format!("{ip}/32")]);
    assert!(rules_naming(&host, &ip).is_empty(), "iptables used instead");
    with_bus(net.fw(plugin("firewall"), "CHECK", "fw-fd", &c, Some(&prev)))
        .run(&host)
        .expect_ok();
    let mut status = net.fw_config(None);
    status["cniVersion"] = json!("1.1.0");
    with_bus(Invocation::new(plugin("firewall"), "STATUS").config(&status))
        .run(&host)
        .expect_ok();
    // A repeated ADD (ZONE_ALREADY_SET) succeeds.
    with_bus(net.fw(plugin("firewall"), "ADD", "fw-fd", &c, Some(&prev)))
        .run(&host)
        .expect_ok();
    if let Some(go) = reference_plugin("firewall") {
        with_bus(net.fw(go.clone(), "CHECK", "fw-fd", &c, Some(&prev)))
            .run(&host)
            .expect_ok();
        with_bus(net.fw(go.clone(), "DEL", "fw-fd", &c, Some(&prev)))
            .run(&host)
            .expect_ok();
        assert!(fwd.sources(&host, "trusted").is_empty());
        // Ours notices, then the other way round.
        let out =
            with_bus(net.fw(plugin("firewall"), "CHECK", "fw-fd", &c, Some(&prev))).run(&host);
        assert!(!out.success());
        assert!(
            out.json()["msg"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!(
                    "failed to find the address {ip}/32 in trusted zone"
                )),
            "{}",
            out.stdout
        );
        with_bus(net.fw(go, "ADD", "fw-fd", &c, Some(&prev)))
            .run(&host)
            .expect_ok();
        assert_eq!(fwd.sources(&host, "trusted"), vec![format!("{ip}/32")]);
    }
    with_bus(net.fw(plugin("firewall"), "DEL", "fw-fd", &c, Some(&prev)))
        .run(&host)
        .expect_ok();
    assert!(fwd.sources(&host, "trusted").is_empty());
    // DEL again: nothing to remove, still success.
    with_bus(net.fw(plugin("firewall"), "DEL", "fw-fd", &c, None))
        .run(&host)
        .expect_ok();

    // Another zone, and same-bridge: sources in firewalld, isolation in
    // iptables.
    let iso = Net::new(
        "fwdiso",
        "fwbr1",
        72,
        json!({"backend": "firewalld", "firewalldZone": "internal", "ingressPolicy": "same-bridge"}),
    );
    let c2 = Netns::bare("cnit-ctr");
    let prev2 = iso.bridge_add(&host, &c2, "fw-fd2");
    with_bus(iso.fw(plugin("firewall"), "ADD", "fw-fd2", &c2, Some(&prev2)))
        .run(&host)
        .expect_ok();
    assert_eq!(
        fwd.sources(&host, "internal"),
        vec![format!("{}/32", ip_of(&prev2))]
    );
    assert!(filter_tables(&host).contains("-A CNI-ISOLATION-STAGE-2 -o fwbr1"));
    with_bus(iso.fw(plugin("firewall"), "DEL", "fw-fd2", &c2, Some(&prev2)))
        .run(&host)
        .expect_ok();
    assert!(fwd.sources(&host, "internal").is_empty());
    iso.del(&host, &c2, "fw-fd2", &prev2);
    net.del(&host, &c, "fw-fd", &prev);

    // firewalld gone: the default is iptables again; an explicit
    // firewalld backend's STATUS is 50.
    drop(fwd);
    let c3 = Netns::bare("cnit-ctr");
    let prev3 = net.bridge_add(&host, &c3, "fw-fd3");
    with_bus(net.fw(plugin("firewall"), "ADD", "fw-fd3", &c3, Some(&prev3)))
        .run(&host)
        .expect_ok();
    assert_eq!(rules_naming(&host, &ip_of(&prev3)).len(), 2);
    with_bus(net.fw(plugin("firewall"), "DEL", "fw-fd3", &c3, Some(&prev3)))
        .run(&host)
        .expect_ok();
    assert!(rules_naming(&host, &ip_of(&prev3)).is_empty());
    net.del(&host, &c3, "fw-fd3", &prev3);
    status["backend"] = json!("firewalld");
    let out = with_bus(Invocation::new(plugin("firewall"), "STATUS").config(&status)).run(&host);
    assert_eq!(out.json()["code"], 50, "{}", out.stdout);
}

/// Sixteen attachments added and removed at once on a fresh host, both
/// backends: every per-address rule once, the shared jumps once, nothing
/// per container afterwards.
#[test]
fn parallel_adds_and_dels_leave_each_rule_once_then_nothing() {
    if !can_run() {
        return;
    }
    for backend in ["iptables", "nftables"] {
        let host = Netns::new("cnit-host");
        let net = Net::new(
            "fwpar",
            "fwbr0",
            71,
            json!({"backend": backend, "ingressPolicy": "same-bridge"}),
        );
        let ips: Vec<String> = (2..18).map(|i| format!("10.71.0.{i}")).collect();
        let prev = |ip: &str| {
            json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "fwbr0"}, {"name": "eth0", "sandbox": "/x"}],
                "ips": [{"address": format!("{ip}/24"), "interface": 1}]})
        };
        let ctr = Netns::bare("cnit-ctr");
        let run_all = |verb: &'static str| {
            std::thread::scope(|s| {
                for (i, ip) in ips.iter().enumerate() {
                    let (net, host, ctr, p) = (&net, &host, &ctr, prev(ip));
                    s.spawn(move || {
                        net.fw(
                            plugin("firewall"),
                            verb,
                            &format!("fw-par{i}"),
                            ctr,
                            Some(&p),
                        )
                        .run(host)
                        .expect_ok();
                    });
                }
            });
        };
        run_all("ADD");
        if backend == "iptables" {
            let saved = filter_tables(&host);
            for ip in &ips {
                assert_eq!(rules_naming(&host, ip).len(), 2, "{ip}:\n{saved}");
            }
            let count = |needle: &str| saved.lines().filter(|l| l.contains(needle)).count();
            assert_eq!(
                count(
                    "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"
                ),
                1,
                "{saved}"
            );
            assert_eq!(count("-j CNI-ADMIN"), 1, "{saved}");
            assert_eq!(count("-j CNI-ISOLATION-STAGE-1"), 1, "{saved}");
            assert_eq!(count("-A CNI-ISOLATION-STAGE-2 -o fwbr0"), 1, "{saved}");
        } else {
            let table = nft_table(&host);
            for ip in &ips {
                assert_eq!(
                    table.matches(&format!("addr {ip} ")).count(),
                    2,
                    "{ip}:\n{table}"
                );
            }
            assert_eq!(table.matches("jump containers").count(), 1, "{table}");
            assert_eq!(
                table.matches("oifname \"fwbr0\" drop").count(),
                1,
                "{table}"
            );
        }
        run_all("DEL");
        for ip in &ips {
            assert!(rules_naming(&host, ip).is_empty(), "{ip}");
        }
        assert!(!nft_table(&host).contains("cni firewall net="));
    }
}
