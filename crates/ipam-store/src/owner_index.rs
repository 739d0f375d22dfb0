//! An advisory, self-healing index from container ID to reserved addresses,
//! so ADD's duplicate check and DEL do not read every reservation file (the
//! reference does, which makes both O(reservations)).
//!
//! Layout, in a sibling of the network directory that the Go plugin never
//! looks at (`<dataDir>/.<network>.cni-rs-index/`; network names cannot start
//! with a dot, so this never collides with a network):
//!
//! - `buckets/<nn>`: the reservations of the containers whose ID hashes to
//!   bucket `nn` (of 256), one per line: `<containerID>\t<ip>\t<ifname>`,
//!   or `<containerID>\t<ip>` for a legacy id-only file. Buckets rather
//!   than one file per container keep a rebuild to at most 256 small
//!   writes (one file per container made rebuilding 10,000 reservations
//!   take over a second), while a lookup reads 1/256 of the index;
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
//! after ours cannot hide inside one timestamp tick. Older kernels stamp
//! from a clock that advances once per tick, so there [`OwnerIndex::seal`]
//! holds on (still under the lock) until that clock has passed the
//! directory's ctime — at most one tick, a few ms — so that any later
//! change necessarily gets a different ctime.
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

/// Number of bucket files.
const BUCKETS: u64 = 256;

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
        builder.create(root.join("buckets"))?;
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
        let meta = fs::metadata(dir)?;
        overwrite(&self.root.join("stamp"), &stamp_of(&meta))?;
        if !has_multigrain_timestamps() {
            wait_for_coarse_clock_past(meta.ctime(), meta.ctime_nsec());
        }
        Ok(())
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
        let lines = self.read_bucket(bucket_of(id))?;
        let mut entries = Vec::new();
        for line in &lines {
            let (line_id, entry) = parse_line(line)?;
            if line_id == id {
                entries.push(entry);
            }
        }
        Ok(Some(entries))
    }

    /// Replaces the entries of an indexable `id`.
    pub fn set_entries(&self, id: &str, entries: &[IndexEntry]) -> io::Result<()> {
        let bucket = bucket_of(id);
        let mut lines = Vec::new();
        for line in self.read_bucket(bucket)? {
            if parse_line(&line)?.0 != id {
                lines.push(line);
            }
        }
        lines.extend(entries.iter().map(|e| render(id, e)));
        self.write_bucket(bucket, &lines)
    }

    /// Replaces the whole index with `reservations` (the result of a scan).
    pub fn rebuild(&self, reservations: &[Reservation]) -> io::Result<()> {
        self.invalidate()?;
        let mut buckets: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for r in reservations {
            let ifname = match &r.owner {
                FileOwner::Attachment(o) if indexable_ifname(&o.ifname) => Some(o.ifname.clone()),
                FileOwner::Attachment(_) => continue,
                FileOwner::Legacy { .. } => None,
            };
            let id = r.owner.container_id();
            if indexable_id(id) {
                buckets
                    .entry(bucket_of(id))
                    .or_default()
                    .push(render(id, &IndexEntry { ip: r.ip, ifname }));
            }
        }
        for b in 0..BUCKETS {
            self.write_bucket(b, buckets.get(&b).map_or(&[][..], Vec::as_slice))?;
        }
        Ok(())
    }

    fn bucket_path(&self, bucket: u64) -> PathBuf {
        self.root.join("buckets").join(format!("{bucket:02x}"))
    }

    fn read_bucket(&self, bucket: u64) -> io::Result<Vec<String>> {
        match fs::read_to_string(self.bucket_path(bucket)) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn write_bucket(&self, bucket: u64, lines: &[String]) -> io::Result<()> {
        let path = self.bucket_path(bucket);
        if lines.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut text = lines.join("\n");
        text.push('\n');
        overwrite(&path, &text)
    }
}

/// IDs that fit the one-line entry format. (The CNI grammar for container
/// IDs already excludes whitespace; the store accepts any string.)
pub(crate) fn indexable_id(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Ifnames that fit the one-line entry format.
pub(crate) fn indexable_ifname(ifname: &str) -> bool {
    indexable_id(ifname)
}

/// FNV-1a: stable across runs and versions, unlike std's hasher.
fn bucket_of(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % BUCKETS
}

fn render(id: &str, e: &IndexEntry) -> String {
    match &e.ifname {
        Some(ifname) => format!("{id}\t{}\t{ifname}", e.ip),
        None => format!("{id}\t{}", e.ip),
    }
}

fn parse_line(line: &str) -> io::Result<(&str, IndexEntry)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad index line {line:?}"),
        )
    };
    let mut fields = line.split('\t');
    let id = fields.next().ok_or_else(bad)?;
    let ip = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let ifname = fields.next().map(str::to_string);
    if fields.next().is_some() {
        return Err(bad());
    }
    Ok((id, IndexEntry { ip, ifname }))
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

fn dir_stamp(dir: &Path) -> io::Result<String> {
    Ok(stamp_of(&fs::metadata(dir)?))
}

fn stamp_of(m: &fs::Metadata) -> String {
    format!(
        "v1 {} {} {}.{} {}.{}\n",
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// Linux 6.13 introduced multigrain timestamps (ext4, xfs, btrfs, tmpfs):
/// a change after a `stat` always gets a new ctime.
fn has_multigrain_timestamps() -> bool {
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (6, 13)
}

/// Waits until `CLOCK_REALTIME_COARSE` (the clock file times come from on
/// kernels without multigrain timestamps) is past `sec.nsec`, at most a
/// few ticks.
fn wait_for_coarse_clock_past(sec: i64, nsec: i64) {
    for _ in 0..200 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes the timespec we own.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } != 0 {
            return;
        }
        if (now.tv_sec, now.tv_nsec) > (sec, nsec) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_wait_returns_once_the_clock_has_passed() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let start = std::time::Instant::now();
        wait_for_coarse_clock_past(t.as_secs() as i64, i64::from(t.subsec_nanos()));
        assert!(start.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn bucket_is_stable() {
        // Bucket numbers are part of the on-disk layout: never change them.
        assert_eq!(bucket_of(""), 0xcbf2_9ce4_8422_2325 % 256);
        assert_eq!(bucket_of("a"), 0xaf63_dc4c_8601_ec8c % 256);
    }
}
