//! The rules portmap's iptables layout is made of: the shared chains'
//! rules (with the shape iptables-nft gives each in nf_tables, to find it
//! over netlink) and one container's chain and entry rules.

use std::collections::BTreeMap;

use super::super::Batch;
use crate::args;
use crate::hostports::ip_port;
use crate::hostports::{HostPorts, Snat};
use crate::names::{
    HOSTPORT_DNAT_CHAIN, HOSTPORT_MASQ_CHAIN, HOSTPORT_SETMARK_CHAIN, MASQ_ENTRY_COMMENT,
    SETMARK_COMMENT, dnat_chain, dnat_comment,
};
use crate::nfnl::abi::{
    NFT_CMP_EQ, NFT_META_MARK, NFTA_BITWISE_DREG, NFTA_BITWISE_MASK, NFTA_BITWISE_SREG,
    NFTA_BITWISE_XOR, NFTA_CMP_DATA, NFTA_CMP_OP, NFTA_CMP_SREG, NFTA_META_DREG, NFTA_META_KEY,
};
use crate::nfnl::reader::{Expr, RuleInfo};
use ipnetwork::IpNetwork;

/// The multiport match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

/// A shared rule: where it goes, its arguments, and how `iptables-save`
/// prints it (to see whether it exists without a process per rule).
pub(super) struct SharedRule {
    pub(super) chain: &'static str,
    pub(super) args: Vec<String>,
    pub(super) saved: String,
    pub(super) first: bool,
    /// What the rule looks like in nf_tables, to find it over netlink
    /// instead of checking it with `-C`.
    pub(super) shape: Shape,
}

/// The shared rules as iptables-nft stores them (counters aside). A rule
/// that looks different in the kernel — another iptables version's
/// encoding, an extra condition — is not recognised, and the ADD batch
/// checks it with `-C` as before: never a false "present".
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// `-m comment --comment C -j MARK --set-xmark V/V`
    CommentSetMark { comment: &'static str, mark: u32 },
    /// `-m mark --mark V/V -j MASQUERADE`
    MarkMasquerade { mark: u32 },
    /// `-m comment --comment C -j CHAIN`
    CommentJump {
        comment: &'static str,
        target: &'static str,
    },
    /// `-m addrtype --dst-type LOCAL -j CHAIN`
    LocalJump { target: &'static str },
}

/// `XT_ADDRTYPE_LOCAL`: 1 << RTN_LOCAL.
const XT_ADDRTYPE_LOCAL: u16 = 1 << 2;

impl Shape {
    /// The chain a rule of this shape jumps to.
    pub(super) fn target(self) -> Option<&'static str> {
        match self {
            Shape::CommentJump { target, .. } | Shape::LocalJump { target } => Some(target),
            Shape::CommentSetMark { .. } | Shape::MarkMasquerade { .. } => None,
        }
    }

    pub(super) fn matches(self, rule: &RuleInfo) -> bool {
        let all = rule.exprs();
        let e: Vec<&Expr> = all.iter().filter(|e| e.name != "counter").collect();
        let compat = |i: usize, kind: &str, name: &[u8]| {
            e.get(i)
                .filter(|x| x.name == kind)
                .and_then(|x| x.compat())
                .filter(|c| c.name == name)
        };
        let comment_is = |text: &str| {
            compat(0, "match", b"comment")
                .is_some_and(|c| crate::nfnl::socket::string(c.info) == text)
        };
        let jumps_to = |i: usize, target: &str| {
            e.get(i).is_some_and(|x| x.name == "immediate") && rule.jump.as_deref() == Some(target)
        };
        match self {
            Shape::CommentSetMark { comment, mark } => {
                // struct xt_mark_tginfo2 { __u32 mark, mask; }, host order.
                let info = [mark.to_ne_bytes(), mark.to_ne_bytes()].concat();
                e.len() == 2
                    && comment_is(comment)
                    && compat(1, "target", b"MARK")
                        .is_some_and(|c| c.rev == 2 && c.info.get(..8) == Some(&info[..]))
            }
            Shape::MarkMasquerade { mark } => {
                let v = mark.to_ne_bytes();
                let reg = |x: &Expr, kind| x.be32(kind) == Some(1);
                e.len() == 4
                    && e[0].name == "meta"
                    && e[0].be32(NFTA_META_KEY) == Some(NFT_META_MARK)
                    && reg(e[0], NFTA_META_DREG)
                    && e[1].name == "bitwise"
                    && reg(e[1], NFTA_BITWISE_SREG)
                    && reg(e[1], NFTA_BITWISE_DREG)
                    && e[1].value(NFTA_BITWISE_MASK) == Some(&v[..])
                    && e[1].value(NFTA_BITWISE_XOR) == Some(&[0; 4][..])
                    && e[2].name == "cmp"
                    && reg(e[2], NFTA_CMP_SREG)
                    && e[2].be32(NFTA_CMP_OP) == Some(NFT_CMP_EQ)
                    && e[2].value(NFTA_CMP_DATA) == Some(&v[..])
                    // No --to-ports, no --random: the range after the
                    // IPv4 range count is all zero.
                    && compat(3, "target", b"MASQUERADE")
                        .is_some_and(|c| c.info.iter().skip(4).all(|b| *b == 0))
            }
            Shape::CommentJump { comment, target } => {
                e.len() == 2 && comment_is(comment) && jumps_to(1, target)
            }
            Shape::LocalJump { target } => {
                // struct xt_addrtype_info_v1 { __u16 source, dest; __u32 flags; }
                let mut info = 0u16.to_ne_bytes().to_vec();
                info.extend(XT_ADDRTYPE_LOCAL.to_ne_bytes());
                info.extend(0u32.to_ne_bytes());
                e.len() == 2
                    && compat(0, "match", b"addrtype")
                        .is_some_and(|c| c.rev == 1 && c.info.get(..8) == Some(&info[..]))
                    && jumps_to(1, target)
            }
        }
    }
}

fn mark(bit: u8) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

fn dnat_jump(chain: &'static str) -> SharedRule {
    SharedRule {
        chain,
        args: args![
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            HOSTPORT_DNAT_CHAIN
        ],
        saved: format!("-m addrtype --dst-type LOCAL -j {HOSTPORT_DNAT_CHAIN}"),
        first: false,
        shape: Shape::LocalJump {
            target: HOSTPORT_DNAT_CHAIN,
        },
    }
}

/// The shared chains an ADD needs, each with its rules.
pub(super) fn shared(snat: &Snat) -> Vec<(&'static str, Vec<SharedRule>)> {
    let mut out = vec![];
    if let Snat::MarkBit(bit) = snat {
        let m = mark(*bit);
        out.push((
            HOSTPORT_SETMARK_CHAIN,
            vec![SharedRule {
                chain: HOSTPORT_SETMARK_CHAIN,
                args: args![
                    "-m",
                    "comment",
                    "--comment",
                    SETMARK_COMMENT,
                    "-j",
                    "MARK",
                    "--set-xmark",
                    &m
                ],
                saved: format!(
                    "-m comment --comment \"{SETMARK_COMMENT}\" -j MARK --set-xmark {m}"
                ),
                first: false,
                shape: Shape::CommentSetMark {
                    comment: SETMARK_COMMENT,
                    mark: 1 << bit,
                },
            }],
        ));
        out.push((
            HOSTPORT_MASQ_CHAIN,
            vec![
                SharedRule {
                    chain: HOSTPORT_MASQ_CHAIN,
                    args: args!["-m", "mark", "--mark", &m, "-j", "MASQUERADE"],
                    saved: format!("-m mark --mark {m} -j MASQUERADE"),
                    first: false,
                    shape: Shape::MarkMasquerade { mark: 1 << bit },
                },
                // First in POSTROUTING, so bridge/ptp masquerade rules do not
                // take the packet before the mark is looked at.
                SharedRule {
                    chain: "POSTROUTING",
                    args: args![
                        "-m",
                        "comment",
                        "--comment",
                        MASQ_ENTRY_COMMENT,
                        "-j",
                        HOSTPORT_MASQ_CHAIN
                    ],
                    saved: format!(
                        "-m comment --comment \"{MASQ_ENTRY_COMMENT}\" -j {HOSTPORT_MASQ_CHAIN}"
                    ),
                    first: true,
                    shape: Shape::CommentJump {
                        comment: MASQ_ENTRY_COMMENT,
                        target: HOSTPORT_MASQ_CHAIN,
                    },
                },
            ],
        ));
    }
    // Appended, never inserted (CVE-2019-9946: must not precede KUBE-SERVICES).
    out.push((
        HOSTPORT_DNAT_CHAIN,
        vec![dnat_jump("PREROUTING"), dnat_jump("OUTPUT")],
    ));
    out
}

/// The per-container chain and its entry rules for one family.
pub(super) struct ContainerRules {
    pub(super) chain: String,
    pub(super) rules: Vec<Vec<String>>,
    pub(super) entries: Vec<Vec<String>>,
}

pub(super) fn container_rules(
    hp: &HostPorts<'_>,
    addr: IpNetwork,
    conditions: &[String],
) -> ContainerRules {
    let chain = dnat_chain(hp.network, hp.container_id);
    let comment = dnat_comment(hp.network, hp.container_id);
    let v6 = addr.is_ipv6();

    // One entry rule per protocol per 15 ports, protocols in name order,
    // ports in mapping order (as the reference, whose rules we must match
    // for `-C`/`-D` by either implementation).
    let mut by_proto: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in hp.mappings {
        by_proto
            .entry(m.protocol.as_str())
            .or_default()
            .push(m.host_port.to_string());
    }
    let mut entries = vec![];
    for (proto, ports) in by_proto {
        for group in ports.chunks(MULTIPORT_MAX) {
            let mut r = args![
                "-m",
                "comment",
                "--comment",
                &comment,
                "-m",
                "multiport",
                "-p",
                proto,
                "--destination-ports",
                group.join(",")
            ];
            r.extend(conditions.iter().cloned());
            r.extend(args!["-j", &chain]);
            entries.push(r);
        }
    }

    let setmark = match &hp.snat {
        Snat::Off => None,
        Snat::MarkBit(_) => Some(HOSTPORT_SETMARK_CHAIN.to_string()),
        Snat::ExternalMarkChain(c) => Some(c.clone()),
    };
    let mut rules = vec![];
    for m in hp.mappings {
        let Some(dest) = m.destination_for(addr.ip()) else {
            continue;
        };
        let mut base = args![
            "-p",
            m.protocol.as_str(),
            "--dport",
            m.host_port.to_string()
        ];
        if let Some(d) = dest {
            base.extend(args!["-d", d.to_string()]);
        }
        if let Some(setmark) = &setmark {
            let hairpin_src = match (hp.masq_all, v6) {
                (true, false) => "0.0.0.0/0".to_string(),
                (true, true) => "::/0".to_string(),
                (false, _) => format!("{}/{}", addr.network(), addr.prefix()),
            };
            rules.push([base.clone(), args!["-s", hairpin_src, "-j", setmark]].concat());
            if !v6 && !hp.masq_all {
                rules.push([base.clone(), args!["-s", "127.0.0.1", "-j", setmark]].concat());
            }
        }
        rules.push(
            [
                base,
                args![
                    "-j",
                    "DNAT",
                    "--to-destination",
                    ip_port(addr.ip(), m.container_port)
                ],
            ]
            .concat(),
        );
    }
    ContainerRules {
        chain,
        rules,
        entries,
    }
}

pub(super) fn write_container(b: &mut Batch, c: &ContainerRules) {
    for r in &c.rules {
        b.append(&c.chain, r);
    }
    for e in &c.entries {
        b.append(HOSTPORT_DNAT_CHAIN, e);
    }
}
