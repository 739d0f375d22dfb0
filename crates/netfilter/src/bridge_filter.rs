//! The bridge plugin's `macspoofchk`: only the container's MAC may send
//! through its bridge port. The reference's nftables layout in table
//! `bridge nat`, with its chain names and rule comments, so rules made by
//! either implementation are removed by both:
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING { type filter hook prerouting priority -300; policy accept;
//!         iifname "<host veth>" jump cni-br-iface-<id> comment "macspoofchk-<id>" }
//!     chain cni-br-iface-<id> { jump cni-br-iface-<id>-mac comment "macspoofchk-<id>" }
//!     chain cni-br-iface-<id>-mac {
//!         ether saddr <mac> return comment "macspoofchk-<id>"
//!         drop comment "macspoofchk-<id>" }
//! }
//! ```
//!
//! `<id>` is `<container id>-<ifname>`. Every operation is one nf_tables
//! transaction over netlink (no `nft` process), built as nft builds the
//! same text (the tests compare the expressions).

use crate::error::{Error, Result};
use crate::nfnl::abi::{
    HOOK_PREROUTING, NFPROTO_BRIDGE, NFT_META_IIFNAME, NFTA_CMP_DATA, NFTA_META_KEY,
};
use crate::nfnl::reader::{self, Deletion, RuleInfo};
use crate::nfnl::socket::attributes;
use crate::nfnl::writer::{
    Batch, Expr, Hook, drop, ether_saddr_eq, jump, nft_iface_match, return_,
};

const F: u8 = NFPROTO_BRIDGE;
const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";
const COMMENT_PREFIX: &str = "macspoofchk-";

/// The per-attachment names, from the reference's `uniqueID(id, ifname)`.
struct Names {
    iface_chain: String,
    mac_chain: String,
    comment: String,
}

fn names(container_id: &str, ifname: &str) -> Result<Names> {
    crate::validate::identifier("container id", container_id)?;
    crate::validate::ifname(ifname)?;
    Ok(names_of(&format!("{container_id}-{ifname}")))
}

fn names_of(id: &str) -> Names {
    Names {
        iface_chain: format!("cni-br-iface-{id}"),
        mac_chain: format!("cni-br-iface-{id}-mac"),
        comment: format!("{COMMENT_PREFIX}{id}"),
    }
}

fn nl(e: std::io::Error) -> Error {
    Error::Netlink(e)
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(mac: &str) -> Result<[u8; 6]> {
    let invalid = || Error::Invalid {
        what: "MAC address",
        value: mac.to_string(),
        reason: "must be six hexadecimal bytes separated by ':'",
    };
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        let p = parts.next().ok_or_else(invalid)?;
        if p.len() != 2 {
            return Err(invalid());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(out)
}

/// Install the rules for host port `host_ifname` and container MAC `mac`
/// (a repeated setup replaces the chains' rules; the base-chain jump is
/// added again, as the reference's `nft` script does).
pub fn setup(container_id: &str, ifname: &str, host_ifname: &str, mac: &str) -> Result<()> {
    let n = names(container_id, ifname)?;
    crate::validate::ifname(host_ifname)?;
    let mac = parse_mac(mac)?;
    let mut b = Batch::new();
    b.add_table_plain(F, TABLE);
    b.add_filter_chain(
        F,
        TABLE,
        BASE_CHAIN,
        Hook {
            hooknum: HOOK_PREROUTING,
            priority: -300,
        },
        false,
    );
    for c in [&n.iface_chain, &n.mac_chain] {
        b.add_chain(F, TABLE, c, None, false);
        b.flush_chain(F, TABLE, c);
    }
    let mut to_iface: Vec<Expr> = nft_iface_match(false, host_ifname, true);
    to_iface.extend(jump(&n.iface_chain));
    b.add_rule(F, TABLE, BASE_CHAIN, to_iface, Some(&n.comment));
    b.add_rule(
        F,
        TABLE,
        &n.iface_chain,
        jump(&n.mac_chain),
        Some(&n.comment),
    );
    let mut own_mac = ether_saddr_eq(mac);
    own_mac.extend(return_());
    b.add_rule(F, TABLE, &n.mac_chain, own_mac, Some(&n.comment));
    b.add_rule(F, TABLE, &n.mac_chain, drop(), Some(&n.comment));
    b.commit().map_err(nl)
}

fn base_rules() -> std::io::Result<Vec<RuleInfo>> {
    reader::rules(F, TABLE, BASE_CHAIN)
}

/// One transaction removing the base-chain rules and the chains of
/// `attachments`, planned from a fresh read (again when it went stale).
fn remove(attachments: &[Names]) -> Result<()> {
    if attachments.is_empty() {
        return Ok(());
    }
    let plan = || {
        let mut ops = vec![];
        for r in base_rules()? {
            if attachments
                .iter()
                .any(|n| r.comment.as_deref() == Some(n.comment.as_str()))
            {
                ops.push(Deletion::Rule {
                    chain: BASE_CHAIN.to_string(),
                    handle: r.handle,
                });
            }
        }
        // The iface chain jumps to the mac chain: empty both, then delete
        // in that order.
        let mut chains = vec![];
        for n in attachments {
            for c in [&n.iface_chain, &n.mac_chain] {
                if reader::chain(F, TABLE, c)?.is_some() {
                    chains.push(c.clone());
                }
            }
        }
        for c in &chains {
            ops.push(Deletion::FlushChain(c.clone()));
        }
        for c in chains {
            ops.push(Deletion::Chain(c));
        }
        Ok(ops)
    };
    reader::plan_and_delete(F, TABLE, plan).map_err(nl)
}

/// Remove the attachment's rules and chains; nothing to remove is success.
pub fn teardown(container_id: &str, ifname: &str) -> Result<()> {
    remove(&[names(container_id, ifname)?])
}

/// Whether the attachment's jump is in place (for CHECK).
pub fn check(container_id: &str, ifname: &str) -> Result<()> {
    let n = names(container_id, ifname)?;
    if reader::chain(F, TABLE, BASE_CHAIN).map_err(nl)?.is_none() {
        return Err(Error::Missing(
            "macspoofchk table bridge nat is missing".into(),
        ));
    }
    let rules = base_rules().map_err(nl)?;
    if rules
        .iter()
        .any(|r| r.comment.as_deref() == Some(n.comment.as_str()))
    {
        Ok(())
    } else {
        Err(Error::Missing(format!(
            "macspoofchk rule {:?} is missing",
            n.comment
        )))
    }
}

/// The `iifname "<port>"` of a base-chain rule: the value of the first
/// `cmp` after a `meta iifname` load, without its NUL padding.
fn host_port_of(rule: &RuleInfo) -> Option<String> {
    let exprs = rule.exprs();
    let meta = exprs
        .iter()
        .position(|e| e.name == "meta" && e.be32(NFTA_META_KEY) == Some(NFT_META_IIFNAME))?;
    let cmp = exprs.get(meta + 1).filter(|e| e.name == "cmp")?;
    let data = cmp.attr(NFTA_CMP_DATA)?;
    let (_, _, value) = attributes(data).next()?;
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    Some(String::from_utf8_lossy(&value[..end]).into_owned())
}

/// GC: remove the rules of attachments not in `keep` whose host port is a
/// port of `bridge` — or no longer exists (then they protect nothing and
/// belong to no one). The chain names carry no network name, so a port on
/// another bridge means another network's attachment: left alone.
/// `port_bridge` tells which bridge a port is on (`None`: no such port).
pub fn gc(
    keep: &[(String, String)],
    port_bridge: impl Fn(&str) -> std::result::Result<Option<String>, String>,
    bridge: &str,
) -> Result<()> {
    let kept: std::collections::HashSet<String> = keep
        .iter()
        .map(|(id, ifname)| names_of(&format!("{id}-{ifname}")).comment)
        .collect();
    let mut stale = Vec::new();
    for rule in base_rules().map_err(nl)? {
        let Some(comment) = rule.comment.as_deref() else {
            continue;
        };
        let Some(id) = comment.strip_prefix(COMMENT_PREFIX) else {
            continue;
        };
        if kept.contains(comment) {
            continue;
        }
        let ours = match host_port_of(&rule) {
            Some(port) => port_bridge(&port)
                .map_err(Error::Missing)?
                .is_none_or(|b| b == bridge),
            None => false,
        };
        if ours {
            stale.push(names_of(id));
        }
    }
    remove(&stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_parsed_strictly() {
        assert_eq!(
            parse_mac("0a:58:0A:f4:00:01").unwrap(),
            [0x0a, 0x58, 0x0a, 0xf4, 0, 1]
        );
        for bad in [
            "",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:01:02",
            "0a-58-0a-f4-00-01",
            "0a:58:0a:f4:00:1",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
