//! The layout's promises, checked on the source tree (no root, no binaries):
//! every plugin folder is a workspace member and is on every list a
//! shipped plugin must be on, and no source file outgrows a sitting.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `plugins/<role>/<name>` folders that hold a Cargo.toml.
fn plugin_folders() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for role in ["main", "ipam", "meta"] {
        let dir = repo().join("plugins").join(role);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().join("Cargo.toml").is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                found.push((role.to_string(), name));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn plugins_live_in_role_folders_named_like_their_binary() {
    let folders = plugin_folders();
    assert!(!folders.is_empty(), "no plugin folders under plugins/");
    let stray: Vec<_> = std::fs::read_dir(repo().join("plugins"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["main", "ipam", "meta"].contains(&n.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "plugins/ holds only main/, ipam/, meta/: {stray:?}"
    );
    for (role, name) in &folders {
        let manifest = read(&format!("plugins/{role}/{name}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "plugins/{role}/{name}: the package (and binary) is named after its folder"
        );
    }
}

#[test]
fn every_plugin_is_on_every_shared_list() {
    let members = read("Cargo.toml");
    let makefile = read("Makefile");
    let make_plugins = makefile
        .lines()
        .find_map(|l| l.strip_prefix("PLUGINS :="))
        .unwrap_or_default();
    let packaging = read("packaging/Cargo.toml");
    let containerfile = read("deploy/Containerfile");
    let readme = read("README.md");
    let mut missing = Vec::new();
    for (role, name) in plugin_folders() {
        let mut need = |list: &str, ok: bool| {
            if !ok {
                missing.push(format!("{name}: {list}"));
            }
        };
        need(
            "root Cargo.toml members",
            members.contains(&format!("\"plugins/{role}/{name}\"")),
        );
        need(
            "Makefile PLUGINS",
            make_plugins.split_whitespace().any(|p| p == name),
        );
        need(
            "tests/src/lib.rs PLUGINS",
            integration::PLUGINS.contains(&name.as_str()),
        );
        need(
            "packaging/Cargo.toml assets (.deb and .rpm)",
            packaging
                .matches(&format!("\"target/release/{name}\""))
                .count()
                >= 2,
        );
        need(
            "deploy/Containerfile build (-p) and install lists",
            containerfile.contains(&format!("-p {name} "))
                && containerfile
                    .lines()
                    .filter(|l| l.contains("for b in"))
                    .any(|l| l.split([' ', ';']).any(|w| w == name)),
        );
        need(
            "README.md section",
            readme.lines().any(|l| {
                l.strip_prefix("### ")
                    .and_then(|h| h.split(" (").next())
                    .is_some_and(|h| h.split(", ").any(|w| w == name.as_str()))
            }),
        );
    }
    assert!(
        missing.is_empty(),
        "a new plugin is one folder plus one workspace line to build and test, \
         and one line on each shared list to ship (README \"Adding a plugin\"); missing:\n  {}",
        missing.join("\n  ")
    );
}

/// Source files a newcomer can read in one sitting. Tests are exempt.
const MAX_LINES: usize = 800;

/// Files known to be over the limit, each with the work that splits it.
/// A listed file that shrinks is fine; a new one over the limit is not.
const KNOWN_LONG: &[&str] = &[];

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "tests" | ".git") {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_outside_tests_is_over_800_lines() {
    let root = repo();
    let mut files = Vec::new();
    for top in ["crates", "plugins", "demo", "bench", "fuzz"] {
        rust_sources(&root.join(top), &mut files);
    }
    assert!(!files.is_empty());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            (lines > MAX_LINES && !KNOWN_LONG.contains(&rel.as_str()))
                .then(|| format!("{rel}: {lines} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these into files of one concern each:\n  {}",
        long.join("\n  ")
    );
}
