//! VLANs on the host port, and the `<bridge>.<vlan>` interface that carries
//! the gateway address when the bridge is the gateway of an access VLAN.

use cni::{Error, Result};
use link::{Link, Netlink, VethOptions, VlanEntry};

use crate::config::Settings;

/// The reference's port VLAN setup: drop the default PVID unless asked to
/// keep it, add the access VLAN as PVID/untagged, the trunk as tagged.
pub fn configure_port(host: &Netlink, port: u32, s: &Settings) -> Result<()> {
    if s.vlan == 0 && s.trunk.is_empty() {
        return Ok(());
    }
    let err =
        |e: link::Error| Error::internal(format!("failed to setup vlan tag on interface: {e}"));
    if !s.preserve_default_vlan {
        host.clear_port_vlans(port).map_err(err)?;
    }
    let native = if s.vlan != 0 { s.vlan } else { 1 };
    host.add_port_vlan(
        port,
        VlanEntry {
            vid: native,
            pvid: true,
            untagged: true,
        },
    )
    .map_err(err)?;
    for &vid in s.trunk.iter().filter(|v| **v != native) {
        host.add_port_vlan(
            port,
            VlanEntry {
                vid,
                pvid: false,
                untagged: false,
            },
        )
        .map_err(err)?;
    }
    Ok(())
}

/// `<bridge>.<vlan>`: one end of a host-only veth pair whose other end is a
/// bridge port in the VLAN, created once and shared by every container of
/// that VLAN (so never removed by DEL).
pub fn ensure_gateway_interface(host: &Netlink, bridge: &Link, s: &Settings) -> Result<Link> {
    let name = format!("{}.{}", bridge.name, s.vlan);
    if let Some(l) = host
        .link_by_name(&name)
        .map_err(|e| Error::internal(format!("failed to find interface {name:?}: {e}")))?
    {
        return Ok(l);
    }
    let fail = |e: String| Error::internal(format!("faild to create vlan gateway {name:?}: {e}"));
    let pair = host
        .create_veth(&VethOptions {
            container_name: &name,
            container_ns: host.netns(),
            host_name: None,
            bridge_index: Some(bridge.index),
            mtu: Some(bridge.mtu),
            container_mac: None,
        })
        .map_err(|e| fail(e.to_string()))?;
    configure_port(host, pair.host.index, s).map_err(|e| fail(e.msg))?;
    let gw = host.require_link(&name).map_err(|e| fail(e.to_string()))?;
    host.set_up(gw.index).map_err(|e| fail(e.to_string()))?;
    host.require_link(&name).map_err(|e| fail(e.to_string()))
}
