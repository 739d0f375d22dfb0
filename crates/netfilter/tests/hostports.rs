//! Host ports for portmap on both backends: exact rule text, process
//! counts, idempotence, DEL without mappings, interop with the Go
//! reference's rules, concurrent DELs, GC.

mod common;

use std::net::IpAddr;

use common::{in_netns, nat_rules, nft_table, sh};
use netfilter::{Backend, HostPorts, IpNetwork, PortMapping, Protocol, Snat};

fn tcp(host: u16, container: u16) -> PortMapping {
    PortMapping {
        host_port: host,
        container_port: container,
        protocol: Protocol::Tcp,
        host_ip: None,
    }
}

fn with_host_ip(mut m: PortMapping, ip: &str) -> PortMapping {
    m.host_ip = Some(ip.parse::<IpAddr>().unwrap());
    m
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn hp<'a>(
    cid: &'a str,
    ipv4: Option<&str>,
    ipv6: Option<&str>,
    maps: &'a [PortMapping],
) -> HostPorts<'a> {
    HostPorts {
        network: "mynet",
        container_id: cid,
        ipv4: ipv4.map(net),
        ipv6: ipv6.map(net),
        mappings: maps,
        snat: Snat::MarkBit(13),
        masq_all: false,
        conditions_v4: &[],
        conditions_v6: &[],
    }
}

#[test]
fn iptables_add_writes_the_reference_layout() {
    in_netns(|| {
        let maps = [
            tcp(8080, 80),
            with_host_ip(tcp(8083, 83), "192.168.0.2"),
            PortMapping {
                protocol: Protocol::Udp,
                ..tcp(5353, 53)
            },
        ];
        let ipt = netfilter::netfilter(Backend::Iptables);
        let h = hp("cid1", Some("10.0.0.2/24"), None, &maps);
        ipt.add_hostports(&h).unwrap();
        let dn = netfilter::names::dnat_chain("mynet", "cid1");
        let c = r#""dnat name: \"mynet\" id: \"cid1\"""#;
        let mut got = nat_rules(false);
        got.sort();
        let mut want = vec![
                ":CNI-HOSTPORT-SETMARK - [0:0]".to_string(),
                ":CNI-HOSTPORT-MASQ - [0:0]".into(),
                ":CNI-HOSTPORT-DNAT - [0:0]".into(),
                format!(":{dn} - [0:0]"),
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".into(),
                "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".into(),
                "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ".into(),
                "-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000".into(),
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE".into(),
                format!("-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {c} -m multiport --dports 8080,8083 -j {dn}"),
                format!("-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {c} -m multiport --dports 5353 -j {dn}"),
                format!("-A {dn} -s 10.0.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80"),
                format!("-A {dn} -s 10.0.0.0/24 -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -s 127.0.0.1/32 -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -d 192.168.0.2/32 -p tcp -m tcp --dport 8083 -j DNAT --to-destination 10.0.0.2:83"),
                format!("-A {dn} -s 10.0.0.0/24 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {dn} -p udp -m udp --dport 5353 -j DNAT --to-destination 10.0.0.2:53"),
            ];
        want.sort();
        assert_eq!(got, want);
        ipt.check_hostports(&h).unwrap();
        // A repeated ADD leaves the same state.
        let before = nat_rules(false);
        ipt.add_hostports(&h).unwrap();
        assert_eq!(nat_rules(false), before);

        // DEL needs no mappings and leaves only the shared chains.
        netfilter::del_hostports("mynet", "cid1").unwrap();
        let left = nat_rules(false).join("\n");
        assert!(!left.contains(&dn), "{left}");
        assert!(!left.contains("cid1"), "{left}");
        assert!(ipt.check_hostports(&h).is_err());
        netfilter::del_hostports("mynet", "cid1").unwrap();
    });
}

#[test]
fn iptables_add_costs_no_process_once_shared_chains_exist() {
    in_netns(|| {
        let maps = [tcp(8080, 80)];
        let ipt = netfilter::netfilter(Backend::Iptables);
        let n0 = netfilter::processes_spawned_on_this_thread();
        ipt.add_hostports(&hp("first", Some("10.0.0.2/24"), None, &maps))
            .unwrap();
        let n1 = netfilter::processes_spawned_on_this_thread();
        // First ADD on a node: the optimistic batch fails, the bootstrap
        // batch creates everything.
        assert_eq!(n1 - n0, 2);
        let maps2 = [tcp(8081, 80)];
        ipt.add_hostports(&hp("second", Some("10.0.0.3/24"), None, &maps2))
            .unwrap();
        let n2 = netfilter::processes_spawned_on_this_thread();
        // Written over nf_tables netlink as iptables-nft would write it.
        assert_eq!(n2 - n1, 0);
        // Dual stack: none for IPv4; IPv6's shared chains are made now
        // (the optimistic batch, then the bootstrap).
        ipt.add_hostports(&hp(
            "third",
            Some("10.0.0.4/24"),
            Some("2001:db8::4/64"),
            &[tcp(8082, 80)],
        ))
        .unwrap();
        let n3 = netfilter::processes_spawned_on_this_thread();
        assert_eq!(n3 - n2, 2);
        // DEL: with iptables-nft (and no legacy table) the rules are found
        // and deleted over nf_tables netlink: no process at all.
        netfilter::netfilter(Backend::Iptables)
            .del_hostports("mynet", "second")
            .unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread() - n3, 0);
        assert!(
            !nat_rules(false)
                .join("\n")
                .contains(&netfilter::names::dnat_chain("mynet", "second"))
        );
        let n4 = netfilter::processes_spawned_on_this_thread();
        netfilter::del_hostports("mynet", "second").unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread() - n4, 0);
    });
}

/// The ADD batch skips its `-C` of the POSTROUTING entry only when that
/// exact rule is read over netlink: a removed rule, or a look-alike with an
/// extra condition, still gets the entry rule (back) at the top.
#[test]
fn iptables_add_restores_a_missing_postrouting_masquerade_entry() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        let entry = "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ";
        let entries = || {
            nat_rules(false)
                .into_iter()
                .filter(|l| l.starts_with("-A POSTROUTING"))
                .collect::<Vec<_>>()
        };
        ipt.add_hostports(&hp("a", Some("10.0.0.2/24"), None, &[tcp(8080, 80)]))
            .unwrap();
        assert_eq!(entries(), vec![entry.to_string()]);

        // Present: the second ADD needs no process and adds no duplicate.
        let n0 = netfilter::processes_spawned_on_this_thread();
        ipt.add_hostports(&hp("b", Some("10.0.0.3/24"), None, &[tcp(8081, 80)]))
            .unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread() - n0, 0);
        assert_eq!(entries(), vec![entry.to_string()]);

        // Replaced by hand with one that only matches some sources.
        let look_alike = [
            "-t",
            "nat",
            "-I",
            "POSTROUTING",
            "1",
            "-s",
            "10.9.0.0/16",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ];
        sh("iptables", &look_alike);
        let delete = entry.replacen("-A", "-D", 1);
        let mut args = vec!["-t", "nat"];
        args.extend(shell_words(&delete));
        sh("iptables", &args);
        assert_eq!(entries().len(), 1);
        ipt.add_hostports(&hp("c", Some("10.0.0.4/24"), None, &[tcp(8082, 80)]))
            .unwrap();
        let now = entries();
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(now[0], entry, "{now:?}");
        for cid in ["a", "b", "c"] {
            netfilter::del_hostports("mynet", cid).unwrap();
        }
    });
}

/// `-D POSTROUTING -m comment --comment "a b" -j X` split as a shell would.
fn shell_words(line: &str) -> Vec<&str> {
    let mut out = vec![];
    for (i, part) in line.split('"').enumerate() {
        if i % 2 == 1 {
            out.push(part);
        } else {
            out.extend(part.split_whitespace());
        }
    }
    out
}

#[test]
fn iptables_ipv6_masq_all_external_chain_and_conditions() {
    in_netns(|| {
        sh("ip6tables", &["-t", "nat", "-N", "KUBE-MARK-MASQ"]);
        let maps = [tcp(8080, 80)];
        let conds = vec!["-s".to_string(), "2001:db8:1::/64".to_string()];
        let h = HostPorts {
            snat: Snat::ExternalMarkChain("KUBE-MARK-MASQ".into()),
            masq_all: true,
            conditions_v6: &conds,
            ..hp("c6", None, Some("2001:db8::2/64"), &maps)
        };
        let ipt = netfilter::netfilter(Backend::Iptables);
        ipt.add_hostports(&h).unwrap();
        let dn = netfilter::names::dnat_chain("mynet", "c6");
        let rules = nat_rules(true);
        assert!(
            rules.contains(&format!(
                "-A {dn} -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ"
            )),
            "{rules:#?}"
        );
        assert!(rules.contains(&format!(
            "-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8::2]:80"
        )));
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("-A CNI-HOSTPORT-DNAT -s 2001:db8:1::/64 -p tcp")),
            "{rules:#?}"
        );
        assert!(!rules.iter().any(|r| r.contains("SETMARK")));
        ipt.check_hostports(&h).unwrap();
        netfilter::del_hostports("mynet", "c6").unwrap();
        assert!(!nat_rules(true).join("\n").contains(&dn));
    });
}

#[test]
fn iptables_multiport_groups_at_most_15_ports() {
    in_netns(|| {
        let maps: Vec<_> = (0..20).map(|i| tcp(9000 + i, 80)).collect();
        netfilter::netfilter(Backend::Iptables)
            .add_hostports(&hp("many", Some("10.0.0.2/24"), None, &maps))
            .unwrap();
        let entries: Vec<_> = nat_rules(false)
            .into_iter()
            .filter(|r| r.starts_with("-A CNI-HOSTPORT-DNAT"))
            .collect();
        assert_eq!(entries.len(), 2, "{entries:#?}");
        assert!(entries[0].contains(
            "--dports 9000,9001,9002,9003,9004,9005,9006,9007,9008,9009,9010,9011,9012,9013,9014 "
        ));
        assert!(entries[1].contains("--dports 9015,9016,9017,9018,9019 "));
    });
}

/// The commands the Go portmap (v1.1.1 … HEAD) runs for one TCP mapping,
/// in its argument order, plus a legacy CNI-SN chain of portmap < 0.7.
fn go_portmap_add(network: &str, cid: &str, ip: &str, host_port: &str, port: &str) {
    let ipt = |args: &[&str]| sh("iptables", &[&["-t", "nat"], args].concat());
    let dn = netfilter::names::dnat_chain(network, cid);
    let comment = netfilter::names::dnat_comment(network, cid);
    let exists = sh("iptables", &["-t", "nat", "-S"]);
    if !exists.contains("-N CNI-HOSTPORT-DNAT") {
        ipt(&["-N", "CNI-HOSTPORT-DNAT"]);
        ipt(&[
            "-A",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ]);
        ipt(&[
            "-A",
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ]);
    }
    if !exists.contains("-N CNI-HOSTPORT-SNAT") {
        ipt(&["-N", "CNI-HOSTPORT-SNAT"]);
    }
    ipt(&["-N", &dn]);
    ipt(&[
        "-A",
        &dn,
        "-p",
        "tcp",
        "--dport",
        host_port,
        "-j",
        "DNAT",
        "--to-destination",
        &format!("{ip}:{port}"),
    ]);
    ipt(&[
        "-A",
        "CNI-HOSTPORT-DNAT",
        "-m",
        "comment",
        "--comment",
        &comment,
        "-m",
        "multiport",
        "-p",
        "tcp",
        "--destination-ports",
        host_port,
        "-j",
        &dn,
    ]);
    let sn = netfilter::names::old_snat_chain(network, cid);
    ipt(&["-N", &sn]);
    ipt(&["-A", &sn, "-j", "MASQUERADE"]);
    ipt(&["-A", "CNI-HOSTPORT-SNAT", "-j", &sn]);
}

#[test]
fn del_removes_the_go_portmap_rules_of_that_container_only() {
    in_netns(|| {
        go_portmap_add("mynet", "gocid", "10.0.0.2", "8080", "80");
        go_portmap_add("mynet", "othercid", "10.0.0.3", "8081", "80");
        netfilter::del_hostports("mynet", "gocid").unwrap();
        let left = nat_rules(false).join("\n");
        assert!(
            !left.contains(&netfilter::names::dnat_chain("mynet", "gocid")),
            "{left}"
        );
        assert!(
            !left.contains(&netfilter::names::old_snat_chain("mynet", "gocid")),
            "{left}"
        );
        assert!(
            left.contains(&netfilter::names::dnat_chain("mynet", "othercid")),
            "{left}"
        );
    });
}

#[test]
fn iptables_gc_removes_containers_not_kept_on_that_network_only() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        let maps = [tcp(8080, 80)];
        ipt.add_hostports(&hp("keep", Some("10.0.0.2/24"), None, &maps))
            .unwrap();
        ipt.add_hostports(&hp("stale", Some("10.0.0.3/24"), None, &maps))
            .unwrap();
        ipt.add_hostports(&HostPorts {
            network: "other",
            ..hp("x", Some("10.0.1.3/24"), None, &maps)
        })
        .unwrap();
        go_portmap_add("mynet", "gostale", "10.0.0.4", "8084", "80");
        netfilter::gc_hostports("mynet", &["keep".to_string()]).unwrap();
        let left = nat_rules(false).join("\n");
        assert!(left.contains(&netfilter::names::dnat_chain("mynet", "keep")));
        assert!(left.contains(&netfilter::names::dnat_chain("other", "x")));
        assert!(
            !left.contains(&netfilter::names::dnat_chain("mynet", "stale")),
            "{left}"
        );
        assert!(
            !left.contains(&netfilter::names::dnat_chain("mynet", "gostale")),
            "{left}"
        );
    });
}

#[test]
fn concurrent_dels_of_the_same_and_different_containers_all_succeed() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        let maps = [tcp(8080, 80)];
        let cids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        for (i, cid) in cids.iter().enumerate() {
            ipt.add_hostports(&hp(cid, Some(&format!("10.0.0.{}/24", i + 2)), None, &maps))
                .unwrap();
        }
        let ns = netns::NetNs::current().unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = cids
                .iter()
                .chain(cids.iter())
                .map(|cid| {
                    let ns = &ns;
                    s.spawn(move || ns.run(|| netfilter::del_hostports("mynet", cid)).unwrap())
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        let left = nat_rules(false);
        assert!(left.iter().all(|l| !l.contains("CNI-DN-")), "{left:#?}");
    });
}

#[test]
fn nftables_add_writes_the_reference_layout_without_a_process() {
    in_netns(|| {
        let maps = [tcp(8080, 80), with_host_ip(tcp(8083, 83), "192.168.0.2")];
        let nft = netfilter::netfilter(Backend::Nftables);
        let h = hp("cid1", Some("10.0.0.2/24"), Some("2001:db8::2/64"), &maps);
        let n0 = netfilter::processes_spawned_on_this_thread();
        nft.add_hostports(&h).unwrap();
        // Written over netlink; `nft list` must print exactly what the
        // reference's `nft` text would have produced.
        assert_eq!(netfilter::processes_spawned_on_this_thread() - n0, 0);
        let owner = netfilter::names::nft_owner_chain("mynet", "cid1");
        let expected = format!(
            r#"table ip cni_hostport {{
	comment "CNI portmap plugin"
	chain hostports {{
		tcp dport 8080 dnat to 10.0.0.2:80 comment "cid1"
		ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "cid1"
	}}

	chain hostip_hostports {{
	}}

	chain hostports_all {{
		jump hostip_hostports
		jump hostports
	}}

	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump hostports_all
	}}

	chain output {{
		type nat hook output priority -100; policy accept;
		fib daddr type local jump hostports_all
	}}

	chain masquerading {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "cid1"
		ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "cid1"
	}}

	chain {owner} {{
		comment "cni-rs rule chains: hhmm"
		return comment "cid1"
	}}
}}
"#
        );
        assert_eq!(nft_table("ip", "cni_hostport"), expected);
        let v6 = nft_table("ip6", "cni_hostport");
        assert!(
            v6.contains("\t\ttcp dport 8080 dnat to [2001:db8::2]:80 comment \"cid1\"\n"),
            "{v6}"
        );
        assert!(!v6.contains("8083"), "{v6}");
        assert!(v6.contains(
            "\t\tip6 saddr 2001:db8::2 ip6 daddr 2001:db8::2 masquerade comment \"cid1\"\n"
        ));
        nft.check_hostports(&h).unwrap();

        // Repeated ADD: same state (listing + replace).
        nft.add_hostports(&h).unwrap();
        assert_eq!(nft_table("ip", "cni_hostport"), expected);

        // A second container: still no process.
        let n1 = netfilter::processes_spawned_on_this_thread();
        nft.add_hostports(&hp("cid2", Some("10.0.0.3/24"), None, &[tcp(8090, 80)]))
            .unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread() - n1, 0);

        netfilter::netfilter(Backend::Nftables)
            .del_hostports("mynet", "cid1")
            .unwrap();
        let left = nft_table("ip", "cni_hostport") + &nft_table("ip6", "cni_hostport");
        assert!(!left.contains("cid1"), "{left}");
        assert!(!left.contains(&owner), "{left}");
        assert!(left.contains("cid2"));
        assert!(nft.check_hostports(&h).is_err());
        netfilter::del_hostports("mynet", "cid1").unwrap();
    });
}

#[test]
fn nftables_del_removes_rules_in_the_go_reference_form() {
    in_netns(|| {
        // The transaction knftables renders for the reference's ADD.
        let script = r#"add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport masquerading { type nat hook postrouting priority srcnat ; }
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "gocid"
add rule ip cni_hostport hostip_hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "gocid"
add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "gocid"
add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.3:80 comment "other"
"#;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        netfilter::del_hostports("mynet", "gocid").unwrap();
        let left = nft_table("ip", "cni_hostport");
        assert!(!left.contains("gocid"), "{left}");
        assert!(left.contains("\"other\""), "{left}");
    });
}

#[test]
fn nftables_gc_removes_stale_containers_of_that_network() {
    in_netns(|| {
        let nft = netfilter::netfilter(Backend::Nftables);
        let maps = [tcp(8080, 80)];
        nft.add_hostports(&hp("keep", Some("10.0.0.2/24"), None, &maps))
            .unwrap();
        nft.add_hostports(&hp("stale", Some("10.0.0.3/24"), None, &maps))
            .unwrap();
        nft.add_hostports(&HostPorts {
            network: "other",
            ..hp("x", Some("10.0.1.3/24"), None, &maps)
        })
        .unwrap();
        netfilter::gc_hostports("mynet", &["keep".to_string()]).unwrap();
        let left = nft_table("ip", "cni_hostport");
        assert!(left.contains("\"keep\""), "{left}");
        assert!(left.contains("\"x\""), "{left}");
        assert!(!left.contains("stale"), "{left}");
    });
}

#[test]
fn nftables_conditions_and_injection_attempts() {
    in_netns(|| {
        let nft = netfilter::netfilter(Backend::Nftables);
        let maps = [tcp(8080, 80)];
        let conds = vec![
            "ip".into(),
            "saddr".into(),
            "!=".into(),
            "10.9.0.0/16".into(),
        ];
        let h = HostPorts {
            conditions_v4: &conds,
            ..hp("c", Some("10.0.0.2/24"), None, &maps)
        };
        nft.add_hostports(&h).unwrap();
        let t = nft_table("ip", "cni_hostport");
        assert!(
            t.contains("\t\tip saddr != 10.9.0.0/16 fib daddr type local jump hostports_all\n"),
            "{t}"
        );
        nft.check_hostports(&h).unwrap();

        let evil = vec!["tcp".to_string(), "dport 1 ; flush ruleset".to_string()];
        let h = HostPorts {
            conditions_v4: &evil,
            ..hp("c", Some("10.0.0.2/24"), None, &maps)
        };
        let before = netfilter::processes_spawned_on_this_thread();
        assert!(nft.add_hostports(&h).is_err());
        assert_eq!(netfilter::processes_spawned_on_this_thread(), before);

        // As in the reference, the conditions live on the shared entry
        // rules: the next ADD without conditions rewrites them.
        nft.add_hostports(&hp("d", Some("10.0.0.3/24"), None, &[tcp(8081, 80)]))
            .unwrap();
        let t = nft_table("ip", "cni_hostport");
        assert!(!t.contains("10.9.0.0/16"), "{t}");
        assert_eq!(
            t.matches("\t\tfib daddr type local jump hostports_all\n")
                .count(),
            2,
            "{t}"
        );
    });
}

#[test]
fn udp_conntrack_entries_for_mapped_ports_are_deleted() {
    in_netns(|| {
        sh("ip", &["link", "set", "lo", "up"]);
        // Create UDP conntrack entries by sending datagrams over lo.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for port in [7001u16, 7002] {
            sock.send_to(b"x", ("127.0.0.1", port)).unwrap();
        }
        let count = |port: u16| {
            let out = std::process::Command::new("conntrack")
                .args(["-L", "-p", "udp", "--orig-port-dst", &port.to_string()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        // conntrack only tracks when a netfilter hook asks for it.
        if count(7001) == 0 {
            sh(
                "nft",
                &[
                    "add table ip t; add chain ip t c { type filter hook output priority 0 ; }; add rule ip t c ct state new counter",
                ],
            );
            for port in [7001u16, 7002] {
                sock.send_to(b"x", ("127.0.0.1", port)).unwrap();
            }
        }
        assert_eq!(count(7001), 1);
        assert_eq!(count(7002), 1);
        assert_eq!(
            netfilter::conntrack::delete_udp_entries_for_ports(false, &[7001]).unwrap(),
            1
        );
        assert_eq!(count(7001), 0);
        assert_eq!(count(7002), 1);
    });
}

/// Concurrent first ADDs on a fresh node: every container's rules exist,
/// and the shared structure exists exactly once.
fn concurrent_adds(backend: Backend) {
    in_netns(|| {
        let cids: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
        let ns = netns::NetNs::current().unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = cids
                .iter()
                .enumerate()
                .map(|(i, cid)| {
                    let ns = &ns;
                    s.spawn(move || {
                        ns.run(|| {
                            let maps = [tcp(9000 + i as u16, 80)];
                            let ip = format!("10.0.0.{}/24", i + 2);
                            netfilter::netfilter(backend).add_hostports(&hp(
                                cid,
                                Some(&ip),
                                None,
                                &maps,
                            ))
                        })
                        .unwrap()
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        for (i, cid) in cids.iter().enumerate() {
            let maps = [tcp(9000 + i as u16, 80)];
            let ip = format!("10.0.0.{}/24", i + 2);
            netfilter::netfilter(backend)
                .check_hostports(&hp(cid, Some(&ip), None, &maps))
                .unwrap();
        }
        match backend {
            Backend::Iptables => {
                let rules = nat_rules(false);
                for shared in [
                    "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                    "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                    "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
                ] {
                    assert_eq!(
                        rules.iter().filter(|r| *r == shared).count(),
                        1,
                        "{shared}: {rules:#?}"
                    );
                }
            }
            Backend::Nftables => {
                let t = nft_table("ip", "cni_hostport");
                assert_eq!(
                    t.matches("fib daddr type local jump hostports_all").count(),
                    2,
                    "{t}"
                );
                assert_eq!(t.matches("jump hostports\n").count(), 1, "{t}");
            }
        }
    });
}

#[test]
fn concurrent_first_adds_with_iptables() {
    concurrent_adds(Backend::Iptables);
}

#[test]
fn concurrent_first_adds_with_nftables() {
    concurrent_adds(Backend::Nftables);
}

/// Every kind of rule the netlink writer builds, against the text `nft`
/// itself parses: both tables must list identically.
#[test]
fn nftables_netlink_rules_list_exactly_like_nft_text() {
    let maps = [
        tcp(8080, 80),
        PortMapping {
            protocol: Protocol::Udp,
            ..tcp(5353, 53)
        },
        PortMapping {
            protocol: Protocol::Sctp,
            ..tcp(9999, 99)
        },
        with_host_ip(tcp(8083, 83), "192.168.0.2"),
        with_host_ip(tcp(8443, 443), "2001:db8::1"),
    ];
    let ours = in_netns(|| {
        netfilter::netfilter(Backend::Nftables)
            .add_hostports(&hp(
                "cid1",
                Some("10.0.0.2/24"),
                Some("2001:db8::2/64"),
                &maps,
            ))
            .unwrap();
        nft_table("ip", "cni_hostport") + &nft_table("ip6", "cni_hostport")
    });
    let owner = netfilter::names::nft_owner_chain("mynet", "cid1");
    let script = format!(
        r#"add table ip cni_hostport {{ comment "CNI portmap plugin" ; }}
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports_all
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add chain ip cni_hostport prerouting {{ type nat hook prerouting priority -100 ; }}
add rule ip cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip cni_hostport output {{ type nat hook output priority -100 ; }}
add rule ip cni_hostport output fib daddr type local jump hostports_all
add chain ip cni_hostport masquerading {{ type nat hook postrouting priority srcnat ; }}
add chain ip cni_hostport {owner} {{ comment "cni-rs rule chains: hhhhmm" ; }}
add rule ip cni_hostport {owner} return comment "cid1"
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "cid1"
add rule ip cni_hostport hostports udp dport 5353 dnat to 10.0.0.2:53 comment "cid1"
add rule ip cni_hostport hostports sctp dport 9999 dnat to 10.0.0.2:99 comment "cid1"
add rule ip cni_hostport hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "cid1"
add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "cid1"
add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "cid1"
add table ip6 cni_hostport {{ comment "CNI portmap plugin" ; }}
add chain ip6 cni_hostport hostports
add chain ip6 cni_hostport hostip_hostports
add chain ip6 cni_hostport hostports_all
add rule ip6 cni_hostport hostports_all jump hostip_hostports
add rule ip6 cni_hostport hostports_all jump hostports
add chain ip6 cni_hostport prerouting {{ type nat hook prerouting priority -100 ; }}
add rule ip6 cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip6 cni_hostport output {{ type nat hook output priority -100 ; }}
add rule ip6 cni_hostport output fib daddr type local jump hostports_all
add chain ip6 cni_hostport masquerading {{ type nat hook postrouting priority srcnat ; }}
add chain ip6 cni_hostport {owner} {{ comment "cni-rs rule chains: hhhhm" ; }}
add rule ip6 cni_hostport {owner} return comment "cid1"
add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [2001:db8::2]:80 comment "cid1"
add rule ip6 cni_hostport hostports udp dport 5353 dnat to [2001:db8::2]:53 comment "cid1"
add rule ip6 cni_hostport hostports sctp dport 9999 dnat to [2001:db8::2]:99 comment "cid1"
add rule ip6 cni_hostport hostports ip6 daddr 2001:db8::1 tcp dport 8443 dnat to [2001:db8::2]:443 comment "cid1"
add rule ip6 cni_hostport masquerading ip6 saddr 2001:db8::2 ip6 daddr 2001:db8::2 masquerade comment "cid1"
"#
    );
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
        nft_table("ip", "cni_hostport") + &nft_table("ip6", "cni_hostport")
    });
    assert_eq!(ours, theirs);
    // And the listing parses back into rules CHECK recognises.
    assert!(
        ours.contains("sctp dport 9999 dnat to [2001:db8::2]:99 comment \"cid1\""),
        "{ours}"
    );
}
