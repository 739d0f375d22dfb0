//! What the integration tests, the bench and the demo share: throwaway
//! network namespaces ([`Netns`], [`Topology`], [`command_in`]), plugins
//! spawned exactly as a runtime spawns them ([`Invocation`],
//! [`runtime_env`], [`run_with_stdin`]), netfilter state as text
//! ([`netfilter_rules`]), temporary directories ([`temp_dir`],
//! [`dir_entries`], [`dir_tree`]), fake plugins ([`write_executable`]),
//! libcni's cnitool with a private cache ([`cnitool`],
//! [`with_private_var_lib`]) and a log of netfilter processes
//! ([`ProcessLog`]).
//!
//! Every namespace is removed when its guard drops — also when a test
//! fails. The helpers that panic (`Netns::new`, `Invocation::run`, ...)
//! are for tests; the bench and the demo use the fallible ones.
//!
//! Binaries come from `target/debug` (`make test` builds them first) or from
//! the directory in `CNI_TEST_BIN_DIR`.

pub mod fs;
pub mod ns;
pub mod plugin;
pub mod runtime;

pub use fs::{dir_entries, dir_tree, reservations, temp_dir, write_executable};
pub use ns::{
    Netns, Topology, command_in, kernel_has_link_type, link_type_missing, netfilter_rules,
};
pub use plugin::{Invocation, Outcome, clean_env, run_with_stdin, runtime_env};
pub use runtime::{ProcessLog, cnitool, find_cnitool, with_private_var_lib};

use std::path::{Path, PathBuf};

/// Directory holding the project's built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug")
}

/// Path of one of the project's binaries; panics with a hint if not built.
pub fn plugin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --bins` (or `make test`) first",
        p.display()
    );
    p
}
