//! The bridge plugin's masquerade in nftables, laid out as the reference's
//! `pkg/ip/ipmasq_nftables_linux.go`: table `inet cni_plugins_masquerade`,
//! base chain `postrouting` (rewritten on every setup) jumping to
//! `masq_checks`, one rule per address there, each commented with
//! `<hash(net)>-<hash(ifname:cid)>, net: .., if: .., id: ..`.

use std::fmt::Write;

use super::{Listing, list, list_modify_apply};
use crate::error::{Error, Result};
use crate::names::{
    NFT_MASQ_CHECKS_CHAIN, NFT_MASQ_CHECKS_COMMENT, NFT_MASQ_TABLE, NFT_MASQ_TABLE_COMMENT,
    nft_masq_comment, nft_masq_instance_hash, nft_masq_network_hash,
};
use crate::nfnl::abi::{HOOK_POSTROUTING, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nfnl::inventory::Inventory;
use crate::nfnl::reader::{self, Deletion};
use crate::types::Attachment;
use ipnetwork::IpNetwork;

const CHAIN: [&str; 4] = ["chain", "inet", NFT_MASQ_TABLE, NFT_MASQ_CHECKS_CHAIN];

fn family_keyword(a: &IpNetwork) -> &'static str {
    if a.is_ipv4() { "ip" } else { "ip6" }
}

fn delete_rules<'a>(script: &mut String, handles: impl Iterator<Item = u64> + 'a) {
    for h in handles {
        let _ = writeln!(
            script,
            "delete rule inet {NFT_MASQ_TABLE} {NFT_MASQ_CHECKS_CHAIN} handle {h}"
        );
    }
}

fn owned_by<'a>(listing: Option<&'a Listing>, prefix: &'a str) -> impl Iterator<Item = u64> + 'a {
    listing
        .into_iter()
        .flat_map(|l| l.rules_in(NFT_MASQ_CHECKS_CHAIN))
        .filter(move |r| r.comment.as_deref().is_some_and(|c| c.starts_with(prefix)))
        .map(|r| r.handle)
}

/// The attachment's inert marker chain in the masquerade table (not in the
/// reference's layout): created in the transaction that adds the
/// attachment's rules, right before them, with their number as comment.
/// nf_tables numbers a table's objects in the order a transaction creates
/// them, so the rules have the chain's handle + 1, + 2, …: DEL fetches each
/// by handle, checks its comment, and deletes them with the chain — no
/// listing of `masq_checks`, which holds a rule per address of every
/// container on the node. It also tells a repeated ADD from a first one.
pub(super) fn anchor_chain(instance: &str) -> String {
    format!("owner_{}", instance.replace('-', "_"))
}

pub(super) const ANCHOR_PREFIX: &str = "cni-rs rules: ";

fn anchor_comment(rules: usize) -> String {
    format!("{ANCHOR_PREFIX}{rules}")
}

/// Deletions for the rules the anchor records and the anchor itself, each
/// rule checked; `None` when there is no anchor or anything differs.
fn recorded(instance: &str) -> Option<Vec<Deletion>> {
    let (f, t) = (NFPROTO_INET, NFT_MASQ_TABLE);
    let anchor = anchor_chain(instance);
    let info = reader::chain(f, t, &anchor).ok()??;
    let n: u64 = info
        .comment
        .as_deref()?
        .strip_prefix(ANCHOR_PREFIX)?
        .parse()
        .ok()?;
    let mut ops = vec![];
    for handle in info.handle + 1..=info.handle + n {
        let r = reader::rule(f, t, NFT_MASQ_CHECKS_CHAIN, handle).ok()??;
        if !r
            .comment
            .as_deref()
            .is_some_and(|c| c.starts_with(instance))
        {
            return None;
        }
        ops.push(Deletion::Rule {
            chain: NFT_MASQ_CHECKS_CHAIN.to_string(),
            handle,
        });
    }
    ops.push(Deletion::Chain(anchor));
    Some(ops)
}

/// The same transaction as [`setup`]'s `nft` script, as netlink messages:
/// no process. The `postrouting` chain is rewritten only when it is not
/// already the reference's three rules, so a steady-state setup deletes
/// nothing but this attachment's stale rules.
fn setup_over_netlink(addrs: &[IpNetwork], instance: &str, comment: &str) -> std::io::Result<()> {
    use crate::nfnl::writer::{Batch, Hook, goto, nfproto_eq, prefix_match, return_};
    let t = NFT_MASQ_TABLE;
    let f = NFPROTO_INET;
    let anchor = anchor_chain(instance);
    // `fresh`: a first ADD of the attachment — the anchor is created
    // exclusively, which fails the whole transaction if it exists (a
    // repeated ADD); then the attachment's old rules are searched for and
    // replaced, and the anchor, left as it was, no longer matches them.
    let plan = |fresh: bool| {
        let mut b = Batch::new();
        let post = reader::rules(f, t, "postrouting")?;
        let in_place = post.len() == 3 && post[2].jump.as_deref() == Some(NFT_MASQ_CHECKS_CHAIN);
        if !in_place {
            b.add_table(f, t, NFT_MASQ_TABLE_COMMENT);
            b.add_chain_with_comment(
                f,
                t,
                NFT_MASQ_CHECKS_CHAIN,
                None,
                false,
                Some(NFT_MASQ_CHECKS_COMMENT),
            );
            b.add_chain(
                f,
                t,
                "postrouting",
                Some(Hook {
                    hooknum: HOOK_POSTROUTING,
                    priority: 100,
                }),
                false,
            );
            b.flush_chain(f, t, "postrouting");
            for multicast in ["224.0.0.0/4", "ff00::/8"] {
                let net: IpNetwork = multicast.parse().map_err(std::io::Error::other)?;
                let mut r = nfproto_eq(nfproto_of(&net));
                r.extend(prefix_match(false, net, true));
                r.extend(return_());
                b.add_rule(f, t, "postrouting", r, None);
            }
            b.add_rule(f, t, "postrouting", goto(NFT_MASQ_CHECKS_CHAIN), None);
        }
        if fresh {
            let record = anchor_comment(addrs.len());
            b.add_chain_with_comment(f, t, &anchor, None, true, Some(&record));
        } else {
            for r in reader::rules(f, t, NFT_MASQ_CHECKS_CHAIN)? {
                if r.comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with(instance))
                {
                    b.delete_rule(f, t, NFT_MASQ_CHECKS_CHAIN, r.handle);
                }
            }
        }
        for a in addrs {
            b.add_rule(f, t, NFT_MASQ_CHECKS_CHAIN, checks_rule(a), Some(comment));
        }
        Ok(b)
    };
    if plan(true).and_then(|b| b.commit()).is_ok() {
        return Ok(());
    }
    reader::plan_and_commit(|| plan(false))
}

/// The `masq_checks` rule of one address:
/// `ip saddr == <ip> ip daddr != <subnet> masquerade`.
pub(super) fn checks_rule(a: &IpNetwork) -> Vec<crate::nfnl::writer::Expr> {
    use crate::nfnl::writer::{addr_eq, masquerade, nfproto_eq, prefix_match};
    let mut r = nfproto_eq(nfproto_of(a));
    r.extend(addr_eq(true, a.ip()));
    r.extend(prefix_match(false, *a, false));
    r.extend(masquerade());
    r
}

fn nfproto_of(a: &IpNetwork) -> u8 {
    if a.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    }
}

pub fn setup(att: &Attachment<'_>, addrs: &[IpNetwork]) -> Result<()> {
    let instance = nft_masq_instance_hash(att.network, att.ifname, att.container_id);
    let comment = nft_masq_comment(att.network, att.ifname, att.container_id);
    // A /0 "subnet" has no byte-wise encoding worth special-casing.
    if addrs.iter().all(|a| a.prefix() > 0)
        && setup_over_netlink(addrs, &instance, &comment).is_ok()
    {
        return Ok(());
    }
    let t = NFT_MASQ_TABLE;
    list_modify_apply(&CHAIN, |listing| {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "add table inet {t} {{ comment \"{NFT_MASQ_TABLE_COMMENT}\" ; }}"
        );
        let _ = writeln!(
            s,
            "add chain inet {t} {NFT_MASQ_CHECKS_CHAIN} {{ comment \"{NFT_MASQ_CHECKS_COMMENT}\" ; }}"
        );
        let _ = writeln!(
            s,
            "add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat ; }}"
        );
        let _ = writeln!(s, "flush chain inet {t} postrouting");
        let _ = writeln!(
            s,
            "add rule inet {t} postrouting ip daddr == 224.0.0.0/4 return"
        );
        let _ = writeln!(
            s,
            "add rule inet {t} postrouting ip6 daddr == ff00::/8 return"
        );
        let _ = writeln!(
            s,
            "add rule inet {t} postrouting goto {NFT_MASQ_CHECKS_CHAIN}"
        );
        delete_rules(&mut s, owned_by(listing, &instance));
        for a in addrs {
            let ip = family_keyword(a);
            let _ = writeln!(
                s,
                "add rule inet {t} {NFT_MASQ_CHECKS_CHAIN} {ip} saddr == {} {ip} daddr != {}/{} masquerade comment \"{comment}\"",
                a.ip(),
                a.network(),
                a.prefix()
            );
        }
        Ok(s)
    })
}

/// Over netlink (`super::check`, no process); from an `nft` listing when
/// that cannot decide.
pub fn check(att: &Attachment<'_>, addrs: &[IpNetwork]) -> Result<()> {
    if let Some(done) = super::check::masquerade(att, addrs) {
        return done;
    }
    let comment = nft_masq_comment(att.network, att.ifname, att.container_id);
    let listing = list(&CHAIN)?;
    for a in addrs {
        let needle = format!("{} saddr {} ", family_keyword(a), a.ip());
        let found = listing
            .iter()
            .flat_map(|l| l.rules_in(NFT_MASQ_CHECKS_CHAIN))
            .any(|r| r.comment.as_deref() == Some(comment.as_str()) && r.text.starts_with(&needle));
        if !found {
            return Err(Error::Missing(format!(
                "masquerade rule for {} of container {:?} on network {:?} missing in inet {NFT_MASQ_TABLE} {NFT_MASQ_CHECKS_CHAIN}",
                a.ip(),
                att.container_id,
                att.network
            )));
        }
    }
    Ok(())
}

pub fn teardown(att: &Attachment<'_>) -> Result<()> {
    let instance = nft_masq_instance_hash(att.network, att.ifname, att.container_id);
    // Over netlink when possible: no process, and nothing at all to do
    // when the chain does not exist.
    if let Some(exists) =
        Inventory::chain_exists(NFPROTO_INET, NFT_MASQ_TABLE, NFT_MASQ_CHECKS_CHAIN)
    {
        if !exists {
            return Ok(());
        }
        // A record that went stale under a concurrent DEL fails the batch
        // (ENOENT); the search below then finds what is left.
        if let Some(ops) = recorded(&instance)
            && reader::delete(NFPROTO_INET, NFT_MASQ_TABLE, &ops).is_ok()
        {
            return Ok(());
        }
        let anchor = anchor_chain(&instance);
        let over_netlink = reader::plan_and_delete(NFPROTO_INET, NFT_MASQ_TABLE, || {
            let mut ops: Vec<Deletion> =
                reader::rules(NFPROTO_INET, NFT_MASQ_TABLE, NFT_MASQ_CHECKS_CHAIN)?
                    .into_iter()
                    .filter(|r| {
                        r.comment
                            .as_deref()
                            .is_some_and(|c| c.starts_with(&instance))
                    })
                    .map(|r| Deletion::Rule {
                        chain: NFT_MASQ_CHECKS_CHAIN.to_string(),
                        handle: r.handle,
                    })
                    .collect();
            if Inventory::chain_exists(NFPROTO_INET, NFT_MASQ_TABLE, &anchor) == Some(true) {
                ops.push(Deletion::Chain(anchor.clone()));
            }
            Ok(ops)
        });
        if over_netlink.is_ok() {
            return Ok(());
        }
    }
    list_modify_apply(&CHAIN, |listing| {
        let mut s = String::new();
        delete_rules(&mut s, owned_by(listing, &instance));
        Ok(s)
    })
}

pub fn gc(network: &str, keep: &[(String, String)]) -> Result<()> {
    let prefix = nft_masq_network_hash(network);
    let valid: Vec<String> = keep
        .iter()
        .map(|(cid, ifname)| nft_masq_comment(network, ifname, cid))
        .collect();
    list_modify_apply(&CHAIN, |listing| {
        let mut s = String::new();
        let stale = listing
            .into_iter()
            .flat_map(|l| l.rules_in(NFT_MASQ_CHECKS_CHAIN))
            .filter(|r| {
                r.comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with(&prefix) && !valid.iter().any(|v| v == c))
            })
            .map(|r| r.handle);
        delete_rules(&mut s, stale);
        Ok(s)
    })?;
    // The anchors of attachments not kept.
    let keep: Vec<String> = keep
        .iter()
        .map(|(cid, ifname)| anchor_chain(&nft_masq_instance_hash(network, ifname, cid)))
        .collect();
    let mine = anchor_chain(&format!("{prefix}-"));
    let Some(inv) = Inventory::read() else {
        return Ok(());
    };
    let stale: Vec<Deletion> = inv
        .chains_of(NFPROTO_INET, NFT_MASQ_TABLE)
        .filter(|c| c.starts_with(&mine) && !keep.iter().any(|k| k == c))
        .map(|c| Deletion::Chain(c.to_string()))
        .collect();
    if !stale.is_empty() {
        reader::delete(NFPROTO_INET, NFT_MASQ_TABLE, &stale)
            .map_err(|e| Error::Missing(format!("could not delete masquerade anchors: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchor's record points at exactly the attachment's rules (DEL's
    /// short way), survives other attachments coming and going, and after
    /// a repeated ADD no longer matches — DEL then searches — leaving
    /// nothing either way.
    #[test]
    fn anchor_records_where_the_rules_are() {
        crate::testutil::in_netns("natanchor", || {
            let att = |cid| Attachment {
                network: "n",
                ifname: "eth0",
                container_id: cid,
            };
            let inst = |cid| nft_masq_instance_hash("n", "eth0", cid);
            let two: Vec<IpNetwork> = ["10.0.0.2/24", "2001:db8::2/64"]
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect();
            for cid in ["a", "b", "c"] {
                setup(&att(cid), &two).expect("setup");
            }
            assert_eq!(recorded(&inst("a")).map(|o| o.len()), Some(3));
            teardown(&att("b")).expect("teardown b");
            assert_eq!(recorded(&inst("c")).map(|o| o.len()), Some(3));
            setup(&att("a"), &two[..1]).expect("repeated setup");
            assert!(recorded(&inst("a")).is_none());
            for cid in ["a", "c"] {
                teardown(&att(cid)).expect("teardown");
            }
            let left = crate::testutil::run("nft", &["list", "ruleset"]);
            assert!(!left.contains("masquerade comment"), "{left}");
            assert!(!left.contains("owner_"), "{left}");
        });
    }
}
