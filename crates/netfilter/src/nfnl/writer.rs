//! Writing nf_tables objects over netlink: one transaction (batch) of
//! table, chain and rule messages, all applied or none. Only the handful
//! of expressions the host-port layout uses are built here; the rules come
//! out exactly as `nft` builds them from the same text (`nft list` prints
//! them identically, which the tests check).

use std::io;
use std::net::IpAddr;

use crate::nfnl::abi::{
    NF_ACCEPT, NF_DROP, NF_NAT_RANGE_PROTO_SPECIFIED, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4, NFPROTO_IPV6, NFT_CMP_EQ, NFT_CMP_NEQ, NFT_CT_STATE,
    NFT_FIB_RESULT_ADDRTYPE, NFT_GOTO, NFT_JUMP, NFT_META_IIFNAME, NFT_META_L4PROTO,
    NFT_META_NFPROTO, NFT_META_OIFNAME, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NFT_NAT_DNAT, NFT_PAYLOAD_LL_HEADER,
    NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER, NFT_REG_1, NFT_REG_2,
    NFT_REG_VERDICT, NFT_RETURN, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN, NFTA_BITWISE_MASK,
    NFTA_BITWISE_SREG, NFTA_BITWISE_XOR, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY,
    NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE, NFTA_CHAIN_USERDATA, NFTA_CMP_DATA, NFTA_CMP_OP,
    NFTA_CMP_SREG, NFTA_COMPAT_INFO, NFTA_COMPAT_NAME, NFTA_COMPAT_REV, NFTA_COUNTER_BYTES,
    NFTA_COUNTER_PACKETS, NFTA_CT_DREG, NFTA_CT_KEY, NFTA_DATA_VALUE, NFTA_DATA_VERDICT,
    NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_FIB_DREG, NFTA_FIB_F_DADDR, NFTA_FIB_FLAGS,
    NFTA_FIB_RESULT, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_IMMEDIATE_DATA,
    NFTA_IMMEDIATE_DREG, NFTA_LIST_ELEM, NFTA_META_DREG, NFTA_META_KEY, NFTA_NAT_FAMILY,
    NFTA_NAT_FLAGS, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MIN, NFTA_NAT_TYPE,
    NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_LEN, NFTA_PAYLOAD_OFFSET, NFTA_RULE_CHAIN,
    NFTA_RULE_COMPAT, NFTA_RULE_COMPAT_FLAGS, NFTA_RULE_COMPAT_PROTO, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
    RTN_LOCAL, UDATA_COMMENT,
};
use crate::nfnl::socket::{
    NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, attr, attr_str, error_code, message, messages,
    with_socket,
};

fn nested(kind: u16, payload: &[u8]) -> Vec<u8> {
    attr(kind | NLA_F_NESTED, payload)
}

fn attr_u32(kind: u16, v: u32) -> Vec<u8> {
    attr(kind, &v.to_be_bytes())
}

/// A base chain's `NFTA_CHAIN_HOOK`.
fn hook_attr(hook: Hook) -> Vec<u8> {
    let mut hk = attr_u32(NFTA_HOOK_HOOKNUM, hook.hooknum);
    hk.extend(attr(NFTA_HOOK_PRIORITY, &hook.priority.to_be_bytes()));
    nested(NFTA_CHAIN_HOOK, &hk)
}

/// Create; with `exclusive`, the whole batch fails if it exists.
fn create_flags(exclusive: bool) -> u16 {
    if exclusive {
        NLM_F_CREATE | NLM_F_EXCL
    } else {
        NLM_F_CREATE
    }
}

/// The xtables compatibility info iptables-nft adds to a rule (`-p`, or 0).
fn xt_compat(proto: u8) -> Vec<u8> {
    let mut compat = attr_u32(NFTA_RULE_COMPAT_PROTO, proto.into());
    compat.extend(attr_u32(NFTA_RULE_COMPAT_FLAGS, 0));
    nested(NFTA_RULE_COMPAT, &compat)
}

/// libnftnl's userdata TLV holding a comment.
fn comment_udata(comment: &str) -> Vec<u8> {
    let mut u = vec![UDATA_COMMENT, (comment.len() + 1) as u8];
    u.extend_from_slice(comment.as_bytes());
    u.push(0);
    u
}

/// One expression of a rule.
pub struct Expr(Vec<u8>);

impl Expr {
    /// The `NFTA_LIST_ELEM` attribute as it is sent.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn expr(name: &str, data: &[Vec<u8>]) -> Expr {
    let mut e = attr_str(NFTA_EXPR_NAME, name);
    e.extend(nested(NFTA_EXPR_DATA, &data.concat()));
    Expr(nested(NFTA_LIST_ELEM, &e))
}

fn data_value(bytes: &[u8]) -> Vec<u8> {
    attr(NFTA_DATA_VALUE, bytes)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `cmp eq reg 1 <bytes>`.
fn cmp_eq(bytes: &[u8]) -> Expr {
    expr(
        "cmp",
        &[
            attr_u32(NFTA_CMP_SREG, NFT_REG_1),
            attr_u32(NFTA_CMP_OP, NFT_CMP_EQ),
            nested(NFTA_CMP_DATA, &data_value(bytes)),
        ],
    )
}

/// `payload load <len>b @ <base> header + <offset> => reg 1`.
fn payload(base: u32, offset: u32, len: u32) -> Expr {
    expr(
        "payload",
        &[
            attr_u32(NFTA_PAYLOAD_DREG, NFT_REG_1),
            attr_u32(NFTA_PAYLOAD_BASE, base),
            attr_u32(NFTA_PAYLOAD_OFFSET, offset),
            attr_u32(NFTA_PAYLOAD_LEN, len),
        ],
    )
}

/// `meta nfproto ipv4|ipv6`: the dependency nft puts before an address
/// match in an `inet` table.
pub fn nfproto_eq(nfproto: u8) -> Vec<Expr> {
    meta_eq(NFT_META_NFPROTO, &[nfproto])
}

/// `meta <key> == <value>`: load the meta key into register 1, compare.
fn meta_eq(key: u32, value: &[u8]) -> Vec<Expr> {
    vec![
        expr(
            "meta",
            &[
                attr_u32(NFTA_META_DREG, NFT_REG_1),
                attr_u32(NFTA_META_KEY, key),
            ],
        ),
        cmp_eq(value),
    ]
}

fn cmp(op: u32, bytes: &[u8]) -> Expr {
    expr(
        "cmp",
        &[
            attr_u32(NFTA_CMP_SREG, NFT_REG_1),
            attr_u32(NFTA_CMP_OP, op),
            nested(NFTA_CMP_DATA, &data_value(bytes)),
        ],
    )
}

/// Where the source or destination address of `ip`'s family sits in the
/// network header.
fn addr_offset(ip: IpAddr, source: bool) -> u32 {
    match (ip, source) {
        (IpAddr::V4(_), true) => 12,
        (IpAddr::V4(_), false) => 16,
        (IpAddr::V6(_), true) => 8,
        (IpAddr::V6(_), false) => 24,
    }
}

/// `ip|ip6 saddr|daddr ==|!= <network>/<prefix>`, encoded as nft encodes
/// it: a whole-byte prefix loads only those bytes; any other prefix loads
/// the whole address and masks it.
pub fn prefix_match(source: bool, net: ipnetwork::IpNetwork, equal: bool) -> Vec<Expr> {
    let ip = net.network();
    let offset = addr_offset(ip, source);
    let bytes = ip_bytes(ip);
    let prefix = net.prefix() as usize;
    let op = if equal { NFT_CMP_EQ } else { NFT_CMP_NEQ };
    if prefix.is_multiple_of(8) {
        let n = prefix / 8;
        return vec![
            payload(NFT_PAYLOAD_NETWORK_HEADER, offset, n as u32),
            cmp(op, &bytes[..n]),
        ];
    }
    let mask = ip_bytes(ipnetwork::IpNetwork::new(ip, net.prefix()).map_or(ip, |n| n.mask()));
    let zeros = vec![0u8; bytes.len()];
    vec![
        payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bytes.len() as u32),
        expr(
            "bitwise",
            &[
                attr_u32(NFTA_BITWISE_SREG, NFT_REG_1),
                attr_u32(NFTA_BITWISE_DREG, NFT_REG_1),
                attr_u32(NFTA_BITWISE_LEN, bytes.len() as u32),
                nested(NFTA_BITWISE_MASK, &data_value(&mask)),
                nested(NFTA_BITWISE_XOR, &data_value(&zeros)),
            ],
        ),
        cmp(op, &bytes),
    ]
}

/// `ip|ip6 saddr|daddr == <ip>`.
pub fn addr_eq(source: bool, ip: IpAddr) -> Vec<Expr> {
    let offset = addr_offset(ip, source);
    let bytes = ip_bytes(ip);
    vec![
        payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bytes.len() as u32),
        cmp_eq(&bytes),
    ]
}

/// `<tcp|udp|sctp> dport <port>`: `meta l4proto` then the port, as nft
/// builds it.
pub fn dport_eq(ipproto: u8, port: u16) -> Vec<Expr> {
    let mut v = l4proto_eq(ipproto);
    v.extend(port_eq(port));
    v
}

/// `meta l4proto <ipproto>`.
pub fn l4proto_eq(ipproto: u8) -> Vec<Expr> {
    meta_eq(NFT_META_L4PROTO, &[ipproto])
}

/// The destination port (bytes 2–3 of the transport header) equals `port`.
pub fn port_eq(port: u16) -> Vec<Expr> {
    vec![
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
        cmp_eq(&port.to_be_bytes()),
    ]
}

/// `dnat to <ip>:<port>`.
pub fn dnat(ip: IpAddr, port: u16) -> Vec<Expr> {
    let family = u32::from(if ip.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    });
    vec![
        expr(
            "immediate",
            &[
                attr_u32(NFTA_IMMEDIATE_DREG, NFT_REG_1),
                nested(NFTA_IMMEDIATE_DATA, &data_value(&ip_bytes(ip))),
            ],
        ),
        expr(
            "immediate",
            &[
                attr_u32(NFTA_IMMEDIATE_DREG, NFT_REG_2),
                nested(NFTA_IMMEDIATE_DATA, &data_value(&port.to_be_bytes())),
            ],
        ),
        expr(
            "nat",
            &[
                attr_u32(NFTA_NAT_TYPE, NFT_NAT_DNAT),
                attr_u32(NFTA_NAT_FAMILY, family),
                attr_u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1),
                attr_u32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2),
                attr_u32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
            ],
        ),
    ]
}

pub fn masquerade() -> Vec<Expr> {
    vec![expr("masq", &[])]
}

/// `fib daddr type local`.
pub fn fib_daddr_local() -> Vec<Expr> {
    vec![
        expr(
            "fib",
            &[
                attr_u32(NFTA_FIB_DREG, NFT_REG_1),
                attr_u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
                attr_u32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR),
            ],
        ),
        cmp_eq(&RTN_LOCAL.to_ne_bytes() /* host order */),
    ]
}

fn verdict(code: i32, chain: Option<&str>) -> Vec<Expr> {
    let mut v = attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(c) = chain {
        v.extend(attr_str(NFTA_VERDICT_CHAIN, c));
    }
    let data = nested(NFTA_DATA_VERDICT, &v);
    vec![expr(
        "immediate",
        &[
            attr_u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT),
            nested(NFTA_IMMEDIATE_DATA, &data),
        ],
    )]
}

pub fn accept() -> Vec<Expr> {
    verdict(NF_ACCEPT, None)
}

/// `ether saddr <mac>` (bridge family: no dependency).
pub fn ether_saddr_eq(mac: [u8; 6]) -> Vec<Expr> {
    vec![payload(NFT_PAYLOAD_LL_HEADER, 6, 6), cmp_eq(&mac)]
}

/// `ct state & <mask> != 0` (`ct state related,established` is mask 6),
/// as nft builds it.
pub fn ct_state_in(mask: u32) -> Vec<Expr> {
    vec![
        expr(
            "ct",
            &[
                attr_u32(NFTA_CT_DREG, NFT_REG_1),
                attr_u32(NFTA_CT_KEY, NFT_CT_STATE),
            ],
        ),
        expr(
            "bitwise",
            &[
                attr_u32(NFTA_BITWISE_SREG, NFT_REG_1),
                attr_u32(NFTA_BITWISE_DREG, NFT_REG_1),
                attr_u32(NFTA_BITWISE_LEN, 4),
                nested(NFTA_BITWISE_MASK, &data_value(&mask.to_ne_bytes())),
                nested(NFTA_BITWISE_XOR, &data_value(&[0; 4])),
            ],
        ),
        cmp(NFT_CMP_NEQ, &[0; 4]),
    ]
}

pub fn drop() -> Vec<Expr> {
    verdict(NF_DROP, None)
}

/// `iifname|oifname ==|!= <name>` as iptables-nft writes `-i`/`-o`: the
/// name with its NUL (an exact match, not a `+` prefix).
pub fn iface_match(out: bool, name: &str, equal: bool) -> Vec<Expr> {
    iface_cmp(out, name, equal, name.len() + 1)
}

/// `iifname|oifname ==|!= "<name>"` as nft writes it: the name padded
/// with NULs to IFNAMSIZ.
pub fn nft_iface_match(out: bool, name: &str, equal: bool) -> Vec<Expr> {
    iface_cmp(out, name, equal, 16.max(name.len() + 1))
}

fn iface_cmp(out: bool, name: &str, equal: bool, len: usize) -> Vec<Expr> {
    let key = if out {
        NFT_META_OIFNAME
    } else {
        NFT_META_IIFNAME
    };
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(len, 0);
    vec![
        expr(
            "meta",
            &[
                attr_u32(NFTA_META_DREG, NFT_REG_1),
                attr_u32(NFTA_META_KEY, key),
            ],
        ),
        cmp(if equal { NFT_CMP_EQ } else { NFT_CMP_NEQ }, &bytes),
    ]
}

/// `counter` with both values given as zero, as iptables-nft writes it.
pub fn counter() -> Vec<Expr> {
    vec![expr(
        "counter",
        &[
            attr(NFTA_COUNTER_BYTES, &0u64.to_be_bytes()),
            attr(NFTA_COUNTER_PACKETS, &0u64.to_be_bytes()),
        ],
    )]
}

/// An xtables match (`name`, revision, the extension's own struct) as
/// iptables-nft carries it in a `match` expression.
pub fn xt_match(name: &str, rev: u32, info: &[u8]) -> Vec<Expr> {
    vec![expr(
        "match",
        &[
            attr_str(NFTA_COMPAT_NAME, name),
            attr_u32(NFTA_COMPAT_REV, rev),
            attr(NFTA_COMPAT_INFO, info),
        ],
    )]
}

/// An xtables target, likewise in a `target` expression.
pub fn xt_target(name: &str, rev: u32, info: &[u8]) -> Vec<Expr> {
    vec![expr(
        "target",
        &[
            attr_str(NFTA_COMPAT_NAME, name),
            attr_u32(NFTA_COMPAT_REV, rev),
            attr(NFTA_COMPAT_INFO, info),
        ],
    )]
}

pub fn jump(chain: &str) -> Vec<Expr> {
    verdict(NFT_JUMP, Some(chain))
}

pub fn goto(chain: &str) -> Vec<Expr> {
    verdict(NFT_GOTO, Some(chain))
}

pub fn return_() -> Vec<Expr> {
    verdict(NFT_RETURN, None)
}

/// A base chain's hook.
pub struct Hook {
    pub hooknum: u32,
    pub priority: i32,
}

/// One nf_tables transaction under construction.
pub struct Batch {
    messages: Vec<Vec<u8>>,
    /// Whether it deletes anything (see [`super::socket::note_deletion`]).
    deletes: bool,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            messages: vec![],
            deletes: false,
        }
    }

    fn push(&mut self, msg_type: u16, flags: u16, family: u8, attrs: Vec<u8>) {
        let seq = self.messages.len() as u32 + 1;
        self.messages.push(message(
            NFNL_SUBSYS_NFTABLES,
            msg_type,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            family,
            &attrs,
        ));
    }

    /// `add table` (no error if it exists), with a comment.
    pub fn add_table(&mut self, family: u8, table: &str, comment: &str) {
        let mut a = attr_str(NFTA_TABLE_NAME, table);
        a.extend(attr(NFTA_TABLE_USERDATA, &comment_udata(comment)));
        self.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, a);
    }

    /// `add table` (no error if it exists), with no comment.
    pub fn add_table_plain(&mut self, family: u8, table: &str) {
        let a = attr_str(NFTA_TABLE_NAME, table);
        self.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, a);
    }

    /// `add chain` (or `create chain` with `exclusive`: the whole batch
    /// fails if it exists).
    pub fn add_chain(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        hook: Option<Hook>,
        exclusive: bool,
    ) {
        self.add_chain_with_comment(family, table, chain, hook, exclusive, None);
    }

    pub fn add_chain_with_comment(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        hook: Option<Hook>,
        exclusive: bool,
        comment: Option<&str>,
    ) {
        let mut a = attr_str(NFTA_CHAIN_TABLE, table);
        a.extend(attr_str(NFTA_CHAIN_NAME, chain));
        if let Some(c) = comment {
            a.extend(attr(NFTA_CHAIN_USERDATA, &comment_udata(c)));
        }
        if let Some(h) = hook {
            a.extend(hook_attr(h));
            a.extend(attr_str(NFTA_CHAIN_TYPE, "nat"));
        }
        self.push(NFT_MSG_NEWCHAIN, create_flags(exclusive), family, a);
    }

    /// A `filter` base chain on `hook` with policy accept (or, with
    /// `exclusive`, the whole batch fails if it exists).
    pub fn add_filter_chain(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        hook: Hook,
        exclusive: bool,
    ) {
        let mut a = attr_str(NFTA_CHAIN_TABLE, table);
        a.extend(attr_str(NFTA_CHAIN_NAME, chain));
        a.extend(hook_attr(hook));
        a.extend(attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32));
        a.extend(attr_str(NFTA_CHAIN_TYPE, "filter"));
        self.push(NFT_MSG_NEWCHAIN, create_flags(exclusive), family, a);
    }

    pub fn flush_chain(&mut self, family: u8, table: &str, chain: &str) {
        let mut a = attr_str(NFTA_RULE_TABLE, table);
        a.extend(attr_str(NFTA_RULE_CHAIN, chain));
        self.deletes = true;
        self.push(NFT_MSG_DELRULE, 0, family, a);
    }

    pub fn delete_chain(&mut self, family: u8, table: &str, chain: &str) {
        let mut a = attr_str(NFTA_CHAIN_TABLE, table);
        a.extend(attr_str(NFTA_CHAIN_NAME, chain));
        self.deletes = true;
        self.push(NFT_MSG_DELCHAIN, 0, family, a);
    }

    pub fn delete_rule(&mut self, family: u8, table: &str, chain: &str, handle: u64) {
        let mut a = attr_str(NFTA_RULE_TABLE, table);
        a.extend(attr_str(NFTA_RULE_CHAIN, chain));
        a.extend(attr(NFTA_RULE_HANDLE, &handle.to_be_bytes()));
        self.deletes = true;
        self.push(NFT_MSG_DELRULE, 0, family, a);
    }

    /// `add rule` (appended), with an optional comment.
    pub fn add_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        exprs: Vec<Expr>,
        comment: Option<&str>,
    ) {
        let extra = comment
            .map(|c| attr(NFTA_RULE_USERDATA, &comment_udata(c)))
            .unwrap_or_default();
        self.append_rule(family, table, chain, exprs, extra);
    }

    /// `add rule` (appended) as iptables-nft writes it: no comment in the
    /// rule's userdata, and the xtables compatibility info (`-p`, or 0).
    pub fn add_xt_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        proto: u8,
        exprs: Vec<Expr>,
    ) {
        self.append_rule(family, table, chain, exprs, xt_compat(proto));
    }

    /// Like [`Batch::add_xt_rule`], but the rule goes first in the chain
    /// (`iptables -I <chain> 1`).
    pub fn insert_xt_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        proto: u8,
        exprs: Vec<Expr>,
    ) {
        self.new_rule(family, table, chain, exprs, xt_compat(proto), false);
    }

    /// NEWRULE appending `exprs` to `table chain`, followed by the
    /// attributes in `extra`.
    fn append_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        exprs: Vec<Expr>,
        extra: Vec<u8>,
    ) {
        self.new_rule(family, table, chain, exprs, extra, true);
    }

    /// NEWRULE at the end of the chain (`append`) or at its head.
    fn new_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        exprs: Vec<Expr>,
        extra: Vec<u8>,
        append: bool,
    ) {
        let mut a = attr_str(NFTA_RULE_TABLE, table);
        a.extend(attr_str(NFTA_RULE_CHAIN, chain));
        let list: Vec<u8> = exprs.into_iter().flat_map(|e| e.0).collect();
        a.extend(nested(NFTA_RULE_EXPRESSIONS, &list));
        a.extend(extra);
        let flags = if append {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE
        };
        self.push(NFT_MSG_NEWRULE, flags, family, a);
    }

    /// Send as one transaction; the first error aborts all of it.
    pub fn commit(self) -> io::Result<()> {
        if self.messages.is_empty() {
            return Ok(());
        }
        let n = self.messages.len();
        // Batch delimiters carry the subsystem in nfgenmsg.res_id (big endian).
        let mut begin = message(0, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, &[]);
        begin[18..20].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        let mut end = message(0, NFNL_MSG_BATCH_END, NLM_F_REQUEST, n as u32 + 1, 0, &[]);
        end[18..20].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        let mut all = begin;
        for m in &self.messages {
            all.extend_from_slice(m);
        }
        all.extend(end);
        with_socket(|sock| {
            sock.send(&all)?;
            let mut acked = 0;
            let mut buf = Vec::with_capacity(crate::nfnl::socket::RECV_BUFFER);
            while acked < n {
                let len = sock.recv_into(&mut buf)?;
                for (kind, payload) in messages(&buf[..len]) {
                    if kind == NLMSG_ERROR {
                        match error_code(payload) {
                            0 => acked += 1,
                            code => return Err(io::Error::from_raw_os_error(code)),
                        }
                    }
                }
            }
            Ok(())
        })?;
        if self.deletes {
            super::socket::note_deletion();
        }
        Ok(())
    }
}
