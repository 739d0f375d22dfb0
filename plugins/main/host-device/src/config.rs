//! host-device's keys: which device (`device`, `hwaddr`, `kernelpath`,
//! `pciBusID`, or the runtime's `runtimeConfig.deviceID`) and whether it is
//! bound to a userspace (DPDK) driver, with the reference's messages.

use std::path::{Path, PathBuf};

use cni::{Error, Request, Result};
use link::MacAddr;
use serde::Deserialize;

pub const SYS_BUS_PCI: &str = "/sys/bus/pci/devices";
pub const SYS_BUS_AUXILIARY: &str = "/sys/bus/auxiliary/devices";

/// Drivers that take a PCI device away from the kernel's network stack:
/// such a device has no netdev to move.
const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, Default, Deserialize)]
struct RuntimeConf {
    #[serde(default, rename = "deviceID")]
    device_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct HostDeviceNet {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    hwaddr: Option<String>,
    #[serde(default)]
    kernelpath: Option<String>,
    #[serde(default, rename = "pciBusID")]
    pci_bus_id: Option<String>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConf>,
}

/// How the device is named; the first of these that is set wins, in the
/// reference's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Mac(MacAddr),
    KernelPath(PathBuf),
    Pci(String),
    Auxiliary(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub selector: Selector,
    /// The host name given by `device`, when there is one: DEL uses it to
    /// find the device if it was renamed inside the container.
    pub device: Option<String>,
    /// A PCI device bound to a userspace driver: nothing to move.
    pub dpdk: bool,
    pub ipam: Option<String>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Config {
    pub fn load(req: &Request) -> Result<Config> {
        Self::load_with(req, Path::new(SYS_BUS_PCI), Path::new(SYS_BUS_AUXILIARY))
    }

    fn load_with(req: &Request, pci_root: &Path, aux_root: &Path) -> Result<Config> {
        let net: HostDeviceNet = req.plugin_config()?;
        let device = nonempty(net.device);
        let hwaddr = nonempty(net.hwaddr);
        let kernelpath = nonempty(net.kernelpath);
        let mut pci = nonempty(net.pci_bus_id);
        let mut aux = None;
        // The runtime's device ID overrides `pciBusID`.
        if let Some(id) = nonempty(net.runtime_config.and_then(|r| r.device_id)) {
            if id.contains('/') || id == ".." {
                return Err(unsupported_id(&id));
            }
            if pci_root.join(&id).exists() {
                pci = Some(id);
            } else if aux_root.join(&id).exists() {
                pci = None;
                aux = Some(id);
            } else {
                return Err(unsupported_id(&id));
            }
        }
        let selector = if let Some(d) = &device {
            Selector::Name(d.clone())
        } else if let Some(m) = &hwaddr {
            Selector::Mac(m.parse().map_err(|_| {
                Error::invalid_config(format!(
                    "failed to parse MAC address {m:?}: address {m}: invalid MAC address"
                ))
            })?)
        } else if let Some(p) = &kernelpath {
            let path = Path::new(p);
            if !path.is_absolute() || !p.starts_with("/sys/devices/") || p.contains("/../") {
                return Err(Error::invalid_config(format!(
                    "kernel device path {p:?} must be absolute and begin with /sys/devices/"
                )));
            }
            Selector::KernelPath(path.to_path_buf())
        } else if let Some(p) = &pci {
            if p.contains('/') {
                return Err(Error::invalid_config(format!("invalid pciBusID {p:?}")));
            }
            Selector::Pci(p.clone())
        } else if let Some(a) = aux {
            Selector::Auxiliary(a)
        } else {
            return Err(Error::invalid_config(
                r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#,
            ));
        };
        let dpdk = match &pci {
            Some(p) => has_dpdk_driver(pci_root, p)?,
            None => false,
        };
        Ok(Config {
            selector,
            device,
            dpdk,
            ipam: req.config.ipam_type().map(str::to_string),
        })
    }
}

fn unsupported_id(id: &str) -> Error {
    Error::invalid_config(format!(
        "runtime config DeviceID {id} not found or unsupported"
    ))
}

fn has_dpdk_driver(pci_root: &Path, pci: &str) -> Result<bool> {
    let driver = pci_root.join(pci).join("driver");
    let target = std::fs::canonicalize(&driver).map_err(|e| {
        Error::invalid_config(format!("error with host device: {}: {e}", driver.display()))
    })?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(USERSPACE_DRIVERS.contains(&name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Command, code};
    use serde_json::{Value, json};

    fn request(extra: Value) -> Request {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-device"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let stdin = serde_json::to_vec(&conf).unwrap();
        let mut r = Request::from_config(Command::Add, &stdin, "").unwrap();
        r.container_id = "c1".into();
        r.netns = "/var/run/netns/x".into();
        r
    }

    /// A fake /sys/bus: one PCI device bound to `driver`, one auxiliary.
    fn sysfs(driver: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let pci = d.path().join("pci/0000:03:00.0");
        std::fs::create_dir_all(&pci).unwrap();
        let drv = d.path().join("drivers").join(driver);
        std::fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(&drv, pci.join("driver")).unwrap();
        std::fs::create_dir_all(d.path().join("aux/mlx5_core.sf.4")).unwrap();
        d
    }

    fn load(extra: Value, sys: &tempfile::TempDir) -> Result<Config> {
        Config::load_with(
            &request(extra),
            &sys.path().join("pci"),
            &sys.path().join("aux"),
        )
    }

    #[test]
    fn selectors_in_the_references_order() {
        let sys = sysfs("ixgbe");
        let c = load(
            json!({"device": "enp1", "hwaddr": "02:00:00:00:00:01"}),
            &sys,
        )
        .unwrap();
        assert_eq!(c.selector, Selector::Name("enp1".into()));
        assert_eq!(c.device.as_deref(), Some("enp1"));
        let c = load(
            json!({"hwaddr": "02:00:00:00:00:01", "kernelpath": "/sys/devices/x"}),
            &sys,
        )
        .unwrap();
        assert_eq!(
            c.selector,
            Selector::Mac("02:00:00:00:00:01".parse().unwrap())
        );
        let c = load(
            json!({"kernelpath": "/sys/devices/pci0000:00/0000:00:03.0"}),
            &sys,
        )
        .unwrap();
        assert!(matches!(c.selector, Selector::KernelPath(_)));
        let c = load(json!({"pciBusID": "0000:03:00.0"}), &sys).unwrap();
        assert_eq!(c.selector, Selector::Pci("0000:03:00.0".into()));
        assert!(!c.dpdk);
        assert_eq!(c.ipam, None);
    }

    #[test]
    fn device_id_overrides_pci_and_finds_auxiliary_devices() {
        let sys = sysfs("vfio-pci");
        let c = load(
            json!({"pciBusID": "0000:09:00.0", "runtimeConfig": {"deviceID": "0000:03:00.0"}}),
            &sys,
        )
        .unwrap();
        assert_eq!(c.selector, Selector::Pci("0000:03:00.0".into()));
        assert!(c.dpdk, "bound to vfio-pci");
        let c = load(
            json!({"runtimeConfig": {"deviceID": "mlx5_core.sf.4"}}),
            &sys,
        )
        .unwrap();
        assert_eq!(c.selector, Selector::Auxiliary("mlx5_core.sf.4".into()));
        for bad in ["nope", "../pci/0000:03:00.0"] {
            let e = load(json!({"runtimeConfig": {"deviceID": bad}}), &sys).unwrap_err();
            assert_eq!(
                e.msg,
                format!("runtime config DeviceID {bad} not found or unsupported")
            );
        }
    }

    #[test]
    fn bad_input_names_the_key_and_value() {
        let sys = sysfs("ixgbe");
        let e = load(json!({}), &sys).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(
            e.msg,
            r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#
        );
        let e = load(json!({"hwaddr": "02:00:00:00:00"}), &sys).unwrap_err();
        assert!(
            e.msg
                .starts_with("failed to parse MAC address \"02:00:00:00:00\""),
            "{}",
            e.msg
        );
        for p in ["sys/devices/x", "/proc/x", "/sys/devices/../../etc"] {
            let e = load(json!({ "kernelpath": p }), &sys).unwrap_err();
            assert!(
                e.msg.contains(p) && e.msg.contains("/sys/devices/"),
                "{}",
                e.msg
            );
        }
        let e = load(json!({"pciBusID": "0000:04:00.0"}), &sys).unwrap_err();
        assert!(e.msg.starts_with("error with host device"), "{}", e.msg);
        let e = load(json!({"device": 7}), &sys).unwrap_err();
        assert!(e.msg.contains("device"), "{}", e.msg);
    }
}
