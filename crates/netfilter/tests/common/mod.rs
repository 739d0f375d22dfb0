//! Helpers: every test runs in its own throwaway network namespace, whose
//! iptables and nftables state is private to it.

#![allow(dead_code)]

use std::process::Command;

/// Run `f` on a thread inside a fresh netns; the netns is removed afterwards
/// (also when `f` panics: the panic surfaces after cleanup).
pub fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let ns = netns::TempNetns::new("nattest").unwrap();
    let handle = ns.open().unwrap();
    match handle.run(f) {
        Ok(v) => v,
        Err(e) => panic!("test body failed in netns: {e}"),
    }
}

/// Run a command (on the calling thread, so inside its netns); panic on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables-save -t nat` without comment lines and counters, sorted chain
/// declarations dropped of the built-in ones.
pub fn nat_rules(v6: bool) -> Vec<String> {
    let out = sh(
        if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        },
        &["-t", "nat"],
    );
    out.lines()
        .filter(|l| !l.starts_with('#') && *l != "*nat" && *l != "COMMIT")
        .filter(|l| {
            !matches!(
                l.split(' ').next(),
                Some(":PREROUTING" | ":INPUT" | ":OUTPUT" | ":POSTROUTING")
            )
        })
        .map(str::to_string)
        .collect()
}

/// `nft list ruleset` lines that are rules or chain/table headers of CNI tables.
pub fn nft_ruleset() -> String {
    sh("nft", &["list", "ruleset"])
}

pub fn nft_table(family: &str, table: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", family, table])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
