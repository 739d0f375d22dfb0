//! The integration-test harness every plugin's tests reuse.
//!
//! Tests run the *built* plugin binaries exactly as a runtime does: `CNI_*`
//! environment, configuration on stdin, result or error JSON on stdout. The
//! plugin process runs inside a throwaway "host" namespace ([`Netns`]), so
//! the machine's own interfaces, routes and netfilter rules are never
//! touched; containers are throwaway namespaces too. Every namespace is
//! removed when its guard drops — also when the test fails.
//!
//! Binaries come from `target/debug` (`make test` builds them first) or from
//! the directory in `CNI_TEST_BIN_DIR`.

use serde_json::Value;
use std::path::{Path, PathBuf};

// The harness proper (namespaces, spawning a plugin with env + stdin,
// temporary directories) lives in the `test-support` crate, shared with the
// bench and the demo; these names stay importable from here.
pub use test_support::{
    Invocation, Netns, Outcome, Topology, bin_dir, clean_env, command_in, dir_entries, dir_tree,
    netfilter_rules, plugin, run_with_stdin, runtime_env, temp_dir, write_executable,
};
pub use test_support::{
    ProcessLog, cnitool, find_cnitool, kernel_has_link_type, link_type_missing, reservations,
    with_private_var_lib,
};

/// The project's plugin binaries.
pub const PLUGINS: &[&str] = &[
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "static",
    "sbr",
    "host-device",
    "tuning",
    "firewall",
    "macvlan",
    "ipvlan",
    "vlan",
    "bandwidth",
    "dhcp",
];

/// Where the Go reference plugins live (Debian's `containernetworking-plugins`).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Path of a Go reference plugin, or `None` (with a visible message) when
/// the reference plugins are not installed.
pub fn reference_plugin(name: &str) -> Option<PathBuf> {
    let p = Path::new(REFERENCE_DIR).join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: reference plugin {} not installed (apt-get install containernetworking-plugins)",
            p.display()
        );
        None
    }
}

/// Whether the tests can create namespaces; prints why not otherwise.
pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED: integration tests need root (network namespaces)");
    }
    root
}

/// Strip fields that legitimately differ between two runs (MACs, sandbox
/// paths, random veth names) so results of two implementations compare.
pub fn normalize_result(mut v: Value) -> Value {
    if let Some(ifaces) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifaces {
            if let Some(m) = i.as_object_mut() {
                m.remove("mac");
                if m.contains_key("sandbox") {
                    m.insert("sandbox".into(), Value::String("<netns>".into()));
                }
                if let Some(name) = m.get("name").and_then(Value::as_str)
                    && name.starts_with("veth")
                {
                    m.insert("name".into(), Value::String("veth<rand>".into()));
                }
            }
        }
    }
    v
}
