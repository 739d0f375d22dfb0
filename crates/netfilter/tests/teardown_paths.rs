//! Teardown finds and deletes rules over nf_tables netlink without
//! starting processes, and falls back to the programs when state may live
//! where netlink cannot see it (iptables-legacy).

mod common;

use common::{in_netns, nat_rules, nft_table, sh};
use netfilter::{Attachment, Backend, HostPorts, PortMapping, Protocol, Snat};

fn hp<'a>(cid: &'a str, maps: &'a [PortMapping]) -> HostPorts<'a> {
    HostPorts {
        network: "mynet",
        container_id: cid,
        ipv4: Some("10.0.0.2/24".parse().unwrap()),
        ipv6: Some("2001:db8::2/64".parse().unwrap()),
        mappings: maps,
        snat: Snat::MarkBit(13),
        masq_all: false,
        conditions_v4: &[],
        conditions_v6: &[],
    }
}

const MAPS: [PortMapping; 1] = [PortMapping {
    host_port: 8080,
    container_port: 80,
    protocol: Protocol::Tcp,
    host_ip: None,
}];

#[test]
fn nftables_del_and_masquerade_teardown_start_no_process() {
    in_netns(|| {
        let nft = netfilter::netfilter(Backend::Nftables);
        nft.add_hostports(&hp("a", &MAPS)).unwrap();
        nft.add_hostports(&hp("b", &MAPS)).unwrap();
        let att = Attachment {
            network: "mynet",
            container_id: "a",
            ifname: "eth0",
        };
        nft.setup_masquerade(&att, &["10.0.0.2/24".parse().unwrap()])
            .unwrap();
        let before = netfilter::processes_spawned_on_this_thread();
        netfilter::del_hostports("mynet", "a").unwrap();
        netfilter::teardown_masquerade(&att).unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread(), before);
        let left = nft_table("ip", "cni_hostport") + &nft_table("ip6", "cni_hostport");
        assert!(!left.contains("\"a\""), "{left}");
        assert!(
            !left.contains(&netfilter::names::nft_owner_chain("mynet", "a")),
            "{left}"
        );
        assert!(left.contains("\"b\""), "{left}");
        let masq = nft_table("inet", "cni_plugins_masquerade");
        assert!(!masq.contains("saddr"), "{masq}");
    });
}

#[test]
fn iptables_del_and_masquerade_teardown_start_no_process_with_iptables_nft() {
    in_netns(|| {
        let ipt = netfilter::netfilter(Backend::Iptables);
        ipt.add_hostports(&hp("a", &MAPS)).unwrap();
        ipt.add_hostports(&hp("b", &MAPS)).unwrap();
        let att = Attachment {
            network: "mynet",
            container_id: "a",
            ifname: "eth0",
        };
        ipt.setup_masquerade(&att, &["10.0.0.2/24".parse().unwrap()])
            .unwrap();
        let before = netfilter::processes_spawned_on_this_thread();
        netfilter::del_hostports("mynet", "a").unwrap();
        netfilter::teardown_masquerade(&att).unwrap();
        assert_eq!(netfilter::processes_spawned_on_this_thread(), before);
        for v6 in [false, true] {
            let left = nat_rules(v6).join("\n");
            assert!(
                !left.contains(&netfilter::names::dnat_chain("mynet", "a")),
                "{left}"
            );
            assert!(
                !left.contains(&netfilter::names::masq_chain("mynet", "a")),
                "{left}"
            );
            assert!(
                left.contains(&netfilter::names::dnat_chain("mynet", "b")),
                "{left}"
            );
        }
    });
}

#[test]
fn with_a_legacy_nat_table_loaded_teardown_uses_the_programs() {
    in_netns(|| {
        // Loading the legacy nat table makes legacy state possible, which
        // netlink cannot see.
        sh("iptables-legacy", &["-t", "nat", "-L", "-n"]);
        let names = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap();
        assert!(names.lines().any(|l| l == "nat"), "{names}");
        let ipt = netfilter::netfilter(Backend::Iptables);
        ipt.add_hostports(&hp("a", &MAPS)).unwrap();
        let before = netfilter::processes_spawned_on_this_thread();
        netfilter::del_hostports("mynet", "a").unwrap();
        assert!(netfilter::processes_spawned_on_this_thread() > before);
        assert!(
            !nat_rules(false)
                .join("\n")
                .contains(&netfilter::names::dnat_chain("mynet", "a"))
        );
    });
}
