//! An advisory, self-healing index from container ID to reserved addresses,
//! so ADD's duplicate check and DEL do not read every reservation file (the
//! reference does, which makes both O(reservations)).
//!
//! Layout, in a sibling of the network directory that the Go plugin never
//! looks at (`<dataDir>/.<network>.cni-rs-index/`; network names cannot start
//! with a dot, so this never collides with a network):
//!
//! - `by-id/<containerID>`: one line per reservation of that container,
//!   `<ip>\t<ifname>`, or just `<ip>` for a legacy id-only file;
//! - `stamp`: identity and change times of the network directory at the
//!   moment the index was last known to match it;
//! - `tmp/`: staging area for reservation files (see `store.rs`).
//!
//! Why it is safe to share the directory with the Go plugin, which knows
//! nothing of the index: every create or unlink in the network directory —
//! the only way a reservation appears or disappears — changes the
//! directory's mtime/ctime. The index is trusted only while `stamp` equals
//! the directory's current stat; otherwise it is rebuilt from a full scan
//! before use. Since Linux 6.13 (multigrain timestamps on ext4, xfs, btrfs,
//! tmpfs) a change that follows a `stat` of the directory is guaranteed a
//! distinct ctime, and we `stat` when writing the stamp, so a Go ADD right
//! after ours cannot hide inside one timestamp tick. On older kernels that
//! window is one tick (a few ms); the cost of missing it is that one stale
//! lookup, and the next change of the directory heals it.
//!
//! Crash safety: the index is updated after the reservation file and the
//! stamp after the index, so a crash in between leaves a stamp that no
//! longer matches and the next operation rebuilds. The index is never the
//! source of truth: entries are verified against the reservation file before
//! they are acted on, and a mismatch forces a rebuild.

use std::fs;
use std::io;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::reservation::{FileOwner, Reservation};

/// Longest container ID used as a file name; longer IDs fall back to scans.
const MAX_ID_LEN: usize = 200;

/// One reservation as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub ip: IpAddr,
    /// `None` for a legacy id-only file.
    pub ifname: Option<String>,
}

pub(crate) struct OwnerIndex {
    root: PathBuf,
}

impl OwnerIndex {
    /// Opens (creating if needed) the index of `<data_dir>/<network>`.
    pub fn open(data_dir: &Path, network: &str) -> io::Result<OwnerIndex> {
        let root = data_dir.join(format!(".{network}.cni-rs-index"));
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(root.join("by-id"))?;
        builder.create(root.join("tmp"))?;
        Ok(OwnerIndex { root })
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Whether the index was sealed against exactly this state of `dir`.
    pub fn is_current(&self, dir: &Path) -> io::Result<bool> {
        let want = dir_stamp(dir)?;
        match fs::read_to_string(self.root.join("stamp")) {
            Ok(have) => Ok(have == want),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records that the index matches `dir` as it is now.
    ///
    /// Overwritten in place, not replaced by rename: on ext4 a rename over
    /// an existing file forces a data flush costing milliseconds per call.
    /// A torn stamp cannot match the directory, so it only causes a
    /// rebuild.
    pub fn seal(&self, dir: &Path) -> io::Result<()> {
        overwrite(&self.root.join("stamp"), &dir_stamp(dir)?)
    }

    /// Stops trusting the index until the next rebuild.
    pub fn invalidate(&self) -> io::Result<()> {
        match fs::remove_file(self.root.join("stamp")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The recorded reservations of `id`; `None` when `id` cannot be indexed
    /// (then the caller must scan).
    pub fn entries(&self, id: &str) -> io::Result<Option<Vec<IndexEntry>>> {
        if !indexable_id(id) {
            return Ok(None);
        }
        let text = match fs::read_to_string(self.root.join("by-id").join(id)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (ip, ifname) = match line.split_once('\t') {
                Some((ip, ifname)) => (ip, Some(ifname.to_string())),
                None => (line, None),
            };
            let ip = ip.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad index line {line:?}"),
                )
            })?;
            entries.push(IndexEntry { ip, ifname });
        }
        Ok(Some(entries))
    }

    /// Replaces the entries of an indexable `id`.
    pub fn set_entries(&self, id: &str, entries: &[IndexEntry]) -> io::Result<()> {
        let path = self.root.join("by-id").join(id);
        if entries.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        overwrite(&path, &render(entries))
    }

    /// Replaces the whole index with `reservations` (the result of a scan).
    pub fn rebuild(&self, reservations: &[Reservation]) -> io::Result<()> {
        self.invalidate()?;
        let by_id = self.root.join("by-id");
        fs::remove_dir_all(&by_id)?;
        fs::DirBuilder::new().mode(0o700).create(&by_id)?;
        let mut grouped: std::collections::BTreeMap<&str, Vec<IndexEntry>> = Default::default();
        for r in reservations {
            let ifname = match &r.owner {
                FileOwner::Attachment(o) if indexable_ifname(&o.ifname) => Some(o.ifname.clone()),
                FileOwner::Attachment(_) => continue,
                FileOwner::Legacy { .. } => None,
            };
            let id = r.owner.container_id();
            if indexable_id(id) {
                grouped
                    .entry(id)
                    .or_default()
                    .push(IndexEntry { ip: r.ip, ifname });
            }
        }
        for (id, entries) in grouped {
            fs::write(by_id.join(id), render(&entries))?;
        }
        Ok(())
    }
}

/// IDs that are safe, single path components: the CNI container-ID grammar
/// (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), bounded in length.
pub(crate) fn indexable_id(id: &str) -> bool {
    crate::network_name::is_cni_identifier(id) && id.len() <= MAX_ID_LEN
}

/// Ifnames that fit the one-line entry format.
pub(crate) fn indexable_ifname(ifname: &str) -> bool {
    !ifname.is_empty() && !ifname.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Writes `text` over the file's old contents and cuts it to length,
/// avoiding the truncate-to-zero that makes ext4 flush synchronously.
fn overwrite(path: &Path, text: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)
}

fn render(entries: &[IndexEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        match &e.ifname {
            Some(ifname) => out.push_str(&format!("{}\t{}\n", e.ip, ifname)),
            None => out.push_str(&format!("{}\n", e.ip)),
        }
    }
    out
}

fn dir_stamp(dir: &Path) -> io::Result<String> {
    let m = fs::metadata(dir)?;
    Ok(format!(
        "v1 {} {} {}.{} {}.{}\n",
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}
