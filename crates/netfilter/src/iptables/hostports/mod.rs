//! portmap's host ports in iptables, laid out as the reference's
//! `portmap_iptables.go` (table `nat`):
//!
//! ```text
//! PREROUTING, OUTPUT:   -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT        (appended)
//! POSTROUTING:          -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ  (first)
//! CNI-HOSTPORT-SETMARK: -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! CNI-HOSTPORT-MASQ:    -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! CNI-HOSTPORT-DNAT:    -m comment --comment 'dnat name: "<net>" id: "<cid>"' -m multiport -p tcp --destination-ports 8080,8081 -j CNI-DN-<hash>
//! CNI-DN-<hash>:        -p tcp --dport 8080 -s <subnet> -j CNI-HOSTPORT-SETMARK      (hairpin)
//!                       -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK     (localhost, IPv4)
//!                       -p tcp --dport 8080 -j DNAT --to-destination <ip>:<port>
//! ```
//!
//! The reference needs about 21 `iptables` processes per ADD. Here, once the
//! shared chains exist, an ADD is one `iptables-restore` per family: the
//! batch *checks* the shared rules (`-C`) that netlink did not already show
//! to be there (see [`rules::Shape`]) and *creates* the container chain (`-N`), so
//! it fails as a whole when either assumption is wrong, and only then do we
//! read the table and write a repairing batch.

mod rules;

use super::{
    Batch, Family, NatTable, apply, read_chains, read_modify_write, read_modify_write_with,
    read_nat, tolerate_unusable, xtrules,
};
use crate::error::{Error, Errors, Result};
use crate::hostports::{HostPorts, Snat};
use crate::lock::SharedChainsLock;
use crate::names::{HOSTPORT_DNAT_CHAIN, OLD_HOSTPORT_SNAT_CHAIN, dnat_chain, old_snat_chain};
use crate::nfnl::inventory::Inventory;
use rules::{ContainerRules, container_rules, shared, write_container};

/// The repairing batch: create what is missing, rewrite the container chain.
fn plan_full(table: &NatTable, snat: &Snat, c: &ContainerRules) -> Batch {
    let mut b = Batch::default();
    for (chain, rules) in shared(snat) {
        if !table.has_chain(chain) {
            // `-N`, not a `:` declaration, which would flush the chain if a
            // concurrent ADD created it meanwhile; `-N` fails and we retry.
            b.new_chain(chain);
        }
        for r in rules {
            if !table.rules_in(r.chain).any(|x| x.spec == r.saved) {
                if r.first {
                    b.insert_first(r.chain, &r.args);
                } else {
                    b.append(r.chain, &r.args);
                }
            }
        }
    }
    // Create or flush the container's own chain, drop its old entry rules.
    b.declare_chain(&c.chain);
    for old in table.jumps(HOSTPORT_DNAT_CHAIN, &c.chain) {
        b.delete_saved(HOSTPORT_DNAT_CHAIN, &old.spec);
    }
    write_container(&mut b, c);
    b
}

/// The number in `iptables-restore`'s "line N failed" (legacy and nft
/// variants both say `line N`).
fn failed_line(e: &Error) -> Option<usize> {
    let Error::Command { stderr, .. } = e else {
        return None;
    };
    let (_, rest) = stderr.split_once("line ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The batch for a node where no shared chain exists yet: create them all.
fn bootstrap(snat: &Snat, c: &ContainerRules) -> Batch {
    let mut b = Batch::default();
    for (chain, rules) in shared(snat) {
        b.new_chain(chain);
        for r in rules {
            if r.first {
                b.insert_first(r.chain, &r.args);
            } else {
                b.append(r.chain, &r.args);
            }
        }
    }
    b.new_chain(&c.chain);
    write_container(&mut b, c);
    b
}

/// The container's chain, its rules and its entry rules as one nf_tables
/// transaction, each rule as iptables-nft makes it (`xtrules`): no process.
/// Only when every shared rule is already there and iptables-nft holds the
/// table; `None` (an option `xtrules` does not know) or an error (the
/// chain exists: a repeated ADD) means "use iptables-restore".
fn add_over_netlink(family: Family, c: &ContainerRules) -> Option<std::io::Result<()>> {
    if family.legacy_nat_loaded() {
        return None;
    }
    let f = family.nfproto();
    let mut b = crate::nfnl::writer::Batch::new();
    b.add_chain(f, "nat", &c.chain, None, true);
    for (chain, args) in c
        .rules
        .iter()
        .map(|r| (c.chain.as_str(), r))
        .chain(c.entries.iter().map(|e| (HOSTPORT_DNAT_CHAIN, e)))
    {
        let r = xtrules::translate(family, args)?;
        b.add_xt_rule(f, "nat", chain, r.proto, r.exprs);
    }
    Some(b.commit())
}

/// At most two processes per family: the optimistic batch, then either
/// the bootstrap batch (first ADD on a node: a shared check failed) or a
/// read followed by a repairing write (a repeated ADD, or state someone
/// changed by hand) — three only in that last case.
pub fn add(hp: &HostPorts<'_>) -> Result<()> {
    if hp.mappings.is_empty() {
        return Ok(());
    }
    for (addr, conditions) in hp.families() {
        let family = Family::of(&addr);
        let c = container_rules(hp, addr, conditions);
        let mut fast = Batch::default();
        for (_, rules) in shared(&hp.snat) {
            for r in rules {
                // Any `-C` makes iptables-restore fetch the rules of the
                // base chains (POSTROUTING holds a masquerade jump per
                // bridged container) and of the chains it names; netlink
                // reads one chain. A rule not found keeps its `-C`, so the
                // batch fails and the repair below runs as before.
                let present =
                    family.has_rule(r.chain, r.shape.target(), |rule| r.shape.matches(rule));
                if present != Some(true) {
                    fast.check(r.chain, &r.args);
                }
            }
        }
        if fast.is_empty() && matches!(add_over_netlink(family, &c), Some(Ok(()))) {
            continue;
        }
        // Input line 1 is `*nat`; the checks are lines 2..=last_check.
        let last_check = fast.len() + 1;
        fast.new_chain(&c.chain);
        write_container(&mut fast, &c);
        let Err(e) = apply(family, &fast) else {
            continue;
        };
        let _lock = SharedChainsLock::acquire();
        if failed_line(&e).is_some_and(|l| (2..=last_check).contains(&l))
            && apply(family, &bootstrap(&hp.snat, &c)).is_ok()
        {
            continue;
        }
        read_modify_write(family, |table| Ok(plan_full(table, &hp.snat, &c)))?;
    }
    Ok(())
}

/// Over nf_tables netlink (no process) where iptables-nft holds the table
/// and every rule is one `xtrules` encodes; `iptables-restore -C` else.
pub fn check(hp: &HostPorts<'_>) -> Result<()> {
    for (addr, conditions) in hp.families() {
        let family = Family::of(&addr);
        let c = container_rules(hp, addr, conditions);
        let what = if family == Family::V4 { "ipv4" } else { "ipv6" };
        let wanted = super::check::Wanted {
            chain: &c.chain,
            rules: &c.rules,
            parent: HOSTPORT_DNAT_CHAIN,
            entries: &c.entries,
        };
        match super::check::check(family, &wanted) {
            Some(Ok(None)) => continue,
            Some(Ok(Some(missing))) => {
                return Err(Error::Missing(format!(
                    "could not check {what} dnat: {missing}"
                )));
            }
            // Unreadable over netlink: as before.
            Some(Err(_)) | None => {}
        }
        let mut b = Batch::default();
        for r in &c.rules {
            b.check(&c.chain, r);
        }
        for e in &c.entries {
            b.check(HOSTPORT_DNAT_CHAIN, e);
        }
        apply(family, &b).map_err(|e| {
            Error::Missing(format!(
                "could not check {what} dnat: rules of chain {} in iptables table nat missing: {e}",
                c.chain
            ))
        })?;
    }
    Ok(())
}

/// Delete `chain` and every rule of `parent` jumping to it.
fn plan_remove_chain(table: &NatTable, parent: &str, chain: &str, b: &mut Batch) {
    for r in table.jumps(parent, chain) {
        b.delete_saved(parent, &r.spec);
    }
    if table.has_chain(chain) {
        b.flush_and_delete_chain(chain);
    }
}

fn plan_del(table: &NatTable, network: &str, container_id: &str, b: &mut Batch) {
    plan_remove_chain(
        table,
        HOSTPORT_DNAT_CHAIN,
        &dnat_chain(network, container_id),
        b,
    );
    plan_remove_chain(
        table,
        OLD_HOSTPORT_SNAT_CHAIN,
        &old_snat_chain(network, container_id),
        b,
    );
}

/// Both families, whatever was mapped: found by chain name (network +
/// container id), so DEL needs no `portMappings`. One read per family, one
/// write only if something is there.
///
/// With iptables-nft the chains' existence is known over netlink first: a
/// family without them costs no process, one with them costs a listing of
/// the entry chain and one write.
pub fn del(network: &str, container_id: &str) -> Result<()> {
    let dn = dnat_chain(network, container_id);
    let sn = old_snat_chain(network, container_id);
    let wanted = [
        dn.as_str(),
        sn.as_str(),
        HOSTPORT_DNAT_CHAIN,
        OLD_HOSTPORT_SNAT_CHAIN,
    ];
    let mut errors = Errors::default();
    for family in Family::BOTH.into_iter().filter(|f| f.installed()) {
        let pairs = [
            (HOSTPORT_DNAT_CHAIN, dn.as_str()),
            (OLD_HOSTPORT_SNAT_CHAIN, sn.as_str()),
        ];
        if family.remove_chains_over_netlink(&pairs) {
            continue;
        }
        // Re-read on every attempt: a concurrent DEL may have removed the
        // chains since the last one.
        let read = || match family.existing_chains(Inventory::read().as_ref(), &wanted) {
            None => read_nat(family),
            Some(present) if !present.contains(&dn) && !present.contains(&sn) => {
                Ok(NatTable::default())
            }
            Some(present) => {
                let listed: Vec<&str> = [HOSTPORT_DNAT_CHAIN, OLD_HOSTPORT_SNAT_CHAIN]
                    .into_iter()
                    .filter(|c| present.iter().any(|p| p == c))
                    .collect();
                read_chains(family, &listed, &present)
            }
        };
        let result = read_modify_write_with(family, read, |table| {
            let mut b = Batch::default();
            plan_del(table, network, container_id, &mut b);
            Ok(b)
        });
        errors.keep(tolerate_unusable(family, result));
    }
    errors.into_result()
}

/// `dnat name: "<net>" id: "<cid>"` → (net, cid).
fn parse_dnat_comment(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("dnat name: \"")?;
    let (net, rest) = rest.split_once("\" id: \"")?;
    Some((net, rest.strip_suffix('"')?))
}

pub fn gc(network: &str, keep: &[String]) -> Result<()> {
    let mut errors = Errors::default();
    for family in Family::BOTH.into_iter().filter(|f| f.installed()) {
        errors.keep(tolerate_unusable(
            family,
            read_modify_write(family, |table| {
                let mut stale: Vec<String> = vec![];
                for rule in table.rules_in(HOSTPORT_DNAT_CHAIN) {
                    let Some(comment) = rule.comment() else {
                        continue;
                    };
                    let Some((net, cid)) = parse_dnat_comment(&comment) else {
                        continue;
                    };
                    if net == network
                        && rule.jump_target() == Some(dnat_chain(net, cid).as_str())
                        && !keep.iter().any(|k| k == cid)
                        && !stale.iter().any(|s| s == cid)
                    {
                        stale.push(cid.to_string());
                    }
                }
                let mut b = Batch::default();
                for cid in &stale {
                    plan_del(table, network, cid, &mut b);
                }
                Ok(b)
            }),
        ));
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostports::{PortMapping, Protocol};
    use crate::names::HOSTPORT_SETMARK_CHAIN;
    use crate::testutil::run;

    fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        crate::testutil::in_netns("natunit", f)
    }

    fn present(family: Family, snat: &Snat) -> Vec<(String, Option<bool>)> {
        shared(snat)
            .into_iter()
            .flat_map(|(_, rules)| rules)
            .map(|r| {
                let found =
                    family.has_rule(r.chain, r.shape.target(), |rule| r.shape.matches(rule));
                (format!("{} {}", r.chain, r.saved), found)
            })
            .collect()
    }

    /// The nat tables after one container's ADD on a node already set up
    /// (by another container): byte-level expressions without handles,
    /// and `iptables-save`.
    fn state_after(over_netlink: bool, hp: &HostPorts<'_>) -> String {
        in_netns(|| {
            if let Snat::ExternalMarkChain(c) = &hp.snat {
                run("iptables", &["-t", "nat", "-N", c]);
                run("ip6tables", &["-t", "nat", "-N", c]);
            }
            let mut first = hp.clone();
            first.container_id = "first";
            add(&first).expect("first ADD");
            for (addr, conditions) in hp.families() {
                let family = Family::of(&addr);
                let c = container_rules(hp, addr, conditions);
                if over_netlink {
                    let done = add_over_netlink(family, &c);
                    assert!(matches!(done, Some(Ok(()))), "{done:?}");
                } else {
                    let mut b = Batch::default();
                    b.new_chain(&c.chain);
                    write_container(&mut b, &c);
                    apply(family, &b).expect("iptables-restore");
                }
            }
            let mut out = String::new();
            for (list, save) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
                for l in run("nft", &["--debug=netlink", "list", "table", list, "nat"]).lines() {
                    // `ip nat CHAIN <handle> [<position>]`
                    let header = l.starts_with(&format!("{list} nat "));
                    let l = if header {
                        l.split(' ').take(3).collect::<Vec<_>>().join(" ")
                    } else {
                        l.to_string()
                    };
                    out += &format!("{l}\n");
                }
                for l in run(save, &["-t", "nat"])
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                {
                    out += &format!("{l}\n");
                }
            }
            out
        })
    }

    #[test]
    fn netlink_add_writes_what_iptables_restore_writes() {
        let port = |host_port, container_port, protocol, host_ip: Option<&str>| PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip: host_ip.map(|h| h.parse().expect("address")),
        };
        let mut maps = vec![
            port(8080, 80, Protocol::Tcp, None),
            port(5353, 53, Protocol::Udp, None),
            port(8083, 83, Protocol::Tcp, Some("192.168.0.2")),
            port(8443, 443, Protocol::Tcp, Some("2001:db8::1")),
        ];
        // More than one multiport entry (15 ports each).
        maps.extend((9000..9020).map(|p| port(p, 80, Protocol::Tcp, None)));
        let snats = [
            (Snat::MarkBit(13), false),
            (Snat::MarkBit(5), true),
            (Snat::Off, false),
            (Snat::ExternalMarkChain("KUBE-MARK-MASQ".into()), false),
        ];
        for (snat, masq_all) in snats {
            let hp = HostPorts {
                network: "n",
                container_id: "ctr",
                ipv4: Some("10.0.0.2/24".parse().expect("address")),
                ipv6: Some("2001:db8::2/64".parse().expect("address")),
                mappings: &maps,
                snat: snat.clone(),
                masq_all,
                conditions_v4: &[],
                conditions_v6: &[],
            };
            let ours = state_after(true, &hp);
            let theirs = state_after(false, &hp);
            assert_eq!(ours, theirs, "{snat:?} masqAll={masq_all}");
            assert!(
                ours.contains("--to-destination [2001:db8::2]:443"),
                "{ours}"
            );
            // tcp in two groups of at most 15 ports, udp: per family, for
            // this container and the first.
            assert_eq!(ours.matches("-m multiport --dports").count(), 12, "{ours}");
        }
        // Interface conditions are encoded as iptables-nft encodes them.
        let iface_v4 = ["-i".to_string(), "eth0".to_string()];
        let iface_v6 = ["!".to_string(), "-o".to_string(), "lo".to_string()];
        let hp = HostPorts {
            network: "n",
            container_id: "ctr",
            ipv4: Some("10.0.0.2/24".parse().expect("address")),
            ipv6: Some("2001:db8::2/64".parse().expect("address")),
            mappings: &maps[..2],
            snat: Snat::MarkBit(13),
            masq_all: false,
            conditions_v4: &iface_v4,
            conditions_v6: &iface_v6,
        };
        assert_eq!(state_after(true, &hp), state_after(false, &hp));
        // Other free-form conditions are not translated: iptables-restore it is.
        let mark = [
            "-m".to_string(),
            "mark".to_string(),
            "--mark".to_string(),
            "0x1".to_string(),
        ];
        let c = container_rules(
            &HostPorts {
                network: "n",
                container_id: "ctr",
                ipv4: Some("10.0.0.2/24".parse().expect("address")),
                ipv6: None,
                mappings: &maps,
                snat: Snat::MarkBit(13),
                masq_all: false,
                conditions_v4: &mark,
                conditions_v6: &[],
            },
            "10.0.0.2/24".parse().expect("address"),
            &mark,
        );
        assert!(xtrules::translate(Family::V4, &c.entries[0]).is_none());
    }

    /// The shapes recognise exactly what this machine's iptables writes, in
    /// both families, and nothing with another mark or after a removal.
    #[test]
    fn shared_rules_are_recognised_over_netlink() {
        in_netns(|| {
            let maps = [PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }];
            let hp = HostPorts {
                network: "n",
                container_id: "c",
                ipv4: Some("10.0.0.2/24".parse().expect("address")),
                ipv6: Some("2001:db8::2/64".parse().expect("address")),
                mappings: &maps,
                snat: Snat::MarkBit(13),
                masq_all: false,
                conditions_v4: &[],
                conditions_v6: &[],
            };
            add(&hp).expect("ADD");
            for family in Family::BOTH {
                for (rule, found) in present(family, &Snat::MarkBit(13)) {
                    assert_eq!(found, Some(true), "{family:?}: {rule}");
                }
                // Another mark bit: the mark rules are not these.
                let other: Vec<_> = present(family, &Snat::MarkBit(5))
                    .into_iter()
                    .filter(|(_, f)| *f == Some(true))
                    .map(|(r, _)| r)
                    .collect();
                assert!(other.iter().all(|r| !r.contains("0x20/0x20")), "{other:?}");
                assert_eq!(other.len(), 3, "{other:?}");
            }
            let out = std::process::Command::new("iptables")
                .args(["-t", "nat", "-F", HOSTPORT_SETMARK_CHAIN])
                .output()
                .expect("run iptables");
            assert!(out.status.success());
            let after = present(Family::V4, &Snat::MarkBit(13));
            assert_eq!(after[0].1, Some(false), "{after:?}");
            assert!(
                after[1..].iter().all(|(_, f)| *f == Some(true)),
                "{after:?}"
            );
        });
    }
}
