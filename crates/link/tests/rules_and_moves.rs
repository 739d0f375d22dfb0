//! Policy rules, routes moved between tables, and devices moved between
//! namespaces with a rename, against the real kernel in throwaway
//! namespaces.

use std::net::IpAddr;
use std::process::Command;

use link::Netlink;
use netns::TempNetns;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(ns: &TempNetns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.name()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn source_rules_are_added_listed_and_deleted() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = TempNetns::new("link-rule").unwrap();
    let nl = Netlink::in_netns(&ns.open().unwrap()).unwrap();
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    let v6: IpAddr = "2001:db8::3".parse().unwrap();
    nl.add_source_rule(v4, 100).unwrap();
    nl.add_source_rule(v6, 70000).unwrap();
    assert!(ip(&ns, &["rule"]).contains("32765:\tfrom 10.1.2.3 lookup 100"));
    assert!(ip(&ns, &["-6", "rule"]).contains("from 2001:db8::3 lookup 70000"));
    let rules = nl.rules().unwrap();
    let ours: Vec<_> = rules.iter().filter(|r| r.source_host().is_some()).collect();
    assert_eq!(ours.len(), 2, "{rules:?}");
    assert_eq!((ours[0].source_host(), ours[0].table), (Some(v4), 100));
    assert_eq!((ours[1].source_host(), ours[1].table), (Some(v6), 70000));
    for r in &ours {
        assert!(nl.delete_rule(r).unwrap());
        assert!(!nl.delete_rule(r).unwrap(), "already gone");
    }
    assert!(nl.rules().unwrap().iter().all(|r| r.source.is_none()));
}

#[test]
fn routes_keep_their_attributes_when_copied_to_a_table() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = TempNetns::new("link-table").unwrap();
    let nl = Netlink::in_netns(&ns.open().unwrap()).unwrap();
    ip(
        &ns,
        &["link", "add", "t0", "type", "veth", "peer", "name", "t1"],
    );
    ip(&ns, &["addr", "add", "10.7.0.5/24", "dev", "t0"]);
    ip(&ns, &["link", "set", "t0", "up"]);
    ip(&ns, &["link", "set", "t1", "up"]);
    ip(
        &ns,
        &[
            "route",
            "add",
            "10.8.0.0/16",
            "via",
            "10.7.0.1",
            "metric",
            "7",
            "mtu",
            "1400",
        ],
    );
    let t0 = nl.link_by_name("t0").unwrap().unwrap();
    let mut main = nl.kernel_routes(Some(254), Some(t0.index)).unwrap();
    main.retain(|r| r.destination.is_ipv4());
    assert_eq!(main.len(), 2, "{main:?}");
    for r in &main {
        nl.copy_route_to_table(r, 300).unwrap();
        nl.copy_route_to_table(r, 300).unwrap(); // replace: no error
    }
    let table = ip(&ns, &["route", "show", "table", "300"]);
    assert!(
        table.contains("10.7.0.0/24 dev t0 proto kernel scope link src 10.7.0.5"),
        "{table}"
    );
    assert!(
        table.contains("10.8.0.0/16 via 10.7.0.1 dev t0 metric 7 mtu 1400"),
        "{table}"
    );
    let mut copied = nl.kernel_routes(Some(300), Some(t0.index)).unwrap();
    copied.sort_by_key(|r| r.destination.prefix() != 24);
    assert_eq!(copied.len(), 2);
    assert_eq!(copied[0].prefsrc, Some("10.7.0.5".parse().unwrap()));
    for r in &copied {
        assert!(nl.delete_kernel_route(r).unwrap());
        assert!(!nl.delete_kernel_route(r).unwrap());
    }
    assert_eq!(ip(&ns, &["route", "show", "table", "300"]), "");
    nl.replace_link_route(
        t0.index,
        "10.7.0.0/24".parse().unwrap(),
        "10.7.0.5".parse().unwrap(),
    )
    .unwrap();
    assert!(ip(&ns, &["route", "show", "10.7.0.0/24"]).contains("scope link src 10.7.0.5"));
}

#[test]
fn a_device_moves_renamed_and_keeps_its_alias() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let a = TempNetns::new("link-mva").unwrap();
    let b = TempNetns::new("link-mvb").unwrap();
    let (a_ns, b_ns) = (a.open().unwrap(), b.open().unwrap());
    let na = Netlink::in_netns(&a_ns).unwrap();
    let nb = Netlink::in_netns(&b_ns).unwrap();
    ip(
        &a,
        &["link", "add", "m0", "type", "veth", "peer", "name", "m1"],
    );
    let m0 = na.link_by_name("m0").unwrap().unwrap();
    assert_eq!(na.alias_of(m0.index).unwrap(), None);
    na.set_alias(m0.index, "m0").unwrap();
    na.move_to_netns(m0.index, &b_ns, "net9").unwrap();
    assert!(na.link_by_name("m0").unwrap().is_none());
    let moved = nb.link_by_name("net9").unwrap().unwrap();
    assert_eq!(moved.mac, m0.mac);
    assert_eq!(nb.alias_of(moved.index).unwrap().as_deref(), Some("m0"));
    // A name taken in the target: the device stays where it is.
    ip(
        &a,
        &[
            "link", "add", "taken0", "type", "veth", "peer", "name", "taken1",
        ],
    );
    let e = nb.move_to_netns(moved.index, &a_ns, "taken0").unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(nb.link_by_name("net9").unwrap().is_some());
    nb.move_to_netns(moved.index, &a_ns, "m0").unwrap();
    let back = na.link_by_name("m0").unwrap().unwrap();
    na.set_alias(back.index, "").unwrap();
    assert_eq!(na.alias_of(back.index).unwrap(), None);
}
