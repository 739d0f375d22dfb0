//! Reading one chain's rules and deleting rules and chains in one nf_tables
//! transaction, over netlink — no `nft` or `iptables` process.
//!
//! Teardown only ever needs to *find* rules (by comment, or by the chain
//! they jump to) and delete them by handle, which needs no understanding
//! of the rules' expressions. It works for nftables tables and for the
//! tables iptables-nft keeps in nf_tables alike (iptables-nft holds no
//! state outside the kernel; it reloads on the next run).

use std::io;

use crate::nfnl::abi::{
    NFNL_SUBSYS_NFTABLES, NFT_GOTO, NFT_JUMP, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFTA_BITWISE_MASK,
    NFTA_BITWISE_OP, NFTA_BITWISE_XOR, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE,
    NFTA_CHAIN_USE, NFTA_CHAIN_USERDATA, NFTA_CMP_DATA, NFTA_COMPAT_INFO, NFTA_COMPAT_NAME,
    NFTA_COMPAT_REV, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME,
    NFTA_IMMEDIATE_DATA, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE,
    NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, UDATA_COMMENT,
};
use crate::nfnl::socket::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, attr, attr_str, attributes, message, string, with_socket,
};
use crate::nfnl::writer::Batch;

/// What teardown needs to know about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub handle: u64,
    pub comment: Option<String>,
    /// The chain a `jump`/`goto` verdict of the rule leads to.
    pub jump: Option<String>,
    /// How many expressions the rule has (tells a plain entry rule from
    /// one with extra conditions).
    pub expressions: usize,
    /// The expressions, undecoded until asked for ([`RuleInfo::exprs`]):
    /// most reads only look at the comment and the jump.
    raw: Vec<u8>,
}

impl RuleInfo {
    /// The rule's expressions, in order.
    pub fn exprs(&self) -> Vec<Expr> {
        expressions(&self.raw)
    }
}

/// One expression of a rule: its name (`meta`, `cmp`, `match`, …) and its
/// attributes, undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub name: String,
    data: Vec<u8>,
}

/// An xtables extension inside a `match` or `target` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compat<'a> {
    pub name: &'a [u8],
    pub rev: u32,
    /// The extension's own struct, as the kernel module defines it.
    pub info: &'a [u8],
}

impl Expr {
    /// The expression's data attributes, undecoded.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Attribute `kind` of the expression's data.
    pub fn attr(&self, kind: u16) -> Option<&[u8]> {
        find(&self.data, kind)
    }

    /// A big-endian 32-bit attribute (registers, operators, keys).
    pub fn be32(&self, kind: u16) -> Option<u32> {
        Some(u32::from_be_bytes(
            self.attr(kind)?.get(..4)?.try_into().ok()?,
        ))
    }

    /// The bytes of a data attribute (`NFTA_DATA_VALUE` nested in `kind`).
    pub fn value(&self, kind: u16) -> Option<&[u8]> {
        find(self.attr(kind)?, NFTA_DATA_VALUE)
    }

    /// The extension of a `match` or `target` expression.
    pub fn compat(&self) -> Option<Compat<'_>> {
        if self.name != "match" && self.name != "target" {
            return None;
        }
        let name = self.attr(NFTA_COMPAT_NAME)?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        Some(Compat {
            name: &name[..end],
            rev: self.be32(NFTA_COMPAT_REV)?,
            info: self.attr(NFTA_COMPAT_INFO)?,
        })
    }
}

/// Expressions built by the writer, read back as the reader sees them
/// (to compare a wanted rule with one in the kernel).
pub(crate) fn written(exprs: &[crate::nfnl::writer::Expr]) -> Vec<Expr> {
    let bytes: Vec<u8> = exprs.iter().flat_map(|e| e.as_bytes().to_vec()).collect();
    expressions(&bytes)
}

/// A rule's expressions in a form that compares equal for the same rule
/// whether built here or dumped by the kernel: counters (their values
/// change) left out, attributes sorted, nested data flattened, xtables
/// info without its zero padding.
pub(crate) fn canonical(exprs: &[Expr]) -> Vec<Vec<u8>> {
    exprs
        .iter()
        .filter(|e| e.name != "counter")
        .map(|e| {
            let mut out = e.name.as_bytes().to_vec();
            out.push(0);
            flatten(&e.name, e.data(), 0, &mut out);
            out
        })
        .collect()
}

fn flatten(name: &str, data: &[u8], depth: u8, out: &mut Vec<u8>) {
    let mut attrs: Vec<(u16, &[u8])> = attributes(data)
        .map(|(k, _, p)| (k, p))
        // The kernel reports bitwise's operation even when it is the
        // default (NFT_BITWISE_MASK_XOR, 0), which nft does not send.
        .filter(|(k, p)| {
            !(depth == 0 && name == "bitwise" && *k == NFTA_BITWISE_OP && *p == [0; 4])
        })
        .collect();
    if depth == 0 && name == "nat" {
        attrs = nat_as_sent(attrs);
    }
    attrs.sort_by_key(|(k, _)| *k);
    for (kind, payload) in attrs {
        out.extend(kind.to_ne_bytes());
        let nested = match depth {
            // cmp's and immediate's data, bitwise's mask and xor.
            0 => matches!(
                (name, kind),
                ("cmp", NFTA_CMP_DATA)
                    | ("immediate", NFTA_IMMEDIATE_DATA)
                    | ("bitwise", NFTA_BITWISE_MASK)
                    | ("bitwise", NFTA_BITWISE_XOR)
            ),
            1 => kind == NFTA_DATA_VERDICT,
            _ => false,
        };
        if nested {
            out.push(b'{');
            flatten(name, payload, depth + 1, out);
            out.push(b'}');
        } else {
            let trimmed = if matches!(name, "match" | "target") && kind == NFTA_COMPAT_INFO {
                let end = payload.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                &payload[..end]
            } else {
                payload
            };
            out.extend((trimmed.len() as u32).to_ne_bytes());
            out.extend(trimmed);
        }
    }
}

/// A `nat` expression's attributes as nft sends them: the kernel reports
/// each range's maximum register (the minimum's when none was sent), and
/// flags with the bits the registers imply (`NF_NAT_RANGE_MAP_IPS` for an
/// address register, `NF_NAT_RANGE_PROTO_SPECIFIED` for a port register);
/// both are left out, so one rule compares equal either way.
fn nat_as_sent(attrs: Vec<(u16, &[u8])>) -> Vec<(u16, &[u8])> {
    const ADDR_MIN: u16 = 3;
    const ADDR_MAX: u16 = 4;
    const PROTO_MIN: u16 = 5;
    const PROTO_MAX: u16 = 6;
    const FLAGS: u16 = 7;
    let get = |kind: u16| attrs.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p);
    let (addr_min, proto_min) = (get(ADDR_MIN), get(PROTO_MIN));
    let implied = u32::from(addr_min.is_some()) | (u32::from(proto_min.is_some()) << 1);
    attrs
        .iter()
        .filter(|(k, p)| match *k {
            ADDR_MAX => addr_min != Some(*p),
            PROTO_MAX => proto_min != Some(*p),
            FLAGS => p
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .is_none_or(|b: [u8; 4]| u32::from_be_bytes(b) & !implied != 0),
            _ => true,
        })
        .copied()
        .collect()
}

/// The expressions of a rule, in order.
fn expressions(exprs: &[u8]) -> Vec<Expr> {
    attributes(exprs)
        .filter(|(kind, _, _)| *kind == NFTA_LIST_ELEM)
        .filter_map(|(_, _, elem)| {
            Some(Expr {
                name: string(find(elem, NFTA_EXPR_NAME)?),
                data: find(elem, NFTA_EXPR_DATA).unwrap_or_default().to_vec(),
            })
        })
        .collect()
}

fn find(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(attrs)
        .find(|(k, _, _)| *k == kind)
        .map(|(_, _, v)| v)
}

fn be_i32(v: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// The target of a jump/goto verdict in the rule's expressions.
fn jump_target(exprs: &[u8]) -> Option<String> {
    for (kind, _, elem) in attributes(exprs) {
        if kind != NFTA_LIST_ELEM
            || find(elem, NFTA_EXPR_NAME).map(string).as_deref() != Some("immediate")
        {
            continue;
        }
        let verdict = find(elem, NFTA_EXPR_DATA)
            .and_then(|d| find(d, NFTA_IMMEDIATE_DATA))
            .and_then(|d| find(d, NFTA_DATA_VERDICT));
        if let Some(v) = verdict
            && matches!(
                find(v, NFTA_VERDICT_CODE).and_then(be_i32),
                Some(NFT_JUMP | NFT_GOTO)
            )
            && let Some(chain) = find(v, NFTA_VERDICT_CHAIN)
        {
            return Some(string(chain));
        }
    }
    None
}

/// The comment in libnftnl's userdata TLVs (type, length, value).
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_COMMENT {
            return Some(string(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

/// A rule from the attributes of a NEWRULE message; `None` when it is not
/// in `chain` or has no handle.
fn parse_rule(attrs: &[u8], chain: &str) -> Option<RuleInfo> {
    // A dump filtered by table and chain still checks them.
    if find(attrs, NFTA_RULE_CHAIN).map(string).as_deref() != Some(chain) {
        return None;
    }
    let handle = find(attrs, NFTA_RULE_HANDLE).and_then(be_u64)?;
    let raw = find(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or_default();
    Some(RuleInfo {
        handle,
        comment: find(attrs, NFTA_RULE_USERDATA).and_then(comment),
        jump: jump_target(raw),
        expressions: attributes(raw).count(),
        raw: raw.to_vec(),
    })
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn table_chain(table: &str, chain: &str) -> Vec<u8> {
    let mut attrs = attr_str(NFTA_RULE_TABLE, table);
    attrs.extend(attr_str(NFTA_RULE_CHAIN, chain));
    attrs
}

/// Rules of `family table chain` in order; empty when the table or chain
/// does not exist.
pub fn rules(family: u8, table: &str, chain: &str) -> io::Result<Vec<RuleInfo>> {
    let req = message(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        &table_chain(table, chain),
    );
    let mut out = vec![];
    let result = with_socket(|sock| {
        sock.dump(&req, |_, payload| {
            out.extend(parse_rule(payload.get(4..).unwrap_or_default(), chain));
        })
    });
    match result {
        Ok(()) => Ok(out),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// A get request for one object; `Ok(false)` when it does not exist.
pub(crate) fn get(
    family: u8,
    msg_type: u16,
    attrs: &[u8],
    each: impl FnMut(u16, &[u8]),
) -> io::Result<bool> {
    let req = message(
        NFNL_SUBSYS_NFTABLES,
        msg_type,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        family,
        attrs,
    );
    match with_socket(|sock| sock.request(&req, each)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The rule with `handle` in `family table chain` (one request, however
/// long the chain); `None` when the chain holds no such rule.
pub fn rule(family: u8, table: &str, chain: &str, handle: u64) -> io::Result<Option<RuleInfo>> {
    let mut attrs = table_chain(table, chain);
    attrs.extend(attr(NFTA_RULE_HANDLE, &handle.to_be_bytes()));
    let mut found = None;
    get(family, NFT_MSG_GETRULE, &attrs, |_, payload| {
        found =
            parse_rule(payload.get(4..).unwrap_or_default(), chain).filter(|r| r.handle == handle);
    })?;
    Ok(found)
}

/// What a chain's lookup tells: its handle, comment and use count (its
/// own rules plus the rules that jump or go to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub handle: u64,
    pub comment: Option<String>,
    pub uses: u32,
}

/// How far past a chain's handle [`jumps_near`] looks.
const NEAR: u64 = 16;

/// A rule in `parent` that jumps to `chain` and satisfies `is_it`, looked
/// for among the handles just above the chain's (see [`jumps_near`]);
/// `None` when none is there, which does not mean there is none.
pub fn jump_near(
    family: u8,
    table: &str,
    parent: &str,
    chain: &str,
    is_it: impl Fn(&RuleInfo) -> bool,
) -> Option<RuleInfo> {
    let info = self::chain(family, table, chain).ok()??;
    (info.handle + 1..=info.handle + NEAR).find_map(|handle| {
        rule(family, table, parent, handle)
            .ok()
            .flatten()
            .filter(|r| r.jump.as_deref() == Some(chain) && is_it(r))
    })
}

/// The rules in `parent` that jump to `chain`, found without listing
/// `parent` — `None` unless all of them are found.
///
/// A per-container chain and the jump to it are made in one transaction,
/// and nf_tables numbers a table's objects in the order a transaction
/// creates them, so the jump's handle is a little above the chain's. The
/// chain's use count says how many jumps there are (use = own rules +
/// references); the handles just above the chain's own rules are asked
/// one by one. A jump made later (a re-ADD) is further away: then `None`,
/// and the caller lists `parent`. Deleting the chain with a jump left
/// would fail anyway (EBUSY), so a miss can never leave one behind.
///
/// `info` is the chain's own lookup ([`chain`]), which the caller has made.
pub fn jumps_near(
    family: u8,
    table: &str,
    parent: &str,
    chain: &str,
    info: &ChainInfo,
) -> Option<Vec<RuleInfo>> {
    let own = rules(family, table, chain).ok()?;
    let wanted = (info.uses as usize).checked_sub(own.len())?;
    let start = own.iter().map(|r| r.handle).max().unwrap_or(info.handle) + 1;
    let mut found = vec![];
    for handle in start..start + NEAR {
        if found.len() == wanted {
            break;
        }
        if let Some(r) = rule(family, table, parent, handle).ok()?
            && r.jump.as_deref() == Some(chain)
        {
            found.push(r);
        }
    }
    (found.len() == wanted).then_some(found)
}

/// Chain `family table chain` (one request); `None` when it does not exist.
pub fn chain(family: u8, table: &str, chain: &str) -> io::Result<Option<ChainInfo>> {
    let mut attrs = attr_str(NFTA_CHAIN_TABLE, table);
    attrs.extend(attr_str(NFTA_CHAIN_NAME, chain));
    let mut found = None;
    get(family, NFT_MSG_GETCHAIN, &attrs, |_, payload| {
        let attrs = payload.get(4..).unwrap_or_default();
        if find(attrs, NFTA_CHAIN_NAME).map(string).as_deref() != Some(chain) {
            return;
        }
        if let Some(handle) = find(attrs, NFTA_CHAIN_HANDLE).and_then(be_u64) {
            found = Some(ChainInfo {
                handle,
                comment: find(attrs, NFTA_CHAIN_USERDATA).and_then(comment),
                uses: find(attrs, NFTA_CHAIN_USE)
                    .and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
                    .unwrap_or(0),
            });
        }
    })?;
    Ok(found)
}

/// One step of a teardown transaction.
#[derive(Debug, Clone)]
pub enum Deletion {
    Rule {
        chain: String,
        handle: u64,
    },
    /// Delete every rule of the chain (it must exist).
    FlushChain(String),
    /// Delete the chain (it must be empty and unreferenced by then).
    Chain(String),
}

/// Apply `ops` to `family table` as one transaction: all or nothing. A
/// rule or chain that is already gone fails the whole batch with ENOENT,
/// which callers treat as "re-read and re-plan".
pub fn delete(family: u8, table: &str, ops: &[Deletion]) -> io::Result<()> {
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Deletion::Rule { chain, handle } => batch.delete_rule(family, table, chain, *handle),
            Deletion::FlushChain(chain) => batch.flush_chain(family, table, chain),
            Deletion::Chain(chain) => batch.delete_chain(family, table, chain),
        }
    }
    batch.commit()
}

/// Plan from fresh reads and apply; when the transaction fails because a
/// concurrent run changed the table in between (ENOENT: already gone;
/// EBUSY: still referenced), plan again. Other errors are returned.
pub fn plan_and_delete(
    family: u8,
    table: &str,
    plan: impl Fn() -> io::Result<Vec<Deletion>>,
) -> io::Result<()> {
    const ATTEMPTS: usize = 4;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match delete(family, table, &plan()?) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBUSY)) => {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
}

/// Like [`plan_and_delete`] for any transaction: `plan` reads and builds
/// the batch; a batch that went stale (ENOENT, EBUSY) is planned again.
pub fn plan_and_commit(plan: impl Fn() -> io::Result<Batch>) -> io::Result<()> {
    const ATTEMPTS: usize = 4;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match plan()?.commit() {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBUSY)) => {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, run_with_input};

    fn elem(name: &str, data: Vec<u8>) -> Vec<u8> {
        let mut e = attr_str(NFTA_EXPR_NAME, name);
        e.extend(attr(NFTA_EXPR_DATA, &data));
        attr(NFTA_LIST_ELEM, &e)
    }

    /// `-m comment --comment "c" -j CHAIN` as iptables-nft stores it.
    fn commented_jump(text: &str, chain: &str) -> Vec<u8> {
        let mut info = text.as_bytes().to_vec();
        info.resize(256, 0);
        let mut m = attr_str(NFTA_COMPAT_NAME, "comment");
        m.extend(attr(NFTA_COMPAT_REV, &0u32.to_be_bytes()));
        m.extend(attr(NFTA_COMPAT_INFO, &info));
        let mut verdict = attr(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
        verdict.extend(attr_str(NFTA_VERDICT_CHAIN, chain));
        let imm = attr(NFTA_IMMEDIATE_DATA, &attr(NFTA_DATA_VERDICT, &verdict));
        [
            elem("match", m),
            elem("counter", vec![]),
            elem("immediate", imm),
        ]
        .concat()
    }

    #[test]
    fn reads_xtables_comment_and_jump() {
        let raw = commented_jump("CNI portfwd requiring masquerade", "CNI-HOSTPORT-MASQ");
        let exprs = expressions(&raw);
        let text = exprs[0].compat().map(|c| string(c.info));
        assert_eq!(text.as_deref(), Some("CNI portfwd requiring masquerade"));
        assert_eq!(jump_target(&raw).as_deref(), Some("CNI-HOSTPORT-MASQ"));
        let names: Vec<&str> = exprs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["match", "counter", "immediate"]);
        let c = exprs[0].compat().unwrap();
        assert_eq!((c.name, c.rev, c.info.len()), (&b"comment"[..], 0, 256));
        assert_eq!(exprs[1].compat(), None);
    }

    /// What iptables-nft makes in one restore is found next to the chain;
    /// a jump added later is not, and then nothing is claimed.
    #[test]
    fn jumps_near_the_chain_iptables_made() {
        crate::testutil::in_netns("nfnear", || {
            run_with_input(
                "iptables-restore",
                &["--noflush"],
                "*nat\n:CNI-X - [0:0]\n-A CNI-X -d 10.0.0.0/24 -j ACCEPT\n\
                     -A CNI-X ! -d 224.0.0.0/4 -j MASQUERADE\n\
                     -A POSTROUTING -s 10.0.0.2/32 -j CNI-X\n\
                     -A POSTROUTING -s 10.0.0.3/32 -j CNI-X\nCOMMIT\n",
            );
            let listing = run("nft", &["-a", "list", "chain", "ip", "nat", "POSTROUTING"]);
            let listed: Vec<u64> = listing
                .lines()
                .filter(|l| l.contains("jump CNI-X"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            assert_eq!(listed.len(), 2, "{listing}");
            let info = chain(2, "nat", "CNI-X").expect("get").expect("exists");
            let near = jumps_near(2, "nat", "POSTROUTING", "CNI-X", &info);
            let near: Option<Vec<u64>> = near.map(|v| v.iter().map(|r| r.handle).collect());
            assert_eq!(near, Some(listed.clone()));
            assert_eq!(info.uses, 4, "2 rules + 2 jumps");
            let mut later = "*nat\n".to_string();
            for i in 0..NEAR {
                later += &format!("-A POSTROUTING -s 10.1.0.{i}/32 -j ACCEPT\n");
            }
            later += "-A POSTROUTING -s 10.0.0.4/32 -j CNI-X\nCOMMIT\n";
            run_with_input("iptables-restore", &["--noflush"], &later);
            let info = chain(2, "nat", "CNI-X").expect("get").expect("exists");
            assert_eq!(jumps_near(2, "nat", "POSTROUTING", "CNI-X", &info), None);
            let first = jump_near(2, "nat", "POSTROUTING", "CNI-X", |_| true);
            assert_eq!(first.map(|r| r.handle), Some(listed[0]));
            assert_eq!(jump_near(2, "nat", "POSTROUTING", "CNI-X", |_| false), None);
            assert_eq!(chain(2, "nat", "CNI-NONE").expect("get"), None);
        });
    }

    #[test]
    fn other_extensions_and_plain_expressions() {
        let mut m = attr_str(NFTA_COMPAT_NAME, "addrtype");
        m.extend(attr(NFTA_COMPAT_REV, &1u32.to_be_bytes()));
        m.extend(attr(NFTA_COMPAT_INFO, &[0; 8]));
        let exprs = expressions(&elem("match", m));
        let c = exprs[0].compat().unwrap();
        assert_eq!((c.name, c.rev, c.info.len()), (&b"addrtype"[..], 1, 8));
        assert_eq!(expressions(&elem("counter", vec![]))[0].compat(), None);
    }
}
