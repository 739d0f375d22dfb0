//! Sysctls under `/proc/sys`, written only when the value differs.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so a container's sysctls must be set from a thread inside it
//! (`netns::NetNs::run`).
//!
//! Keys under `net/` are opened relative to `/proc/sys/net` and the
//! directory below it (`ipv4`, `ipv6`, ...), both opened once per thread
//! and namespace. Every network namespace that looks up `ipv4` or `ipv6`
//! under `/proc/sys/net` leaves its own cached entry of that name there,
//! newest first, and the kernel compares them one by one until it finds
//! the caller's: on a node with 500 containers, resolving `ipv6` from the
//! host namespace (the oldest) costs 0.3–0.5 ms, from a container created
//! since then 10–30 µs. Resolved once, the rest of each path (below the
//! namespace's own directory) is a short lookup.

use std::cell::RefCell;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};

/// (device, inode) of the calling thread's network namespace.
fn current_netns() -> io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

fn open_at(dir: Option<&OwnedFd>, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: openat with a NUL-terminated path we own; the result is
    // checked before it is wrapped.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One thread's open `/proc/sys/net` and the directories below it it has
/// used (`ipv4`, `ipv6`, ...), for the namespace they were opened in.
struct NetDirs {
    netns: (u64, u64),
    net: OwnedFd,
    below: Vec<(String, OwnedFd)>,
}

thread_local! {
    static NET_DIR: RefCell<Option<NetDirs>> = const { RefCell::new(None) };
}

/// Open `/proc/sys/<key>` with `flags`: through this thread's cached
/// `/proc/sys/net` and first-level directory for `net/` keys (see the
/// module's notes: resolving that directory is the slow step on a node
/// with many namespaces), by full path otherwise.
fn open(key: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let key = key.trim_start_matches('/');
    let Some(rest) = key.strip_prefix("net/") else {
        return open_at(None, &format!("/proc/sys/{key}"), flags);
    };
    let ns = current_netns()?;
    NET_DIR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dirs = match slot.take().filter(|d| d.netns == ns) {
            Some(cached) => slot.insert(cached),
            None => slot.insert(NetDirs {
                netns: ns,
                net: open_at(None, "/proc/sys/net", libc::O_PATH | libc::O_DIRECTORY)?,
                below: Vec::new(),
            }),
        };
        let Some((first, tail)) = rest
            .split_once('/')
            .filter(|(f, t)| !f.is_empty() && !t.is_empty())
        else {
            return open_at(Some(&dirs.net), rest, flags);
        };
        if let Some((_, dir)) = dirs.below.iter().find(|(name, _)| name == first) {
            return open_at(Some(dir), tail, flags);
        }
        let dir = open_at(Some(&dirs.net), first, libc::O_PATH | libc::O_DIRECTORY)?;
        let file = open_at(Some(&dir), tail, flags);
        dirs.below.push((first.to_string(), dir));
        file
    })
}

fn sysctl_err(key: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Sysctl {
        key: key.to_string(),
        source,
    }
}

/// Read `key` (e.g. `net/ipv4/ip_forward`), trimmed.
pub fn read(key: &str) -> Result<String> {
    let mut s = String::new();
    open(key, libc::O_RDONLY)
        .map(std::fs::File::from)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(sysctl_err(key))?;
    Ok(s.trim().to_string())
}

/// Write `value` to `key` without reading it first (a key of a link that
/// was just created, whose value is known to differ).
pub fn write(key: &str, value: &str) -> Result<()> {
    open(key, libc::O_WRONLY)
        .map(std::fs::File::from)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(sysctl_err(key))
}

/// Set `key` to `value` unless it already has it. Returns whether it wrote.
pub fn ensure(key: &str, value: &str) -> Result<bool> {
    if read(key)? == value {
        return Ok(false);
    }
    write(key, value)?;
    Ok(true)
}

fn absent_is_ok<T>(r: Result<T>, absent: T) -> Result<T> {
    match r {
        Err(Error::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(absent),
        other => other,
    }
}

/// Like [`ensure`], but a key that does not exist (IPv6 disabled, or an
/// interface without that tree) is not an error: returns `Ok(false)`.
pub fn ensure_if_present(key: &str, value: &str) -> Result<bool> {
    absent_is_ok(ensure(key, value), false)
}

/// Like [`write`], but a key that does not exist is not an error.
pub fn write_if_present(key: &str, value: &str) -> Result<()> {
    absent_is_ok(write(key, value), ())
}

/// Whether `key` exists here (e.g. `net/ipv6` when IPv6 is disabled).
pub fn exists(key: &str) -> bool {
    open(key, libc::O_PATH).is_ok()
}

/// Whether IPv4 forwarding (`net/ipv4/ip_forward`) is on in the calling
/// thread's namespace, from `/proc/thread-self/net/snmp` (the IP MIB's
/// `Forwarding`: 1 forwarding, 2 not). That path has no lookup under
/// `/proc/sys/net`, which is the slow step from an old namespace on a
/// crowded node (see the module's notes). `None` when it cannot be read.
pub fn ipv4_forwarding() -> Option<bool> {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").ok()?;
    let mut ip = snmp.lines().filter_map(|l| l.strip_prefix("Ip: "));
    let (names, values) = (ip.next()?, ip.next()?);
    let column = names.split_whitespace().position(|n| n == "Forwarding")?;
    match values.split_whitespace().nth(column)? {
        "1" => Some(true),
        "2" => Some(false),
        _ => None,
    }
}

/// The per-interface key `net/<family>/conf/<ifname>/<name>`. Interface
/// names may contain dots (`cni0.100`); in `/proc/sys` they stay literal.
pub fn iface_key(family: &str, ifname: &str, name: &str) -> String {
    format!("net/{family}/conf/{ifname}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same values as full-path reads, through the cached directories
    /// (the first read of a family caches its directory, the second uses
    /// it), and a missing key below a cached directory is absent, not an
    /// error of the cache.
    #[test]
    fn cached_directories_read_what_the_full_paths_show() {
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv4/conf/lo/forwarding",
            "net/ipv4/ip_forward",
            "net/core/somaxconn",
        ] {
            let direct = std::fs::read_to_string(format!("/proc/sys/{key}")).expect(key);
            assert_eq!(read(key).expect(key), direct.trim(), "{key}");
        }
        assert!(exists("net/ipv4"));
        assert!(!exists("net/ipv4/conf/no-such-link/forwarding"));
        assert_eq!(
            ensure_if_present("net/ipv4/conf/no-such-link/forwarding", "1").ok(),
            Some(false)
        );
        assert!(!exists("net/no-such-family/x"));
        assert_eq!(
            ipv4_forwarding(),
            Some(read("net/ipv4/ip_forward").expect("ip_forward") == "1")
        );
    }
}
