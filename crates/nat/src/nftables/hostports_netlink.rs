//! The host-port transactions sent as nf_tables netlink messages instead of
//! `nft` text: the common ADD and every DEL, with no process. Each builds
//! exactly what its `nft` counterpart in `hostports` would (the tests
//! compare `nft list` output of both).

use std::net::IpAddr;

use super::hostports::{Family, OWNED_RULE_CHAINS};
use crate::HostPorts;
use crate::Snat;
use crate::inventory::Inventory;
use crate::names::{
    NFT_HOSTIP_HOSTPORTS_CHAIN, NFT_HOSTPORT_TABLE, NFT_HOSTPORT_TABLE_COMMENT,
    NFT_HOSTPORTS_ALL_CHAIN, NFT_HOSTPORTS_CHAIN, NFT_MASQUERADING_CHAIN, nft_owner_chain,
};
use crate::nfrules::{self, Deletion};

/// Whether the shared structure of the family's table is already exactly
/// what an ADD without conditions writes: then the ADD only adds, and
/// deletes nothing. (Deleting — the reference's flush-and-rewrite of the
/// entry chains — costs an RCU grace period, ~10 ms, when the process
/// releases its netlink socket.)
fn structure_in_place(f: u8, snat: bool) -> bool {
    let t = NFT_HOSTPORT_TABLE;
    let rules = |chain| nfrules::rules(f, t, chain).unwrap_or_default();
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
    use crate::nfbatch::{
        Batch, HOOK_OUTPUT, HOOK_POSTROUTING, HOOK_PREROUTING, Hook, addr_eq, dnat, dport_eq,
        fib_daddr_local, jump, masquerade, return_,
    };
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
                let mut entry = fib_daddr_local();
                entry.extend(jump(NFT_HOSTPORTS_ALL_CHAIN));
                b.add_rule(f, t, chain, entry, None);
            }
            if hp.snat != Snat::Off {
                let hook = Hook {
                    hooknum: HOOK_POSTROUTING,
                    priority: 100,
                };
                b.add_chain(f, t, NFT_MASQUERADING_CHAIN, Some(hook), false);
            }
        }
        // Fails the whole transaction on a repeated ADD.
        b.add_chain(f, t, &owner, None, true);
        b.add_rule(f, t, &owner, return_(), cid);
        for m in hp.mappings {
            let Some(dest) = m.destination_for(addr.ip()) else {
                continue;
            };
            let mut r = dest.map(|d| addr_eq(false, d)).unwrap_or_default();
            r.extend(dport_eq(m.protocol.ipproto(), m.host_port));
            r.extend(dnat(addr.ip(), m.container_port));
            b.add_rule(f, t, NFT_HOSTPORTS_CHAIN, r, cid);
        }
        if hp.snat != Snat::Off {
            let mut hairpin = addr_eq(true, addr.ip());
            hairpin.extend(addr_eq(false, addr.ip()));
            hairpin.extend(masquerade());
            b.add_rule(f, t, NFT_MASQUERADING_CHAIN, hairpin, cid);
            if addr.is_ipv4() {
                let mut local = addr_eq(true, IpAddr::from([127, 0, 0, 1]));
                local.extend(addr_eq(false, addr.ip()));
                local.extend(masquerade());
                b.add_rule(f, t, NFT_MASQUERADING_CHAIN, local, cid);
            }
        }
    }
    b.commit()
}

/// Over netlink: rules found by comment, deleted by handle, with the owner
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
        nfrules::plan_and_delete(f.nfproto(), NFT_HOSTPORT_TABLE, || {
            let mut ops = vec![];
            for chain in OWNED_RULE_CHAINS {
                for r in nfrules::rules(f.nfproto(), NFT_HOSTPORT_TABLE, chain)? {
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
