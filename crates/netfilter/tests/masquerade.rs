//! Masquerade for the bridge plugin, on both backends, with exact rule text,
//! and cleanup of rules made by the Go reference.

mod common;

use common::{in_netns, nat_rules, nft_table, sh};
use netfilter::{Attachment, Backend, IpNetwork};

const ATT: Attachment<'static> = Attachment {
    network: "mynet",
    container_id: "abc123",
    ifname: "eth0",
};

fn addrs(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn iptables_setup_writes_the_reference_layout_and_teardown_removes_it() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        let a = addrs(&["10.1.2.5/24", "2001:db8::5/64"]);
        ipt.setup_masquerade(&ATT, &a).unwrap();
        let chain = netfilter::names::masq_chain("mynet", "abc123");
        let c = r#""name: \"mynet\" id: \"abc123\"""#;
        assert_eq!(
            nat_rules(false),
            vec![
                format!(":{chain} - [0:0]"),
                format!("-A POSTROUTING -s 10.1.2.5/32 -m comment --comment {c} -j {chain}"),
                format!("-A {chain} -d 10.1.2.0/24 -m comment --comment {c} -j ACCEPT"),
                format!("-A {chain} ! -d 224.0.0.0/4 -m comment --comment {c} -j MASQUERADE"),
            ]
        );
        assert_eq!(
            nat_rules(true),
            vec![
                format!(":{chain} - [0:0]"),
                format!("-A POSTROUTING -s 2001:db8::5/128 -m comment --comment {c} -j {chain}"),
                format!("-A {chain} -d 2001:db8::/64 -m comment --comment {c} -j ACCEPT"),
                format!("-A {chain} ! -d ff00::/8 -m comment --comment {c} -j MASQUERADE"),
            ]
        );
        ipt.check_masquerade(&ATT, &a).unwrap();

        // A second setup (re-ADD) changes nothing.
        let before = nat_rules(false);
        ipt.setup_masquerade(&ATT, &a).unwrap();
        assert_eq!(nat_rules(false), before);

        netfilter::teardown_masquerade(&ATT).unwrap();
        assert!(nat_rules(false).is_empty(), "{:?}", nat_rules(false));
        assert!(nat_rules(true).is_empty());
        assert!(ipt.check_masquerade(&ATT, &a).is_err());
        // Teardown twice: nothing to do, no error.
        netfilter::teardown_masquerade(&ATT).unwrap();
    });
}

#[test]
fn iptables_setup_costs_one_process_per_family() {
    in_netns(|| {
        let before = netfilter::processes_spawned_on_this_thread();
        netfilter::netfilter(Backend::Iptables)
            .setup_masquerade(&ATT, &addrs(&["10.1.2.5/24"]))
            .unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread() - before, 1);
    });
}

/// Exactly the commands the Go bridge (`SetupIPMasq`) runs, including the
/// legacy `-s <cidr>` jump of old versions.
fn go_bridge_setup(network: &str, cid: &str, ip: &str, cidr: &str) {
    let chain = netfilter::names::masq_chain(network, cid);
    let comment = netfilter::names::masq_comment(network, cid);
    let ipt = |args: &[&str]| sh("iptables", &[&["-t", "nat"], args].concat());
    ipt(&["-N", &chain]);
    ipt(&[
        "-A",
        &chain,
        "-d",
        cidr,
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        &comment,
    ]);
    ipt(&[
        "-A",
        &chain,
        "!",
        "-d",
        "224.0.0.0/4",
        "-j",
        "MASQUERADE",
        "-m",
        "comment",
        "--comment",
        &comment,
    ]);
    ipt(&[
        "-A",
        "POSTROUTING",
        "-s",
        ip,
        "-j",
        &chain,
        "-m",
        "comment",
        "--comment",
        &comment,
    ]);
    ipt(&[
        "-A",
        "POSTROUTING",
        "-s",
        cidr,
        "-j",
        &chain,
        "-m",
        "comment",
        "--comment",
        &comment,
    ]);
}

#[test]
fn teardown_removes_rules_of_the_go_bridge_without_knowing_addresses() {
    in_netns(|| {
        go_bridge_setup("mynet", "abc123", "10.1.2.5", "10.1.2.5/24");
        go_bridge_setup("mynet", "other", "10.1.2.6", "10.1.2.6/24");
        netfilter::teardown_masquerade(&ATT).unwrap();
        let left = nat_rules(false);
        let mine = netfilter::names::masq_chain("mynet", "abc123");
        assert!(left.iter().all(|l| !l.contains(&mine)), "{left:?}");
        // The other container's 5 lines (chain, 2 rules, 2 jumps) remain.
        assert_eq!(left.len(), 5, "{left:?}");
    });
}

#[test]
fn iptables_gc_keeps_listed_containers_only() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        for (cid, ip) in [("keep1", "10.1.2.5/24"), ("stale1", "10.1.2.6/24")] {
            let att = Attachment {
                network: "mynet",
                container_id: cid,
                ifname: "eth0",
            };
            ipt.setup_masquerade(&att, &addrs(&[ip])).unwrap();
        }
        go_bridge_setup("mynet", "stale2", "10.1.2.7", "10.1.2.7/24");
        go_bridge_setup("othernet", "x", "10.9.0.2", "10.9.0.2/24");
        netfilter::gc_masquerade("mynet", &[("keep1".into(), "eth0".into())]).unwrap();
        let left = nat_rules(false).join("\n");
        assert!(left.contains(&netfilter::names::masq_chain("mynet", "keep1")));
        assert!(left.contains(&netfilter::names::masq_chain("othernet", "x")));
        assert!(!left.contains(&netfilter::names::masq_chain("mynet", "stale1")));
        assert!(!left.contains(&netfilter::names::masq_chain("mynet", "stale2")));
    });
}

/// Our marker chain for an attachment in the masquerade table.
fn anchor_of(network: &str, ifname: &str, cid: &str) -> String {
    format!(
        "owner_{}",
        netfilter::names::nft_masq_instance_hash(network, ifname, cid).replace('-', "_")
    )
}

#[test]
fn nftables_setup_writes_the_reference_layout_and_teardown_removes_it() {
    in_netns(|| {
        let nft = netfilter::netfilter(Backend::Nftables);
        let a = addrs(&["10.1.2.5/24", "2001:db8::5/64"]);
        nft.setup_masquerade(&ATT, &a).unwrap();
        nft.setup_masquerade(&ATT, &a).unwrap(); // idempotent
        let comment = netfilter::names::nft_masq_comment("mynet", "eth0", "abc123");
        let anchor = anchor_of("mynet", "eth0", "abc123");
        let expected = format!(
            r#"table inet cni_plugins_masquerade {{
	comment "Masquerading for plugins from github.com/containernetworking/plugins"
	chain masq_checks {{
		comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
		ip saddr 10.1.2.5 ip daddr != 10.1.2.0/24 masquerade comment "{comment}"
		ip6 saddr 2001:db8::5 ip6 daddr != 2001:db8::/64 masquerade comment "{comment}"
	}}

	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr 224.0.0.0/4 return
		ip6 daddr ff00::/8 return
		goto masq_checks
	}}

	chain {anchor} {{
		comment "cni-rs rules: 2"
	}}
}}
"#
        );
        assert_eq!(nft_table("inet", "cni_plugins_masquerade"), expected);
        nft.check_masquerade(&ATT, &a).unwrap();

        // Another interface of the same container survives the teardown.
        let eth1 = Attachment {
            ifname: "eth1",
            ..ATT
        };
        nft.setup_masquerade(&eth1, &addrs(&["10.1.3.5/24"]))
            .unwrap();
        netfilter::teardown_masquerade(&ATT).unwrap();
        let left = nft_table("inet", "cni_plugins_masquerade");
        assert!(!left.contains(&comment), "{left}");
        assert!(left.contains("ip saddr 10.1.3.5"), "{left}");
        assert!(nft.check_masquerade(&ATT, &a).is_err());
        nft.check_masquerade(&eth1, &addrs(&["10.1.3.5/24"]))
            .unwrap();

        // The anchor went with the rules; eth1's stays until GC.
        assert!(!left.contains(&anchor), "{left}");
        assert!(
            left.contains(&anchor_of("mynet", "eth1", "abc123")),
            "{left}"
        );
        netfilter::gc_masquerade("mynet", &[]).unwrap();
        let left = nft_table("inet", "cni_plugins_masquerade");
        assert!(!left.contains("saddr"), "{left}");
        assert!(!left.contains("owner_"), "{left}");
        netfilter::teardown_masquerade(&ATT).unwrap();
    });
}

#[test]
fn invalid_names_never_reach_a_rule() {
    in_netns(|| {
        for b in [Backend::Iptables, Backend::Nftables] {
            let bad = Attachment {
                container_id: "x\" ; flush ruleset",
                ..ATT
            };
            let err = netfilter::netfilter(b)
                .setup_masquerade(&bad, &addrs(&["10.1.2.5/24"]))
                .unwrap_err();
            assert!(err.to_string().contains("invalid container id"), "{err}");
        }
        assert_eq!(netfilter::processes_spawned_on_this_thread(), 0);
    });
}

/// The netlink writer against `nft`'s own parse of the reference's text,
/// for prefixes on and off byte boundaries; and no process.
#[test]
fn nftables_setup_lists_exactly_like_nft_text_and_starts_no_process() {
    let nets = [
        "10.1.2.5/24",
        "10.1.0.9/20",
        "10.1.2.4/31",
        "2001:db8::5/64",
        "2001:db8::5/127",
    ];
    let ours = in_netns(|| {
        let before = netfilter::processes_spawned_on_this_thread();
        netfilter::netfilter(Backend::Nftables)
            .setup_masquerade(&ATT, &addrs(&nets))
            .unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread(), before);
        nft_table("inet", "cni_plugins_masquerade")
    });
    let comment = netfilter::names::nft_masq_comment("mynet", "eth0", "abc123");
    let mut script = String::from(
        r#"add table inet cni_plugins_masquerade { comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }
add chain inet cni_plugins_masquerade masq_checks { comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet" ; }
add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat ; }
add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4 return
add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8 return
add rule inet cni_plugins_masquerade postrouting goto masq_checks
"#,
    );
    script.push_str(&format!(
        "add chain inet cni_plugins_masquerade {} {{ comment \"cni-rs rules: 5\" ; }}\n",
        anchor_of("mynet", "eth0", "abc123")
    ));
    for n in addrs(&nets) {
        let ip = if n.is_ipv4() { "ip" } else { "ip6" };
        script.push_str(&format!(
            "add rule inet cni_plugins_masquerade masq_checks {ip} saddr == {} {ip} daddr != {}/{} masquerade comment \"{comment}\"\n",
            n.ip(),
            n.network(),
            n.prefix()
        ));
    }
    let theirs = in_netns(|| {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        nft_table("inet", "cni_plugins_masquerade")
    });
    assert_eq!(ours, theirs);
    assert!(
        ours.contains("ip daddr != 10.1.0.0/20 masquerade"),
        "{ours}"
    );
}
