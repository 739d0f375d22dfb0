//! Temporary directories and what is in them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Write `text` to `dir/name` and make it executable (mode 0755): a fake
/// plugin or tool. The directory is created if needed.
pub fn write_executable(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// A temporary directory (e.g. a host-local `dataDir`), removed on drop.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

/// Files in a directory (names only, sorted), empty if it does not exist.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// host-local's reservations in a network's directory of its `dataDir`:
/// the address files, not its lock or `last_reserved_ip` files.
pub fn reservations(network_dir: &Path) -> Vec<String> {
    dir_entries(network_dir)
        .into_iter()
        .filter(|f| f != "lock" && !f.starts_with("last_reserved_ip"))
        .collect()
}

/// Every path under `dir` (files and directories), relative, sorted: a
/// whole state directory at a glance, for "nothing changed" assertions.
pub fn dir_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
