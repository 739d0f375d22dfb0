//! The link crate against the real kernel, inside throwaway namespaces: a
//! "host" namespace holding the bridge and a "container" namespace.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use ipnetwork::IpNetwork;
use link::{
    BridgeOptions, MacAddr, Netlink, OperState, PortOptions, Route, VethOptions, VlanEntry, sysctl,
};
use netns::TempNetns;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// `ip -j <args>` run inside namespace `ns`, parsed.
fn ip_json(ns: &TempNetns, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-j"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

struct Pair {
    host_ns: TempNetns,
    cont_ns: TempNetns,
    host: Netlink,
    cont: Netlink,
}

/// `ensure_bridge` with a name and every other option at its default.
fn named_bridge(p: &Pair, name: &str) -> link::Result<link::Link> {
    p.host.ensure_bridge(&BridgeOptions {
        name: name.into(),
        ..Default::default()
    })
}

fn pair() -> Pair {
    let host_ns = TempNetns::new("link-host").unwrap();
    let cont_ns = TempNetns::new("link-cont").unwrap();
    let host = Netlink::in_netns(&host_ns.open().unwrap()).unwrap();
    let cont = Netlink::in_netns(&cont_ns.open().unwrap()).unwrap();
    Pair {
        host_ns,
        cont_ns,
        host,
        cont,
    }
}

#[test]
fn bridge_is_created_then_reused_and_a_non_bridge_is_refused() {
    require_root!();
    let p = pair();
    let opts = BridgeOptions {
        name: "br-test".into(),
        mtu: Some(1400),
        vlan_filtering: false,
        promisc: true,
    };
    let br = p.host.ensure_bridge(&opts).unwrap();
    assert!(br.is_bridge());
    assert!(br.up);
    assert!(br.promisc);
    assert_eq!(br.mtu, 1400);
    assert_eq!(br.vlan_filtering, Some(false));
    let j = ip_json(&p.host_ns, &["-d", "link", "show", "br-test"]);
    assert_eq!(j[0]["linkinfo"]["info_kind"], "bridge");
    assert_eq!(j[0]["linkinfo"]["info_data"]["vlan_filtering"], 0);

    // Reuse: same index, not reconfigured.
    let again = p
        .host
        .ensure_bridge(&BridgeOptions {
            name: "br-test".into(),
            mtu: Some(1300),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(again.index, br.index);
    assert_eq!(again.mtu, 1400);

    // A veth called like the bridge we want.
    let cont = p.cont_ns.open().unwrap();
    p.host
        .create_veth(&VethOptions {
            container_name: "eth0",
            container_ns: &cont,
            host_name: Some("notabr"),
            bridge_index: None,
            mtu: None,
            container_mac: None,
        })
        .unwrap();
    let err = named_bridge(&p, "notabr").unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"notabr\" already exists but is not a bridge"
    );
}

#[test]
fn veth_peer_is_born_in_the_container_attached_and_findable() {
    require_root!();
    let p = pair();
    let br = p
        .host
        .ensure_bridge(&BridgeOptions {
            name: "br-veth".into(),
            ..Default::default()
        })
        .unwrap();
    let cont_ns = p.cont_ns.open().unwrap();
    let mac: MacAddr = "0a:58:0a:01:02:03".parse().unwrap();
    let made = p
        .host
        .create_veth(&VethOptions {
            container_name: "eth0",
            container_ns: &cont_ns,
            host_name: None,
            bridge_index: Some(br.index),
            mtu: Some(1450),
            container_mac: Some(mac),
        })
        .unwrap();
    let host = &made.host;
    // The new bridge kept its own MAC instead of taking the port's.
    assert_eq!(p.host.link_by_index(br.index).unwrap().unwrap().mac, br.mac);
    assert_ne!(host.mac, br.mac);
    assert!(
        host.name.starts_with("veth") && host.name.len() == 12,
        "{}",
        host.name
    );
    assert!(host.name[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(host.controller, Some(br.index));
    assert!(host.up);
    assert_eq!(host.mtu, 1450);

    // The container end exists only in the container namespace.
    assert!(p.host.link_by_name("eth0").unwrap().is_none());
    let eth0 = p.cont.link_by_name("eth0").unwrap().unwrap();
    assert!(eth0.is_veth());
    assert_eq!(eth0.mac, Some(mac));
    assert_eq!(eth0.mtu, 1450);
    assert!(!eth0.up);
    let j = ip_json(&p.cont_ns, &["link", "show", "eth0"]);
    assert_eq!(j[0]["address"], "0a:58:0a:01:02:03");

    // Host end found from the container end's index, and vice versa.
    let found = p.host.veths_with_peer(eth0.index).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].index, host.index);
    assert_eq!(eth0.peer_index, Some(host.index));
    assert_eq!(p.host.ports_of(br.index).unwrap().len(), 1);

    // Bringing the container end up makes the port operationally up; we
    // learn it from notifications, well before the deadline.
    p.cont.set_up(eth0.index).unwrap();
    let t = std::time::Instant::now();
    let state = p
        .host
        .wait_oper_up(host.index, Duration::from_secs(5))
        .unwrap();
    assert_eq!(state, OperState::Up);
    assert!(t.elapsed() < Duration::from_secs(3));

    // A port whose peer stays down reports its state at the deadline.
    p.cont.set_down(eth0.index).unwrap();
    let state = p
        .host
        .wait_oper_up(host.index, Duration::from_millis(200))
        .unwrap();
    assert_ne!(state, OperState::Up);

    // Deleting one end removes both; a second delete is not an error.
    assert!(p.cont.delete_link(eth0.index).unwrap());
    assert!(p.host.link_by_index(host.index).unwrap().is_none());
    assert!(!p.cont.delete_link(eth0.index).unwrap());
    assert_eq!(
        p.host
            .wait_oper_up(host.index, Duration::from_millis(10))
            .unwrap(),
        OperState::NotPresent
    );
}

#[test]
fn set_mac_mtu_and_explicit_host_name() {
    require_root!();
    let p = pair();
    let cont_ns = p.cont_ns.open().unwrap();
    let made = p
        .host
        .create_veth(&VethOptions {
            container_name: "eth1",
            container_ns: &cont_ns,
            host_name: Some("vethfixed"),
            bridge_index: None,
            mtu: None,
            container_mac: None,
        })
        .unwrap();
    let mac: MacAddr = "02:00:00:00:00:42".parse().unwrap();
    p.host.set_mac(made.host.index, mac).unwrap();
    p.host.set_mtu(made.host.index, 1280).unwrap();
    let l = p.host.link_by_name("vethfixed").unwrap().unwrap();
    assert_eq!(l.mac, Some(mac));
    assert_eq!(l.mtu, 1280);
    // The same explicit name again clashes.
    let err = p
        .host
        .create_veth(&VethOptions {
            container_name: "eth2",
            container_ns: &cont_ns,
            host_name: Some("vethfixed"),
            bridge_index: None,
            mtu: None,
            container_mac: None,
        })
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(
        err.to_string()
            .starts_with("create veth pair vethfixed <-> eth2: "),
        "{err}"
    );
}

#[test]
fn addresses_and_routes_with_every_field() {
    require_root!();
    let p = pair();
    let cont_ns = p.cont_ns.open().unwrap();
    p.host
        .create_veth(&VethOptions {
            container_name: "eth0",
            container_ns: &cont_ns,
            host_name: None,
            bridge_index: None,
            mtu: None,
            container_mac: None,
        })
        .unwrap();
    let eth0 = p.cont.require_link("eth0").unwrap();
    p.cont.set_up(eth0.index).unwrap();
    // No DAD, so the v6 address is usable at once.
    p.cont_ns
        .open()
        .unwrap()
        .run(|| sysctl::ensure("net/ipv6/conf/eth0/accept_dad", "0"))
        .unwrap()
        .unwrap();

    p.cont.add_address(eth0.index, net("10.1.2.5/24")).unwrap();
    p.cont
        .add_address(eth0.index, net("2001:db8::5/64"))
        .unwrap();
    let err = p
        .cont
        .add_address(eth0.index, net("10.1.2.5/24"))
        .unwrap_err();
    assert!(err.is_exists());
    let addrs = p.cont.addresses(Some(eth0.index)).unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.network == net("10.1.2.5/24") && a.scope == 0)
    );
    assert!(addrs.iter().any(|a| a.network == net("2001:db8::5/64")));
    let j = ip_json(&p.cont_ns, &["addr", "show", "eth0"]);
    let ips: Vec<String> = j[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(ips.contains(&"10.1.2.5/24".to_string()), "{ips:?}");

    let default4 = Route {
        gateway: Some("10.1.2.1".parse().unwrap()),
        oif: Some(eth0.index),
        priority: Some(100),
        mtu: Some(1400),
        advmss: Some(1300),
        ..Route::to(net("0.0.0.0/0"))
    };
    p.cont.add_route(&default4).unwrap();
    let in_table = Route {
        gateway: Some("10.1.2.1".parse().unwrap()),
        oif: Some(eth0.index),
        table: Some(1000),
        ..Route::to(net("192.168.7.0/24"))
    };
    p.cont.add_route(&in_table).unwrap();
    let onlink = Route {
        oif: Some(eth0.index),
        scope: Some(link::scope::LINK),
        ..Route::to(net("172.16.0.0/16"))
    };
    p.cont.add_route(&onlink).unwrap();
    let default6 = Route {
        gateway: Some("2001:db8::1".parse().unwrap()),
        oif: Some(eth0.index),
        ..Route::to(net("::/0"))
    };
    p.cont.add_route(&default6).unwrap();

    let routes = p.cont.routes_via(eth0.index).unwrap();
    for want in [&default4, &in_table, &onlink] {
        assert!(routes.contains(want), "missing {want} in {routes:?}");
    }
    assert!(
        routes
            .iter()
            .any(|r| r.destination == net("::/0") && r.gateway == default6.gateway),
        "{routes:?}"
    );
    let j = ip_json(&p.cont_ns, &["route", "show", "table", "1000"]);
    assert_eq!(j[0]["dst"], "192.168.7.0/24");
    assert_eq!(j[0]["gateway"], "10.1.2.1");
    let j = ip_json(&p.cont_ns, &["route", "show", "default"]);
    assert_eq!(j[0]["metric"], 100);
    assert_eq!(j[0]["metrics"][0]["mtu"], 1400);

    // The kernel's choice of output interface.
    assert_eq!(
        p.cont.route_get("8.8.8.8".parse().unwrap()).unwrap(),
        Some(eth0.index)
    );
    assert_eq!(
        p.cont.route_get("2001:db8::9".parse().unwrap()).unwrap(),
        Some(eth0.index)
    );
    assert_eq!(p.host.route_get(IpAddr::from([8, 8, 8, 8])).unwrap(), None);

    assert!(p.cont.delete_route(&in_table).unwrap());
    assert!(!p.cont.delete_route(&in_table).unwrap());
    assert!(
        p.cont
            .delete_address(eth0.index, net("10.1.2.5/24"))
            .unwrap()
    );
    assert!(
        !p.cont
            .delete_address(eth0.index, net("10.1.2.5/24"))
            .unwrap()
    );
    // The address's gateway routes went with it.
    assert!(!p.cont.routes_via(eth0.index).unwrap().contains(&default4));
    assert!(p.cont.check_dad_failed(eth0.index).is_ok());
}

#[test]
fn vlans_hairpin_and_isolation_on_a_port() {
    require_root!();
    let p = pair();
    let vlan_filtering = match p.host.ensure_bridge(&BridgeOptions {
        name: "br-vlan".into(),
        vlan_filtering: true,
        ..Default::default()
    }) {
        Ok(_) => true,
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            eprintln!("VLAN part skipped: this kernel has no bridge VLAN filtering ({e})");
            false
        }
        Err(e) => panic!("{e}"),
    };
    let br = p
        .host
        .ensure_bridge(&BridgeOptions {
            name: "br-vlan".into(),
            ..Default::default()
        })
        .unwrap();
    let cont_ns = p.cont_ns.open().unwrap();
    let made = p
        .host
        .create_veth(&VethOptions {
            container_name: "eth0",
            container_ns: &cont_ns,
            host_name: None,
            bridge_index: Some(br.index),
            mtu: None,
            container_mac: None,
        })
        .unwrap();
    let port = made.host.index;
    port_flags(&p, &made.host);
    if vlan_filtering {
        vlan_table(&p, port, &made.host.name);
    }
}

fn vlan_table(p: &Pair, port: u32, port_name: &str) {
    // A new port gets the bridge's default PVID 1.
    assert_eq!(
        p.host.port_vlans(port).unwrap(),
        vec![VlanEntry {
            vid: 1,
            pvid: true,
            untagged: true
        }]
    );
    p.host.clear_port_vlans(port).unwrap();
    assert!(p.host.port_vlans(port).unwrap().is_empty());
    p.host
        .add_port_vlan(
            port,
            VlanEntry {
                vid: 100,
                pvid: true,
                untagged: true,
            },
        )
        .unwrap();
    for vid in 200..=202 {
        p.host
            .add_port_vlan(
                port,
                VlanEntry {
                    vid,
                    pvid: false,
                    untagged: false,
                },
            )
            .unwrap();
    }
    let vlans = p.host.port_vlans(port).unwrap();
    assert_eq!(vlans.len(), 4, "{vlans:?}");
    assert!(vlans.contains(&VlanEntry {
        vid: 100,
        pvid: true,
        untagged: true
    }));
    assert!(vlans.contains(&VlanEntry {
        vid: 201,
        pvid: false,
        untagged: false
    }));
    let out = Command::new("bridge")
        .args([
            "-n",
            p.host_ns.name(),
            "-j",
            "vlan",
            "show",
            "dev",
            port_name,
        ])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = j.to_string();
    assert!(
        text.contains("\"vlan\":100") && text.contains("PVID"),
        "{text}"
    );
}

fn port_flags(p: &Pair, host: &link::Link) {
    let port = host.index;
    assert_eq!(host.hairpin, Some(false));
    assert_eq!(host.isolated, Some(false));
    p.host
        .set_port_options(
            port,
            PortOptions {
                hairpin: Some(true),
                isolated: Some(true),
            },
        )
        .unwrap();
    let l = p.host.link_by_index(port).unwrap().unwrap();
    assert_eq!(l.hairpin, Some(true));
    assert_eq!(l.isolated, Some(true));
    let j = ip_json(&p.host_ns, &["-d", "link", "show", &host.name]);
    assert_eq!(j[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    assert_eq!(j[0]["linkinfo"]["info_slave_data"]["isolated"], true);
}

#[test]
fn sysctls_apply_to_the_namespace_of_the_writing_thread() {
    require_root!();
    let p = pair();
    let ns = p.cont_ns.open().unwrap();
    let (wrote, again) = ns
        .run(|| {
            let a = sysctl::ensure("net/ipv4/ip_forward", "1").unwrap();
            let b = sysctl::ensure("net/ipv4/ip_forward", "1").unwrap();
            (a, b)
        })
        .unwrap();
    assert!(wrote);
    assert!(!again);
    let host_value = p
        .host_ns
        .open()
        .unwrap()
        .run(|| sysctl::read("net/ipv4/ip_forward").unwrap())
        .unwrap();
    assert_eq!(host_value, "0");
    assert_eq!(ns.run(sysctl::ipv4_forwarding).unwrap(), Some(true));
    let host_forwarding = p.host_ns.open().unwrap().run(sysctl::ipv4_forwarding);
    assert_eq!(host_forwarding.unwrap(), Some(false));
    let missing = ns
        .run(|| sysctl::ensure_if_present("net/ipv6/conf/nosuchif/accept_ra", "0"))
        .unwrap()
        .unwrap();
    assert!(!missing);
    let err = ns
        .run(|| sysctl::ensure("net/ipv6/conf/nosuchif/accept_ra", "0"))
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("sysctl net/ipv6/conf/nosuchif/accept_ra: "),
        "{err}"
    );
}

/// The link's `route_localnet` as netlink reports it follows the sysctl:
/// off on a new link, on once written, and per link.
#[test]
fn route_localnet_is_read_with_the_link() {
    require_root!();
    let p = pair();
    let ns = p.host_ns.open().unwrap();
    let localnet = |index| p.host.link_by_index(index).unwrap().unwrap().route_localnet;
    let lo = p.host.link_by_name("lo").unwrap().unwrap();
    let br = named_bridge(&p, "rl0").unwrap();
    assert_eq!(localnet(br.index), Some(false));
    ns.run(|| sysctl::write("net/ipv4/conf/rl0/route_localnet", "1").unwrap())
        .unwrap();
    assert_eq!(localnet(br.index), Some(true));
    assert_eq!(localnet(lo.index), Some(false));
}

#[test]
fn lookups_of_missing_things_are_none() {
    require_root!();
    let p = pair();
    assert!(p.host.link_by_name("nope0").unwrap().is_none());
    assert!(p.host.link_by_index(9999).unwrap().is_none());
    let err = p.host.require_link("nope0").unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "find link nope0: No such device (os error 19)"
    );
}
