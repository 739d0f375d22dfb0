//! Driving runtimes and watching processes: libcni's `cnitool` (found on
//! the machine, its cache moved into a test directory) and a log of the
//! netfilter programs a plugin run starts.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fs::temp_dir;

/// Where libcni's cnitool is (`$CNITOOL`, else /usr/local/bin or
/// /usr/bin), or `None`.
pub fn find_cnitool() -> Option<PathBuf> {
    [
        std::env::var_os("CNITOOL").map(PathBuf::from),
        Some(PathBuf::from("/usr/local/bin/cnitool")),
        Some(PathBuf::from("/usr/bin/cnitool")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

/// [`find_cnitool`], saying `SKIPPED: ...` when it is not installed.
pub fn cnitool() -> Option<PathBuf> {
    let found = find_cnitool();
    if found.is_none() {
        eprintln!(
            "SKIPPED: cnitool not installed (build it with `bash crates/runtime/scripts/build-cnitool.sh`)"
        );
    }
    found
}

/// cnitool keeps its result cache in /var/lib/cni and has no option for
/// another place: run `cmd` in a private mount namespace whose /var/lib is
/// `var_lib`.
pub fn with_private_var_lib(cmd: &mut Command, var_lib: &Path) {
    let source = CString::new(var_lib.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: only async-signal-safe syscalls (unshare, mount) run between
    // fork and exec, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || private_var_lib(&source));
    }
}

/// Runs in the child between fork and exec.
fn private_var_lib(source: &CString) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls with NUL-terminated strings that outlive them.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            source.as_ptr(),
            c"/var/lib".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
    }
}

/// PATH with logging wrappers in front of the netfilter programs: counts
/// the processes a plugin run really starts.
pub struct ProcessLog {
    dir: tempfile::TempDir,
}

impl ProcessLog {
    const PROGRAMS: [&str; 7] = [
        "iptables",
        "ip6tables",
        "iptables-save",
        "ip6tables-save",
        "iptables-restore",
        "ip6tables-restore",
        "nft",
    ];

    pub fn new() -> ProcessLog {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("cnit-proclog");
        for p in Self::PROGRAMS {
            let real = ["/usr/sbin", "/sbin", "/usr/bin"]
                .iter()
                .map(|d| format!("{d}/{p}"))
                .find(|c| Path::new(c).exists())
                .unwrap();
            let script = format!(
                "#!/bin/sh\necho {p} >> {}\nexec {real} \"$@\"\n",
                dir.path().join("log").display()
            );
            let path = dir.path().join(p);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ProcessLog { dir }
    }

    pub fn path_env(&self) -> String {
        format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.dir.path().display()
        )
    }

    /// Processes logged since the last call.
    pub fn take(&self) -> Vec<String> {
        let log = self.dir.path().join("log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_string).collect()
    }
}

impl Default for ProcessLog {
    fn default() -> Self {
        Self::new()
    }
}
