//! The `bandwidth` plugin: rate limits toward and from a container with
//! token buckets, chained after the plugin that made its interface.
//!
//! Differences from the reference, each deliberate:
//! - `runtimeConfig.bandwidth` (the capability) overrides the top-level
//!   keys; the reference prefers the top-level keys when any is present.
//! - Without a host-side veth the shaping is built on the container's
//!   interface inside its namespace instead of failing (reference #656).
//! - A failing ADD removes what it made; DEL also removes the ingress
//!   qdisc and tbf from the host veth when it still exists.
//! - CHECK also checks the ifb's redirect filter; GC removes the ifbs of
//!   attachments that are gone; STATUS is implemented.
//! - Bad values are CNI errors naming the key (code 7), not code 999.

mod site;

use bandwidth::{Bandwidth, IFB_PREFIX, config, ifb_name};
use cni::{CniResult, Error, Interface, Plugin, Request, Result, code};
use link::Netlink;

use site::Site;

struct BandwidthPlugin;

fn host() -> Result<Netlink> {
    Netlink::current().map_err(|e| Error::internal(format!("open netlink socket: {e}")))
}

fn parse(req: &Request) -> Result<Bandwidth> {
    config::parse(&req.stdin)
}

impl Plugin for BandwidthPlugin {
    const NAME: &'static str = "bandwidth";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let bw = parse(req)?;
        let prev = req.prev_result()?;
        if bw.is_zero() {
            return Ok(prev.unwrap_or_default());
        }
        let Some(mut result) = prev else {
            return Err(Error::invalid_config("must be called as chained plugin"));
        };
        let site = site::find(host()?, &req.netns, &req.ifname, &result)?;
        let name = ifb_name(&req.config.name, &req.container_id);
        let alias = site::alias(&req.config.name, &req.container_id);
        if let Some(ifb) = site::apply(&site, &bw.ingress, &bw.egress, &name, alias.as_deref())? {
            result.interfaces.push(Interface {
                name: ifb.name,
                mac: ifb.mac.map(|m| m.to_string()),
                sandbox: site.sandbox.clone(),
                ..Interface::default()
            });
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let bw = parse(req)?;
        let name = ifb_name(&req.config.name, &req.container_id);
        let prev = req.prev_result().ok().flatten().unwrap_or_default();
        // The shaped link, when the container and its interface still
        // exist; without them the veth (and the container's ifb) are gone
        // with the namespace.
        let found: Option<Site> = if req.netns.is_empty() {
            None
        } else {
            site::find(host()?, &req.netns, &req.ifname, &prev).ok()
        };
        match &found {
            Some(s) => {
                let (root, redirect) = if s.sandbox.is_none() {
                    (bw.ingress.is_set(), bw.egress.is_set())
                } else {
                    (bw.egress.is_set(), bw.ingress.is_set())
                };
                site::remove(&s.nl, Some(&s.link), root, redirect, &name)?;
                if s.sandbox.is_some() {
                    // An ifb of this attachment's name on the host (from a
                    // time its interface had a host peer) goes too.
                    site::remove(&host()?, None, false, false, &name)?;
                }
            }
            None => site::remove(&host()?, None, false, false, &name)?,
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let bw = parse(req)?;
        let Some(prev) = req.prev_result()? else {
            return Err(Error::invalid_config("must be called as a chained plugin"));
        };
        let site = site::find(host()?, &req.netns, &req.ifname, &prev)?;
        if bw.is_zero() {
            return Ok(());
        }
        let name = ifb_name(&req.config.name, &req.container_id);
        site::check(&site, &bw.ingress, &bw.egress, &name)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        parse(req)?;
        // Without the key the runtime has said nothing about what is
        // valid: remove nothing.
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let network = &req.config.name;
        let keep: Vec<String> = valid
            .iter()
            .map(|a| ifb_name(network, &a.container_id))
            .collect();
        let nl = host()?;
        let fail = |e: link::Error| Error::internal(format!("bandwidth GC failed: {e}"));
        let candidates: Vec<_> = nl
            .ifbs()
            .map_err(fail)?
            .into_iter()
            .filter(|i| i.name.starts_with(IFB_PREFIX) && !keep.contains(&i.name))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        // Which links redirect to which ifb: the host veths still shaped.
        let mut redirecting: Vec<(u32, Vec<u32>)> = vec![];
        for q in nl.qdiscs(0).map_err(fail)? {
            if q.is_ingress() {
                let targets = nl
                    .ingress_filters(q.index)
                    .map_err(fail)?
                    .into_iter()
                    .flat_map(|f| f.redirects)
                    .collect();
                redirecting.push((q.index, targets));
            }
        }
        for ifb in candidates {
            let users: Vec<u32> = redirecting
                .iter()
                .filter(|(_, t)| t.contains(&ifb.index))
                .map(|(l, _)| *l)
                .collect();
            let orphan = match ifb.alias.as_deref().and_then(site::parse_alias) {
                // Ours: this network's, for an attachment no longer valid.
                Some((net, _)) => net == network.as_str(),
                // Another's (the reference tags nothing): only when no
                // link sends traffic to it any more, i.e. its veth is gone.
                None => ifb.alias.is_none() && users.is_empty(),
            };
            if !orphan {
                continue;
            }
            for l in users {
                nl.delete_ingress_qdisc(l).map_err(fail)?;
            }
            nl.delete_link(ifb.index).map_err(fail)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        parse(req)?;
        host().map_err(|e| Error::new(code::NOT_AVAILABLE, e.msg))?;
        Ok(())
    }
}

fn main() {
    cni::run(&BandwidthPlugin)
}
