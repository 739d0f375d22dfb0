//! The `firewall` plugin: chained after the plugin that gave the container
//! its addresses, it lets forwarded traffic reach the container (replies
//! only) and leave it, and with `ingressPolicy` isolates bridges.
//!
//! Differences from the reference, each deliberate:
//! - The iptables rules are written over nf_tables netlink in
//!   iptables-nft's encoding (no process once the chains exist), with the
//!   reference's chains, text and positions: either plugin's DEL removes
//!   the other's rules.
//! - `backend: "nftables"` (a table of our own, `inet cni_firewall`).
//! - A bad `backend` or `ingressPolicy` fails before anything changes (the
//!   reference ignores an unknown backend, and fails on an unknown policy
//!   only after adding the rules).
//! - `ingressPolicy: "isolated"` also works where the reference's release
//!   in Debian only knows `same-bridge`.
//! - GC (records in `dataDir`, default `/run/cni/firewall`) and STATUS.

mod firewalld;
mod records;

use std::net::IpAddr;

use cni::{CniResult, Error, Plugin, Request, Result, code};
use netfilter::Attachment;
use netfilter::firewall::{Firewall, IngressPolicy};

use firewall::config::{self, Backend, Config};
use records::Records;

struct FirewallPlugin;

fn nf_error(context: impl std::fmt::Display, e: netfilter::Error) -> Error {
    let code = match e {
        netfilter::Error::Invalid { .. } => code::INVALID_CONFIG,
        _ => code::INTERNAL,
    };
    Error::new(code, format!("{context}: {e}"))
}

/// The reference's error (code 999) for ADD and CHECK without a prevResult.
fn missing_prev_result() -> Error {
    Error::new(code::INTERNAL, "missing prevResult from earlier plugin")
}

/// Every address of the result, each once (the reference takes them all,
/// whatever interface they are on).
fn addresses(prev: &CniResult) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![];
    for ip in &prev.ips {
        let a = ip.address.ip();
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The bridge: the result's first interface, as the reference takes it.
fn bridge(conf: &Config, prev: &CniResult) -> Result<Option<String>> {
    if conf.ingress == IngressPolicy::Open {
        return Ok(None);
    }
    match prev.interfaces.first() {
        Some(i) if !i.name.is_empty() => Ok(Some(i.name.clone())),
        _ => Err(Error::invalid_config(format!(
            "interface needs to be set for ingress policy {:?}, make sure to chain \"firewall\" plugin with \"bridge\"",
            conf.ingress.as_str()
        ))),
    }
}

/// The configured backend, or firewalld when its D-Bus service answers,
/// else iptables (the reference's default).
fn backend(conf: &Config) -> Backend {
    conf.backend.unwrap_or_else(|| {
        if firewalld::is_running() {
            Backend::Firewalld
        } else {
            Backend::Iptables
        }
    })
}

fn netfilter_backend(b: Backend) -> Option<netfilter::Backend> {
    match b {
        Backend::Iptables => Some(netfilter::Backend::Iptables),
        Backend::Nftables => Some(netfilter::Backend::Nftables),
        Backend::Firewalld => None,
    }
}

fn firewall<'a>(
    req: &'a Request,
    container_id: &'a str,
    ifname: &'a str,
    conf: &'a Config,
    addrs: &'a [IpAddr],
    bridge: Option<&'a str>,
) -> Firewall<'a> {
    Firewall {
        attachment: Attachment {
            network: &req.config.name,
            container_id,
            ifname,
        },
        admin_chain: &conf.admin_chain,
        addresses: addrs,
        ingress: conf.ingress,
        bridge,
    }
}

/// What ADD and CHECK read first, in this order: the configuration,
/// prevResult (required), the bridge its ingress policy needs, and every
/// address.
struct Chained {
    conf: Config,
    prev: CniResult,
    bridge: Option<String>,
    addrs: Vec<IpAddr>,
}

impl Chained {
    fn read(req: &Request) -> Result<Chained> {
        let conf = config::parse(req)?;
        let Some(prev) = req.prev_result()? else {
            return Err(missing_prev_result());
        };
        let bridge = bridge(&conf, &prev)?;
        let addrs = addresses(&prev);
        Ok(Chained {
            conf,
            prev,
            bridge,
            addrs,
        })
    }

    /// The rules of the request's attachment.
    fn firewall<'a>(&'a self, req: &'a Request) -> Firewall<'a> {
        firewall(
            req,
            &req.container_id,
            &req.ifname,
            &self.conf,
            &self.addrs,
            self.bridge.as_deref(),
        )
    }
}

/// Remove the rules of one attachment (DEL and GC).
fn remove(backend: Backend, conf: &Config, fw: &Firewall<'_>) -> Result<()> {
    let iptables = |fw| {
        netfilter::firewall::del(netfilter::Backend::Iptables, fw)
            .map_err(|e| nf_error("failed to remove firewall rules", e))
    };
    match netfilter_backend(backend) {
        Some(b) => netfilter::firewall::del(b, fw)
            .map_err(|e| nf_error("failed to remove firewall rules", e)),
        None => {
            firewalld::remove_sources(&conf.zone, fw.addresses)?;
            // Chosen because firewalld answers now: the ADD may have run
            // before it did, with iptables (no process to find out).
            if conf.backend.is_none() {
                iptables(fw)?;
            }
            Ok(())
        }
    }
}

impl Plugin for FirewallPlugin {
    const NAME: &'static str = "firewall";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let chained = Chained::read(req)?;
        let (conf, addrs) = (&chained.conf, &chained.addrs);
        let fw = chained.firewall(req);
        let backend = backend(conf);
        // Recorded before any rule exists, so a DEL or GC after an ADD
        // that died half-way still finds the addresses.
        Records::new(&conf.data_dir, &req.config.name)
            .save(&req.container_id, &req.ifname, addrs)
            .map_err(|e| Error::io(format!("failed to record the container's addresses: {e}")))?;
        match netfilter_backend(backend) {
            Some(b) => netfilter::firewall::add(b, &fw)
                .map_err(|e| nf_error("failed to set up firewall rules", e))?,
            None => {
                firewalld::add_sources(&conf.zone, addrs)?;
                // The reference applies the ingress policy with iptables
                // whatever the backend.
                netfilter::firewall::add_ingress_policy(&fw)
                    .map_err(|e| nf_error("failed to set up the ingress policy", e))?;
            }
        }
        Ok(chained.prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        let records = Records::new(&conf.data_dir, &req.config.name);
        let record = records.load(&req.container_id, &req.ifname);
        let mut addrs = match req.prev_result() {
            Ok(Some(prev)) => addresses(&prev),
            Ok(None) => vec![],
            Err(e) => return Err(e),
        };
        for a in record.iter().flat_map(|r| r.addresses.iter()) {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
        // DEL leaves the per-bridge isolation rules (other containers may
        // be on the bridge), as the reference does: no bridge needed.
        let mut fw = firewall(req, &req.container_id, &req.ifname, &conf, &addrs, None);
        fw.ingress = IngressPolicy::Open;
        remove(backend(&conf), &conf, &fw)?;
        records
            .remove_attachment(&req.container_id, &req.ifname)
            .map_err(|e| Error::io(format!("failed to remove the address record: {e}")))
    }

    fn check(&self, req: &Request) -> Result<()> {
        let chained = Chained::read(req)?;
        let (conf, addrs) = (&chained.conf, &chained.addrs);
        let fw = chained.firewall(req);
        match netfilter_backend(backend(conf)) {
            Some(b) => netfilter::firewall::check(b, &fw)
                .map_err(|e| nf_error("firewall rules check failed", e)),
            None => firewalld::check_sources(&conf.zone, addrs),
        }
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        // Without the key the runtime has said nothing about what is
        // valid: remove nothing.
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let records = Records::new(&conf.data_dir, &req.config.name);
        let all = records.all();
        let is_valid = |r: &records::Record| {
            valid
                .iter()
                .any(|a| a.container_id == r.container_id && a.ifname == r.ifname)
        };
        let kept: Vec<IpAddr> = all
            .iter()
            .filter(|r| is_valid(r))
            .flat_map(|r| r.addresses.iter().copied())
            .collect();
        let backend = backend(&conf);
        let mut errors = vec![];
        for r in all.iter().filter(|r| !is_valid(r)) {
            // An address now held by a valid attachment keeps its rules.
            let addrs: Vec<IpAddr> = r
                .addresses
                .iter()
                .copied()
                .filter(|a| !kept.contains(a))
                .collect();
            let mut fw = firewall(req, &r.container_id, &r.ifname, &conf, &addrs, None);
            fw.ingress = IngressPolicy::Open;
            let removed = remove(backend, &conf, &fw).and_then(|()| {
                records
                    .remove(r)
                    .map_err(|e| Error::io(format!("failed to remove a record: {e}")))
            });
            if let Err(e) = removed {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                code::INTERNAL,
                format!("firewall GC failed: {}", errors.join("; ")),
            ))
        }
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        let b = backend(&conf);
        let r = match netfilter_backend(b) {
            Some(nb) => netfilter::firewall::status(nb).map_err(|e| e.to_string()),
            None => firewalld::status().map_err(|e| e.to_string()),
        };
        r.map_err(|e| {
            Error::new(
                code::NOT_AVAILABLE,
                format!("the {} backend is not usable: {e}", b.as_str()),
            )
        })
    }
}

fn main() {
    cni::run(&FirewallPlugin)
}
