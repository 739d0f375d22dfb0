//! The firewalld backend: each container address (`<ip>/32`, `<ip>/128`)
//! becomes a source of the zone in firewalld's runtime configuration, over
//! the system D-Bus (`org.fedoraproject.FirewallD1.zone`), as the reference
//! does. No `firewall-cmd` process.

use std::net::IpAddr;
use std::time::Duration;

use cni::{Error, Result, code};
use zbus::blocking::Connection;

const DBUS_NAME: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const FIREWALLD_NAME: &str = "org.fedoraproject.FirewallD1";
const FIREWALLD_PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_INTERFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// firewalld's error when the source is in the zone already.
const ZONE_ALREADY_SET: &str = "ZONE_ALREADY_SET";
/// A firewalld that does not answer must not hang the runtime.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set).
fn connect() -> zbus::Result<Connection> {
    zbus::blocking::connection::Builder::system()?
        .method_timeout(CALL_TIMEOUT)
        .build()
}

/// The source string the reference uses for an address.
fn source(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Whether firewalld's name has an owner on the system bus.
pub fn is_running() -> bool {
    let Ok(conn) = connect() else {
        return false;
    };
    conn.call_method(
        Some(DBUS_NAME),
        DBUS_PATH,
        Some(DBUS_NAME),
        "GetNameOwner",
        &(FIREWALLD_NAME,),
    )
    .is_ok()
}

fn bus_error(e: zbus::Error) -> Error {
    Error::new(
        code::INTERNAL,
        format!("firewalld backend: cannot reach the system D-Bus: {e}"),
    )
}

fn zone_call(
    conn: &Connection,
    method: &str,
    zone: &str,
    src: &str,
) -> zbus::Result<zbus::Message> {
    conn.call_method(
        Some(FIREWALLD_NAME),
        FIREWALLD_PATH,
        Some(ZONE_INTERFACE),
        method,
        &(zone, src),
    )
}

pub fn add_sources(zone: &str, addrs: &[IpAddr]) -> Result<()> {
    let conn = connect().map_err(bus_error)?;
    for ip in addrs {
        let src = source(ip);
        if let Err(e) = zone_call(&conn, "addSource", zone, &src)
            && !e.to_string().contains(ZONE_ALREADY_SET)
        {
            return Err(Error::new(
                code::INTERNAL,
                format!("failed to add the address {src} to {zone} zone: {e}"),
            ));
        }
    }
    Ok(())
}

/// As the reference: errors are ignored (a source that is not there, or a
/// firewalld that stopped and forgot its runtime configuration, leaves
/// nothing to remove).
pub fn remove_sources(zone: &str, addrs: &[IpAddr]) -> Result<()> {
    let Ok(conn) = connect() else {
        return Ok(());
    };
    for ip in addrs {
        let src = source(ip);
        if let Err(e) = zone_call(&conn, "removeSource", zone, &src) {
            eprintln!("firewall: removing {src} from zone {zone}: {e}");
        }
    }
    Ok(())
}

/// Each address is a source of the zone (the reference only fails when
/// the query itself fails; an answer of "no" fails here too).
pub fn check_sources(zone: &str, addrs: &[IpAddr]) -> Result<()> {
    let conn = connect().map_err(bus_error)?;
    for ip in addrs {
        let src = source(ip);
        let found = zone_call(&conn, "querySource", zone, &src)
            .and_then(|m| m.body().deserialize::<bool>());
        if !matches!(found, Ok(true)) {
            return Err(Error::new(
                code::INTERNAL,
                format!("failed to find the address {src} in {zone} zone"),
            ));
        }
    }
    Ok(())
}

pub fn status() -> Result<()> {
    if is_running() {
        Ok(())
    } else {
        Err(Error::new(
            code::NOT_AVAILABLE,
            "firewalld is not running on the system D-Bus",
        ))
    }
}
