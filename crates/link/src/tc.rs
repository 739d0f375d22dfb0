//! Traffic control: the qdiscs, filters and ifb links traffic shaping is
//! made of — a token bucket (`tbf`) as a root qdisc, the `ingress` qdisc,
//! a u32 match-all filter whose mirred action redirects to an ifb, and the
//! ifb itself.
//!
//! netlink-packet-route has no tbf options, so `TCA_TBF_*` are encoded
//! here (`struct tc_tbf_qopt` of `linux/pkt_sched.h`).

use futures::StreamExt;
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST,
    NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::{LinkIfb, LinkMessageBuilder, LinkUnspec};

use crate::connection::Netlink;
use crate::error::{Error, Result, to_io};
use crate::links::Link;

/// `TCA_TBF_PARMS`, `TCA_TBF_RATE64` (`linux/pkt_sched.h`).
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
/// `ETH_P_ALL`, in the network byte order `tcm_info` carries it in.
const PROTOCOL_ALL: u16 = u16::from_ne_bytes(0x0003u16.to_be_bytes());
/// Handle of a root qdisc made by a shaper: `1:`.
pub const ROOT_HANDLE: u32 = 0x0001_0000;
/// Handle of the ingress qdisc: `ffff:`.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;
/// The `parent` of a root qdisc and of the ingress qdisc.
const PARENT_ROOT: u32 = 0xffff_ffff;
const PARENT_INGRESS: u32 = 0xffff_fff1;
/// How long one tc request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Microseconds per second: the time unit of tc's rate computations.
pub const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// A token bucket filter, in the units the kernel takes: bytes per second,
/// the bucket as the time it takes to send it (in psched ticks), and the
/// queue limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate: u64,
    pub buffer: u32,
    pub limit: u32,
}

/// One qdisc of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// The bucket, when `kind` is "tbf".
    pub tbf: Option<Tbf>,
}

impl Qdisc {
    pub fn is_root(&self) -> bool {
        self.parent == PARENT_ROOT
    }

    pub fn is_ingress(&self) -> bool {
        self.kind == "ingress" && self.parent == PARENT_INGRESS
    }
}

/// One filter attached to a link's ingress qdisc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub index: u32,
    pub kind: String,
    pub priority: u16,
    /// `classid` (u32 filters), e.g. `1:1` as 0x0001_0001.
    pub class_id: Option<u32>,
    /// Interfaces the filter's mirred actions redirect to, in action order.
    pub redirects: Vec<u32>,
}

/// An ifb link, with the alias it was tagged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ifb {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
}

/// Ticks of the packet scheduler clock per microsecond, as tc and the Go
/// netlink library derive it from `/proc/net/psched` (15.625 on every
/// current kernel: 1000 ns per µs / 64 ns per tick).
pub fn ticks_per_usec() -> f64 {
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|s| parse_psched(&s))
        .unwrap_or(15.625)
}

fn parse_psched(s: &str) -> Option<f64> {
    let mut vals = [0u64; 3];
    let mut parts = s.split_whitespace();
    for v in vals.iter_mut() {
        *v = u64::from_str_radix(parts.next()?, 16).ok()?;
    }
    let (mut t2us, us2t, clock_res) = (vals[0], vals[1], vals[2]);
    if us2t == 0 {
        return None;
    }
    // A clock resolution of 1 GHz means the first field is stale (as tc).
    if clock_res == 1_000_000_000 {
        t2us = us2t;
    }
    let clock_factor = clock_res as f64 / TIME_UNITS_PER_SEC;
    Some(t2us as f64 / us2t as f64 * clock_factor)
}

/// `struct tc_ratespec` with only the rate set (linklayer unaware, no
/// overhead, no rate table), as the Go reference sends it.
fn ratespec(rate: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[8..12].copy_from_slice(&(rate.min(u32::MAX as u64) as u32).to_ne_bytes());
    b
}

fn tbf_options(tbf: &Tbf) -> Vec<TcOption> {
    // struct tc_tbf_qopt { rate, peakrate: tc_ratespec; limit, buffer, mtu: u32 }
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(tbf.rate));
    parms.extend_from_slice(&ratespec(0));
    parms.extend_from_slice(&tbf.limit.to_ne_bytes());
    parms.extend_from_slice(&tbf.buffer.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes());
    let mut opts = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms))];
    if tbf.rate > u32::MAX as u64 {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            tbf.rate.to_ne_bytes().to_vec(),
        )));
    }
    opts
}

fn nla_value(nla: &impl Nla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The bucket of a dumped tbf qdisc: its `TCA_OPTIONS` arrive as one
/// opaque attribute holding the nested `TCA_TBF_*`.
fn parse_tbf(opts: &[TcOption]) -> Option<Tbf> {
    let mut tbf = None;
    let mut rate64 = None;
    for opt in opts {
        let TcOption::Other(outer) = opt else {
            continue;
        };
        let value = nla_value(outer);
        for nla in NlasIterator::new(&value[..]) {
            let nla: NlaBuffer<&[u8]> = nla.ok()?;
            let v = nla.value();
            match nla.kind() {
                TCA_TBF_PARMS => {
                    tbf = Some(Tbf {
                        rate: u32_at(v, 8)? as u64,
                        limit: u32_at(v, 24)?,
                        buffer: u32_at(v, 28)?,
                    })
                }
                TCA_TBF_RATE64 => {
                    rate64 = Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?));
                }
                _ => {}
            }
        }
    }
    let mut tbf = tbf?;
    if let Some(r) = rate64 {
        tbf.rate = r;
    }
    Some(tbf)
}

fn mirred(ifindex: u32, tab: u16, verdict: TcActionType) -> TcAction {
    let mut generic = TcActionGeneric::default();
    generic.action = verdict;
    let mut parms = TcMirror::default();
    parms.generic = generic;
    parms.eaction = TcMirrorActionType::EgressRedir;
    parms.ifindex = ifindex;
    let mut action = TcAction::default();
    action.tab = tab;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            parms,
        ))]),
    ];
    action
}

fn redirects_of(action: &TcAction) -> Option<u32> {
    let mut is_mirred = false;
    let mut target = None;
    for attr in &action.attributes {
        match attr {
            TcActionAttribute::Kind(k) => is_mirred = k == "mirred",
            TcActionAttribute::Options(opts) => {
                for o in opts {
                    if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = o {
                        target = Some(p.ifindex);
                    }
                }
            }
            _ => {}
        }
    }
    target.filter(|_| is_mirred)
}

fn filter_from(msg: &TcMessage) -> Filter {
    let mut f = Filter {
        index: msg.header.index as u32,
        kind: String::new(),
        priority: (msg.header.info >> 16) as u16,
        class_id: None,
        redirects: vec![],
    };
    for attr in &msg.attributes {
        match attr {
            TcAttribute::Kind(k) => f.kind = k.clone(),
            TcAttribute::Options(opts) => {
                for o in opts {
                    let TcOption::U32(u) = o else { continue };
                    match u {
                        TcFilterU32Option::ClassId(h) => f.class_id = Some(u32::from(*h)),
                        TcFilterU32Option::Action(actions) => {
                            f.redirects.extend(actions.iter().filter_map(redirects_of));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    f
}

fn qdisc_from(msg: &TcMessage) -> Qdisc {
    let mut q = Qdisc {
        index: msg.header.index as u32,
        kind: String::new(),
        handle: u32::from(msg.header.handle),
        parent: u32::from(msg.header.parent),
        tbf: None,
    };
    for attr in &msg.attributes {
        match attr {
            TcAttribute::Kind(k) => q.kind = k.clone(),
            TcAttribute::Options(opts) => q.tbf = parse_tbf(opts),
            _ => {}
        }
    }
    if q.kind != "tbf" {
        q.tbf = None;
    }
    q
}

fn tc_message(index: u32, handle: u32, parent: u32, info: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.handle = TcHandle::from(handle);
    msg.header.parent = TcHandle::from(parent);
    msg.header.info = info;
    msg
}

impl Netlink {
    /// Send one request; collect the messages of a dump, or wait for the
    /// acknowledgement. The error keeps the kernel's errno.
    fn tc_request(
        &self,
        payload: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, std::io::Error> {
        let mut handle = self.handle().clone();
        let mut req = NetlinkMessage::from(payload);
        req.header.flags = NLM_F_REQUEST | flags;
        // A request the kernel never answers must not hang the plugin.
        let exchange = async move {
            let mut response = handle.request(req).map_err(to_io)?;
            let mut out = vec![];
            while let Some(msg) = response.next().await {
                match msg.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
            Ok(out)
        };
        self.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)))
        })
    }

    fn tc_change(
        &self,
        op: &'static str,
        index: u32,
        payload: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        self.tc_request(payload, NLM_F_ACK | flags)
            .map(|_| ())
            .map_err(|source| Error::Netlink {
                op,
                object: self.describe(index),
                source,
            })
    }

    /// The qdiscs of link `index` (of every link for 0).
    pub fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>> {
        let msg = tc_message(index, 0, 0, 0);
        let msgs = self
            .tc_request(RouteNetlinkMessage::GetQueueDiscipline(msg), NLM_F_DUMP)
            .map_err(|source| Error::Netlink {
                op: "list qdiscs of",
                object: self.describe(index),
                source,
            })?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => Some(qdisc_from(q)),
                _ => None,
            })
            .filter(|q| index == 0 || q.index == index)
            .collect())
    }

    /// The qdisc attached at `parent` of link `index` (one request, not a
    /// dump of every link's qdiscs); `None` when there is none.
    fn qdisc_at(&self, index: u32, parent: u32) -> Result<Option<Qdisc>> {
        let msg = tc_message(index, 0, parent, 0);
        // The kernel answers a qdisc GET as a notification: to the TC
        // multicast group, and to the asker only with NLM_F_ECHO. The
        // acknowledgement ends the exchange.
        let flags = NLM_F_ACK | NLM_F_ECHO;
        match self.tc_request(RouteNetlinkMessage::GetQueueDiscipline(msg), flags) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => Some(qdisc_from(q)),
                _ => None,
            })),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => {
                Ok(None)
            }
            Err(source) => Err(Error::Netlink {
                op: "get qdisc of",
                object: self.describe(index),
                source,
            }),
        }
    }

    /// The root qdisc of link `index` (the kernel's default when nothing
    /// was attached).
    pub fn root_qdisc(&self, index: u32) -> Result<Option<Qdisc>> {
        self.qdisc_at(index, PARENT_ROOT)
    }

    /// The ingress qdisc of link `index`, if it has one.
    pub fn ingress_qdisc(&self, index: u32) -> Result<Option<Qdisc>> {
        Ok(self
            .qdisc_at(index, PARENT_INGRESS)?
            .filter(|q| q.is_ingress()))
    }

    /// `tc qdisc add dev <index> root handle 1: tbf …` (fails if the link
    /// already has a root qdisc of its own).
    pub fn add_root_tbf(&self, index: u32, tbf: &Tbf) -> Result<()> {
        let mut msg = tc_message(index, ROOT_HANDLE, PARENT_ROOT, 0);
        msg.attributes.push(TcAttribute::Kind("tbf".to_string()));
        msg.attributes.push(TcAttribute::Options(tbf_options(tbf)));
        self.tc_change(
            "add tbf qdisc to",
            index,
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `tc qdisc add dev <index> handle ffff: ingress`.
    pub fn add_ingress_qdisc(&self, index: u32) -> Result<()> {
        let mut msg = tc_message(index, INGRESS_HANDLE, PARENT_INGRESS, 0);
        msg.attributes
            .push(TcAttribute::Kind("ingress".to_string()));
        self.tc_change(
            "add ingress qdisc to",
            index,
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Delete the qdisc `handle` under `parent`; `false` when there was
    /// none (or only the kernel's default).
    fn delete_qdisc(&self, index: u32, handle: u32, parent: u32) -> Result<bool> {
        let msg = tc_message(index, handle, parent, 0);
        match self.tc_request(RouteNetlinkMessage::DelQueueDiscipline(msg), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EINVAL)
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::Netlink {
                op: "delete qdisc of",
                object: self.describe(index),
                source,
            }),
        }
    }

    /// Remove the link's root qdisc (the kernel puts its default back).
    pub fn delete_root_qdisc(&self, index: u32) -> Result<bool> {
        self.delete_qdisc(index, 0, PARENT_ROOT)
    }

    /// Remove the link's ingress qdisc and with it every filter on it.
    pub fn delete_ingress_qdisc(&self, index: u32) -> Result<bool> {
        self.delete_qdisc(index, INGRESS_HANDLE, PARENT_INGRESS)
    }

    /// `tc filter add dev <index> parent ffff: protocol all prio 1 u32
    /// match u32 0 0 classid 1:1 action mirred egress redirect dev <to>`,
    /// encoded as the Go netlink library encodes the reference's filter:
    /// the redirect (verdict stolen) followed by a second mirred with
    /// verdict ok, so `tc filter show` reads the same for both.
    pub fn add_redirect_filter(&self, index: u32, to: u32) -> Result<()> {
        let info = (1u32 << 16) | PROTOCOL_ALL as u32;
        let mut msg = tc_message(index, 0, INGRESS_HANDLE, info);
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = 1;
        sel.keys = vec![TcU32Key::default()];
        msg.attributes.push(TcAttribute::Kind("u32".to_string()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(0x0001_0001))),
            TcOption::U32(TcFilterU32Option::Action(vec![
                mirred(to, 1, TcActionType::Stolen),
                mirred(to, 2, TcActionType::Ok),
            ])),
        ]));
        self.tc_change(
            "add redirect filter to",
            index,
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The filters on link `index`'s ingress qdisc (none when it has none).
    pub fn ingress_filters(&self, index: u32) -> Result<Vec<Filter>> {
        let msg = tc_message(index, 0, INGRESS_HANDLE, 0);
        match self.tc_request(RouteNetlinkMessage::GetTrafficFilter(msg), NLM_F_DUMP) {
            Ok(msgs) => Ok(msgs
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewTrafficFilter(f) => Some(filter_from(f)),
                    _ => None,
                })
                // The dump repeats the u32 hash table; only entries with a
                // kind and an action or class are filters of interest.
                .filter(|f| f.index == index && !f.kind.is_empty())
                .collect()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                Ok(vec![])
            }
            Err(source) => Err(Error::Netlink {
                op: "list filters of",
                object: self.describe(index),
                source,
            }),
        }
    }

    /// Create an ifb, up, with `mtu` and a transmit queue length of 0 (as
    /// the reference), tagged with `alias` when given.
    pub fn create_ifb(&self, name: &str, mtu: u32, alias: Option<&str>) -> Result<Link> {
        let b = LinkMessageBuilder::<LinkIfb>::new(name)
            .mtu(mtu)
            .txqueuelen(0)
            .up();
        let req = self.handle().link().add(b.build());
        self.block_on(req.execute()).map_err(|e| Error::Netlink {
            op: "create ifb",
            object: name.to_string(),
            source: to_io(e),
        })?;
        let link = self.require_link(name)?;
        // The kernel ignores IFLA_IFALIAS in a creation request.
        if let Some(a) = alias {
            let msg = LinkUnspec::new_with_index(link.index).alias(a).build();
            let req = self.handle().link().change(msg);
            if let Err(e) = self.block_on(req.execute()) {
                let _ = self.delete_link(link.index);
                return Err(Error::Netlink {
                    op: "set alias of",
                    object: name.to_string(),
                    source: to_io(e),
                });
            }
        }
        Ok(link)
    }

    /// Every ifb link of the namespace.
    pub fn ifbs(&self) -> Result<Vec<Ifb>> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = netlink_packet_route::AddressFamily::Unspec;
        let msgs = self
            .tc_request(RouteNetlinkMessage::GetLink(msg), NLM_F_DUMP)
            .map_err(|source| Error::Netlink {
                op: "list links",
                object: "in namespace".to_string(),
                source,
            })?;
        let mut out = vec![];
        for m in &msgs {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let link = Link::from_message(l);
            if link.kind.as_deref() != Some("ifb") {
                continue;
            }
            let alias = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfAlias(s) => Some(s.clone()),
                _ => None,
            });
            out.push(Ifb {
                index: link.index,
                name: link.name,
                alias,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn psched_of_current_kernels() {
        assert_eq!(
            parse_psched("000003e8 00000040 000f4240 3b9aca00\n"),
            Some(15.625)
        );
        assert_eq!(parse_psched("garbage"), None);
        assert_eq!(parse_psched("1 0 1"), None);
    }

    #[test]
    fn tbf_options_round_trip() {
        for rate in [1_000_000u64, 5_000_000_000] {
            let tbf = Tbf {
                rate,
                buffer: 1_562_500,
                limit: 125_000,
            };
            let opts = tbf_options(&tbf);
            // A dump hands the nested attributes back as one opaque NLA.
            let mut nested = vec![0u8; opts.as_slice().buffer_len()];
            opts.as_slice().emit(&mut nested);
            let outer = TcOption::Other(DefaultNla::new(2, nested));
            assert_eq!(parse_tbf(&[outer]), Some(tbf));
        }
    }

    #[test]
    fn mirred_actions_carry_target_and_order() {
        let a = mirred(7, 2, TcActionType::Ok);
        assert_eq!(a.tab, 2);
        assert_eq!(redirects_of(&a), Some(7));
    }
}
