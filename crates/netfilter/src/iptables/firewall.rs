//! The firewall plugin's `filter` rules in the reference's layout (see
//! [`crate::firewall`]), planned once from what exists and applied as one
//! nf_tables transaction in iptables-nft's encoding (`xtrules`), or as one
//! `iptables-restore` batch where netlink cannot be used.

use std::collections::HashMap;
use std::net::IpAddr;

use super::batch::render;
use super::{Batch, Family, NatTable, apply_table, read_filter};
use crate::args;
use crate::error::{Error, Result};
use crate::firewall_spec::{Firewall, IngressPolicy};
use crate::lock::SharedChainsLock;
use crate::nfnl::inventory::Inventory;
use crate::nfnl::reader::{self, RuleInfo};

const FILTER: &str = "filter";
const FORWARD: &str = "FORWARD";
pub const PRIV_CHAIN: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FILTER_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";
/// The comment of the isolation rules every bridge shares.
const SHARED_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)";
/// What releases before `isolated` existed wrote on the shared rules;
/// accepted as the same rule so an upgraded node gets no duplicates.
const OLD_SHARED_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge)";

fn policy_comment(p: IngressPolicy) -> String {
    format!("CNI firewall plugin rules (ingressPolicy: {})", p.as_str())
}

/// `<ip>/32` or `<ip>/128`, as the reference writes an address.
fn host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn family_of(ip: &IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

fn comment_jump(comment: &str, target: &str) -> Vec<String> {
    args!["-m", "comment", "--comment", comment, "-j", target]
}

/// The two per-address rules, in `iptables-save`'s order of options.
pub fn address_rules(ip: &IpAddr) -> [Vec<String>; 2] {
    let h = host(ip);
    [
        args![
            "-d",
            &h,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT"
        ],
        args!["-s", &h, "-j", "ACCEPT"],
    ]
}

/// One rule that must exist once: where it goes when missing, and other
/// spellings that count as it.
struct Unique {
    chain: String,
    args: Vec<String>,
    first: bool,
    also: Vec<Vec<String>>,
}

enum Step {
    Chain(String),
    Rule(Unique),
}

fn rule(chain: &str, args: Vec<String>, first: bool) -> Step {
    Step::Rule(Unique {
        chain: chain.to_string(),
        args,
        first,
        also: vec![],
    })
}

/// A shared isolation rule: `SHARED_COMMENT` or the older comment.
fn shared(chain: &str, head: &[&str], target: &str, first: bool) -> Step {
    let with = |comment: &str| {
        let mut a: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        a.extend(comment_jump(comment, target));
        a
    };
    Step::Rule(Unique {
        chain: chain.to_string(),
        args: with(SHARED_COMMENT),
        first,
        also: vec![with(OLD_SHARED_COMMENT)],
    })
}

/// ADD's steps for one family, in the reference's order (so rules put
/// first land in the same positions).
fn add_steps(fw: &Firewall<'_>, addrs: &[IpAddr]) -> Vec<Step> {
    let mut steps = vec![
        Step::Chain(PRIV_CHAIN.into()),
        Step::Chain(fw.admin_chain.into()),
        rule(FORWARD, comment_jump(FILTER_COMMENT, PRIV_CHAIN), true),
        rule(
            PRIV_CHAIN,
            comment_jump(ADMIN_COMMENT, fw.admin_chain),
            true,
        ),
    ];
    for ip in addrs {
        for r in address_rules(ip) {
            steps.push(rule(PRIV_CHAIN, r, false));
        }
    }
    steps.extend(isolation_steps(fw));
    steps
}

fn isolation_steps(fw: &Firewall<'_>) -> Vec<Step> {
    let Some(br) = fw.bridge else {
        return vec![];
    };
    if fw.ingress == IngressPolicy::Open {
        return vec![];
    }
    let own = policy_comment(fw.ingress);
    let mut steps = vec![
        Step::Chain(STAGE1.into()),
        Step::Chain(STAGE2.into()),
        shared(FORWARD, &[], STAGE1, true),
    ];
    let mut to_stage2 = args!["-i", br, "!", "-o", br];
    to_stage2.extend(comment_jump(&own, STAGE2));
    steps.push(rule(STAGE1, to_stage2, true));
    if fw.ingress == IngressPolicy::Isolated {
        let mut drop = args!["-i", br, "-o", br];
        drop.extend(comment_jump(&own, "DROP"));
        steps.push(rule(STAGE1, drop, true));
    }
    steps.push(shared(STAGE1, &[], "RETURN", false));
    steps.push(shared(STAGE2, &["-o", br], "DROP", true));
    steps.push(shared(STAGE2, &[], "RETURN", false));
    steps
}

/// How a rule found in the table is named for deletion.
enum Found {
    Handle(u64),
    Spec(String),
}

/// What exists, read lazily: over netlink, or from `iptables-save`.
trait View {
    fn chain_exists(&mut self, chain: &str) -> Result<bool>;
    /// The rules of `chain` equal to `args` (none when the chain is absent).
    fn find(&mut self, chain: &str, args: &[String]) -> Result<Vec<Found>>;
}

/// A rule read from the kernel with its [`reader::canonical`] form.
type Canonical = (RuleInfo, Vec<Vec<u8>>);

struct NetlinkView {
    family: Family,
    chains: HashMap<String, bool>,
    rules: HashMap<String, Vec<Canonical>>,
}

fn nl(e: std::io::Error) -> Error {
    Error::Netlink(e)
}

impl View for NetlinkView {
    fn chain_exists(&mut self, chain: &str) -> Result<bool> {
        if let Some(e) = self.chains.get(chain) {
            return Ok(*e);
        }
        let e = reader::chain(self.family.nfproto(), FILTER, chain)
            .map_err(nl)?
            .is_some();
        self.chains.insert(chain.to_string(), e);
        Ok(e)
    }

    fn find(&mut self, chain: &str, args: &[String]) -> Result<Vec<Found>> {
        let wanted = super::xtrules::translate(self.family, args)
            .ok_or_else(|| Error::Missing(format!("cannot encode rule {args:?}")))?;
        let wanted = reader::canonical(&reader::written(&wanted.exprs));
        if !self.rules.contains_key(chain) {
            let rules = if self.chain_exists(chain)? {
                reader::rules(self.family.nfproto(), FILTER, chain).map_err(nl)?
            } else {
                vec![]
            };
            let with_canon = rules
                .into_iter()
                .map(|r| {
                    let c = reader::canonical(&r.exprs());
                    (r, c)
                })
                .collect();
            self.rules.insert(chain.to_string(), with_canon);
        }
        Ok(self.rules[chain]
            .iter()
            .filter(|(_, c)| *c == wanted)
            .map(|(r, _)| Found::Handle(r.handle))
            .collect())
    }
}

struct TextView(NatTable);

impl View for TextView {
    fn chain_exists(&mut self, chain: &str) -> Result<bool> {
        Ok(self.0.has_chain(chain))
    }

    fn find(&mut self, chain: &str, args: &[String]) -> Result<Vec<Found>> {
        let spec = render(args);
        Ok(self
            .0
            .rules_in(chain)
            .filter(|r| r.spec == spec)
            .map(|r| Found::Spec(r.spec.clone()))
            .collect())
    }
}

enum Op {
    /// `table filter`, made as iptables-nft makes it (no comment).
    Table,
    /// Its `FORWARD` base chain, as iptables-nft makes it when it first
    /// needs it (`type filter hook forward priority 0; policy accept`).
    Forward,
    NewChain(String),
    Insert(String, Vec<String>),
    Append(String, Vec<String>),
    Delete(String, Found),
}

/// The changes that make `steps` true.
fn plan_add(view: &mut dyn View, steps: &[Step]) -> Result<Vec<Op>> {
    let mut ops = vec![];
    for step in steps {
        match step {
            Step::Chain(c) => {
                if !view.chain_exists(c)? {
                    ops.push(Op::NewChain(c.clone()));
                }
            }
            Step::Rule(u) => {
                let mut present = !view.find(&u.chain, &u.args)?.is_empty();
                for alt in &u.also {
                    present = present || !view.find(&u.chain, alt)?.is_empty();
                }
                if !present {
                    ops.push(if u.first {
                        Op::Insert(u.chain.clone(), u.args.clone())
                    } else {
                        Op::Append(u.chain.clone(), u.args.clone())
                    });
                }
            }
        }
    }
    Ok(ops)
}

/// Whether this family's `filter` table can be read and changed over
/// netlink: nf_tables answers and no iptables-legacy table hides it.
fn netlink_usable(family: Family) -> bool {
    !family.legacy_loaded(FILTER)
        && Inventory::chain_exists(family.nfproto(), FILTER, FORWARD).is_some()
}

fn netlink_view(family: Family) -> NetlinkView {
    NetlinkView {
        family,
        chains: HashMap::new(),
        rules: HashMap::new(),
    }
}

/// Apply `ops` as one nf_tables transaction; `None` when a rule cannot
/// be encoded (the caller uses iptables-restore).
fn commit_netlink(family: Family, ops: &[Op]) -> Option<Result<()>> {
    let f = family.nfproto();
    let mut b = crate::nfnl::writer::Batch::new();
    for op in ops {
        match op {
            Op::Table => b.add_table_plain(f, FILTER),
            Op::Forward => {
                let hook = crate::nfnl::writer::Hook {
                    hooknum: crate::nfnl::abi::HOOK_FORWARD,
                    priority: 0,
                };
                b.add_filter_chain(f, FILTER, FORWARD, hook, false);
            }
            Op::NewChain(c) => b.add_chain(f, FILTER, c, None, false),
            Op::Insert(c, args) => {
                let r = super::xtrules::translate(family, args)?;
                b.insert_xt_rule(f, FILTER, c, r.proto, r.exprs);
            }
            Op::Append(c, args) => {
                let r = super::xtrules::translate(family, args)?;
                b.add_xt_rule(f, FILTER, c, r.proto, r.exprs);
            }
            Op::Delete(c, Found::Handle(h)) => b.delete_rule(f, FILTER, c, *h),
            Op::Delete(_, Found::Spec(_)) => return None,
        }
    }
    Some(b.commit().map_err(nl))
}

fn commit_text(family: Family, ops: &[Op]) -> Result<()> {
    let mut b = Batch::default();
    for op in ops {
        match op {
            // iptables-restore makes the table and chain itself.
            Op::Table | Op::Forward => {}
            Op::NewChain(c) => b.new_chain(c),
            Op::Insert(c, args) => b.insert_first(c, args),
            Op::Append(c, args) => b.append(c, args),
            Op::Delete(c, Found::Spec(s)) => b.delete_saved(c, s),
            Op::Delete(_, Found::Handle(_)) => {
                return Err(Error::Missing("a rule handle in a text batch".into()));
            }
        }
    }
    apply_table(family, FILTER, &b)
}

const ATTEMPTS: usize = 4;

/// Plan from a fresh read and apply, over netlink when possible; a batch
/// that fails (the table changed meanwhile) is planned again.
fn converge(family: Family, plan: impl Fn(&mut dyn View) -> Result<Vec<Op>>) -> Result<()> {
    if netlink_usable(family) {
        for _ in 0..ATTEMPTS {
            let mut view = netlink_view(family);
            let mut ops = match plan(&mut view) {
                Ok(ops) => ops,
                Err(_) => break,
            };
            if ops.is_empty() {
                return Ok(());
            }
            // A host where nothing has used iptables yet: the table first,
            // the base chain where iptables-nft would make it (before its
            // first rule), so the objects are numbered in the same order.
            if Inventory::chain_exists(family.nfproto(), FILTER, FORWARD) == Some(false) {
                if Inventory::table_exists(family.nfproto(), FILTER) == Some(false) {
                    ops.insert(0, Op::Table);
                }
                let first_forward = ops.iter().position(
                    |op| matches!(op, Op::Insert(c, _) | Op::Append(c, _) if c == FORWARD),
                );
                ops.insert(first_forward.unwrap_or(ops.len()), Op::Forward);
            }
            match commit_netlink(family, &ops) {
                Some(Ok(())) => return Ok(()),
                Some(Err(_)) => continue,
                None => break,
            }
        }
    }
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut view = TextView(read_filter(family)?);
        let ops = plan(&mut view)?;
        if ops.is_empty() {
            return Ok(());
        }
        match commit_text(family, &ops) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Missing("iptables-restore never ran".into())))
}

fn by_family(fw: &Firewall<'_>) -> Vec<(Family, Vec<IpAddr>)> {
    let addrs = fw.unique_addresses();
    Family::BOTH
        .into_iter()
        .map(|f| {
            let of: Vec<IpAddr> = addrs
                .iter()
                .copied()
                .filter(|a| family_of(a) == f)
                .collect();
            (f, of)
        })
        .filter(|(_, a)| !a.is_empty())
        .collect()
}

pub fn add(fw: &Firewall<'_>) -> Result<()> {
    let _lock = SharedChainsLock::acquire();
    for (family, addrs) in by_family(fw) {
        let steps = add_steps(fw, &addrs);
        converge(family, |view| plan_add(view, &steps))?;
    }
    Ok(())
}

pub fn add_ingress_policy(fw: &Firewall<'_>) -> Result<()> {
    if fw.ingress == IngressPolicy::Open {
        return Ok(());
    }
    let _lock = SharedChainsLock::acquire();
    for (family, _) in by_family(fw) {
        let steps = isolation_steps(fw);
        converge(family, |view| plan_add(view, &steps))?;
    }
    Ok(())
}

/// The reference's CHECK messages (`%v` of the rule's arguments).
fn missing(chain: Option<&str>, args: &[String]) -> Error {
    let rule = format!("[{}]", args.join(" "));
    Error::Missing(match chain {
        Some(c) => format!("expected {c} rule {rule} not found"),
        None => format!("expected rule {rule} not found"),
    })
}

pub fn check(fw: &Firewall<'_>) -> Result<()> {
    for (family, addrs) in by_family(fw) {
        let mut view: Box<dyn View> = if netlink_usable(family) {
            Box::new(netlink_view(family))
        } else {
            Box::new(TextView(read_filter(family)?))
        };
        for step in add_steps(fw, &addrs) {
            match step {
                Step::Chain(c) => {
                    if !view.chain_exists(&c)? {
                        return Err(Error::Missing(format!("chain {c} not found")));
                    }
                }
                Step::Rule(u) => {
                    let mut present = !view.find(&u.chain, &u.args)?.is_empty();
                    for alt in &u.also {
                        present = present || !view.find(&u.chain, alt)?.is_empty();
                    }
                    if !present {
                        let named = (u.chain != PRIV_CHAIN || u.args[0] == "-m")
                            .then_some(u.chain.as_str());
                        return Err(missing(named, &u.args));
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn del(fw: &Firewall<'_>) -> Result<()> {
    let _lock = SharedChainsLock::acquire();
    for (family, addrs) in by_family(fw) {
        let r = converge(family, |view| {
            let mut ops = vec![];
            for ip in &addrs {
                for r in address_rules(ip) {
                    for found in view.find(PRIV_CHAIN, &r)? {
                        ops.push(Op::Delete(PRIV_CHAIN.to_string(), found));
                    }
                }
            }
            Ok(ops)
        });
        // A family that cannot even be read holds no rules of ours.
        if r.is_err() && read_filter(family).is_err() {
            continue;
        }
        r?;
    }
    Ok(())
}

/// The IPv4 `filter` table can be read (netlink, or `iptables-save`).
pub fn status() -> Result<()> {
    if netlink_usable(Family::V4) {
        return Ok(());
    }
    read_filter(Family::V4).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Attachment;

    fn fw<'a>(addrs: &'a [IpAddr], ingress: IngressPolicy) -> Firewall<'a> {
        Firewall {
            attachment: Attachment {
                network: "n",
                container_id: "c",
                ifname: "eth0",
            },
            admin_chain: "CNI-ADMIN",
            addresses: addrs,
            ingress,
            bridge: Some("cni0"),
        }
    }

    #[test]
    fn every_rule_is_encodable_over_netlink() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let f = fw(&addrs, IngressPolicy::Isolated);
        for (family, a) in by_family(&f) {
            for step in add_steps(&f, &a) {
                if let Step::Rule(u) = step {
                    assert!(
                        super::super::xtrules::translate(family, &u.args).is_some(),
                        "{:?}",
                        u.args
                    );
                }
            }
        }
    }

    /// The iptables-restore path (used where a legacy table exists) and
    /// the netlink path leave the same `filter` table, and each one's
    /// reading finds the other's rules.
    #[test]
    fn restore_and_netlink_paths_agree() {
        use crate::testutil::{in_netns, run};
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let f = fw(&addrs, IngressPolicy::Isolated);
        let state = |text: bool| {
            in_netns("cnit-nf-fw", || {
                for (family, a) in by_family(&f) {
                    let steps = add_steps(&f, &a);
                    if text {
                        let mut view = TextView(read_filter(family).expect("save"));
                        let ops = plan_add(&mut view, &steps).expect("plan");
                        commit_text(family, &ops).expect("restore");
                        let mut nl = netlink_view(family);
                        assert!(plan_add(&mut nl, &steps).expect("plan").is_empty());
                    } else {
                        add(&f).expect("netlink ADD");
                        let mut view = TextView(read_filter(family).expect("save"));
                        assert!(plan_add(&mut view, &steps).expect("plan").is_empty());
                    }
                }
                let out = run("iptables-save", &["-t", "filter"])
                    + &run("ip6tables-save", &["-t", "filter"]);
                out.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            })
        };
        assert_eq!(state(true), state(false));
    }

    #[test]
    fn text_view_matches_saved_rules() {
        let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:CNI-FORWARD - [0:0]\n\
            -A CNI-FORWARD -d 10.0.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A CNI-ISOLATION-STAGE-1 -i cni0 ! -o cni0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-2\n\
            COMMIT\n";
        let mut v = TextView(NatTable::parse_table(saved, "filter"));
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(v.find(PRIV_CHAIN, &address_rules(&ip)[0]).unwrap().len(), 1);
        assert_eq!(v.find(PRIV_CHAIN, &address_rules(&ip)[1]).unwrap().len(), 0);
        let addrs = [ip];
        let steps = isolation_steps(&fw(&addrs, IngressPolicy::SameBridge));
        let Step::Rule(u) = &steps[3] else {
            panic!("not a rule")
        };
        assert_eq!(v.find(&u.chain, &u.args).unwrap().len(), 1);
    }
}
