//! The firewall plugin's rules in a table of our own (the reference has no
//! nftables backend), written and read over netlink — no process:
//!
//! ```text
//! table inet cni_firewall {
//!     chain forward {
//!         type filter hook forward priority filter; policy accept;
//!         jump isolation_stage_1
//!         jump admin
//!         jump containers
//!     }
//!     chain admin { }                      # the administrator's overrides
//!     chain containers {                   # per address, tagged by attachment
//!         ip daddr 10.88.0.2 ct state established,related accept comment "cni firewall net=net id=cid ifname=eth0"
//!         ip saddr 10.88.0.2 accept comment "…"
//!     }
//!     chain isolation_stage_1 {            # per bridge, same-bridge/isolated
//!         iifname "br" oifname != "br" jump isolation_stage_2
//!         iifname "br" oifname "br" drop   # isolated only
//!     }
//!     chain isolation_stage_2 {
//!         oifname "br" drop
//!     }
//! }
//! ```
//!
//! As with iptables, an `accept` here does not override a `drop` of
//! another table (nf_tables runs every base chain on the hook); the
//! isolation `drop`s are final everywhere. DEL finds the attachment's rules
//! by their comment (no addresses needed) and leaves the table, the admin
//! chain and the per-bridge rules.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::firewall_spec::{Firewall, IngressPolicy};
use crate::nfnl::abi::{HOOK_FORWARD, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nfnl::inventory::Inventory;
use crate::nfnl::reader::{self, RuleInfo};
use crate::nfnl::writer::{
    Batch, Expr, Hook, accept, addr_eq, ct_state_in, drop, jump, nfproto_eq, nft_iface_match,
};

pub const TABLE: &str = "cni_firewall";
const TABLE_COMMENT: &str = "CNI firewall plugin";
const FORWARD: &str = "forward";
const ADMIN: &str = "admin";
const CONTAINERS: &str = "containers";
const STAGE1: &str = "isolation_stage_1";
const STAGE2: &str = "isolation_stage_2";
const F: u8 = NFPROTO_INET;

fn nl(e: std::io::Error) -> Error {
    Error::Netlink(e)
}

/// The comment that tags an attachment's rules.
pub fn comment(fw: &Firewall<'_>) -> String {
    let a = &fw.attachment;
    format!(
        "cni firewall net={} id={} ifname={}",
        a.network, a.container_id, a.ifname
    )
}

fn family_match(ip: &IpAddr) -> Vec<Expr> {
    nfproto_eq(if ip.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    })
}

/// The two rules of one address: replies in, everything out.
fn address_rules(ip: &IpAddr) -> [Vec<Expr>; 2] {
    let mut inbound = family_match(ip);
    inbound.extend(addr_eq(false, *ip));
    inbound.extend(ct_state_in(0b110 /* established | related */));
    inbound.extend(accept());
    let mut outbound = family_match(ip);
    outbound.extend(addr_eq(true, *ip));
    outbound.extend(accept());
    [inbound, outbound]
}

/// A rule of one of the isolation chains, built fresh each time it is
/// needed (expressions are consumed when sent).
#[derive(Clone, Copy)]
enum Isolation<'a> {
    /// stage 1: leaving `br` for another interface → stage 2.
    Leave(&'a str),
    /// stage 1, isolated: `br` to `br` dropped.
    Within(&'a str),
    /// stage 2: entering `br` (from another isolated bridge) dropped.
    Enter(&'a str),
}

impl Isolation<'_> {
    fn chain(self) -> &'static str {
        match self {
            Isolation::Leave(_) | Isolation::Within(_) => STAGE1,
            Isolation::Enter(_) => STAGE2,
        }
    }

    fn exprs(self) -> Vec<Expr> {
        match self {
            Isolation::Leave(br) => {
                let mut e = nft_iface_match(false, br, true);
                e.extend(nft_iface_match(true, br, false));
                e.extend(jump(STAGE2));
                e
            }
            Isolation::Within(br) => {
                let mut e = nft_iface_match(false, br, true);
                e.extend(nft_iface_match(true, br, true));
                e.extend(drop());
                e
            }
            Isolation::Enter(br) => {
                let mut e = nft_iface_match(true, br, true);
                e.extend(drop());
                e
            }
        }
    }
}

fn isolation_rules<'a>(fw: &Firewall<'a>) -> Vec<Isolation<'a>> {
    match (fw.ingress, fw.bridge) {
        (IngressPolicy::Open, _) | (_, None) => vec![],
        (IngressPolicy::SameBridge, Some(br)) => {
            vec![Isolation::Leave(br), Isolation::Enter(br)]
        }
        (IngressPolicy::Isolated, Some(br)) => vec![
            Isolation::Leave(br),
            Isolation::Within(br),
            Isolation::Enter(br),
        ],
    }
}

/// The table and its chains, with the base chain's jumps; `exclusive` on
/// the base chain so two first ADDs cannot both add the jumps.
fn skeleton(b: &mut Batch) {
    b.add_table(F, TABLE, TABLE_COMMENT);
    for c in [ADMIN, CONTAINERS, STAGE1, STAGE2] {
        b.add_chain(F, TABLE, c, None, false);
    }
    b.add_filter_chain(
        F,
        TABLE,
        FORWARD,
        Hook {
            hooknum: HOOK_FORWARD,
            priority: 0,
        },
        true,
    );
    for c in [STAGE1, ADMIN, CONTAINERS] {
        b.add_rule(F, TABLE, FORWARD, jump(c), None);
    }
}

fn rules_of(chain: &str) -> Result<Vec<RuleInfo>> {
    reader::rules(F, TABLE, chain).map_err(nl)
}

fn canonical_of(exprs: &[Expr]) -> Vec<Vec<u8>> {
    reader::canonical(&reader::written(exprs))
}

fn present(rules: &[RuleInfo], exprs: &[Expr], comment: Option<&str>) -> bool {
    let want = canonical_of(exprs);
    rules.iter().any(|r| {
        (comment.is_none() || r.comment.as_deref() == comment)
            && reader::canonical(&r.exprs()) == want
    })
}

/// One transaction: the skeleton when missing, the attachment's rules
/// replaced, missing isolation rules added.
fn plan_add(fw: &Firewall<'_>) -> Result<Batch> {
    let tag = comment(fw);
    let mut b = Batch::new();
    let exists = reader::chain(F, TABLE, FORWARD).map_err(nl)?.is_some();
    if !exists {
        skeleton(&mut b);
    }
    let containers = if exists {
        rules_of(CONTAINERS)?
    } else {
        vec![]
    };
    // A repeated ADD replaces the attachment's rules.
    for r in containers
        .iter()
        .filter(|r| r.comment.as_deref() == Some(&tag))
    {
        b.delete_rule(F, TABLE, CONTAINERS, r.handle);
    }
    for ip in fw.unique_addresses() {
        for e in address_rules(&ip) {
            b.add_rule(F, TABLE, CONTAINERS, e, Some(&tag));
        }
    }
    let mut stages: Vec<(&str, Vec<RuleInfo>)> = vec![];
    for rule in isolation_rules(fw) {
        let chain = rule.chain();
        if !stages.iter().any(|(c, _)| *c == chain) {
            let rules = if exists { rules_of(chain)? } else { vec![] };
            stages.push((chain, rules));
        }
        let have = stages
            .iter()
            .find(|(c, _)| *c == chain)
            .is_some_and(|(_, rules)| present(rules, &rule.exprs(), None));
        if !have {
            b.add_rule(F, TABLE, chain, rule.exprs(), None);
        }
    }
    Ok(b)
}

pub fn add(fw: &Firewall<'_>) -> Result<()> {
    // Two ADDs planning from the same read would both add a bridge's
    // isolation rules: one at a time (a file lock, no process).
    let _lock = crate::lock::SharedChainsLock::acquire();
    // A batch that went stale (the skeleton made meanwhile: EEXIST; a rule
    // gone: ENOENT) is planned again.
    let mut last = None;
    for _ in 0..4 {
        match plan_add(fw)?.commit() {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(nl(last.unwrap_or_else(|| {
        std::io::Error::other("no attempt made")
    })))
}

pub fn check(fw: &Firewall<'_>) -> Result<()> {
    let tag = comment(fw);
    if reader::chain(F, TABLE, FORWARD).map_err(nl)?.is_none() {
        return Err(Error::Missing(format!(
            "chain inet {TABLE} {FORWARD} not found"
        )));
    }
    let forward = rules_of(FORWARD)?;
    for c in [STAGE1, ADMIN, CONTAINERS] {
        if !forward.iter().any(|r| r.jump.as_deref() == Some(c)) {
            return Err(Error::Missing(format!(
                "rule \"jump {c}\" not found in chain inet {TABLE} {FORWARD}"
            )));
        }
    }
    let containers = rules_of(CONTAINERS)?;
    for ip in fw.unique_addresses() {
        for (e, what) in address_rules(&ip).into_iter().zip(["to", "from"]) {
            if !present(&containers, &e, Some(&tag)) {
                return Err(Error::Missing(format!(
                    "the rule accepting traffic {what} {ip} ({tag}) not found"
                )));
            }
        }
    }
    for rule in isolation_rules(fw) {
        if !present(&rules_of(rule.chain())?, &rule.exprs(), None) {
            return Err(Error::Missing(format!(
                "an isolation rule of bridge {:?} not found in chain {}",
                fw.bridge.unwrap_or_default(),
                rule.chain()
            )));
        }
    }
    Ok(())
}

pub fn del(fw: &Firewall<'_>) -> Result<()> {
    let tag = comment(fw);
    reader::plan_and_delete(F, TABLE, || {
        Ok(reader::rules(F, TABLE, CONTAINERS)?
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some(&tag))
            .map(|r| reader::Deletion::Rule {
                chain: CONTAINERS.to_string(),
                handle: r.handle,
            })
            .collect())
    })
    .or_else(|e| match e.raw_os_error() {
        // No table: nothing to remove.
        Some(libc::ENOENT) => Ok(()),
        _ => Err(nl(e)),
    })
}

/// nf_tables can be read here.
pub fn status() -> Result<()> {
    Inventory::read()
        .map(|_| ())
        .ok_or_else(|| Error::Missing("nf_tables cannot be read over netlink".into()))
}
