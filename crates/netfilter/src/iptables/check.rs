//! CHECK of one container's iptables rules over nf_tables netlink, with no
//! `iptables-restore -C` process: the container's own chain (one
//! chain-filtered dump) and the rules of a shared chain that jump to it
//! (found by handle next to the chain, not by listing the shared chain),
//! compared with what ADD writes — the expressions `xtrules` makes of the
//! same arguments, as iptables-nft would, not text.
//!
//! `-C` semantics: a wanted rule passes when an equal rule is anywhere in
//! its chain (counters aside); order and extra rules do not matter.

use std::io;

use super::{Family, xtrules};
use crate::nfnl::reader::{self, ChainInfo, RuleInfo};

/// What is wrong, in the reference's words.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Missing {
    /// `chain <chain> not found in iptables table nat`
    Chain(String),
    /// `rule [<args>] in chain <chain> not found in table nat`
    Rule { chain: String, args: Vec<String> },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Chain(c) => write!(f, "chain {c} not found in iptables table nat"),
            Missing::Rule { chain, args } => write!(
                f,
                "rule [{}] in chain {chain} not found in table nat",
                args.join(" ")
            ),
        }
    }
}

/// The container's chain and the rules that lead to it.
pub(super) struct Wanted<'a> {
    pub chain: &'a str,
    /// The chain's own rules (`iptables` arguments, as ADD writes them).
    pub rules: &'a [Vec<String>],
    /// The shared chain holding the entry rules.
    pub parent: &'a str,
    /// Entry rules in `parent`, each ending in `-j <chain>`.
    pub entries: &'a [Vec<String>],
}

/// A rule as `reader::canonical` gives it, for comparison.
type Canon = Vec<Vec<u8>>;

fn canon(family: Family, args: &[String]) -> Option<Canon> {
    let r = xtrules::translate(family, args)?;
    Some(reader::canonical(&reader::written(&r.exprs)))
}

/// How far past the chain's own rules the entry rules are looked for.
const NEAR: u64 = 16;

/// The rules of `parent` that jump to `chain`: first by handle right after
/// the chain's own rules — ADD makes the chain, its rules and its entry
/// rules in one transaction, and nf_tables numbers a table's objects in
/// creation order; the chain's use count (own rules + references) says how
/// many there are — so the cost does not grow with the rules of other
/// containers in `parent`. When not all are there (an entry rule made
/// later, or by another tool), one chain-filtered dump of `parent`.
fn entry_rules(
    f: u8,
    parent: &str,
    chain: &str,
    info: &ChainInfo,
    own: &[RuleInfo],
) -> io::Result<Vec<RuleInfo>> {
    let refs = (info.uses as usize).saturating_sub(own.len());
    let start = own.iter().map(|r| r.handle).max().unwrap_or(info.handle) + 1;
    let mut found = vec![];
    for handle in start..start + NEAR + refs as u64 {
        if found.len() == refs {
            return Ok(found);
        }
        if let Some(r) = reader::rule(f, "nat", parent, handle)?
            && r.jump.as_deref() == Some(chain)
        {
            found.push(r);
        }
    }
    if found.len() == refs {
        return Ok(found);
    }
    Ok(reader::rules(f, "nat", parent)?
        .into_iter()
        .filter(|r| r.jump.as_deref() == Some(chain))
        .collect())
}

/// `None` when netlink cannot decide: an iptables-legacy `nat` table may
/// hold the rules, or a rule has an option `xtrules` does not encode
/// (free-form `conditionsV4`/`conditionsV6`, `sctp`) — the caller then
/// checks with `iptables-restore` as before. `Some(Ok(None))`: all there.
pub(super) fn check(family: Family, w: &Wanted<'_>) -> Option<io::Result<Option<Missing>>> {
    if family.legacy_nat_loaded() {
        return None;
    }
    let rules: Option<Vec<Canon>> = w.rules.iter().map(|r| canon(family, r)).collect();
    let entries: Option<Vec<Canon>> = w.entries.iter().map(|r| canon(family, r)).collect();
    let (rules, entries) = (rules?, entries?);
    Some(check_encoded(family.nfproto(), w, &rules, &entries))
}

fn check_encoded(
    f: u8,
    w: &Wanted<'_>,
    rules: &[Canon],
    entries: &[Canon],
) -> io::Result<Option<Missing>> {
    let Some(info) = reader::chain(f, "nat", w.chain)? else {
        return Ok(Some(Missing::Chain(w.chain.to_string())));
    };
    let own = reader::rules(f, "nat", w.chain)?;
    let own_canon: Vec<Canon> = own.iter().map(|r| reader::canonical(&r.exprs())).collect();
    for (want, args) in rules.iter().zip(w.rules) {
        if !own_canon.contains(want) {
            return Ok(Some(Missing::Rule {
                chain: w.chain.to_string(),
                args: args.clone(),
            }));
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let found: Vec<Canon> = entry_rules(f, w.parent, w.chain, &info, &own)?
        .iter()
        .map(|r| reader::canonical(&r.exprs()))
        .collect();
    for (want, args) in entries.iter().zip(w.entries) {
        if !found.contains(want) {
            // The reference names the entry rule without its `-j`.
            let shown = match args.len().checked_sub(2) {
                Some(n) if args[n] == "-j" && args[n + 1] == w.chain => &args[..n],
                _ => &args[..],
            };
            return Ok(Some(Missing::Rule {
                chain: w.parent.to_string(),
                args: shown.to_vec(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::exec::processes_spawned_on_this_thread as spawned;
    use crate::hostports::{PortMapping, Protocol};
    use crate::testutil::run;
    use crate::types::Attachment;
    use ipnetwork::IpNetwork;

    use crate::testutil::hostports as hp;

    /// CHECK of host ports and masquerade passes with no process on a
    /// good attachment among others, and names what is gone or altered.
    #[test]
    fn check_over_netlink_sees_missing_and_altered_rules() {
        crate::testutil::in_netns("natcheck", || {
            let maps = [8080u16, 8081].map(|p| PortMapping {
                host_port: p,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            });
            for (cid, ip) in [("a", "10.0.0.2"), ("b", "10.0.0.3"), ("c", "10.0.0.4")] {
                super::super::hostports::add(&hp(cid, ip, &maps)).expect("ADD");
            }
            let addrs: Vec<IpNetwork> = ["10.0.0.3/24", "2001:db8::3/64"]
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect();
            let att = Attachment {
                network: "n",
                container_id: "b",
                ifname: "eth0",
            };
            // The nat table exists (portmap made it): setup goes over netlink.
            super::super::masquerade::setup(&att, &addrs).expect("setup");
            let before = spawned();
            super::super::hostports::check(&hp("b", "10.0.0.3", &maps)).expect("CHECK");
            super::super::masquerade::check(&att, &addrs).expect("CHECK masq");
            assert_eq!(spawned(), before, "CHECK started a process");
            // Another DNAT port: not what ADD wrote.
            let mut other = maps.clone();
            other[1].container_port = 81;
            let e =
                super::super::hostports::check(&hp("b", "10.0.0.3", &other)).expect_err("altered");
            let chain = crate::names::dnat_chain("n", "b");
            assert_eq!(
                e.to_string(),
                format!(
                    "could not check ipv4 dnat: rule [-p tcp --dport 8081 -j DNAT \
                     --to-destination 10.0.0.3:81] in chain {chain} not found in table nat"
                )
            );
            // An entry rule deleted behind its back.
            let entry = run("iptables", &["-t", "nat", "-S", "CNI-HOSTPORT-DNAT"]);
            let line = entry
                .lines()
                .find(|l| l.contains(&chain))
                .expect("entry listed");
            // The comment has spaces and quotes: a shell reads the spec.
            let spec = line.replacen("-A", "-D", 1);
            run("sh", &["-c", &format!("iptables -t nat {spec}")]);
            let e = super::super::hostports::check(&hp("b", "10.0.0.3", &maps))
                .expect_err("entry gone");
            assert!(
                e.to_string()
                    .contains("in chain CNI-HOSTPORT-DNAT not found in table nat"),
                "{e}"
            );
            // The chain gone.
            run("iptables", &["-t", "nat", "-F", &chain]);
            run("iptables", &["-t", "nat", "-X", &chain]);
            let e = super::super::hostports::check(&hp("b", "10.0.0.3", &maps))
                .expect_err("chain gone");
            assert_eq!(
                e.to_string(),
                format!("could not check ipv4 dnat: chain {chain} not found in iptables table nat")
            );
            // Masquerade: the jump deleted.
            let masq = crate::names::masq_chain("n", "b");
            let post = run("iptables", &["-t", "nat", "-S", "POSTROUTING"]);
            let line = post
                .lines()
                .find(|l| l.contains(&masq))
                .expect("jump listed");
            run(
                "sh",
                &[
                    "-c",
                    &format!("iptables -t nat {}", line.replacen("-A", "-D", 1)),
                ],
            );
            let e = super::super::masquerade::check(&att, &addrs).expect_err("jump gone");
            assert!(
                e.to_string().contains("in chain POSTROUTING not found"),
                "{e}"
            );
            // The others still pass.
            super::super::hostports::check(&hp("c", "10.0.0.4", &maps)).expect("CHECK c");
        });
    }
}
