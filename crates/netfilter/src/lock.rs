//! A node-wide lock around creating the shared iptables chains.
//!
//! `iptables-restore` batches are atomic, but iptables-nft *replays* a
//! batch whose view of the ruleset went stale, and on replay a `-N` of a
//! chain that now exists is skipped rather than failing — so two first
//! ADDs racing could both append the shared `PREROUTING`/`OUTPUT` jumps.
//! Only the paths that create or repair shared rules take this lock; the
//! common ADD (one batch that only checks them) does not. The firewall
//! policy takes it for every change: each plans "add what is missing" from
//! one read, which two runs must not do at once.

use std::fs::{File, OpenOptions};

/// Where the lock lives (tmpfs, root-only, cleared on boot).
const LOCK_PATHS: [&str; 2] = ["/run/lock/cni-nat.lock", "/run/cni-nat.lock"];

/// Held until dropped. Without a usable lock directory we proceed
/// unlocked: the race only risks a duplicate (harmless) jump rule.
pub struct SharedChainsLock(Option<File>);

impl SharedChainsLock {
    pub fn acquire() -> SharedChainsLock {
        for path in LOCK_PATHS {
            let opened = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path);
            if let Ok(file) = opened
                && file.lock().is_ok()
            {
                return SharedChainsLock(Some(file));
            }
        }
        SharedChainsLock(None)
    }
}

impl Drop for SharedChainsLock {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = f.unlock();
        }
    }
}
