//! Where the shaping goes and the tc objects it is made of.
//!
//! The reference shapes on the host end of the container's veth: traffic
//! toward the container leaves through that end (a tbf as its root qdisc),
//! traffic from the container arrives on it (an ingress qdisc redirects
//! it to an ifb, whose root qdisc is the second tbf). Without a host veth
//! (a main plugin whose interface has no peer on the host) the reference
//! fails (#656); here the same structure is built on the container's own
//! interface, inside its namespace, where the directions are swapped:
//! toward the container is its ingress, from it its egress.

use bandwidth::{Limit, TbfParams, tbf_params};
use cni::{CniResult, Error, Result};
use link::tc::{Filter, ROOT_HANDLE, Tbf};
use link::{Link, Netlink};

/// The link the shaping is attached to, and the namespace it lives in.
pub struct Site {
    pub nl: Netlink,
    pub link: Link,
    /// `Some(netns path)` when the link is the container's interface.
    pub sandbox: Option<String>,
}

fn internal(ctx: impl std::fmt::Display) -> impl FnOnce(link::Error) -> Error {
    move |e| Error::internal(format!("{ctx}: {e}"))
}

pub use attach::open_netns;

/// The host end of the container's veth when there is one the previous
/// plugin reported (an interface without sandbox of that name; any host
/// peer when `prev` lists no interface, as on a DEL without prevResult),
/// else the container's interface itself.
pub fn find(host: Netlink, netns: &str, ifname: &str, prev: &CniResult) -> Result<Site> {
    let ns = open_netns(netns)?;
    let cont = Netlink::in_netns(&ns).map_err(internal("open netlink in container"))?;
    let clink = cont
        .link_by_name(ifname)
        .map_err(internal("find container interface"))?
        .ok_or_else(|| {
            Error::internal(format!("container interface {ifname} not found in {netns}"))
        })?;
    if let Some(peer) = clink.peer_index.filter(|_| clink.is_veth()) {
        let candidate = host
            .link_by_index(peer)
            .map_err(internal("find veth peer"))?;
        if let Some(h) = candidate {
            let reported = prev.interfaces.is_empty()
                || prev
                    .interfaces
                    .iter()
                    .any(|i| i.name == h.name && i.sandbox.as_deref().unwrap_or("").is_empty());
            if h.is_veth() && h.peer_index == Some(clink.index) && reported {
                return Ok(Site {
                    nl: host,
                    link: h,
                    sandbox: None,
                });
            }
        }
    }
    Ok(Site {
        nl: cont,
        link: clink,
        sandbox: Some(netns.to_string()),
    })
}

/// The tbf for one direction, with this kernel's tick length.
pub fn tbf(l: &Limit) -> Result<Tbf> {
    let TbfParams {
        rate,
        buffer,
        limit,
    } = tbf_params(l, link::tc::ticks_per_usec()).ok_or_else(|| {
        Error::invalid_config(format!(
            "rate {} and burst {} do not fit the kernel's token bucket",
            l.rate, l.burst
        ))
    })?;
    Ok(Tbf {
        rate,
        buffer,
        limit,
    })
}

/// The tbf as older kernels report it back: they kept the bucket in 32
/// bits of nanoseconds.
fn capped(t: &Tbf) -> Tbf {
    let ns = (t.buffer as u64 * 64).min(u32::MAX as u64);
    Tbf {
        buffer: (ns / 64) as u32,
        ..*t
    }
}

/// `bandwidth <network> <container id>`: tags our ifbs so GC can tell
/// which network's attachment made one (the reference sets no alias).
pub fn alias(network: &str, container_id: &str) -> Option<String> {
    let a = format!("{ALIAS_PREFIX}{network} {container_id}");
    (a.len() < 256).then_some(a)
}

const ALIAS_PREFIX: &str = "cni-bandwidth ";

pub fn parse_alias(alias: &str) -> Option<(&str, &str)> {
    alias.strip_prefix(ALIAS_PREFIX)?.split_once(' ')
}

/// What ADD made, removed again if a later step fails.
pub struct Undo<'a> {
    nl: &'a Netlink,
    root_of: Option<u32>,
    ingress_of: Option<u32>,
    ifb: Option<u32>,
}

impl<'a> Undo<'a> {
    pub fn new(nl: &'a Netlink) -> Self {
        Undo {
            nl,
            root_of: None,
            ingress_of: None,
            ifb: None,
        }
    }

    pub fn disarm(mut self) {
        self.root_of = None;
        self.ingress_of = None;
        self.ifb = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        // Deleting the ifb removes its qdisc; the filter goes with the
        // ingress qdisc.
        if let Some(i) = self.ingress_of {
            let _ = self.nl.delete_ingress_qdisc(i);
        }
        if let Some(i) = self.ifb {
            let _ = self.nl.delete_link(i);
        }
        if let Some(i) = self.root_of {
            let _ = self.nl.delete_root_qdisc(i);
        }
    }
}

/// ADD: the tbf toward the container, then the ifb path from it. Returns
/// the ifb, for the result.
pub fn apply(
    site: &Site,
    toward: &Limit,
    from: &Limit,
    ifb_name: &str,
    alias: Option<&str>,
) -> Result<Option<Link>> {
    let nl = &site.nl;
    let mut undo = Undo::new(nl);
    let (index, name) = (site.link.index, &site.link.name);
    // Inside the container the directions swap: its egress (root qdisc) is
    // traffic toward the container only when shaping the host end.
    let (root_limit, redirect_limit) = if site.sandbox.is_none() {
        (toward, from)
    } else {
        (from, toward)
    };
    if root_limit.is_set() {
        let t = tbf(root_limit)?;
        nl.add_root_tbf(index, &t)
            .map_err(internal(format!("create qdisc on {name}")))?;
        undo.root_of = Some(index);
    }
    let mut made = None;
    if redirect_limit.is_set() {
        let t = tbf(redirect_limit)?;
        let ifb = nl
            .create_ifb(ifb_name, site.link.mtu, alias)
            .map_err(internal("adding link"))?;
        undo.ifb = Some(ifb.index);
        nl.add_ingress_qdisc(index)
            .map_err(internal(format!("create ingress qdisc on {name}")))?;
        undo.ingress_of = Some(index);
        nl.add_redirect_filter(index, ifb.index)
            .map_err(internal(format!("add filter on {name}")))?;
        nl.add_root_tbf(ifb.index, &t)
            .map_err(internal("create ifb qdisc"))?;
        made = Some(ifb);
    }
    undo.disarm();
    Ok(made)
}

fn check_tbf(nl: &Netlink, link: &Link, l: &Limit) -> Result<()> {
    let want = tbf(l)?;
    let root = nl
        .root_qdisc(link.index)
        .map_err(internal(format!("get qdisc of {}", link.name)))?;
    let Some(got) = root.filter(|q| q.kind == "tbf") else {
        return Err(Error::internal(format!(
            "Failed to find qdisc: no tbf on {}",
            link.name
        )));
    };
    let Some(t) = got.tbf else {
        return Err(Error::internal(format!(
            "Failed to find qdisc: tbf on {} has no parameters",
            link.name
        )));
    };
    let mismatch = |what: &str, got: u64, want: u64| {
        Error::internal(format!(
            "{what} doesn't match on {}: {got}, configured {want}",
            link.name
        ))
    };
    if t.rate != want.rate {
        return Err(mismatch("Rate", t.rate, want.rate));
    }
    if t.limit != want.limit {
        return Err(mismatch("Limit", t.limit as u64, want.limit as u64));
    }
    if t.buffer != want.buffer && t.buffer != capped(&want).buffer {
        return Err(mismatch("Buffer", t.buffer as u64, want.buffer as u64));
    }
    Ok(())
}

/// Some filter redirects, and every redirect goes to a link that no
/// longer exists (the kernel reports a deleted target as index 0). The
/// u32 dump also lists its hash tables, which have no actions.
fn dangling(nl: &Netlink, filters: &[Filter]) -> bool {
    let mut targets = filters.iter().flat_map(|f| &f.redirects).peekable();
    targets.peek().is_some() && targets.all(|&r| r == 0 || matches!(nl.link_by_index(r), Ok(None)))
}

fn redirects_to(filters: &[Filter], ifb: u32) -> bool {
    filters.iter().any(|f| f.redirects.contains(&ifb))
}

/// CHECK: every qdisc and the filter as ADD made them.
pub fn check(site: &Site, toward: &Limit, from: &Limit, ifb_name: &str) -> Result<()> {
    let nl = &site.nl;
    let (root_limit, redirect_limit) = if site.sandbox.is_none() {
        (toward, from)
    } else {
        (from, toward)
    };
    if root_limit.is_set() {
        check_tbf(nl, &site.link, root_limit)?;
    }
    if redirect_limit.is_set() {
        let ifb = nl
            .link_by_name(ifb_name)
            .map_err(internal("get ifb device"))?
            .ok_or_else(|| Error::internal(format!("get ifb device: {ifb_name} not found")))?;
        check_tbf(nl, &ifb, redirect_limit)?;
        let filters = nl
            .ingress_filters(site.link.index)
            .map_err(internal(format!("list filters of {}", site.link.name)))?;
        if !redirects_to(&filters, ifb.index) {
            return Err(Error::internal(format!(
                "no filter on {} redirects to {ifb_name}",
                site.link.name
            )));
        }
    }
    Ok(())
}

/// DEL on one namespace: the ingress qdisc of `shaped` when it is ours,
/// its root tbf when `root` says we made one (`redirect`: we made an
/// ifb path), and the ifb. Everything already gone is fine.
pub fn remove(
    nl: &Netlink,
    shaped: Option<&Link>,
    root: bool,
    redirect: bool,
    ifb_name: &str,
) -> Result<()> {
    let ifb = nl
        .link_by_name(ifb_name)
        .map_err(internal("find ifb device"))?;
    if let Some(l) = shaped {
        let has_ingress = nl
            .ingress_qdisc(l.index)
            .map_err(internal(format!("get ingress qdisc of {}", l.name)))?
            .is_some();
        let filters = if has_ingress {
            nl.ingress_filters(l.index)
                .map_err(internal(format!("list filters of {}", l.name)))?
        } else {
            vec![]
        };
        // Ours: its filter redirects to our ifb; or, with the ifb gone
        // already (the reference's DEL deletes only the ifb), its filters
        // lead nowhere any more; or it has no filter yet because an ADD was
        // killed between the qdisc and the filter.
        let ours = ifb
            .as_ref()
            .is_some_and(|ifb| redirects_to(&filters, ifb.index))
            || (has_ingress && filters.is_empty() && redirect)
            || (has_ingress && !filters.is_empty() && dangling(nl, &filters));
        if ours {
            nl.delete_ingress_qdisc(l.index)
                .map_err(internal(format!("delete ingress qdisc of {}", l.name)))?;
        }
        if root {
            let ours = nl
                .root_qdisc(l.index)
                .map_err(internal(format!("get qdisc of {}", l.name)))?
                .is_some_and(|q| q.kind == "tbf" && q.handle == ROOT_HANDLE);
            if ours {
                nl.delete_root_qdisc(l.index)
                    .map_err(internal(format!("delete qdisc of {}", l.name)))?;
            }
        }
    }
    if let Some(ifb) = ifb {
        nl.delete_link(ifb.index)
            .map_err(internal(format!("delete {ifb_name}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_round_trip() {
        let a = alias("net1", "abc").unwrap();
        assert_eq!(parse_alias(&a), Some(("net1", "abc")));
        assert_eq!(parse_alias("something else"), None);
        assert!(alias("n", &"x".repeat(300)).is_none());
    }

    #[test]
    fn read_back_caps_the_bucket() {
        let t = Tbf {
            rate: 1,
            buffer: u32::MAX,
            limit: 1,
        };
        assert_eq!(capped(&t).buffer, (u32::MAX / 64));
        let t = Tbf {
            rate: 1,
            buffer: 1_562_500,
            limit: 1,
        };
        assert_eq!(capped(&t), t);
    }
}
