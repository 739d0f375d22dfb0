//! The `tuning` plugin: sysctls and link attributes (MAC, MTU, promiscuous
//! and all-multicast mode, transmit queue length) of the container's
//! interface, chained after the plugin that created it.
//!
//! Differences from the reference, each deliberate:
//! - DEL restores the sysctls ADD changed, not only the link attributes.
//! - Everything is validated before anything changes; an ADD that fails
//!   halfway undoes what it did; the record of previous values is written
//!   before the first change, so DEL undoes an ADD that was killed.
//! - A dotted interface name (`eth0.100`) gets the kernel's sysctl path;
//!   `args.cni.sysctl` works without a top-level `sysctl`; CHECK
//!   substitutes `IFNAME`.
//! - GC removes records of attachments that are gone; STATUS is answered.
//! - DEL of a container whose namespace is gone removes its record.

mod config;
mod record;

use cni::{CniResult, Error, Plugin, Request, Result};
use link::{Link, Netlink, sysctl};
use netns::NetNs;

use config::Config;
use record::Record;

struct Tuning;

fn netlink_in(ns: &NetNs) -> Result<Netlink> {
    Netlink::in_netns(ns)
        .map_err(|e| Error::internal(format!("failed to open netlink in the container: {e}")))
}

fn find_link(nl: &Netlink, ifname: &str) -> Result<Link> {
    nl.link_by_name(ifname)
        .map_err(|e| Error::internal(format!("failed to get {ifname:?}: {e}")))?
        .ok_or_else(|| Error::internal(format!("failed to get {ifname:?}: Link not found")))
}

/// Run `f` on a thread inside `ns` (sysctls are per thread's namespace).
fn in_ns<T: Send>(ns: &NetNs, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    ns.run(f)
        .map_err(|e| Error::internal(e.to_string()))
        .and_then(|r| r)
}

/// The values ADD is about to change, as they are now.
fn snapshot(ns: &NetNs, link: Option<&Link>, conf: &Config) -> Result<Record> {
    let mut rec = Record::default();
    if let Some(l) = link {
        if conf.mac.is_some() {
            rec.mac = l.mac.map(|m| m.to_string());
        }
        if conf.promisc {
            rec.promisc = Some(l.promisc);
        }
        if conf.mtu.is_some() {
            rec.mtu = Some(l.mtu);
        }
        if conf.allmulti.is_some() {
            rec.allmulti = Some(l.allmulti);
        }
        if conf.txqlen.is_some() {
            rec.txqlen = Some(l.txqlen);
        }
    }
    let sysctls = conf.sysctls.clone();
    let old = in_ns(ns, move || {
        sysctls
            .iter()
            .map(|s| {
                sysctl::read(&s.path)
                    .map(|v| (s.path.clone(), v))
                    .map_err(|e| {
                        Error::invalid_config(format!(
                            "cannot set sysctl {} to {:?}: {e}",
                            s.key, s.value
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    for (path, value) in old {
        rec.sysctl.entry(path).or_insert(value.into());
    }
    Ok(rec)
}

fn apply(ns: &NetNs, nl: &Netlink, link: Option<&Link>, conf: &Config) -> Result<()> {
    let sysctls = conf.sysctls.clone();
    in_ns(ns, move || {
        for s in &sysctls {
            sysctl::write(&s.path, &s.value).map_err(|e| {
                Error::io(format!(
                    "failed to set sysctl {} to {:?}: {e}",
                    s.key, s.value
                ))
            })?;
        }
        Ok(())
    })?;
    let Some(l) = link else { return Ok(()) };
    fn fail(what: &'static str) -> impl Fn(link::Error) -> Error {
        move |e| Error::internal(format!("failed to set {what}: {e}"))
    }
    if let Some(mac) = conf.mac {
        nl.set_mac(l.index, mac).map_err(fail("MAC address"))?;
    }
    if conf.promisc {
        nl.set_promisc(l.index, true)
            .map_err(fail("promiscuous mode"))?;
    }
    if let Some(mtu) = conf.mtu {
        nl.set_mtu(l.index, mtu).map_err(fail("MTU"))?;
    }
    if let Some(on) = conf.allmulti {
        nl.set_allmulti(l.index, on)
            .map_err(fail("all-multicast mode"))?;
    }
    if let Some(q) = conf.txqlen {
        nl.set_txqlen(l.index, q)
            .map_err(fail("transmit queue length"))?;
    }
    Ok(())
}

/// Put back what `rec` holds; every failure is collected, none stops the
/// rest. A link or sysctl that no longer exists is skipped.
fn restore(ns: &NetNs, ifname: &str, rec: &Record) -> Vec<String> {
    let mut errs = vec![];
    match netlink_in(ns).and_then(|nl| {
        let l = nl
            .link_by_name(ifname)
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok((nl, l))
    }) {
        Err(e) => errs.push(e.msg),
        Ok((_, None)) => {}
        Ok((nl, Some(l))) => {
            let mut note = |what: &str, r: link::Result<()>| {
                if let Err(e) = r {
                    errs.push(format!("failed to restore {what}: {e}"));
                }
            };
            if let Some(mtu) = rec.mtu {
                note("MTU", nl.set_mtu(l.index, mtu));
            }
            if let Some(mac) = &rec.mac {
                match mac.parse() {
                    Ok(m) => note("MAC address", nl.set_mac(l.index, m)),
                    Err(e) => note("MAC address", Err(e)),
                }
            }
            if let Some(p) = rec.promisc {
                note("promiscuous mode", nl.set_promisc(l.index, p));
            }
            if let Some(a) = rec.allmulti {
                note("all-multicast mode", nl.set_allmulti(l.index, a));
            }
            if let Some(q) = rec.txqlen {
                note("transmit queue length", nl.set_txqlen(l.index, q));
            }
        }
    }
    let sysctls: Vec<(String, String)> = rec
        .sysctl
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    match in_ns(ns, move || {
        Ok(sysctls
            .iter()
            .filter_map(|(k, v)| {
                sysctl::write_if_present(k, v)
                    .err()
                    .map(|e| format!("failed to restore sysctl {k}: {e}"))
            })
            .collect::<Vec<_>>())
    }) {
        Ok(mut e) => errs.append(&mut e),
        Err(e) => errs.push(e.msg),
    }
    errs
}

fn record_error(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::io(format!("failed to {what} {}: {e}", path.display()))
}

/// Sysctl values are compared with runs of whitespace collapsed (the
/// kernel prints multi-value keys with tabs).
fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

impl Plugin for Tuning {
    const NAME: &'static str = "tuning";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = config::parse(req)?;
        let mut prev = req.require_prev_result()?;
        if conf.sysctls.is_empty() && !conf.changes_link() {
            return Ok(prev);
        }
        let ns = attach::open_netns(&req.netns)?;
        let nl = netlink_in(&ns)?;
        let link = if conf.changes_link() {
            Some(find_link(&nl, &req.ifname)?)
        } else {
            None
        };
        let path = record::path(&conf.data_dir, &req.container_id, &req.ifname);
        let older = record::load(&path).map_err(|e| record_error("read", &path, e))?;
        let had_record = older.is_some();
        let mut rec = snapshot(&ns, link.as_ref(), &conf)?;
        if let Some(o) = older {
            rec = rec.keep_older(o);
        }
        record::store(&path, &rec).map_err(|e| record_error("save", &path, e))?;
        if let Err(e) = apply(&ns, &nl, link.as_ref(), &conf) {
            // Undo this ADD. A record from an earlier ADD stays as it was
            // (restoring it would undo that ADD too).
            if !had_record {
                let errs = restore(&ns, &req.ifname, &rec);
                if errs.is_empty() {
                    let _ = record::remove(&path);
                } else {
                    eprintln!("tuning: rollback incomplete: {}", errs.join("; "));
                }
            }
            return Err(e);
        }
        if let Some(mac) = conf.mac {
            for i in prev.interfaces.iter_mut().filter(|i| i.name == req.ifname) {
                i.mac = Some(mac.to_string());
            }
        }
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let dir = config::data_dir(req)?;
        let path = record::path(&dir, &req.container_id, &req.ifname);
        let Some(rec) = record::load(&path).map_err(|e| record_error("read", &path, e))? else {
            return record::remove(&path).map_err(|e| record_error("remove", &path, e));
        };
        // The interface and its sysctls went with the namespace.
        let ns = if req.netns.is_empty() {
            None
        } else {
            attach::open_netns_if_exists(&req.netns)?
        };
        if let Some(ns) = ns {
            let errs = restore(&ns, &req.ifname, &rec);
            if !errs.is_empty() {
                return Err(Error::internal(errs.join("; ")));
            }
        }
        record::remove(&path).map_err(|e| record_error("remove", &path, e))
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = config::parse(req)?;
        req.require_prev_result()?;
        let ns = attach::open_netns(&req.netns)?;
        let sysctls = conf.sysctls.clone();
        in_ns(&ns, move || {
            for s in &sysctls {
                let cur = sysctl::read(&s.path).map_err(|e| Error::internal(e.to_string()))?;
                if !same_value(&cur, &s.value) {
                    return Err(Error::internal(format!(
                        "Error: Tuning configured value of {} is {}, current value is {cur}",
                        s.key, s.value
                    )));
                }
            }
            Ok(())
        })?;
        let nl = netlink_in(&ns)?;
        let ifname = &req.ifname;
        let l = nl
            .link_by_name(ifname)
            .ok()
            .flatten()
            .ok_or_else(|| Error::internal(format!("Cannot find container link {ifname}")))?;
        let cur_mac = l.mac.map(|m| m.to_string()).unwrap_or_default();
        let mismatch = |what: &str, want: String, cur: String| {
            Err(Error::internal(format!(
                "Error: Tuning configured {what} of {ifname} is {want}, current value is {cur}"
            )))
        };
        if let Some(mac) = conf.mac
            && mac.to_string() != cur_mac
        {
            return mismatch("Ethernet", mac.to_string(), cur_mac);
        }
        if conf.promisc != l.promisc {
            return mismatch("promisc", conf.promisc.to_string(), l.promisc.to_string());
        }
        if let Some(mtu) = conf.mtu
            && mtu != l.mtu
        {
            return mismatch("MTU", mtu.to_string(), l.mtu.to_string());
        }
        if let Some(a) = conf.allmulti
            && a != l.allmulti
        {
            return mismatch("all-multicast mode", a.to_string(), l.allmulti.to_string());
        }
        if let Some(q) = conf.txqlen
            && q != l.txqlen
        {
            return mismatch("Transmit Queue Length", q.to_string(), l.txqlen.to_string());
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let dir = config::data_dir(req)?;
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let keep: Vec<String> = valid
            .iter()
            .map(|a| record::file_name(&a.container_id, &a.ifname))
            .collect();
        record::gc(&dir, &keep)
            .map(|_| ())
            .map_err(|e| record_error("clean up", &dir, e))
    }

    fn status(&self, req: &Request) -> Result<()> {
        config::data_dir(req).map(|_| ())
    }
}

fn main() {
    cni::run(&Tuning)
}
