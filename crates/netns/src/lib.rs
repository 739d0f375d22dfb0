//! Network namespaces: open one by path, run work inside one, and create or
//! remove named throwaway namespaces.
//!
//! A thread's network namespace is per-thread state (`setns(2)` affects only
//! the calling thread). Switching the *calling* thread and switching back is
//! fragile: a panic or an early return leaves the thread — and everything
//! later scheduled on it — in the wrong namespace. So [`NetNs::run`] never
//! switches the caller: it spawns a fresh OS thread, enters the namespace
//! there, runs the closure and lets the thread die with it.
//!
//! Named namespaces follow iproute2's convention (`/run/netns/<name>`, a
//! bind mount of the namespace file) so that `ip netns`, other runtimes and
//! the Go reference plugins see the same objects.

pub mod detach;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Directory where named namespaces live, as with `ip netns add`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors of this crate. Each carries the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace path does not exist (for DEL this means "already gone").
    #[error("netns {0:?} does not exist")]
    NotFound(PathBuf),
    /// The path exists but is not a network namespace.
    #[error("{0:?} is not a network namespace")]
    NotNetns(PathBuf),
    #[error("failed to open netns {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("failed to enter netns {path:?}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("failed to create netns {path:?}: {what}: {source}")]
    Create {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("failed to remove netns {path:?}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("invalid netns name {0:?}")]
    InvalidName(String),
    #[error("the thread running inside netns {0:?} panicked")]
    Panicked(PathBuf),
}

pub type Result<T> = std::result::Result<T, Error>;

// NSFS_MAGIC from linux/magic.h: the filesystem type of namespace files.
const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);

/// An open handle on a network namespace. Holding it keeps the namespace
/// alive even if its name is removed.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace at `path` (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::NotFound(path.clone())
            } else {
                Error::Open {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| Error::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        // procfs for /proc/<pid>/ns/net, nsfs for bind mounts of it.
        let fs_type = st.filesystem_type();
        if fs_type != NSFS_MAGIC && fs_type != nix::sys::statfs::PROC_SUPER_MAGIC {
            return Err(Error::NotNetns(path));
        }
        Ok(NetNs { file, path })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw descriptor, valid as long as `self` lives (for netlink `IFLA_NET_NS_FD`).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Run `f` on a new OS thread that has entered this namespace. The thread
    /// exits afterwards, so no thread is ever left in a foreign namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_fd();
        let path = &self.path;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<T> {
                enter(fd, path)?;
                Ok(f())
            });
            handle
                .join()
                .unwrap_or_else(|_| Err(Error::Panicked(path.clone())))
        })
    }

    /// Whether two handles designate the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.dev() == b.dev() && a.ino() == b.ino()
            }
            _ => false,
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn enter(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Enter the namespace `fd` on the *calling* thread. Only for a process that
/// is about to `exec` (e.g. in `Command::pre_exec`), where the whole process
/// is meant to live in that namespace.
///
/// # Safety-relevant note
/// This is async-signal-safe (a single `setns` syscall) and may be used
/// between `fork` and `exec`.
pub fn enter_for_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller keeps open.
    let rc = unsafe { libc_setns(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

unsafe fn libc_setns(fd: RawFd) -> i32 {
    // SAFETY: setns takes an fd and a flag; no memory is passed.
    unsafe { nix::libc::setns(fd, nix::libc::CLONE_NEWNET) }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 200
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c == '\0')
    {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Path of the named namespace `name` under [`NETNS_RUN_DIR`].
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Create a new, empty network namespace named `name` (like `ip netns add`)
/// and return its path. Fails if the name is taken.
pub fn create_named(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    let path = named_path(name);
    let err = |what: &'static str| {
        let path = path.clone();
        move |source: io::Error| Error::Create { path, what, source }
    };
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(err("create /run/netns"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(err("create mount point"))?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(err("bind mount")(e));
    }
    // A fresh namespace has `lo` down; iproute2 leaves it so too.
    Ok(path)
}

/// Remove a named namespace created by [`create_named`] or `ip netns add`.
/// Removing a name that does not exist succeeds.
pub fn remove_named(name: &str) -> Result<()> {
    validate_name(name)?;
    remove_path(&named_path(name))
}

/// Unmount and delete a namespace mount point. Missing paths succeed.
pub fn remove_path(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(Error::Remove {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A named namespace removed when dropped — for tests and the demo.
#[derive(Debug)]
pub struct TempNetns {
    name: String,
    path: PathBuf,
}

impl TempNetns {
    /// Create `<prefix>-<pid>-<counter>`.
    pub fn new(prefix: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = create_named(&name)?;
        Ok(TempNetns { name, path })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open a handle on it.
    pub fn open(&self) -> Result<NetNs> {
        NetNs::open(&self.path)
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = remove_path(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn run_inside_leaves_caller_untouched() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let before = NetNs::current().unwrap();
        let tmp = TempNetns::new("netns-unit").unwrap();
        let ns = tmp.open().unwrap();
        let inside = ns.run(|| NetNs::current().unwrap()).unwrap();
        assert!(inside.same_as(&ns));
        assert!(!inside.same_as(&before));
        let after = NetNs::current().unwrap();
        assert!(after.same_as(&before));
    }

    #[test]
    fn panic_inside_is_an_error_not_a_leak() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = TempNetns::new("netns-unit").unwrap();
        let ns = tmp.open().unwrap();
        let r: Result<()> = ns.run(|| panic!("boom"));
        assert!(matches!(r, Err(Error::Panicked(_))));
    }

    #[test]
    fn removed_namespace_is_not_found_and_remove_is_idempotent() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = TempNetns::new("netns-unit").unwrap();
        let path = tmp.path().to_path_buf();
        drop(tmp);
        assert!(matches!(NetNs::open(&path), Err(Error::NotFound(_))));
        remove_path(&path).unwrap();
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let f = std::env::temp_dir().join(format!("netns-not-{}", std::process::id()));
        std::fs::write(&f, b"").unwrap();
        let r = NetNs::open(&f);
        let _ = std::fs::remove_file(&f);
        assert!(matches!(r, Err(Error::NotNetns(_))));
    }

    #[test]
    fn names_that_escape_are_refused() {
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(matches!(create_named(bad), Err(Error::InvalidName(_))));
        }
    }
}
