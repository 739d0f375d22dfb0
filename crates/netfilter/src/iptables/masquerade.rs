//! The bridge plugin's masquerade in iptables, laid out as the reference's
//! `pkg/ip/ipmasq_iptables_linux.go`:
//!
//! ```text
//! -A POSTROUTING -s <ip> -j CNI-<hash> -m comment --comment 'name: "<net>" id: "<cid>"'
//! -A CNI-<hash> -d <subnet> -j ACCEPT -m comment --comment ...
//! -A CNI-<hash> ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment ...
//! ```

use std::collections::BTreeSet;

use super::{
    Batch, Family, NatTable, apply, read_chains, read_modify_write, read_modify_write_with,
    read_nat, tolerate_unusable,
};
use crate::args;
use crate::error::{Error, Errors, Result};
use crate::names::{masq_chain, masq_comment};
use crate::nfnl::inventory::Inventory;
use crate::types::Attachment;
use ipnetwork::IpNetwork;

struct Layout {
    chain: String,
    comment: String,
}

impl Layout {
    fn of(network: &str, container_id: &str) -> Layout {
        Layout {
            chain: masq_chain(network, container_id),
            comment: masq_comment(network, container_id),
        }
    }

    /// The chain's rules: first accept every own subnet, then masquerade.
    fn chain_rules(&self, family: Family, addrs: &[IpNetwork]) -> Vec<Vec<String>> {
        let subnets: BTreeSet<String> = addrs
            .iter()
            .map(|a| format!("{}/{}", a.network(), a.prefix()))
            .collect();
        let mut rules: Vec<Vec<String>> = subnets
            .into_iter()
            .map(|s| {
                args![
                    "-d",
                    s,
                    "-j",
                    "ACCEPT",
                    "-m",
                    "comment",
                    "--comment",
                    &self.comment
                ]
            })
            .collect();
        rules.push(args![
            "!",
            "-d",
            family.multicast(),
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            &self.comment
        ]);
        rules
    }

    fn jump(&self, addr: &IpNetwork) -> Vec<String> {
        args![
            "-s",
            addr.ip().to_string(),
            "-j",
            &self.chain,
            "-m",
            "comment",
            "--comment",
            &self.comment
        ]
    }

    /// Whether a saved POSTROUTING rule is the jump for `addr` in the
    /// current form (`-s <ip>/32`, not the legacy `-s <cidr>`).
    fn is_jump_for(saved_spec: &str, addr: &IpNetwork) -> bool {
        let host = if addr.is_ipv4() { 32 } else { 128 };
        saved_spec.starts_with(&format!("-s {}/{host} ", addr.ip()))
    }
}

fn by_family(addrs: &[IpNetwork]) -> Vec<(Family, Vec<IpNetwork>)> {
    Family::BOTH
        .into_iter()
        .map(|f| {
            (
                f,
                addrs
                    .iter()
                    .copied()
                    .filter(|a| Family::of(a) == f)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, a)| !a.is_empty())
        .collect()
}

/// The rules of a first setup, in order: the chain's, then the
/// POSTROUTING jumps.
fn fresh_rules(family: Family, layout: &Layout, addrs: &[IpNetwork]) -> Vec<(String, Vec<String>)> {
    let own = layout.chain_rules(family, addrs).into_iter();
    own.map(|r| (layout.chain.clone(), r))
        .chain(
            addrs
                .iter()
                .map(|a| ("POSTROUTING".to_string(), layout.jump(a))),
        )
        .collect()
}

/// The fresh batch of [`setup`] as one nf_tables transaction, each rule
/// encoded as iptables-nft encodes the same `iptables-restore` line
/// (`xtrules`) — so `iptables-save`, `-C` and `-D` (the Go bridge's
/// teardown) see the same rules (tested) — with no process. Only where
/// iptables-nft has made the `nat` table already and no legacy table hides
/// it: `None` means "use iptables-restore"; an error (the chain exists: a
/// repeated ADD) too.
fn setup_over_netlink(
    family: Family,
    layout: &Layout,
    addrs: &[IpNetwork],
) -> Option<std::io::Result<()>> {
    let f = family.nfproto();
    if family.legacy_nat_loaded() || Inventory::chain_exists(f, "nat", "POSTROUTING") != Some(true)
    {
        return None;
    }
    let mut b = crate::nfnl::writer::Batch::new();
    b.add_chain(f, "nat", &layout.chain, None, true);
    for (chain, args) in fresh_rules(family, layout, addrs) {
        let r = super::xtrules::translate(family, &args)?;
        b.add_xt_rule(f, "nat", &chain, r.proto, r.exprs);
    }
    Some(b.commit())
}

/// The `iptables-restore` batch of a first setup.
fn fresh_batch(family: Family, layout: &Layout, addrs: &[IpNetwork]) -> Batch {
    let mut b = Batch::default();
    b.new_chain(&layout.chain);
    for (chain, args) in fresh_rules(family, layout, addrs) {
        b.append(&chain, &args);
    }
    b
}

pub fn setup(att: &Attachment<'_>, addrs: &[IpNetwork]) -> Result<()> {
    let layout = Layout::of(att.network, att.container_id);
    for (family, addrs) in by_family(addrs) {
        if let Some(Ok(())) = setup_over_netlink(family, &layout, &addrs) {
            continue;
        }
        // Common case, one process: the chain does not exist yet. `-N`
        // makes the batch fail as a whole if it does.
        if apply(family, &fresh_batch(family, &layout, &addrs)).is_ok() {
            continue;
        }
        // Re-ADD (or a leftover): rewrite the chain, keep jumps that are
        // right, drop stale ones, add missing ones.
        read_modify_write(family, |table| {
            let mut b = Batch::default();
            b.declare_chain(&layout.chain);
            for r in layout.chain_rules(family, &addrs) {
                b.append(&layout.chain, &r);
            }
            let existing: Vec<_> = table.jumps("POSTROUTING", &layout.chain).collect();
            for rule in &existing {
                if !addrs.iter().any(|a| Layout::is_jump_for(&rule.spec, a)) {
                    b.delete_saved("POSTROUTING", &rule.spec);
                }
            }
            for a in &addrs {
                if !existing.iter().any(|r| Layout::is_jump_for(&r.spec, a)) {
                    b.append("POSTROUTING", &layout.jump(a));
                }
            }
            Ok(b)
        })?;
    }
    Ok(())
}

/// Over nf_tables netlink (no process) where iptables-nft holds the
/// table; `iptables-restore -C` else.
pub fn check(att: &Attachment<'_>, addrs: &[IpNetwork]) -> Result<()> {
    let layout = Layout::of(att.network, att.container_id);
    for (family, addrs) in by_family(addrs) {
        let rules = layout.chain_rules(family, &addrs);
        let jumps: Vec<Vec<String>> = addrs.iter().map(|a| layout.jump(a)).collect();
        let wanted = super::check::Wanted {
            chain: &layout.chain,
            rules: &rules,
            parent: "POSTROUTING",
            entries: &jumps,
        };
        match super::check::check(family, &wanted) {
            Some(Ok(None)) => continue,
            Some(Ok(Some(missing))) => {
                return Err(Error::Missing(format!(
                    "masquerade rules in chain {} of network {:?} container {:?} missing: {missing}",
                    layout.chain, att.network, att.container_id
                )));
            }
            Some(Err(_)) | None => {}
        }
        let mut b = Batch::default();
        for r in layout.chain_rules(family, &addrs) {
            b.check(&layout.chain, &r);
        }
        for a in &addrs {
            b.check("POSTROUTING", &layout.jump(a));
        }
        apply(family, &b).map_err(|e| {
            Error::Missing(format!(
                "masquerade rules in chain {} of network {:?} container {:?} missing: {e}",
                layout.chain, att.network, att.container_id
            ))
        })?;
    }
    Ok(())
}

/// Remove the chain and every POSTROUTING rule jumping to it, whatever
/// address it matches (no need to know the container's addresses).
fn plan_teardown(table: &NatTable, chain: &str, b: &mut Batch) {
    for rule in table.jumps("POSTROUTING", chain) {
        b.delete_saved("POSTROUTING", &rule.spec);
    }
    if table.has_chain(chain) {
        b.flush_and_delete_chain(chain);
    }
}

/// With iptables-nft, a family where the chain does not exist costs no
/// process (a jump to a chain cannot outlive it), one where it does costs a
/// listing of POSTROUTING and one write.
pub fn teardown(att: &Attachment<'_>) -> Result<()> {
    let layout = Layout::of(att.network, att.container_id);
    let mut errors = Errors::default();
    for family in Family::BOTH.into_iter().filter(|f| f.installed()) {
        if family.remove_chains_over_netlink(&[("POSTROUTING", layout.chain.as_str())]) {
            continue;
        }
        // Re-read on every attempt: a concurrent DEL may have removed it.
        let read = || match family.existing_chains(Inventory::read().as_ref(), &[&layout.chain]) {
            None => read_nat(family),
            Some(present) if present.is_empty() => Ok(NatTable::default()),
            Some(present) => read_chains(family, &["POSTROUTING"], &present),
        };
        let result = read_modify_write_with(family, read, |table| {
            let mut b = Batch::default();
            plan_teardown(table, &layout.chain, &mut b);
            Ok(b)
        });
        errors.keep(tolerate_unusable(family, result));
    }
    errors.into_result()
}

/// `name: "<net>" id: "<cid>"` → (net, cid).
fn parse_comment(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("name: \"")?;
    let (net, rest) = rest.split_once("\" id: \"")?;
    Some((net, rest.strip_suffix('"')?))
}

fn is_masq_chain_name(name: &str) -> bool {
    name.len() == 28
        && name.starts_with("CNI-")
        && name[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The reference cannot GC iptables masquerade; we can, because every rule
/// carries `name: "<net>" id: "<cid>"` and the chain name is derived from it.
pub fn gc(network: &str, keep: &[(String, String)]) -> Result<()> {
    let mut errors = Errors::default();
    for family in Family::BOTH.into_iter().filter(|f| f.installed()) {
        errors.keep(tolerate_unusable(
            family,
            read_modify_write(family, |table| {
                let mut b = Batch::default();
                for chain in table.chains().filter(|c| is_masq_chain_name(c)) {
                    let owner = table
                        .rules_in(chain)
                        .chain(table.jumps("POSTROUTING", chain))
                        .find_map(|r| r.comment());
                    let Some(comment) = owner else { continue };
                    let Some((net, cid)) = parse_comment(&comment) else {
                        continue;
                    };
                    if net != network
                        || masq_chain(net, cid) != chain
                        || keep.iter().any(|(k, _)| k == cid)
                    {
                        continue;
                    }
                    plan_teardown(table, chain, &mut b);
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
    use crate::testutil::run;

    /// What the kernel holds, byte by byte (`nft --debug=netlink`), and
    /// what iptables-save prints, after one setup.
    fn state_after(over_netlink: bool, addrs: &[IpNetwork]) -> (String, String) {
        crate::testutil::in_netns("natmasq", || {
            let layout = Layout::of("net1", "ctr1");
            for (family, addrs) in by_family(addrs) {
                let prog = match family {
                    Family::V4 => "iptables",
                    Family::V6 => "ip6tables",
                };
                // The nat table as iptables-nft makes it on a node.
                run(prog, &["-t", "nat", "-A", "POSTROUTING", "-j", "RETURN"]);
                run(prog, &["-t", "nat", "-D", "POSTROUTING", "-j", "RETURN"]);
                if over_netlink {
                    let done = setup_over_netlink(family, &layout, &addrs);
                    assert!(matches!(done, Some(Ok(()))), "{done:?}");
                } else {
                    apply(family, &fresh_batch(family, &layout, &addrs)).expect("iptables-restore");
                }
            }
            let mut debug = String::new();
            let mut saved = String::new();
            for (list, save) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
                debug += &run("nft", &["--debug=netlink", "list", "table", list, "nat"]);
                saved += &run(save, &["-t", "nat"])
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>();
            }
            (debug, saved)
        })
    }

    #[test]
    fn netlink_setup_writes_what_iptables_restore_writes() {
        let addrs: Vec<IpNetwork> = ["10.88.0.5/16", "10.99.1.7/20", "2001:db8:10::5/64"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        let ours = state_after(true, &addrs);
        let theirs = state_after(false, &addrs);
        assert_eq!(ours.1, theirs.1);
        assert_eq!(ours.0, theirs.0);
        assert!(ours.1.contains("-j MASQUERADE"), "{}", ours.1);
        assert!(
            ours.0.contains("target name MASQUERADE rev 0"),
            "{}",
            ours.0
        );
        assert!(ours.0.contains("bitwise"), "{}", ours.0);
        assert_eq!(ours.1.matches("-j CNI-").count(), 3, "{}", ours.1);
    }
}
