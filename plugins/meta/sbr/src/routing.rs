//! The work inside the container namespace: rules, tables, route moves.

use std::net::IpAddr;

use cni::{Error, IpConfig, Result, Rollback};
use ipnetwork::IpNetwork;
use link::{KernelRoute, Netlink, Route, Rule, scope};

use crate::config::Config;

/// The reference's first candidate table.
const FIRST_TABLE: u32 = 100;
const MAIN_TABLE: u32 = 254;

fn internal(what: &'static str) -> impl Fn(link::Error) -> Error {
    move |e| Error::internal(format!("{what}: {e}"))
}

/// The first table from `from` that no rule and no route uses. The
/// reference means the same but its route listing sees only the main
/// table, so it can pick a table that already holds routes. The default,
/// main and local tables (253–255) are never picked.
fn next_free_table(rules: &[Rule], routes: &[KernelRoute], from: u32) -> u32 {
    let mut t = from;
    while (253..=255).contains(&t)
        || rules.iter().any(|r| r.table == t)
        || routes.iter().any(|r| r.table == t)
    {
        t += 1;
    }
    t
}

pub fn setup(nl: &Netlink, ips: &[IpConfig], ifname: &str, conf: &Config) -> Result<()> {
    let mut undo = Rollback::new("sbr");
    match conf.table {
        Some(table) => rules_only(nl, ips, table, &mut undo)?,
        None => move_routes(nl, ips, ifname, conf, &mut undo)?,
    }
    undo.commit();
    Ok(())
}

/// Undo of an added source rule: the rule from `ip` to `table`.
fn undo_rule<'a>(undo: &mut Rollback<'a>, nl: &'a Netlink, ip: IpAddr, table: u32) {
    undo.push("a source rule", move || {
        let rules = nl.rules().map_err(|e| e.to_string())?;
        for r in rules
            .iter()
            .filter(|r| r.table == table && r.source_host() == Some(ip))
        {
            nl.delete_rule(r).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
}

/// With a fixed `table` the reference adds the source rules and nothing
/// else: filling the table is the user's business.
fn rules_only<'a>(
    nl: &'a Netlink,
    ips: &[IpConfig],
    table: u32,
    undo: &mut Rollback<'a>,
) -> Result<()> {
    for ip in ips {
        let addr = ip.address.ip();
        nl.add_source_rule(addr, table)
            .map_err(internal("failed to add rule"))?;
        undo_rule(undo, nl, addr, table);
    }
    Ok(())
}

fn move_routes<'a>(
    nl: &'a Netlink,
    ips: &[IpConfig],
    ifname: &str,
    conf: &Config,
    undo: &mut Rollback<'a>,
) -> Result<()> {
    let rules = nl.rules().map_err(internal("Failed to list all rules"))?;
    let all_routes = nl
        .kernel_routes(None, None)
        .map_err(internal("Failed to list all routes"))?;
    let mut table = next_free_table(&rules, &all_routes, FIRST_TABLE);
    let link = nl
        .link_by_name(ifname)
        .map_err(|e| Error::internal(format!("Cannot find network interface {ifname}: {e}")))?
        .ok_or_else(|| {
            Error::internal(format!(
                "Cannot find network interface {ifname}: Link not found"
            ))
        })?;
    let routes = nl
        .kernel_routes(Some(MAIN_TABLE), Some(link.index))
        .map_err(internal("Unable to list routes"))?;

    for ip in ips {
        let addr = ip.address.ip();
        nl.add_source_rule(addr, table)
            .map_err(internal("Failed to add rule"))?;
        undo_rule(undo, nl, addr, table);
        // Whatever this table got through the interface goes with it.
        let oif = link.index;
        undo.push("routes in the new table", move || {
            for r in nl
                .kernel_routes(Some(table), Some(oif))
                .map_err(|e| e.to_string())?
            {
                nl.delete_kernel_route(&r).map_err(|e| e.to_string())?;
            }
            Ok(())
        });

        // The previous plugin's default route may be gone from the main
        // table by now, so the table gets one of its own.
        let gateway = conf.gateways.for_family(addr).or(ip.gateway);
        if let (Some(gw), Some(dst)) = (gateway, unspecified(addr)) {
            let mut default = Route::to(dst);
            default.gateway = Some(gw);
            default.oif = Some(link.index);
            default.table = Some(table);
            nl.add_route(&default).map_err(|e| {
                Error::internal(format!("Failed to add default route to {gw}: {e}"))
            })?;
        }
        // The interface's routes that belong to this address (by
        // preferred source or gateway), and the generic ones with
        // neither, are copied; "replace", since the default route added
        // above may be among them.
        for r in routes.iter().filter(|r| belongs_to(r, &ip.address)) {
            nl.copy_route_to_table(r, table)
                .map_err(internal("Failed to readd route"))?;
        }
        table = next_free_table(&rules, &all_routes, table + 1);
    }

    if conf.add_source_hints {
        // Destination-based routing keeps working for traffic with no
        // source chosen yet: the subnet routes stay in main, with the
        // address as preferred source; everything else leaves main.
        for ip in ips {
            let subnet =
                IpNetwork::new(ip.address.network(), ip.address.prefix()).unwrap_or(ip.address);
            if let Err(e) = nl.replace_link_route(link.index, subnet, ip.address.ip()) {
                eprintln!("sbr: failed to add subnet route to main table: {e}");
            }
        }
        for r in routes.iter().filter(|r| r.scope != scope::LINK) {
            if let Err(e) = nl.delete_kernel_route(r) {
                eprintln!("sbr: failed to delete route {r}: {e}");
            }
        }
    } else {
        // Only now, so that several addresses of one subnet each find the
        // subnet route when their default route is added.
        for r in &routes {
            nl.delete_kernel_route(r)
                .map_err(internal("Failed to delete route"))?;
            let r = r.clone();
            undo.push("a route removed from main", move || {
                nl.copy_route_to_table(&r, MAIN_TABLE)
                    .map_err(|e| e.to_string())
            });
        }
    }
    Ok(())
}

fn belongs_to(r: &KernelRoute, address: &IpNetwork) -> bool {
    let within = |ip: Option<IpAddr>| ip.is_some_and(|ip| address.contains(ip));
    within(r.prefsrc) || within(r.gateway) || (r.prefsrc.is_none() && r.gateway.is_none())
}

fn unspecified(like: IpAddr) -> Option<IpNetwork> {
    let zero = match like {
        IpAddr::V4(_) => IpAddr::from([0u8; 4]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    };
    IpNetwork::new(zero, 0).ok()
}

/// DEL: the rules from the interface's addresses (those it has now, and
/// those prevResult recorded), and the routes through it in their tables.
pub fn teardown(nl: &Netlink, ifname: &str, conf: &Config, recorded: &[IpAddr]) -> Result<()> {
    let mut rules = nl
        .rules()
        .map_err(internal("Failed to list all rules to tidy"))?;
    if let Some(t) = conf.table {
        rules.retain(|r| r.table == t);
    }
    let link = nl
        .link_by_name(ifname)
        .map_err(|e| Error::internal(format!("Failed to get link {ifname}: {e}")))?;
    let mut addrs: Vec<IpAddr> = recorded.to_vec();
    if let Some(l) = &link {
        let current = nl
            .addresses(Some(l.index))
            .map_err(internal("Failed to list all addrs"))?;
        addrs.extend(current.iter().map(|a| a.network.ip()));
    }
    let mut first_error = None;
    let mut tables = Vec::new();
    for rule in rules
        .iter()
        .filter(|r| r.source_host().is_some_and(|ip| addrs.contains(&ip)))
    {
        match nl.delete_rule(rule) {
            Ok(_) => tables.push(rule.table),
            Err(e) => {
                first_error.get_or_insert(Error::internal(format!("Failed to delete rule {e}")));
            }
        }
    }
    // Tables we filled (not a fixed one, which is the user's): without
    // the rule their routes are dead weight until the link goes.
    if let (None, Some(l)) = (conf.table, &link) {
        for t in tables {
            for r in nl
                .kernel_routes(Some(t), Some(l.index))
                .map_err(internal("Unable to list routes"))?
            {
                if let Err(e) = nl.delete_kernel_route(&r) {
                    first_error
                        .get_or_insert(Error::internal(format!("Failed to delete route: {e}")));
                }
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// CHECK: every address has its source rule (to the fixed table, if one is
/// configured), and a table sbr filled still routes through the interface.
pub fn check(nl: &Netlink, ips: &[IpConfig], ifname: &str, conf: &Config) -> Result<()> {
    let rules = nl.rules().map_err(internal("Failed to list all rules"))?;
    let link = nl
        .link_by_name(ifname)
        .map_err(|e| Error::internal(format!("Failed to get link {ifname}: {e}")))?
        .ok_or_else(|| Error::internal(format!("sbr: interface {ifname} not found")))?;
    for ip in ips {
        let addr = ip.address.ip();
        let rule = rules
            .iter()
            .find(|r| r.source_host() == Some(addr) && conf.table.is_none_or(|t| r.table == t));
        let Some(rule) = rule else {
            return Err(Error::internal(format!(
                "sbr: no rule from {addr} for interface {ifname}"
            )));
        };
        if conf.table.is_none() {
            let routes = nl
                .kernel_routes(Some(rule.table), Some(link.index))
                .map_err(internal("Unable to list routes"))?;
            if routes.is_empty() {
                return Err(Error::internal(format!(
                    "sbr: table {} of {addr} has no route through {ifname}",
                    rule.table
                )));
            }
        }
    }
    Ok(())
}
