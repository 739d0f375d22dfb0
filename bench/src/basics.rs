//! What every part of the bench shares: its error type, the plugins of the
//! measured chain, and Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

pub type Fallible<T> = Result<T, String>;

pub const ALL_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The SIGINT/SIGTERM handler: the run stops at its next check.
pub extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Err once Ctrl-C was pressed, so every guard on the way out cleans up.
pub fn check_interrupted() -> Fallible<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}
