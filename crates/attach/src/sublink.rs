//! The verbs of the plugins that stack one link on a parent ("master") and
//! move it into the container: macvlan, ipvlan, vlan. Each plugin decides
//! its keys and defaults and hands a [`Plan`] to these steps.

use crate::open_netns;
use cni::{CniResult, Command, Error, Interface, Request, Result, Rollback};
use link::{Link, MacAddr, Netlink, SubLinkInfo, SubLinkKind, SubLinkOptions};
use netns::NetNs;

/// What to create, validated by the plugin.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plugin's name, for messages ("macvlan").
    pub plugin: &'static str,
    pub master: String,
    /// The master lives in the container namespace.
    pub link_in_container: bool,
    pub kind: SubLinkKind,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    /// IPAM plugin type; `None` with no `addresses` is an L2-only link.
    pub ipam: Option<String>,
    /// Addresses to use instead of IPAM (ipvlan chained after another
    /// plugin without an `ipam` block).
    pub addresses: Option<CniResult>,
    /// Set `arp_notify`/`ndisc_notify` before configuring (macvlan, ipvlan).
    pub notify_sysctls: bool,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

/// The connection to the namespace the master lives in.
pub fn master_side(req: &Request, link_in_container: bool) -> Result<Netlink> {
    if link_in_container {
        Netlink::in_netns(&open_netns(&req.netns)?).map_err(internal)
    } else {
        Netlink::current().map_err(internal)
    }
}

/// The master link, or the reference's lookup error.
pub fn find_master(nl: &Netlink, master: &str) -> Result<Link> {
    nl.link_by_name(master)
        .map_err(|e| Error::internal(format!("failed to lookup master {master:?}: {e}")))?
        .ok_or_else(|| {
            Error::internal(format!(
                "failed to lookup master {master:?}: Link not found"
            ))
        })
}

/// `master` when set; otherwise the link of the default route (in the
/// container when `link_in_container`), as the reference picks it.
pub fn resolve_master(req: &Request, master: &str, link_in_container: bool) -> Result<String> {
    if !master.is_empty() {
        return Ok(master.to_string());
    }
    let nl = master_side(req, link_in_container)?;
    nl.default_route_link()
        .map_err(internal)?
        .ok_or_else(|| Error::internal("no default route interface found"))
}

/// The master's MTU, for the `mtu ≤ master` rule of macvlan and vlan.
pub fn master_mtu(req: &Request, master: &str, link_in_container: bool) -> Result<u32> {
    let nl = master_side(req, link_in_container)?;
    Ok(find_master(&nl, master)?.mtu)
}

/// ADD: the link first (so DHCP sees its MAC), then IPAM, then addresses
/// and routes. Any failure removes what was made — the link and the IPAM
/// reservation — so a failed ADD leaves nothing in the container.
pub fn add(req: &Request, plan: &Plan) -> Result<CniResult> {
    let ns = open_netns(&req.netns)?;
    if let Some(ipam) = plan.ipam.as_deref() {
        cni::delegate::find_in_path(ipam, &req.path)?;
    }
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    let host;
    let parent_side = if plan.link_in_container {
        &cont
    } else {
        host = Netlink::current().map_err(internal)?;
        &host
    };
    let master = find_master(parent_side, &plan.master)?;
    if cont.link_by_name(&req.ifname).map_err(internal)?.is_some() {
        return Err(Error::internal(format!(
            "failed to create {}: container interface {:?} already exists",
            plan.plugin, req.ifname
        )));
    }
    let mut undo = Rollback::new(plan.plugin);
    let iface = create(parent_side, &cont, &ns, req, plan, master.index, &mut undo)?;
    let mut result = CniResult {
        interfaces: vec![iface],
        ..Default::default()
    };
    let addresses = match (&plan.addresses, plan.ipam.as_deref()) {
        (Some(prev), _) => Some(prev.clone()),
        (None, Some(ipam)) => {
            let r = req.delegate_add(ipam)?;
            undo.push("IPAM reservation", move || {
                req.delegate(ipam, Command::Del).map_err(|e| e.to_string())
            });
            if r.ips.is_empty() {
                return Err(Error::internal("IPAM plugin returned missing IP config"));
            }
            Some(r)
        }
        (None, None) => None,
    };
    match addresses {
        Some(a) => {
            result.ips = a.ips;
            result.routes = a.routes;
            // Every address belongs to the one interface.
            for ipc in &mut result.ips {
                ipc.interface = Some(0);
            }
            if plan.notify_sysctls {
                crate::set_notify_sysctls(&cont, &req.ifname)?;
            }
            // Routes via an IPv6 gateway wait for DAD, as the reference's
            // ConfigureIface does.
            let v6_gateway = result
                .ips
                .iter()
                .any(|i| i.gateway.is_some_and(|g| g.is_ipv6()));
            crate::configure(&cont, &req.ifname, &result, v6_gateway)?;
        }
        None => {
            let l = cont.require_link(&req.ifname).map_err(|e| {
                Error::internal(format!(
                    "failed to find interface name {:?}: {e}",
                    req.ifname
                ))
            })?;
            cont.set_up(l.index)
                .map_err(|e| Error::internal(format!("failed to set {:?} UP: {e}", req.ifname)))?;
        }
    }
    if let Some(dns) = &req.config.dns {
        result.dns = dns.clone();
    }
    undo.commit();
    Ok(result)
}

/// Create the link under its final name directly inside the container (one
/// request; nothing ever appears under a temporary name on the host).
fn create<'a>(
    parent_side: &Netlink,
    cont: &'a Netlink,
    ns: &NetNs,
    req: &Request,
    plan: &Plan,
    parent_index: u32,
    undo: &mut Rollback<'a>,
) -> Result<Interface> {
    let opts = SubLinkOptions {
        name: &req.ifname,
        kind: plan.kind,
        parent_index,
        mtu: plan.mtu,
        mac: plan.mac,
        target_ns: (!plan.link_in_container).then_some(ns),
    };
    parent_side.create_sublink(&opts).map_err(|e| {
        let hint = match plan.kind {
            // The name is free (checked by the kernel in the container):
            // the VLAN id is taken on this master, by another attachment.
            SubLinkKind::Vlan { id } if e.is_exists() => format!(
                " (one VLAN {id} link per master: to share the VLAN between attachments, \
                 create it next to the master, e.g. `ip link add link {m} name {m}.{id} type vlan id {id}`)",
                m = plan.master
            ),
            _ => String::new(),
        };
        Error::internal(format!("failed to create {}: {e}{hint}", plan.plugin))
    })?;
    let made = cont.require_link(&req.ifname).map_err(|e| {
        Error::internal(format!(
            "failed to refetch {} {:?}: {e}",
            plan.plugin, req.ifname
        ))
    })?;
    let index = made.index;
    undo.push("container link", move || {
        cont.delete_link(index)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Ok(Interface {
        name: req.ifname.clone(),
        mac: made.mac.map(|m| m.to_string()),
        sandbox: Some(req.netns.clone()),
        ..Default::default()
    })
}

/// The `mtu` key as macvlan and vlan read it: 0 (the master's) or more,
/// with the reference's message.
pub fn parse_mtu(mtu: i64) -> Result<u32> {
    u32::try_from(mtu)
        .map_err(|_| Error::invalid_config(format!("invalid MTU {mtu}, must be [0, master MTU]")))
}

/// `mtu` is at most the master's (macvlan, vlan), with the reference's
/// message.
pub fn check_mtu(req: &Request, master: &str, link_in_container: bool, mtu: u32) -> Result<()> {
    let master_mtu = master_mtu(req, master, link_in_container)?;
    if mtu > master_mtu {
        return Err(Error::invalid_config(format!(
            "invalid MTU {mtu}, must be [0, master MTU({master_mtu})]"
        )));
    }
    Ok(())
}

/// DEL: release the addresses and delete the link; both steps run even if
/// one fails. A missing link, an empty `CNI_NETNS` or a namespace that is
/// already gone is success.
pub fn del(req: &Request, plugin: &str, ipam: Option<&str>) -> Result<()> {
    let ipam_result = match ipam {
        Some(ipam) => req.delegate(ipam, Command::Del),
        None => Ok(()),
    };
    let link_result = delete_link(req);
    for e in [&ipam_result, &link_result]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        eprintln!("{plugin} DEL: {e}");
    }
    ipam_result.and(link_result)
}

fn delete_link(req: &Request) -> Result<()> {
    if req.netns.is_empty() {
        return Ok(());
    }
    let Some(ns) = crate::open_netns_if_exists(&req.netns)? else {
        return Ok(());
    };
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    if let Some(l) = cont.link_by_name(&req.ifname).map_err(internal)? {
        cont.delete_link(l.index)
            .map_err(|e| Error::internal(format!("failed to delete {:?}: {e}", req.ifname)))?;
    }
    Ok(())
}

/// What CHECK expects of the container link besides its kind.
pub trait Expect {
    /// An error when the link's mode/VLAN id/MTU differ from the config.
    fn check(&self, name: &str, link: &Link, info: Option<SubLinkInfo>) -> Result<()>;
}

/// CHECK: IPAM's view, the prevResult's container interface in this
/// namespace, the master, the link's kind and settings, addresses, routes.
pub fn check(req: &Request, plan: &Plan, expect: &dyn Expect) -> Result<()> {
    let ns = open_netns(&req.netns)?;
    if let Some(ipam) = plan.ipam.as_deref() {
        req.delegate(ipam, Command::Check)?;
    }
    let prev = req.require_prev_result()?;
    let entry = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.ifname && i.sandbox.as_deref() == Some(req.netns.as_str()));
    let Some(entry) = entry else {
        return Err(Error::internal(format!(
            "Sandbox in prevResult  doesn't match configured netns: {}",
            req.netns
        )));
    };
    let cont = Netlink::in_netns(&ns).map_err(internal)?;
    if plan.master.is_empty() {
        // Not configured and not derivable (ipvlan's chained master).
    } else if plan.link_in_container {
        find_master(&cont, &plan.master)?;
    } else {
        find_master(&Netlink::current().map_err(internal)?, &plan.master)?;
    }
    let l = cont
        .link_by_name(&entry.name)
        .map_err(internal)?
        .ok_or_else(|| {
            Error::internal(format!(
                "Container Interface name in prevResult: {} not found",
                entry.name
            ))
        })?;
    if l.kind.as_deref() != Some(plan.kind.kind_name()) {
        return Err(Error::internal(format!(
            "Error: Container interface {} not of type {}",
            l.name,
            plan.kind.kind_name()
        )));
    }
    expect.check(&entry.name, &l, l.sublink)?;
    if let Some(want) = entry.mac.as_deref() {
        let have = l.mac.map(|m| m.to_string()).unwrap_or_default();
        if !want.eq_ignore_ascii_case(&have) {
            return Err(Error::internal(format!(
                "Interface {} Mac {want} doesn't match container Mac: {have}",
                entry.name
            )));
        }
    }
    crate::check_addresses(&cont, &l, &prev)?;
    crate::check_routes(&cont, &l, &prev)
}

/// STATUS: IPAM ready, and (unlike the reference, which leaves it as a
/// TODO) the master exists. A master inside the container cannot be
/// checked without a container and is not.
pub fn status(
    req: &Request,
    master: &str,
    link_in_container: bool,
    ipam: Option<&str>,
) -> Result<()> {
    if let Some(ipam) = ipam {
        req.delegate(ipam, Command::Status)?;
    }
    if link_in_container {
        return Ok(());
    }
    let host = Netlink::current().map_err(internal)?;
    if master.is_empty() {
        return match host.default_route_link().map_err(internal)? {
            Some(_) => Ok(()),
            None => Err(Error::new(
                cni::code::NOT_AVAILABLE,
                "no master given and no default route interface found",
            )),
        };
    }
    match host.link_by_name(master).map_err(internal)? {
        Some(_) => Ok(()),
        None => Err(Error::new(
            cni::code::NOT_AVAILABLE,
            format!("master {master:?} not found"),
        )),
    }
}

/// GC: nothing of ours outlives a namespace; IPAM may hold leases.
pub fn gc(req: &Request, ipam: Option<&str>) -> Result<()> {
    match ipam {
        Some(ipam) => req.delegate(ipam, Command::Gc),
        None => Ok(()),
    }
}

/// The decisions of one sublink plugin (macvlan, ipvlan, vlan): its
/// configuration, what ADD creates and what CHECK expects. [`run`] handles
/// the CNI verbs with them, the same way for every such plugin.
pub trait Decisions: Sized {
    /// Name printed when run by hand, and in DEL's messages.
    const NAME: &'static str;
    const VERSION: &'static str;

    /// Everything that can be checked without the kernel.
    fn parse(req: &Request) -> Result<Self>;

    /// What ADD creates (may look at the master).
    fn add_plan(self, req: &Request) -> Result<Plan>;

    /// What CHECK compares the container link with.
    fn check_plan(self, req: &Request) -> Result<(Plan, Box<dyn Expect>)>;

    /// The master STATUS looks for (empty: the default route's link), and
    /// whether it lives in the container (`linkInContainer`).
    fn status_master(&self) -> Result<(String, bool)>;
}

/// The CNI verbs of a sublink plugin. DEL, STATUS and GC parse the
/// configuration (so a bad one fails as in ADD) and ask the `ipam` block's
/// plugin, which is what each plugin's configuration holds as its IPAM.
struct Verbs<D>(std::marker::PhantomData<D>);

impl<D: Decisions> cni::Plugin for Verbs<D> {
    const NAME: &'static str = D::NAME;
    const VERSION: &'static str = D::VERSION;

    fn add(&self, req: &Request) -> Result<CniResult> {
        add(req, &D::parse(req)?.add_plan(req)?)
    }

    /// Needs no master: DEL works after the master is gone.
    fn del(&self, req: &Request) -> Result<()> {
        D::parse(req)?;
        del(req, D::NAME, req.config.ipam_type())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let (plan, expect) = D::parse(req)?.check_plan(req)?;
        check(req, &plan, expect.as_ref())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let (master, link_in_container) = D::parse(req)?.status_master()?;
        status(req, &master, link_in_container, req.config.ipam_type())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        D::parse(req)?;
        gc(req, req.config.ipam_type())
    }
}

/// Run the sublink plugin `D` against the process environment, then exit.
pub fn run<D: Decisions>() -> ! {
    cni::run(&Verbs::<D>(std::marker::PhantomData))
}
