//! CHECK of one container's nftables rules over netlink, with no `nft`
//! process: each rule compared with the expressions ADD sends (not text),
//! found by the handles the container's owner or anchor chain records —
//! one request per rule, however many other containers' rules share the
//! chain — and only when a record is missing or does not match, by a
//! chain-filtered dump of that one chain.
//!
//! Not covered (the caller lists with `nft` as before): free-form
//! conditions and `masqAll` for host ports, a /0 address for masquerade —
//! the configurations ADD also leaves to `nft`.

use std::collections::HashMap;
use std::io;

use ipnetwork::IpNetwork;

use super::hostports::{container_rules, entry_rule};
use super::hostports_netlink::{self, layout_chains, own_rules};
use super::masquerade::{ANCHOR_PREFIX, anchor_chain, checks_rule};
use crate::error::{Error, Result};
use crate::family::Family;
use crate::hostports::HostPorts;
use crate::names::{
    NFT_HOSTPORT_TABLE, NFT_MASQ_CHECKS_CHAIN, NFT_MASQ_TABLE, nft_masq_comment,
    nft_masq_instance_hash, nft_owner_chain,
};
use crate::nfnl::abi::NFPROTO_INET;
use crate::nfnl::reader::{self, RuleInfo};
use crate::nfnl::writer::Expr;
use crate::types::Attachment;

type Canon = Vec<Vec<u8>>;

fn canon_of(exprs: &[Expr]) -> Canon {
    reader::canonical(&reader::written(exprs))
}

fn is(rule: &RuleInfo, comment: &str, want: &Canon) -> bool {
    rule.comment.as_deref() == Some(comment) && reader::canonical(&rule.exprs()) == *want
}

/// Rules of one table's chains, each chain dumped once, on first need.
struct Dumps {
    family: u8,
    table: &'static str,
    chains: HashMap<&'static str, Vec<RuleInfo>>,
}

impl Dumps {
    fn new(family: u8, table: &'static str) -> Dumps {
        Dumps {
            family,
            table,
            chains: HashMap::new(),
        }
    }

    fn any(&mut self, chain: &'static str, pred: impl Fn(&RuleInfo) -> bool) -> io::Result<bool> {
        if !self.chains.contains_key(chain) {
            let rules = reader::rules(self.family, self.table, chain)?;
            self.chains.insert(chain, rules);
        }
        Ok(self.chains.get(chain).is_some_and(|r| r.iter().any(pred)))
    }
}

/// The handles the owner chain records for the container's rules, by
/// position: `(chain, handle)`; empty when there is no usable record.
fn hostport_record(f: u8, container_id: &str, owner: &str) -> io::Result<Vec<(&'static str, u64)>> {
    let t = NFT_HOSTPORT_TABLE;
    let Some(info) = reader::chain(f, t, owner)? else {
        return Ok(vec![]);
    };
    let Some(chains) = info.comment.as_deref().and_then(layout_chains) else {
        return Ok(vec![]);
    };
    let marker = reader::rule(f, t, owner, info.handle + 1)?;
    if marker.and_then(|m| m.comment).as_deref() != Some(container_id) {
        return Ok(vec![]);
    }
    Ok(chains.into_iter().zip(info.handle + 2..).collect())
}

/// `None`: not decidable here (see the module text); the caller uses `nft`.
pub(super) fn hostports(hp: &HostPorts<'_>) -> Option<Result<()>> {
    if hp.masq_all || !hp.conditions_v4.is_empty() || !hp.conditions_v6.is_empty() {
        return None;
    }
    for (addr, _) in hp.families() {
        match hostports_family(hp, addr) {
            Ok(None) => {}
            Ok(Some(missing)) => return Some(Err(Error::Missing(missing))),
            Err(_) => return None,
        }
    }
    Some(Ok(()))
}

fn hostports_family(hp: &HostPorts<'_>, addr: IpNetwork) -> io::Result<Option<String>> {
    let family = Family::of(&addr);
    let f = family.nfproto();
    let t = NFT_HOSTPORT_TABLE;
    let table = match family {
        Family::V4 => format!("ip {t}"),
        Family::V6 => format!("ip6 {t}"),
    };
    // The shared entry rules: one rule per chain, however many containers.
    let entry = canon_of(&hostports_netlink::entry_rule());
    for chain in ["prerouting", "output"] {
        let rules = reader::rules(f, t, chain)?;
        if !rules.iter().any(|r| reader::canonical(&r.exprs()) == entry) {
            return Ok(Some(format!(
                "missing entry rule {:?} in {chain:?} chain of table {table}",
                entry_rule(&[])
            )));
        }
    }
    let text = container_rules(hp, addr);
    let exprs = own_rules(hp, addr);
    if text.len() != exprs.len() {
        return Err(io::Error::other("rule lists differ"));
    }
    let cid = hp.container_id;
    let record = hostport_record(f, cid, &nft_owner_chain(hp.network, cid))?;
    let mut dumps = Dumps::new(f, t);
    for (i, ((chain, rule), (_, e))) in text.iter().zip(&exprs).enumerate() {
        let want = canon_of(e);
        let recorded = match record.get(i) {
            Some((c, handle)) if c == chain => reader::rule(f, t, chain, *handle)?,
            _ => None,
        };
        if recorded.is_some_and(|r| is(&r, cid, &want)) {
            continue;
        }
        if !dumps.any(chain, |r| is(r, cid, &want))? {
            return Ok(Some(format!(
                "missing hostport rule {rule:?} in {chain:?} chain of table {table}"
            )));
        }
    }
    Ok(None)
}

/// `None`: not decidable here; the caller uses `nft`.
pub(super) fn masquerade(att: &Attachment<'_>, addrs: &[IpNetwork]) -> Option<Result<()>> {
    if addrs.iter().any(|a| a.prefix() == 0) {
        return None;
    }
    match masquerade_rules(att, addrs) {
        Ok(None) => Some(Ok(())),
        Ok(Some(missing)) => Some(Err(Error::Missing(missing))),
        Err(_) => None,
    }
}

fn masquerade_rules(att: &Attachment<'_>, addrs: &[IpNetwork]) -> io::Result<Option<String>> {
    let (f, t) = (NFPROTO_INET, NFT_MASQ_TABLE);
    let instance = nft_masq_instance_hash(att.network, att.ifname, att.container_id);
    let comment = nft_masq_comment(att.network, att.ifname, att.container_id);
    // The anchor records the first handle and how many rules follow it.
    let first = reader::chain(f, t, &anchor_chain(&instance))?.and_then(|info| {
        let n: usize = info
            .comment
            .as_deref()?
            .strip_prefix(ANCHOR_PREFIX)?
            .parse()
            .ok()?;
        (n == addrs.len()).then_some(info.handle + 1)
    });
    let mut dumps = Dumps::new(f, t);
    for (i, a) in addrs.iter().enumerate() {
        let want = canon_of(&checks_rule(a));
        let recorded = match first {
            Some(h) => reader::rule(f, t, NFT_MASQ_CHECKS_CHAIN, h + i as u64)?,
            None => None,
        };
        if recorded.is_some_and(|r| is(&r, &comment, &want)) {
            continue;
        }
        if !dumps.any(NFT_MASQ_CHECKS_CHAIN, |r| is(r, &comment, &want))? {
            return Ok(Some(format!(
                "masquerade rule for {} of container {:?} on network {:?} missing in inet {t} {NFT_MASQ_CHECKS_CHAIN}",
                a.ip(),
                att.container_id,
                att.network
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::processes_spawned_on_this_thread as spawned;
    use crate::hostports::{PortMapping, Protocol};
    use crate::names::NFT_HOSTPORTS_CHAIN;
    use crate::testutil::run;

    use crate::testutil::hostports as hp;

    fn handle_of(listing: &str, needle: &str) -> String {
        let line = listing
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {listing}"));
        line.rsplit(' ').next().expect("handle").to_string()
    }

    /// Decided over netlink (no process) on a good attachment among
    /// others, by handle; a rule deleted or replaced behind its back, or
    /// the table gone, is named.
    #[test]
    fn check_over_netlink_sees_missing_and_altered_rules() {
        crate::testutil::in_netns("nftcheck", || {
            let maps = [8080u16, 8081].map(|p| PortMapping {
                host_port: p,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            });
            let addrs: Vec<IpNetwork> = ["10.0.0.3/24", "2001:db8::3/64"]
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect();
            let att = |cid| Attachment {
                network: "n",
                container_id: cid,
                ifname: "eth0",
            };
            for (cid, ip) in [("a", "10.0.0.2"), ("b", "10.0.0.3"), ("c", "10.0.0.4")] {
                super::super::hostports::add(&hp(cid, ip, &maps)).expect("ADD");
                super::super::masquerade::setup(&att(cid), &addrs).expect("setup");
            }
            let before = spawned();
            let r = hostports(&hp("b", "10.0.0.3", &maps));
            assert!(matches!(r, Some(Ok(()))), "{r:?}");
            assert!(matches!(masquerade(&att("b"), &addrs), Some(Ok(()))));
            super::super::hostports::check(&hp("b", "10.0.0.3", &maps)).expect("CHECK");
            super::super::masquerade::check(&att("b"), &addrs).expect("CHECK masq");
            assert_eq!(spawned(), before, "CHECK started a process");
            // Another DNAT port than ADD wrote.
            let mut other = maps.clone();
            other[1].container_port = 81;
            let e =
                super::super::hostports::check(&hp("b", "10.0.0.3", &other)).expect_err("altered");
            assert_eq!(
                e.to_string(),
                "missing hostport rule \"tcp dport 8081 dnat to 10.0.0.3:81 comment \\\"b\\\"\" \
                 in \"hostports\" chain of table ip cni_hostport"
            );
            // b's rule replaced in place (same handle, another port).
            let t = NFT_HOSTPORT_TABLE;
            let l = run(
                "nft",
                &["-a", "list", "chain", "ip", t, NFT_HOSTPORTS_CHAIN],
            );
            let h = handle_of(&l, "dport 8081 dnat to 10.0.0.3:80");
            run(
                "nft",
                &[
                    "replace",
                    "rule",
                    "ip",
                    t,
                    "hostports",
                    "handle",
                    &h,
                    "tcp",
                    "dport",
                    "8081",
                    "dnat",
                    "to",
                    "10.0.0.3:82",
                    "comment",
                    "\"b\"",
                ],
            );
            let e =
                super::super::hostports::check(&hp("b", "10.0.0.3", &maps)).expect_err("replaced");
            assert!(
                e.to_string().contains("tcp dport 8081 dnat to 10.0.0.3:80"),
                "{e}"
            );
            // A masquerading rule of c deleted.
            let l = run("nft", &["-a", "list", "chain", "ip", t, "masquerading"]);
            let h = handle_of(&l, "ip saddr 127.0.0.1 ip daddr 10.0.0.4");
            run(
                "nft",
                &["delete", "rule", "ip", t, "masquerading", "handle", &h],
            );
            let e =
                super::super::hostports::check(&hp("c", "10.0.0.4", &maps)).expect_err("deleted");
            assert!(e.to_string().contains("in \"masquerading\" chain"), "{e}");
            // a is untouched.
            super::super::hostports::check(&hp("a", "10.0.0.2", &maps)).expect("CHECK a");
            // Masquerade of c: its IPv6 rule deleted.
            let l = run(
                "nft",
                &[
                    "-a",
                    "list",
                    "chain",
                    "inet",
                    NFT_MASQ_TABLE,
                    NFT_MASQ_CHECKS_CHAIN,
                ],
            );
            let comment = nft_masq_comment("n", "eth0", "c");
            let line = l
                .lines()
                .find(|x| x.contains(&comment) && x.contains("ip6 saddr"))
                .expect("c's ipv6 rule");
            let h = line.rsplit(' ').next().expect("handle");
            run(
                "nft",
                &[
                    "delete",
                    "rule",
                    "inet",
                    NFT_MASQ_TABLE,
                    NFT_MASQ_CHECKS_CHAIN,
                    "handle",
                    h,
                ],
            );
            let e = super::super::masquerade::check(&att("c"), &addrs).expect_err("gone");
            assert!(
                e.to_string().starts_with("masquerade rule for 2001:db8::3"),
                "{e}"
            );
            super::super::masquerade::check(&att("a"), &addrs).expect("CHECK a");
            // The whole table gone.
            run("nft", &["delete", "table", "ip", t]);
            let e = super::super::hostports::check(&hp("a", "10.0.0.2", &maps))
                .expect_err("table gone");
            assert!(e.to_string().starts_with("missing entry rule"), "{e}");
        });
    }
}
