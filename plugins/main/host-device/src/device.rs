//! Finding the host device, and moving it in and back out.

use std::path::{Path, PathBuf};

use cni::{Error, Result};
use link::{Link, Netlink};
use netns::NetNs;

use crate::config::{SYS_BUS_AUXILIARY, SYS_BUS_PCI, Selector};

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

/// The device the configuration names, in the host namespace.
pub fn find(host: &Netlink, selector: &Selector) -> Result<Link> {
    let not_found = |why: String| Error::internal(format!("failed to find host device: {why}"));
    match selector {
        Selector::Name(name) => host
            .link_by_name(name)
            .map_err(internal)?
            .ok_or_else(|| not_found("Link not found".into())),
        Selector::Mac(mac) => host
            .links()
            .map_err(internal)?
            .into_iter()
            .find(|l| l.mac == Some(*mac))
            .ok_or_else(|| not_found("failed to find physical interface".into())),
        Selector::KernelPath(p) => by_sysfs_dir(host, &p.join("net")).map_err(not_found),
        Selector::Pci(id) => {
            let dir = Path::new(SYS_BUS_PCI).join(id);
            let net = if dir.join("net").symlink_metadata().is_ok() {
                dir.join("net")
            } else {
                virtio_net_dir(&dir)
                    .ok_or_else(|| not_found(format!("no net directory under pci device {id}")))?
            };
            by_sysfs_dir(host, &net).map_err(not_found)
        }
        Selector::Auxiliary(id) => {
            by_sysfs_dir(host, &Path::new(SYS_BUS_AUXILIARY).join(id).join("net"))
                .map_err(not_found)
        }
    }
}

/// `<pci device>/virtio*/net`: a virtio NIC's netdev hangs one level down.
fn virtio_net_dir(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .map(|e| e.path().join("net"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The first network device listed in a sysfs `net` directory (by name, as
/// the reference takes it).
fn by_sysfs_dir(host: &Netlink, dir: &Path) -> std::result::Result<Link, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("failed to read directory {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let Some(name) = names.first() else {
        return Err(format!(
            "failed to find network device in path {}",
            dir.display()
        ));
    };
    host.link_by_name(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{name}: Link not found"))
}

/// Move `dev` from `host` into `container` as `ifname`, its host name kept
/// in its alias, and bring it up. On failure the device is back in the
/// host under its own name with its old alias.
pub fn move_in(host: &Netlink, dev: &Link, container: &Netlink, ifname: &str) -> Result<Link> {
    let old_alias = host.alias_of(dev.index).map_err(internal)?;
    host.set_alias(dev.index, &dev.name)
        .map_err(|e| Error::internal(format!("failed to set alias to {:?}: {e}", dev.name)))?;
    let restore_alias = |nl: &Netlink, index: u32| {
        let _ = nl.set_alias(index, old_alias.as_deref().unwrap_or(""));
    };
    if let Err(e) = host.move_to_netns(dev.index, container.netns(), ifname) {
        // It may have made a round trip (and lost its up state and, with
        // that, perhaps its index): find it again by name.
        if let Ok(Some(here)) = host.link_by_name(&dev.name) {
            restore_alias(host, here.index);
            if dev.up && !here.up {
                let _ = host.set_up(here.index);
            }
        }
        return Err(Error::internal(format!(
            "failed to move link {:?} to container NS as {ifname:?}: {e}",
            dev.name
        )));
    }
    let moved = match container.link_by_name(ifname) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(Error::internal(format!(
                "failed to find {ifname:?} in container NS"
            )));
        }
        Err(e) => return Err(internal(e)),
    };
    if let Err(e) = container.set_up(moved.index) {
        if container
            .move_to_netns(moved.index, host.netns(), &dev.name)
            .is_ok()
            && let Ok(Some(back)) = host.link_by_name(&dev.name)
        {
            restore_alias(host, back.index);
            if dev.up {
                let _ = host.set_up(back.index);
            }
        }
        return Err(Error::internal(format!("failed to set {ifname:?} up: {e}")));
    }
    container
        .link_by_index(moved.index)
        .map_err(internal)?
        .ok_or_else(|| Error::internal(format!("failed to find {ifname:?} in container NS")))
}

/// The device in the container: under `ifname`, or — renamed inside
/// since ADD — the one whose alias is the configured host name or whose
/// MAC prevResult recorded. With its alias (its host name).
pub fn find_in_container(
    container: &Netlink,
    ifname: &str,
    host_name: Option<&str>,
    mac: Option<link::MacAddr>,
) -> Result<Option<(Link, Option<String>)>> {
    let links = container.links_with_alias().map_err(internal)?;
    if let Some(found) = links.iter().find(|(l, _)| l.name == ifname) {
        return Ok(Some(found.clone()));
    }
    let renamed = links.into_iter().find(|(l, alias)| {
        alias.is_some()
            && (host_name.is_some_and(|h| alias.as_deref() == Some(h))
                || mac.is_some_and(|m| l.mac == Some(m)))
    });
    Ok(renamed)
}

/// Move `dev` back to `host_ns` under `host_name` (its alias) and clear
/// the alias. Left down, as the reference leaves it, since its state
/// before ADD is not known — unless `up` says it was up (undoing an ADD).
pub fn move_out(
    container: &Netlink,
    dev: &Link,
    host_name: &str,
    host_ns: &NetNs,
    up: bool,
) -> Result<()> {
    container
        .set_down(dev.index)
        .map_err(|e| Error::internal(format!("failed to set {:?} down: {e}", dev.name)))?;
    if let Err(e) = container.move_to_netns(dev.index, host_ns, host_name) {
        if dev.up {
            let _ = container.set_up(dev.index);
        }
        return Err(Error::internal(format!(
            "failed to move {:?} to host netns as {host_name:?}: {e}",
            dev.name
        )));
    }
    let host = Netlink::in_netns(host_ns).map_err(internal)?;
    if let Ok(Some(back)) = host.link_by_name(host_name) {
        if let Err(e) = host.set_alias(back.index, "") {
            eprintln!("host-device: failed to unset alias of {host_name:?}: {e}");
        }
        if up && let Err(e) = host.set_up(back.index) {
            eprintln!("host-device: failed to set {host_name:?} up again: {e}");
        }
    }
    Ok(())
}
