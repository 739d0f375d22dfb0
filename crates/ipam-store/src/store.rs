//! The per-network reservation directory, byte-compatible with the Go
//! reference (`plugins/ipam/host-local/backend/disk`):
//!
//! ```text
//! <dataDir>/<network>/lock                  empty; flock(LOCK_EX) for every operation
//! <dataDir>/<network>/<ip>                  "<containerID>\r\n<ifname>", mode 0600
//! <dataDir>/<network>/last_reserved_ip.<i>  last address reserved in range set i
//! ```
//!
//! Locking uses std's `File::lock` (Rust 1.89+), which is `flock(2)` like the
//! reference's go-filemutex, so both implementations exclude each other. The
//! unmaintained fs2 crate is not used: its trait methods clash with std's.
//!
//! Reservation files are never written in place. The contents go to a
//! staging file first (synced to disk), which is then hard-linked to
//! `<ip>`. `link(2)` fails with `EEXIST` if the address is taken, so it is
//! the same exclusive-create primitive as the reference's `O_CREAT|O_EXCL`,
//! but the name only ever appears with its full contents: a crash (of the
//! process or the machine) at any instant leaves either no reservation or a
//! complete one, never the empty file that used to exhaust pools
//! (plugins#498). The staging file lives in our index directory, which the
//! Go plugin never reads; leftovers are removed under the lock. Go readers
//! only ever see complete files, and the Go plugin's own writes are still
//! seen by us because we read whatever is in the directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::network_name::is_cni_identifier;
use crate::owner_index::{IndexEntry, OwnerIndex, indexable_id, indexable_ifname};
use crate::range_set::RangeSet;
use crate::reservation::{FileOwner, Owner, Reservation};

/// The reference's default dataDir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// The reservation directory of one network. Every operation goes through
/// [`Store::lock`].
pub struct Store {
    dir: PathBuf,
    index: Option<OwnerIndex>,
}

impl Store {
    /// Opens `<data_dir>/<network>`, creating it (mode 0755, like the
    /// reference) if needed. `network` must be a CNI network name; a
    /// symlinked network directory is refused so nothing escapes `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        if !is_cni_identifier(network) {
            return Err(Error::InvalidNetworkName(network.to_string()));
        }
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io("stat", &dir, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(dir));
        }
        // The index is an optimisation: if it cannot be created (read-only
        // parent, odd permissions) everything still works by scanning.
        let index = OwnerIndex::open(data_dir, network).ok();
        Ok(Store { dir, index })
    }

    /// `<dataDir>/<network>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the network's flock (blocking) and returns the handle through
    /// which every read and write happens. The lock is released on drop.
    pub fn lock(&self) -> Result<LockedStore<'_>> {
        let path = self.dir.join(LOCK_FILE);
        // No truncate: the reference's lock file is empty and must stay so.
        // 0600 like every other state file (only root runs plugins).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        file.lock().map_err(|e| Error::io("flock", &path, e))?;
        let locked = LockedStore {
            store: self,
            _lock: file,
            index: IndexState::Unchecked,
        };
        // A process killed while staging (before the link) leaves its
        // staging file behind without changing the network directory; with
        // the lock held, any staging file is such a leftover.
        locked.clear_staging();
        Ok(locked)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexState {
    /// Not yet compared with the directory in this session.
    Unchecked,
    /// Matches the directory; must be kept in step with every change.
    Current,
    /// Unusable this session: operations scan the directory.
    Unavailable,
}

/// What [`LockedStore::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Reservation>,
    /// Failures on individual files; GC continued past each.
    pub errors: Vec<Error>,
}

/// The store with its flock held.
pub struct LockedStore<'a> {
    store: &'a Store,
    _lock: File,
    index: IndexState,
}

impl LockedStore<'_> {
    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.store.dir.join(ip.to_string())
    }

    /// Reserves `ip` for `owner` and records it as the last reservation of
    /// range set `set_index`. `Ok(false)` if the address is already taken.
    pub fn reserve(&mut self, ip: IpAddr, owner: &Owner, set_index: usize) -> Result<bool> {
        let path = self.ip_path(ip);
        // Under the lock nobody else creates files, so a cheap existence
        // check avoids staging a file for every taken candidate.
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(false);
        }
        self.ensure_index();
        if !self.create_reservation_file(&path, &owner.file_contents())? {
            return Ok(false);
        }
        self.write_last_reserved(ip, set_index)?;
        // An ifname that does not fit the index format is left out, as a
        // rebuild would; lookups for it scan.
        let indexable = indexable_ifname(&owner.ifname);
        self.index_update(owner.id(), |entries| {
            if indexable {
                entries.push(IndexEntry {
                    ip,
                    ifname: Some(owner.ifname.clone()),
                })
            }
        });
        Ok(true)
    }

    /// Releases what `owner` holds, as the reference's `ReleaseByID`: every
    /// file written for exactly this (id, ifname); if there is none, every
    /// legacy id-only file of the container. Returns the released addresses.
    pub fn release(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let owned = self.owned_by(owner)?;
        let exact: Vec<IpAddr> = owned
            .iter()
            .filter(|r| r.owner.is_attachment_of(owner))
            .map(|r| r.ip)
            .collect();
        let victims = if exact.is_empty() {
            owned.iter().map(|r| r.ip).collect()
        } else {
            exact
        };
        let mut errors = Vec::new();
        let mut removed = Vec::new();
        for ip in victims {
            let path = self.ip_path(ip);
            match fs::remove_file(&path) {
                Ok(()) => removed.push(ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => removed.push(ip),
                Err(e) => errors.push(Error::io("remove reservation", path, e)),
            }
        }
        if !removed.is_empty() {
            self.index_update(owner.id(), |entries| {
                entries.retain(|e| !removed.contains(&e.ip))
            });
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Gives back one address reserved earlier for `owner` (rolling back a
    /// failed multi-set ADD). Unlike [`LockedStore::release`] it leaves the
    /// owner's other reservations alone. `Ok(false)` if `ip` is not
    /// reserved for exactly this owner.
    pub fn unreserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let path = self.ip_path(ip);
        let mine = fs::read_to_string(&path)
            .map(|c| FileOwner::parse(&c).is_attachment_of(owner))
            .unwrap_or(false);
        if !mine {
            return Ok(false);
        }
        self.ensure_index();
        fs::remove_file(&path).map_err(|e| Error::io("remove reservation", &path, e))?;
        self.index_update(owner.id(), |entries| entries.retain(|e| e.ip != ip));
        Ok(true)
    }

    /// Whether a reservation could be written now: creates and removes a
    /// probe file in the network directory. That changes the directory, so
    /// an index that was current before is re-sealed (STATUS runs often and
    /// must not force the next ADD to rebuild).
    pub fn check_writable(&mut self) -> Result<()> {
        let dir = &self.store.dir;
        let was_current = self
            .store
            .index
            .as_ref()
            .is_some_and(|i| i.is_current(dir).unwrap_or(false));
        let probe = dir.join(format!(".cni-rs-write-probe.{}", std::process::id()));
        File::create(&probe).map_err(|e| Error::io("create file in", dir, e))?;
        fs::remove_file(&probe).map_err(|e| Error::io("remove", &probe, e))?;
        if was_current && let Some(index) = &self.store.index {
            let _ = index.seal(dir);
        }
        Ok(())
    }

    /// Addresses held by `owner` (files for this (id, ifname) and legacy
    /// files of the container), as the reference's `GetByID`.
    pub fn lookup(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        Ok(self.owned_by(owner)?.into_iter().map(|r| r.ip).collect())
    }

    /// The address last reserved in range set `set_index`. Round-robin is
    /// best effort, as in the reference: a missing or unreadable file simply
    /// means "start from the beginning".
    pub fn last_reserved(&self, set_index: usize) -> Option<IpAddr> {
        let path = self
            .store
            .dir
            .join(format!("{LAST_RESERVED_PREFIX}{set_index}"));
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Every reservation in the directory (a full scan).
    pub fn reservations(&mut self) -> Result<Vec<Reservation>> {
        let all = self.scan()?;
        self.refresh_index_from(&all);
        Ok(all)
    }

    /// Number of reserved addresses that `set` could have handed out.
    /// Reads only names, not contents.
    pub fn count_reserved_in(&self, set: &RangeSet) -> Result<u128> {
        let mut n = 0;
        for name in self.ip_names()? {
            if set.is_allocatable(name.1) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes every reservation whose owner is not in `keep`. A legacy
    /// id-only file is kept if any kept attachment has its container ID.
    /// `lock` and `last_reserved_ip.*` are never touched. Keeps going past
    /// errors and reports them.
    pub fn gc(&mut self, keep: &[Owner]) -> Result<GcReport> {
        let keep_exact: HashSet<(&str, &str)> =
            keep.iter().map(|o| (o.id(), o.ifname.as_str())).collect();
        let keep_ids: HashSet<&str> = keep.iter().map(|o| o.id()).collect();
        let mut report = GcReport::default();
        let mut remaining = Vec::new();
        for r in self.scan()? {
            let kept = match &r.owner {
                FileOwner::Attachment(o) => {
                    keep_exact.contains(&(o.container_id.as_str(), o.ifname.as_str()))
                }
                FileOwner::Legacy { container_id } => keep_ids.contains(container_id.as_str()),
            };
            if kept {
                remaining.push(r);
                continue;
            }
            let path = self.ip_path(r.ip);
            match fs::remove_file(&path) {
                Ok(()) => report.removed.push(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    report.errors.push(Error::io("remove reservation", path, e));
                    remaining.push(r);
                }
            }
        }
        self.clear_staging();
        self.refresh_index_from(&remaining);
        Ok(report)
    }

    // ---- internals ----

    /// Files belonging to `owner` in either format, via the index when it is
    /// usable, else by reading every reservation.
    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<Reservation>> {
        if indexable_id(owner.id()) && indexable_ifname(&owner.ifname) {
            self.ensure_index();
            if let Some(found) = self.owned_by_index(owner) {
                return Ok(found);
            }
        }
        let all = self.scan()?;
        self.refresh_index_from(&all);
        Ok(all
            .into_iter()
            .filter(|r| r.owner.belongs_to(owner))
            .collect())
    }

    /// `None` when the index cannot answer (unavailable, or found to be
    /// wrong — then it is invalidated and the caller scans).
    fn owned_by_index(&mut self, owner: &Owner) -> Option<Vec<Reservation>> {
        if self.index != IndexState::Current {
            return None;
        }
        let index = self.store.index.as_ref()?;
        let entries = match index.entries(owner.id()) {
            Ok(Some(entries)) => entries,
            _ => return self.distrust_index(),
        };
        let mut found = Vec::new();
        for entry in entries {
            let relevant = entry.ifname.is_none() || entry.ifname.as_deref() == Some(&owner.ifname);
            if !relevant {
                continue;
            }
            // Verify against the file: the index is a hint, never the truth.
            let on_disk = fs::read_to_string(self.ip_path(entry.ip))
                .ok()
                .map(|c| FileOwner::parse(&c));
            match on_disk {
                Some(file_owner) if file_owner.belongs_to(owner) => found.push(Reservation {
                    ip: entry.ip,
                    owner: file_owner,
                }),
                _ => return self.distrust_index(),
            }
        }
        Some(found)
    }

    fn distrust_index(&mut self) -> Option<Vec<Reservation>> {
        if let Some(index) = &self.store.index {
            let _ = index.invalidate();
        }
        self.index = IndexState::Unchecked;
        None
    }

    /// Brings the index in line with the directory if it is not already.
    fn ensure_index(&mut self) {
        if self.index != IndexState::Unchecked {
            return;
        }
        let Some(index) = &self.store.index else {
            self.index = IndexState::Unavailable;
            return;
        };
        match index.is_current(&self.store.dir) {
            Ok(true) => self.index = IndexState::Current,
            Ok(false) => match self.scan() {
                Ok(all) => {
                    // A stale index means someone else (the Go plugin, or
                    // a crash of ours) changed the directory; staging
                    // leftovers can only be from a crash, since we hold
                    // the lock.
                    self.clear_staging();
                    self.refresh_index_from(&all);
                }
                Err(_) => self.index = IndexState::Unavailable,
            },
            Err(_) => self.index = IndexState::Unavailable,
        }
    }

    /// Rewrites the index from a complete scan and seals it.
    fn refresh_index_from(&mut self, all: &[Reservation]) {
        let Some(index) = &self.store.index else {
            self.index = IndexState::Unavailable;
            return;
        };
        self.index = match index
            .rebuild(all)
            .and_then(|()| index.seal(&self.store.dir))
        {
            Ok(()) => IndexState::Current,
            Err(_) => {
                let _ = index.invalidate();
                IndexState::Unavailable
            }
        };
    }

    /// Applies `change` to the index entries of `id` after a change of the
    /// directory, and re-seals. Any failure just drops the index for this
    /// session (the stale stamp makes the next session rebuild).
    fn index_update(&mut self, id: &str, change: impl FnOnce(&mut Vec<IndexEntry>)) {
        if self.index != IndexState::Current {
            return;
        }
        let Some(index) = &self.store.index else {
            return;
        };
        let result = if indexable_id(id) {
            index.entries(id).and_then(|entries| {
                let mut entries = entries.unwrap_or_default();
                change(&mut entries);
                index.set_entries(id, &entries)
            })
        } else {
            Ok(())
        }
        .and_then(|()| index.seal(&self.store.dir));
        if result.is_err() {
            let _ = index.invalidate();
            self.index = IndexState::Unavailable;
        }
    }

    /// Creates `path` with `contents` so that it appears atomically and
    /// complete. `Ok(false)` if it already exists.
    fn create_reservation_file(&self, path: &Path, contents: &str) -> Result<bool> {
        let Some(index) = &self.store.index else {
            return create_in_place(path, contents);
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let staged = index.tmp_dir().join(format!(
            "{}.{}",
            name.unwrap_or_default(),
            std::process::id()
        ));
        if write_new_file(&staged, contents, true).is_err() {
            // The index directory is advisory (someone may have removed
            // it): staging is an improvement, not a requirement.
            let _ = fs::remove_file(&staged);
            return create_in_place(path, contents);
        }
        let linked = fs::hard_link(&staged, path);
        let _ = fs::remove_file(&staged);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // dataDir spans filesystems (e.g. the network dir is a mount):
            // fall back to the reference's exclusive create.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => create_in_place(path, contents),
            Err(e) => Err(Error::io("create reservation", path, e)),
        }
    }

    fn write_last_reserved(&self, ip: IpAddr, set_index: usize) -> Result<()> {
        let path = self
            .store
            .dir
            .join(format!("{LAST_RESERVED_PREFIX}{set_index}"));
        // Overwritten in place and then cut to length, rather than
        // truncated to zero first (the reference's os.WriteFile): on ext4,
        // truncating a just-written file to zero forces a flush that costs
        // milliseconds. A torn value only costs round-robin order: both
        // implementations then start from the beginning of the set.
        let text = ip.to_string();
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.set_len(text.len() as u64)
            });
        result.map_err(|e| Error::io("write", path, e))
    }

    /// Names in the directory that are addresses, with the address.
    fn ip_names(&self) -> Result<Vec<(PathBuf, IpAddr)>> {
        let dir = &self.store.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let name = entry.file_name();
            // `lock`, `last_reserved_ip.*` and anything else that is not an
            // address is not a reservation.
            if let Some(ip) = name.to_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                out.push((entry.path(), ip));
            }
        }
        Ok(out)
    }

    /// Reads every reservation file. Unreadable entries (a directory named
    /// like an address, a file removed under our feet) are skipped, as the
    /// reference's walk does.
    fn scan(&self) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        for (path, ip) in self.ip_names()? {
            if let Ok(contents) = fs::read_to_string(&path) {
                out.push(Reservation {
                    ip,
                    owner: FileOwner::parse(&contents),
                });
            }
        }
        Ok(out)
    }

    /// Removes staging files: under the lock, any that exist are from a
    /// crashed run.
    fn clear_staging(&self) {
        let Some(index) = &self.store.index else {
            return;
        };
        if let Ok(entries) = fs::read_dir(index.tmp_dir()) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The reference's method (`O_CREAT|O_EXCL`, write, remove on failure); used
/// only when staging is impossible.
fn create_in_place(path: &Path, contents: &str) -> Result<bool> {
    match write_new_file(path, contents, false) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(Error::io("create reservation", path, e))
        }
    }
}

/// Creates `path` exclusively (mode 0600) with `contents`; `sync` makes the
/// data durable before the caller publishes the file under its real name.
fn write_new_file(path: &Path, contents: &str, sync: bool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .or_else(|e| {
            // A staging leftover of a crashed run with our pid: replace it.
            if sync && e.kind() == io::ErrorKind::AlreadyExists {
                fs::remove_file(path)?;
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
            } else {
                Err(e)
            }
        })?;
    file.write_all(contents.as_bytes())?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}
