//! The host-port transactions sent as nf_tables netlink messages instead of
//! `nft` text: the common ADD and every DEL, with no process. Each builds
//! exactly what its `nft` counterpart in `hostports` would (the tests
//! compare `nft list` output of both).

use std::net::IpAddr;

use crate::family::Family;
use crate::hostports::HostPorts;
use crate::hostports::Snat;
use crate::names::{
    NFT_HOSTIP_HOSTPORTS_CHAIN, NFT_HOSTPORT_TABLE, NFT_HOSTPORT_TABLE_COMMENT,
    NFT_HOSTPORTS_ALL_CHAIN, NFT_HOSTPORTS_CHAIN, NFT_MASQUERADING_CHAIN, NFT_OWNED_RULE_CHAINS,
    nft_owner_chain,
};
use crate::nfnl::abi::{HOOK_OUTPUT, HOOK_POSTROUTING, HOOK_PREROUTING};
use crate::nfnl::inventory::Inventory;
use crate::nfnl::reader::{self, Deletion};

/// Whether the shared structure of the family's table is already exactly
/// what an ADD without conditions writes: then the ADD only adds, and
/// deletes nothing. (Deleting — the reference's flush-and-rewrite of the
/// entry chains — costs an RCU grace period, ~10 ms, when the process
/// releases its netlink socket.)
fn structure_in_place(f: u8, snat: bool) -> bool {
    let t = NFT_HOSTPORT_TABLE;
    let rules = |chain| reader::rules(f, t, chain).unwrap_or_default();
    let entry_ok = |chain| {
        let r = rules(chain);
        // fib, cmp, immediate: no extra conditions.
        r.len() == 1
            && r[0].jump.as_deref() == Some(NFT_HOSTPORTS_ALL_CHAIN)
            && r[0].expressions == 3
    };
    let all = rules(NFT_HOSTPORTS_ALL_CHAIN);
    let all_ok = all.len() == 2
        && all[0].jump.as_deref() == Some(NFT_HOSTIP_HOSTPORTS_CHAIN)
        && all[1].jump.as_deref() == Some(NFT_HOSTPORTS_CHAIN);
    let has = |chain| Inventory::chain_exists(f, t, chain) == Some(true);
    all_ok
        && entry_ok("prerouting")
        && entry_ok("output")
        && has(NFT_HOSTPORTS_CHAIN)
        && has(NFT_HOSTIP_HOSTPORTS_CHAIN)
        && (!snat || has(NFT_MASQUERADING_CHAIN))
}

/// The first-ADD transaction of `add_script`, built as netlink messages
/// instead of `nft` text: no process. Only for what it can express
/// exactly as nft would (no free-form conditions, no `masqAll`'s /0
/// match); the caller uses `nft` otherwise.
pub(super) fn add(hp: &HostPorts<'_>) -> std::io::Result<()> {
    use crate::nfnl::writer::{Batch, Hook, jump, return_};
    let owner = nft_owner_chain(hp.network, hp.container_id);
    let cid = Some(hp.container_id);
    let t = NFT_HOSTPORT_TABLE;
    let mut b = Batch::new();
    for (addr, _) in hp.families() {
        let f = Family::of(&addr).nfproto();
        if !structure_in_place(f, hp.snat != Snat::Off) {
            b.add_table(f, t, NFT_HOSTPORT_TABLE_COMMENT);
            b.add_chain(f, t, NFT_HOSTPORTS_CHAIN, None, false);
            b.add_chain(f, t, NFT_HOSTIP_HOSTPORTS_CHAIN, None, false);
            b.add_chain(f, t, NFT_HOSTPORTS_ALL_CHAIN, None, false);
            b.flush_chain(f, t, NFT_HOSTPORTS_ALL_CHAIN);
            b.add_rule(
                f,
                t,
                NFT_HOSTPORTS_ALL_CHAIN,
                jump(NFT_HOSTIP_HOSTPORTS_CHAIN),
                None,
            );
            b.add_rule(
                f,
                t,
                NFT_HOSTPORTS_ALL_CHAIN,
                jump(NFT_HOSTPORTS_CHAIN),
                None,
            );
            for (chain, hooknum) in [("prerouting", HOOK_PREROUTING), ("output", HOOK_OUTPUT)] {
                b.add_chain(
                    f,
                    t,
                    chain,
                    Some(Hook {
                        hooknum,
                        priority: -100,
                    }),
                    false,
                );
                b.flush_chain(f, t, chain);
                b.add_rule(f, t, chain, entry_rule(), None);
            }
            if hp.snat != Snat::Off {
                let hook = Hook {
                    hooknum: HOOK_POSTROUTING,
                    priority: 100,
                };
                b.add_chain(f, t, NFT_MASQUERADING_CHAIN, Some(hook), false);
            }
        }
        let own = own_rules(hp, addr);
        // Fails the whole transaction on a repeated ADD.
        let layout = layout_comment(own.iter().map(|(chain, _)| *chain));
        b.add_chain_with_comment(f, t, &owner, None, true, layout.as_deref());
        b.add_rule(f, t, &owner, return_(), cid);
        for (chain, r) in own {
            b.add_rule(f, t, chain, r, cid);
        }
    }
    b.commit()
}

/// The container's rules for one family as ADD sends them, in order:
/// (chain, expressions) — the same rules, in the same order, as
/// `hostports::container_rules` gives as text. No `masqAll` (its /0
/// match is left to `nft`).
pub(super) fn own_rules(
    hp: &HostPorts<'_>,
    addr: ipnetwork::IpNetwork,
) -> Vec<(&'static str, Vec<crate::nfnl::writer::Expr>)> {
    use crate::nfnl::writer::{addr_eq, dnat, dport_eq, masquerade};
    let mut own = vec![];
    for m in hp.mappings {
        let Some(dest) = m.destination_for(addr.ip()) else {
            continue;
        };
        let mut r = dest.map(|d| addr_eq(false, d)).unwrap_or_default();
        r.extend(dport_eq(m.protocol.ipproto(), m.host_port));
        r.extend(dnat(addr.ip(), m.container_port));
        own.push((NFT_HOSTPORTS_CHAIN, r));
    }
    if hp.snat != Snat::Off {
        let mut hairpin = addr_eq(true, addr.ip());
        hairpin.extend(addr_eq(false, addr.ip()));
        hairpin.extend(masquerade());
        own.push((NFT_MASQUERADING_CHAIN, hairpin));
        if addr.is_ipv4() {
            let mut local = addr_eq(true, IpAddr::from([127, 0, 0, 1]));
            local.extend(addr_eq(false, addr.ip()));
            local.extend(masquerade());
            own.push((NFT_MASQUERADING_CHAIN, local));
        }
    }
    own
}

/// The entry rule of `prerouting` and `output` without conditions.
pub(super) fn entry_rule() -> Vec<crate::nfnl::writer::Expr> {
    use crate::nfnl::writer::{fib_daddr_local, jump};
    let mut entry = fib_daddr_local();
    entry.extend(jump(NFT_HOSTPORTS_ALL_CHAIN));
    entry
}

/// The owner chain's comment: the chains of the container's rules, in the
/// order the ADD created them, right after the chain and its `return` rule.
/// nf_tables numbers the objects of a table in the order a transaction
/// creates them, so those rules have the chain's handle + 2, + 3, …: DEL
/// fetches each with one request instead of reading the shared chains (a
/// rule per mapped port of every container on the node). DEL checks every
/// (chain, handle, comment) before it trusts the record, and reads the
/// shared chains when anything differs.
const LAYOUT_PREFIX: &str = "cni-rs rule chains: ";
/// Far below the kernel's 256 bytes of comment.
const LAYOUT_MAX_RULES: usize = 200;

fn layout_code(chain: &str) -> Option<char> {
    match chain {
        NFT_HOSTPORTS_CHAIN => Some('h'),
        NFT_MASQUERADING_CHAIN => Some('m'),
        _ => None,
    }
}

fn layout_comment<'a>(chains: impl Iterator<Item = &'a str>) -> Option<String> {
    let codes: Option<String> = chains.map(layout_code).collect();
    let codes = codes?;
    (codes.len() <= LAYOUT_MAX_RULES).then(|| format!("{LAYOUT_PREFIX}{codes}"))
}

pub(super) fn layout_chains(comment: &str) -> Option<Vec<&'static str>> {
    comment
        .strip_prefix(LAYOUT_PREFIX)?
        .chars()
        .map(|c| match c {
            'h' => Some(NFT_HOSTPORTS_CHAIN),
            'm' => Some(NFT_MASQUERADING_CHAIN),
            _ => None,
        })
        .collect()
}

/// The deletions for a container whose owner chain records where its rules
/// are, each rule checked by chain, handle and comment; `None` when there
/// is no record or anything does not match it.
fn recorded(f: u8, container_id: &str, owner: &str) -> Option<Vec<Deletion>> {
    let t = NFT_HOSTPORT_TABLE;
    let chain = reader::chain(f, t, owner).ok()??;
    let chains = layout_chains(chain.comment.as_deref()?)?;
    let marker = reader::rule(f, t, owner, chain.handle + 1).ok()??;
    if marker.comment.as_deref() != Some(container_id) {
        return None;
    }
    let mut ops = vec![];
    for (handle, c) in (chain.handle + 2..).zip(chains) {
        let r = reader::rule(f, t, c, handle).ok()??;
        if r.comment.as_deref() != Some(container_id) {
            return None;
        }
        ops.push(Deletion::Rule {
            chain: c.to_string(),
            handle,
        });
    }
    ops.push(Deletion::FlushChain(owner.to_string()));
    ops.push(Deletion::Chain(owner.to_string()));
    Some(ops)
}

/// Over netlink: the rules the owner chain records, or else the rules
/// found by comment in the shared chains, deleted by handle with the owner
/// chain, one transaction per family; no process. `false` when nf_tables
/// cannot be reached that way (the caller then uses `nft`).
pub(super) fn del(container_id: &str, owner: &str) -> bool {
    let mut present = vec![];
    for f in Family::BOTH {
        match Inventory::table_exists(f.nfproto(), NFT_HOSTPORT_TABLE) {
            None => return false,
            Some(true) => present.push(f),
            Some(false) => {}
        }
    }
    present.into_iter().all(|f| {
        // A record that went stale under a concurrent DEL fails the batch
        // (ENOENT); the search below then finds what is left.
        if let Some(ops) = recorded(f.nfproto(), container_id, owner)
            && reader::delete(f.nfproto(), NFT_HOSTPORT_TABLE, &ops).is_ok()
        {
            return true;
        }
        reader::plan_and_delete(f.nfproto(), NFT_HOSTPORT_TABLE, || {
            let mut ops = vec![];
            for chain in NFT_OWNED_RULE_CHAINS {
                for r in reader::rules(f.nfproto(), NFT_HOSTPORT_TABLE, chain)? {
                    if r.comment.as_deref() == Some(container_id) {
                        ops.push(Deletion::Rule {
                            chain: chain.to_string(),
                            handle: r.handle,
                        });
                    }
                }
            }
            let owner_exists =
                Inventory::chain_exists(f.nfproto(), NFT_HOSTPORT_TABLE, owner) == Some(true);
            if owner_exists {
                ops.push(Deletion::FlushChain(owner.to_string()));
                ops.push(Deletion::Chain(owner.to_string()));
            }
            Ok(ops)
        })
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostports::{PortMapping, Protocol};

    fn nft(args: &[&str]) -> String {
        crate::testutil::run("nft", args)
    }

    fn hostports<'a>(cid: &'a str, ip: &str, maps: &'a [PortMapping]) -> HostPorts<'a> {
        HostPorts {
            network: "n",
            container_id: cid,
            ipv4: Some(format!("{ip}/24").parse().expect("address")),
            ipv6: Some("2001:db8::2/64".parse().expect("address")),
            mappings: maps,
            snat: Snat::MarkBit(13),
            masq_all: false,
            conditions_v4: &[],
            conditions_v6: &[],
        }
    }

    /// The record an ADD leaves in the owner chain points at exactly its
    /// rules (so DEL takes the short way), stays right when other
    /// containers come and go, and a record that no longer matches makes
    /// DEL search instead — leaving nothing either way.
    #[test]
    fn owner_chain_records_where_the_rules_are() {
        crate::testutil::in_netns("natrec", || {
            let maps = [8080u16, 8081].map(|p| PortMapping {
                host_port: p,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            });
            let (a, b, c) = ("ctr-a", "ctr-b", "ctr-c");
            add(&hostports(a, "10.0.0.2", &maps)).expect("ADD a");
            add(&hostports(b, "10.0.0.3", &maps[..1])).expect("ADD b");
            add(&hostports(c, "10.0.0.4", &maps)).expect("ADD c");
            let owner = |cid| nft_owner_chain("n", cid);
            let v4 = Family::V4.nfproto();
            let v6 = Family::V6.nfproto();
            // 2 DNAT + hairpin + localhost masquerade, flush, delete.
            assert_eq!(recorded(v4, a, &owner(a)).map(|o| o.len()), Some(6));
            // 2 DNAT + hairpin (no localhost on IPv6), flush, delete.
            assert_eq!(recorded(v6, a, &owner(a)).map(|o| o.len()), Some(5));
            assert!(del(b, &owner(b)));
            assert_eq!(recorded(v4, c, &owner(c)).map(|o| o.len()), Some(6));
            // Another container's id is not this record's.
            assert!(recorded(v4, b, &owner(c)).is_none());
            // One of c's rules replaced by an equal one: new handle.
            let listing = nft(&["-a", "list", "chain", "ip", NFT_HOSTPORT_TABLE, "hostports"]);
            let line = listing
                .lines()
                .find(|l| l.contains("dport 8081") && l.contains(c))
                .expect("c's rule listed");
            let h = line.rsplit(' ').next().expect("handle");
            nft(&[
                "delete",
                "rule",
                "ip",
                NFT_HOSTPORT_TABLE,
                "hostports",
                "handle",
                h,
            ]);
            nft(&[
                "add",
                "rule",
                "ip",
                NFT_HOSTPORT_TABLE,
                "hostports",
                "tcp",
                "dport",
                "8081",
                "dnat",
                "to",
                "10.0.0.4:80",
                "comment",
                &format!("\"{c}\""),
            ]);
            assert!(recorded(v4, c, &owner(c)).is_none());
            assert!(del(c, &owner(c)));
            assert!(del(a, &owner(a)));
            let left = nft(&["list", "ruleset"]);
            for cid in [a, b, c] {
                assert!(!left.contains(cid), "{cid} left in:\n{left}");
            }
            assert!(!left.contains("owner_"), "{left}");
        });
    }

    #[test]
    fn layout_round_trip_and_limits() {
        let chains = [
            NFT_HOSTPORTS_CHAIN,
            NFT_HOSTPORTS_CHAIN,
            NFT_MASQUERADING_CHAIN,
        ];
        let c = layout_comment(chains.into_iter()).unwrap();
        assert_eq!(c, "cni-rs rule chains: hhm");
        assert_eq!(layout_chains(&c).unwrap(), chains);
        assert_eq!(layout_chains("cni-rs rule chains: hx"), None);
        assert_eq!(layout_chains("something else"), None);
        assert_eq!(
            layout_comment([NFT_HOSTIP_HOSTPORTS_CHAIN].into_iter()),
            None
        );
        let many = std::iter::repeat_n(NFT_HOSTPORTS_CHAIN, LAYOUT_MAX_RULES + 1);
        assert_eq!(layout_comment(many), None);
        assert_eq!(layout_comment(std::iter::empty()).unwrap(), LAYOUT_PREFIX);
    }
}
