//! Rules given as the `iptables` arguments the plugins write, turned into
//! the nf_tables expressions iptables-nft makes of the same arguments, so
//! a rule can be added over netlink — no `iptables-restore` process — and
//! still be the rule `iptables-save`, `-C` and `-D` know (the tests compare
//! the kernel's state after both ways). Only the options these plugins use
//! are understood; anything else (free-form `conditionsV4/V6`, `sctp`)
//! gives `None`, and the caller runs `iptables-restore` as before.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::Family;
use crate::nfnl::writer::{
    Expr, accept, counter, drop, iface_match, jump, l4proto_eq, port_eq, prefix_match, return_,
    xt_match, xt_target,
};

/// A translated rule: its expressions and the protocol iptables-nft
/// records beside them (xtables matches such as `multiport` check it).
pub(super) struct XtRule {
    pub proto: u8,
    pub exprs: Vec<Expr>,
}

enum Match {
    /// The `tcp`/`udp` match `--dport` loads implicitly.
    Dport(u16),
    Comment(String),
    Multiport(Vec<u16>),
    /// `-m conntrack --ctstate <states>`: the state mask.
    Ctstate(u16),
}

/// `XT_CONNTRACK_STATE_BIT` of each `--ctstate` name.
fn ctstate_mask(states: &str) -> Option<u16> {
    states.split(',').try_fold(0u16, |mask, s| {
        Some(
            mask | match s {
                "INVALID" => 1,
                "ESTABLISHED" => 1 << 1,
                "RELATED" => 1 << 2,
                "NEW" => 1 << 3,
                _ => return None,
            },
        )
    })
}

/// `struct xt_conntrack_mtinfo3` for `--ctstate` alone: 168 bytes
/// (XT_ALIGN'd), `match_flags` = XT_CONNTRACK_STATE at offset 146 and
/// `state_mask` at 150, host order (as iptables-nft sends it).
fn conntrack_info(state_mask: u16) -> Vec<u8> {
    let mut info = vec![0u8; 168];
    info[146..148].copy_from_slice(&1u16.to_ne_bytes());
    info[150..152].copy_from_slice(&state_mask.to_ne_bytes());
    info
}

fn network(family: Family, s: &str) -> Option<IpNetwork> {
    let net: IpNetwork = if s.contains('/') {
        s.parse().ok()?
    } else {
        let ip: IpAddr = s.parse().ok()?;
        IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).ok()?
    };
    (net.is_ipv4() == (family == Family::V4)).then_some(net)
}

/// `ip:port` or `[ip6]:port`.
fn destination(family: Family, s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (ip.is_ipv4() == (family == Family::V4)).then_some((ip, port.parse().ok()?))
}

/// `struct xt_comment_info`: NUL-padded to 256 bytes.
pub(super) fn comment_info(comment: &str) -> Option<Vec<u8>> {
    let mut info = comment.as_bytes().to_vec();
    if info.len() >= 256 || info.contains(&0) {
        return None;
    }
    info.resize(256, 0);
    Some(info)
}

/// `struct xt_multiport_v1` for `--destination-ports`: flags, count,
/// ports[15] (host order), pflags[15], invert.
fn multiport_info(ports: &[u16]) -> Option<Vec<u8>> {
    if ports.is_empty() || ports.len() > 15 {
        return None;
    }
    let mut info = vec![1 /* XT_MULTIPORT_DESTINATION */, ports.len() as u8];
    for i in 0..15 {
        info.extend(ports.get(i).copied().unwrap_or(0).to_ne_bytes());
    }
    info.resize(48, 0);
    Some(info)
}

/// `struct nf_nat_range2` for `--to-destination ip:port`, padded to 48.
fn dnat_info(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut addr = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    addr.resize(16, 0);
    let mut info = (1u32 | 2/* NF_NAT_RANGE_MAP_IPS | PROTO_SPECIFIED */)
        .to_ne_bytes()
        .to_vec();
    info.extend(&addr);
    info.extend(&addr);
    info.extend(port.to_be_bytes());
    info.extend(port.to_be_bytes());
    info.resize(48, 0);
    info
}

/// The MASQUERADE target's struct with no options, padded as xtables pads
/// it: `nf_nat_ipv4_multi_range_compat` (one empty range) for IPv4,
/// `nf_nat_range` for IPv6.
fn masquerade_info(family: Family) -> Vec<u8> {
    match family {
        Family::V4 => {
            let mut info = 1u32.to_ne_bytes().to_vec();
            info.resize(24, 0);
            info
        }
        Family::V6 => vec![0; 40],
    }
}

/// The expressions iptables-nft makes of `args`, in its order: protocol,
/// source, destination, then the matches as given, a counter, the target.
pub(super) fn translate(family: Family, args: &[String]) -> Option<XtRule> {
    let mut proto = 0u8;
    // (network, equal): `! -d` compares for inequality.
    let (mut src, mut dst) = (None, None);
    let mut negate = false;
    // (outgoing, name, equal) of `-i`/`-o`.
    let mut ifaces: Vec<(bool, String, bool)> = vec![];
    let mut matches = vec![];
    let mut target = None;
    let mut it = args.iter().map(String::as_str);
    while let Some(opt) = it.next() {
        match opt {
            "-p" => {
                proto = match it.next()? {
                    "tcp" => 6,
                    "udp" => 17,
                    _ => return None,
                }
            }
            "--dport" => matches.push(Match::Dport(it.next()?.parse().ok()?)),
            "!" => {
                negate = true;
                continue;
            }
            "-s" | "-d" => {
                let addr = Some((network(family, it.next()?)?, !negate));
                if opt == "-s" {
                    src = addr;
                } else {
                    dst = addr;
                }
                negate = false;
            }
            "-i" | "-o" => {
                let name = it.next()?;
                // A trailing `+` is a prefix match, encoded differently.
                if name.is_empty() || name.len() > 15 || name.ends_with('+') {
                    return None;
                }
                ifaces.push((opt == "-o", name.to_string(), !negate));
                negate = false;
            }
            "-m" => match (it.next()?, it.next()?) {
                ("comment", "--comment") => matches.push(Match::Comment(it.next()?.to_string())),
                ("conntrack", "--ctstate") => {
                    matches.push(Match::Ctstate(ctstate_mask(it.next()?)?))
                }
                // `-m multiport -p <proto> --destination-ports <list>`.
                ("multiport", "-p") => {
                    proto = match it.next()? {
                        "tcp" => 6,
                        "udp" => 17,
                        _ => return None,
                    };
                    if it.next()? != "--destination-ports" {
                        return None;
                    }
                    let ports: Option<Vec<u16>> =
                        it.next()?.split(',').map(|p| p.parse().ok()).collect();
                    matches.push(Match::Multiport(ports?));
                }
                _ => return None,
            },
            "-j" => {
                let t = it.next()?;
                target = Some(match t {
                    "DNAT" => {
                        if it.next()? != "--to-destination" {
                            return None;
                        }
                        let (ip, port) = destination(family, it.next()?)?;
                        xt_target("DNAT", 2, &dnat_info(ip, port))
                    }
                    "MASQUERADE" => xt_target("MASQUERADE", 0, &masquerade_info(family)),
                    "ACCEPT" => accept(),
                    "DROP" => drop(),
                    "RETURN" => return_(),
                    chain => jump(chain),
                });
            }
            _ => return None,
        }
        if negate {
            // `!` before anything but an address.
            return None;
        }
    }
    let mut exprs = vec![];
    // iptables-nft's order: `-i`, `-o`, protocol, addresses, matches.
    ifaces.sort_by_key(|(out, _, _)| *out);
    for (out, name, equal) in &ifaces {
        exprs.extend(iface_match(*out, name, *equal));
    }
    if proto != 0 {
        exprs.extend(l4proto_eq(proto));
    }
    for (source, addr) in [(true, src), (false, dst)] {
        if let Some((net, equal)) = addr.filter(|(n, _)| n.prefix() > 0) {
            exprs.extend(prefix_match(source, net, equal));
        }
    }
    for m in matches {
        match m {
            Match::Dport(port) if proto != 0 => exprs.extend(port_eq(port)),
            Match::Dport(_) => return None,
            Match::Comment(c) => exprs.extend(xt_match("comment", 0, &comment_info(&c)?)),
            Match::Multiport(p) => exprs.extend(xt_match("multiport", 1, &multiport_info(&p)?)),
            Match::Ctstate(mask) => exprs.extend(xt_match("conntrack", 3, &conntrack_info(mask))),
        }
    }
    exprs.extend(counter());
    exprs.extend(target?);
    Some(XtRule { proto, exprs })
}
