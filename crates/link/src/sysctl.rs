//! Sysctls under `/proc/sys`, written only when the value differs.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so a container's sysctls must be set from a thread inside it
//! (`netns::NetNs::run`).

use std::io;
use std::path::PathBuf;

use crate::error::{Error, Result};

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.trim_start_matches('/'))
}

fn sysctl_err(key: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Sysctl {
        key: key.to_string(),
        source,
    }
}

/// Read `key` (e.g. `net/ipv4/ip_forward`), trimmed.
pub fn read(key: &str) -> Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_string())
        .map_err(sysctl_err(key))
}

/// Set `key` to `value` unless it already has it. Returns whether it wrote.
pub fn ensure(key: &str, value: &str) -> Result<bool> {
    if read(key)? == value {
        return Ok(false);
    }
    std::fs::write(path(key), value).map_err(sysctl_err(key))?;
    Ok(true)
}

/// Like [`ensure`], but a key that does not exist (IPv6 disabled, or an
/// interface without that tree) is not an error: returns `Ok(false)`.
pub fn ensure_if_present(key: &str, value: &str) -> Result<bool> {
    match ensure(key, value) {
        Err(Error::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(false),
        other => other,
    }
}

/// Whether `key` exists here (e.g. `net/ipv6` when IPv6 is disabled).
pub fn exists(key: &str) -> bool {
    path(key).exists()
}

/// The per-interface key `net/<family>/conf/<ifname>/<name>`. Interface
/// names may contain dots (`cni0.100`); in `/proc/sys` they stay literal.
pub fn iface_key(family: &str, ifname: &str, name: &str) -> String {
    format!("net/{family}/conf/{ifname}/{name}")
}
