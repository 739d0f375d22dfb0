//! portmap's host ports in nftables, laid out as the reference's
//! `portmap_nftables.go` (tables `ip cni_hostport` and `ip6 cni_hostport`):
//!
//! ```text
//! chain prerouting  { type nat hook prerouting priority -100; }     <conditions> fib daddr type local jump hostports_all
//! chain output      { type nat hook output priority -100; }         <conditions> fib daddr type local jump hostports_all
//! chain hostports_all                                                jump hostip_hostports; jump hostports
//! chain hostports      [ip daddr <hostIP>] tcp dport 8080 dnat to 10.0.0.2:80 comment "<cid>"
//! chain masquerading { type nat hook postrouting priority srcnat; }
//!                      ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "<cid>"     (hairpin)
//!                      ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "<cid>"    (localhost)
//! ```
//!
//! `fib daddr type local` on the entry rules means only traffic addressed
//! to the host itself is redirected; traffic forwarded through the host to
//! another address on the same port is not (CVE-2025-67499).
//!
//! One addition to the reference layout: an empty-of-effect chain
//! `owner_<hash(net)>_<hash(cid)>` holding one rule commented with the
//! container id. Creating it exclusively makes an ADD for a container that
//! already has rules fail as a whole, so the common ADD is one transaction
//! with no listing (the reference lists nothing and duplicates rules on a
//! repeated ADD; we list and replace only then). It also tells GC which
//! container ids belong to which network, which the reference's rules
//! (commented with the container id only) cannot.
//!
//! The common ADD and every DEL go over netlink (`hostports_netlink`, no
//! process); the same transaction as `nft` text ([`add_script`]) serves the
//! cases the netlink writer does not cover and the replacing ADD.

use std::fmt::Write;

use super::{Listing, apply, list};
use crate::error::{Error, Result};
use crate::exec::Program;
use crate::family::Family;
use crate::hostports::ip_port;
use crate::hostports::{HostPorts, Snat};
use crate::names::{
    NFT_HOSTIP_HOSTPORTS_CHAIN, NFT_HOSTPORT_TABLE, NFT_HOSTPORT_TABLE_COMMENT,
    NFT_HOSTPORTS_ALL_CHAIN, NFT_HOSTPORTS_CHAIN, NFT_MASQUERADING_CHAIN, NFT_OWNED_RULE_CHAINS,
    nft_owner_chain, nft_owner_chain_prefix,
};
use crate::nfnl::inventory::Inventory;
use ipnetwork::IpNetwork;

/// `ip` or `ip6`: the table family and the address match keyword at once.
impl Family {
    fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn table(self) -> String {
        format!("{} {NFT_HOSTPORT_TABLE}", self.keyword())
    }
}

/// The container's rules for one family: (chain, rule text as nft prints it).
pub(super) fn container_rules(hp: &HostPorts<'_>, addr: IpNetwork) -> Vec<(&'static str, String)> {
    let f = Family::of(&addr);
    let ip = f.keyword();
    let cid = hp.container_id;
    let mut out = vec![];
    for m in hp.mappings {
        let Some(dest) = m.destination_for(addr.ip()) else {
            continue;
        };
        let daddr = dest.map(|d| format!("{ip} daddr {d} ")).unwrap_or_default();
        out.push((
            NFT_HOSTPORTS_CHAIN,
            format!(
                "{daddr}{} dport {} dnat to {} comment \"{cid}\"",
                m.protocol,
                m.host_port,
                ip_port(addr.ip(), m.container_port)
            ),
        ));
    }
    if hp.snat != Snat::Off {
        let src = match (hp.masq_all, f) {
            (true, Family::V4) => "0.0.0.0/0".to_string(),
            (true, Family::V6) => "::/0".to_string(),
            (false, _) => addr.ip().to_string(),
        };
        let cip = addr.ip();
        out.push((
            NFT_MASQUERADING_CHAIN,
            format!("{ip} saddr {src} {ip} daddr {cip} masquerade comment \"{cid}\""),
        ));
        if f == Family::V4 && !hp.masq_all {
            out.push((
                NFT_MASQUERADING_CHAIN,
                format!("ip saddr 127.0.0.1 ip daddr {cip} masquerade comment \"{cid}\""),
            ));
        }
    }
    out
}

pub(super) fn entry_rule(conditions: &[String]) -> String {
    let mut r = conditions.join(" ");
    if !r.is_empty() {
        r.push(' ');
    }
    r.push_str(&format!(
        "fib daddr type local jump {NFT_HOSTPORTS_ALL_CHAIN}"
    ));
    r
}

/// Shared structure of one family's table, rewritten on every ADD as the
/// reference does (the conditions live on the shared entry rules).
fn write_structure(s: &mut String, f: Family, conditions: &[String], snat: bool) {
    let t = f.table();
    let _ = writeln!(
        s,
        "add table {t} {{ comment \"{NFT_HOSTPORT_TABLE_COMMENT}\" ; }}"
    );
    let _ = writeln!(s, "add chain {t} {NFT_HOSTPORTS_CHAIN}");
    let _ = writeln!(s, "add chain {t} {NFT_HOSTIP_HOSTPORTS_CHAIN}");
    let _ = writeln!(s, "add chain {t} {NFT_HOSTPORTS_ALL_CHAIN}");
    let _ = writeln!(s, "flush chain {t} {NFT_HOSTPORTS_ALL_CHAIN}");
    let _ = writeln!(
        s,
        "add rule {t} {NFT_HOSTPORTS_ALL_CHAIN} jump {NFT_HOSTIP_HOSTPORTS_CHAIN}"
    );
    let _ = writeln!(
        s,
        "add rule {t} {NFT_HOSTPORTS_ALL_CHAIN} jump {NFT_HOSTPORTS_CHAIN}"
    );
    let entry = entry_rule(conditions);
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(
            s,
            "add chain {t} {chain} {{ type nat hook {hook} priority -100 ; }}"
        );
        let _ = writeln!(s, "flush chain {t} {chain}");
        let _ = writeln!(s, "add rule {t} {chain} {entry}");
    }
    if snat {
        let _ = writeln!(
            s,
            "add chain {t} {NFT_MASQUERADING_CHAIN} {{ type nat hook postrouting priority srcnat ; }}"
        );
    }
}

/// The ADD script. `replace` is `None` for the first ADD (the owner chain is
/// *created*, failing if it exists), or the current listings, whose rules of
/// this container are deleted first.
fn add_script(hp: &HostPorts<'_>, replace: Option<&[(Family, Option<Listing>)]>) -> String {
    let mut s = String::new();
    let owner = nft_owner_chain(hp.network, hp.container_id);
    for (addr, conditions) in hp.families() {
        let f = Family::of(&addr);
        let t = f.table();
        write_structure(&mut s, f, conditions, hp.snat != Snat::Off);
        match replace {
            None => {
                let _ = writeln!(s, "create chain {t} {owner}");
            }
            Some(listings) => {
                let listing = listings
                    .iter()
                    .find(|(lf, _)| *lf == f)
                    .and_then(|(_, l)| l.as_ref());
                write_deletions(&mut s, f, listing, hp.container_id);
                let _ = writeln!(s, "add chain {t} {owner}");
                let _ = writeln!(s, "flush chain {t} {owner}");
            }
        }
        let _ = writeln!(
            s,
            "add rule {t} {owner} return comment \"{}\"",
            hp.container_id
        );
        for (chain, rule) in container_rules(hp, addr) {
            let _ = writeln!(s, "add rule {t} {chain} {rule}");
        }
    }
    s
}

/// Delete every rule commented with `container_id` in the reference's
/// chains (not the owner chain: its caller decides).
fn write_deletions(s: &mut String, f: Family, listing: Option<&Listing>, container_id: &str) {
    let t = f.table();
    for chain in NFT_OWNED_RULE_CHAINS {
        for r in listing.into_iter().flat_map(|l| l.rules_in(chain)) {
            if r.comment.as_deref() == Some(container_id) {
                let _ = writeln!(s, "delete rule {t} {chain} handle {}", r.handle);
            }
        }
    }
}

fn list_family(f: Family) -> Result<Option<Listing>> {
    list(&["table", f.keyword(), NFT_HOSTPORT_TABLE])
}

fn families_of(hp: &HostPorts<'_>) -> Vec<Family> {
    hp.families().map(|(a, _)| Family::of(&a)).collect()
}

const ATTEMPTS: usize = 4;

/// List the tables of `families`, plan, apply; again on failure (a
/// concurrent run changed the table between our listing and our write).
fn list_plan_apply(
    families: &[Family],
    plan: impl Fn(&[(Family, Option<Listing>)]) -> Result<String>,
) -> Result<()> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let listings = families
            .iter()
            .map(|f| Ok((*f, list_family(*f)?)))
            .collect::<Result<Vec<_>>>()?;
        match apply(&plan(&listings)?) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Missing("nft never ran".into())))
}

/// One transaction, no process, in the common case; `nft` with a listing
/// for a repeated ADD (replace the container's rules) and for configs the
/// netlink writer does not cover.
pub fn add(hp: &HostPorts<'_>) -> Result<()> {
    if hp.mappings.is_empty() {
        return Ok(());
    }
    let netlink_covers = !hp.masq_all && hp.conditions_v4.is_empty() && hp.conditions_v6.is_empty();
    if netlink_covers {
        if super::hostports_netlink::add(hp).is_ok() {
            return Ok(());
        }
    } else if apply(&add_script(hp, None)).is_ok() {
        return Ok(());
    }
    // The owner chain exists (a repeated ADD) or a table changed under us:
    // replace this container's rules from a fresh listing.
    list_plan_apply(&families_of(hp), |listings| {
        Ok(add_script(hp, Some(listings)))
    })
}

/// Over netlink (`super::check`, no process) where it covers the
/// configuration; from an `nft` listing else.
pub fn check(hp: &HostPorts<'_>) -> Result<()> {
    if let Some(done) = super::check::hostports(hp) {
        return done;
    }
    for (addr, conditions) in hp.families() {
        let f = Family::of(&addr);
        let listing = list_family(f)?;
        let has = |chain: &str, text: &str| {
            listing
                .as_ref()
                .is_some_and(|l| l.rules_in(chain).any(|r| r.text == text))
        };
        let entry = entry_rule(conditions);
        for chain in ["prerouting", "output"] {
            if !has(chain, &entry) {
                return Err(Error::Missing(format!(
                    "missing entry rule {entry:?} in {:?} chain of table {}",
                    chain,
                    f.table()
                )));
            }
        }
        for (chain, rule) in container_rules(hp, addr) {
            if !has(chain, &rule) {
                return Err(Error::Missing(format!(
                    "missing hostport rule {rule:?} in {chain:?} chain of table {}",
                    f.table()
                )));
            }
        }
    }
    Ok(())
}

fn write_owner_removal(s: &mut String, f: Family, listing: Option<&Listing>, owner: &str) {
    if listing.is_some_and(|l| l.chain(owner).is_some()) {
        let t = f.table();
        let _ = writeln!(s, "flush chain {t} {owner}");
        let _ = writeln!(s, "delete chain {t} {owner}");
    }
}

/// Families whose `cni_hostport` table exists: over netlink when possible
/// (no process), else one short `nft list tables`. Saves listing a table
/// that is not there — the usual case on a node whose portmap uses
/// iptables, where DEL still looks here for leftovers.
fn existing_families() -> Result<Vec<Family>> {
    let exists: Option<Vec<bool>> = Family::BOTH
        .into_iter()
        .map(|f| Inventory::table_exists(f.nfproto(), NFT_HOSTPORT_TABLE))
        .collect();
    if let Some(exists) = exists {
        return Ok(Family::BOTH
            .into_iter()
            .zip(exists)
            .filter(|(_, e)| *e)
            .map(|(f, _)| f)
            .collect());
    }
    let out = Program::find("nft")?.run(&["list", "tables"], None)?;
    Ok(Family::BOTH
        .into_iter()
        .filter(|f| {
            let wanted = format!("table {}", f.table());
            out.lines().any(|l| l.trim() == wanted)
        })
        .collect())
}

pub fn del(network: &str, container_id: &str) -> Result<()> {
    let owner = nft_owner_chain(network, container_id);
    if super::hostports_netlink::del(container_id, &owner) {
        return Ok(());
    }
    remove_per_family(|s, f, listing| {
        write_deletions(s, f, listing, container_id);
        write_owner_removal(s, f, listing, &owner);
    })
}

/// Only containers with an owner chain of `network` can be attributed to
/// it; rules the Go portmap made (container id only) are left alone.
pub fn gc(network: &str, keep: &[String]) -> Result<()> {
    let prefix = nft_owner_chain_prefix(network);
    remove_per_family(|s, f, listing| {
        let Some(l) = listing else { return };
        for chain in l.chains.iter().filter(|c| c.name.starts_with(&prefix)) {
            let Some(cid) = chain.rules.iter().find_map(|r| r.comment.clone()) else {
                continue;
            };
            if keep.contains(&cid) || nft_owner_chain(network, &cid) != chain.name {
                continue;
            }
            write_deletions(s, f, Some(l), &cid);
            write_owner_removal(s, f, Some(l), &chain.name);
        }
    })
}

/// A removal in every family that has a host-port table, as one script
/// planned from fresh listings: `each` writes one family's part.
fn remove_per_family(each: impl Fn(&mut String, Family, Option<&Listing>)) -> Result<()> {
    let families = existing_families()?;
    if families.is_empty() {
        return Ok(());
    }
    list_plan_apply(&families, |listings| {
        let mut s = String::new();
        for (f, listing) in listings {
            each(&mut s, *f, listing.as_ref());
        }
        Ok(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostports::{PortMapping, Protocol};
    use std::net::IpAddr;

    #[test]
    fn rules_follow_the_reference_text() {
        let maps = [
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            PortMapping {
                host_port: 8083,
                container_port: 83,
                protocol: Protocol::Tcp,
                host_ip: Some(IpAddr::from([192, 168, 0, 2])),
            },
            PortMapping {
                host_port: 9000,
                container_port: 90,
                protocol: Protocol::Udp,
                host_ip: Some("2001:db8::1".parse().unwrap()),
            },
        ];
        let hp = HostPorts {
            network: "n",
            container_id: "cid",
            ipv4: Some("10.0.0.2/24".parse().unwrap()),
            ipv6: None,
            mappings: &maps,
            snat: Snat::MarkBit(13),
            masq_all: false,
            conditions_v4: &[],
            conditions_v6: &[],
        };
        let rules: Vec<_> = container_rules(&hp, "10.0.0.2/24".parse().unwrap())
            .into_iter()
            .map(|(c, r)| format!("{c}: {r}"))
            .collect();
        assert_eq!(
            rules,
            [
                "hostports: tcp dport 8080 dnat to 10.0.0.2:80 comment \"cid\"",
                "hostports: ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment \"cid\"",
                "masquerading: ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"cid\"",
                "masquerading: ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment \"cid\"",
            ]
        );
    }
}
