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

// ---------------------------------------------------------------------------
// The structure: which crate may depend on which, and no circle between the
// top-level modules of a crate.

/// The crates under crates/, lowest layer first. A crate depends (also as
/// a dev-dependency) only on crates of a lower layer; plugins depend only
/// on crates; nothing depends on a plugin but the harnesses (tests, fuzz).
/// `test-support` is the test harness: a dev-dependency of crates and
/// plugins, a dependency only of the harnesses (tests, bench, demo).
const LAYERS: &[&[&str]] = &[
    // Knows nothing of the others: namespaces, the CNI protocol and types,
    // the address store.
    &["netns", "cni", "ipam-store"],
    // Mechanisms: links and routes (over netns), netfilter (nf_tables
    // netlink, knows nothing of CNI), the runtime (over cni).
    &["link", "netfilter", "runtime"],
    // A CNI result put on an interface (cni + link + netns).
    &["attach"],
];

const TEST_SUPPORT: &str = "test-support";

/// Arrows the layers would allow but the design does not: the netfilter
/// client and the address store know nothing of CNI.
const NEVER: &[(&str, &str)] = &[("netfilter", "cni"), ("ipam-store", "cni")];

/// Members that are harnesses, not shipped code: they may use anything.
const HARNESSES: &[&str] = &["tests", "bench", "demo", "packaging"];

/// One `[dependencies]`-like section entry of a manifest.
#[derive(Debug)]
struct Dep {
    name: String,
    dev: bool,
}

/// The dependencies of a manifest (`[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]`, also `[target.*.…]` and `[dependencies.<name>]`
/// tables), by the name they are declared with.
fn manifest_deps(text: &str) -> Vec<Dep> {
    let mut out = Vec::new();
    let mut section: Option<bool> = None; // Some(dev) inside a deps table
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            let last = header.rsplit('.').next().unwrap_or_default();
            // `[dependencies.foo]`: one dependency as a table.
            let parts: Vec<&str> = header.split('.').collect();
            if let Some(i) = parts.iter().position(|p| p.ends_with("dependencies"))
                && i + 1 < parts.len()
            {
                out.push(Dep {
                    name: parts[i + 1].to_string(),
                    dev: parts[i].starts_with("dev-"),
                });
                section = None;
                continue;
            }
            section = last
                .ends_with("dependencies")
                .then(|| last.starts_with("dev-"));
            continue;
        }
        let Some(dev) = section else { continue };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split(['=', '.']).next().unwrap_or_default().trim();
        if !key.is_empty() {
            out.push(Dep {
                name: key.trim_matches('"').to_string(),
                dev,
            });
        }
    }
    out
}

/// Workspace members: (package name, folder relative to the repo).
fn members() -> Vec<(String, String)> {
    let root = read("Cargo.toml");
    let list = root
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("root Cargo.toml has members");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .map(|dir| {
            let manifest = read(&format!("{dir}/Cargo.toml"));
            let name = manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("{dir}/Cargo.toml has no name"));
            (name, dir)
        })
        .collect()
}

fn layer_of(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&name))
}

#[test]
fn crates_form_layers_and_plugins_depend_only_on_crates() {
    let members = members();
    let kind = |name: &str| -> Option<&str> {
        let dir = &members.iter().find(|(n, _)| n == name)?.1;
        Some(if dir.starts_with("crates/") {
            "crate"
        } else if dir.starts_with("plugins/") {
            "plugin"
        } else {
            "harness"
        })
    };
    let mut wrong = Vec::new();
    for (name, dir) in &members {
        if dir.starts_with("crates/") && name != TEST_SUPPORT && layer_of(name).is_none() {
            wrong.push(format!(
                "{dir}: crate {name} has no place in LAYERS (tests/tests/layout.rs)"
            ));
        }
        for dep in manifest_deps(&read(&format!("{dir}/Cargo.toml"))) {
            let Some(dep_kind) = kind(&dep.name) else {
                continue; // from crates.io
            };
            let what = if dep.dev {
                "dev-dependency"
            } else {
                "dependency"
            };
            let arrow = format!("{dir}: {name} -> {} ({what})", dep.name);
            if NEVER.contains(&(name.as_str(), dep.name.as_str())) {
                wrong.push(format!("{arrow}: kept apart by design (NEVER)"));
            }
            if HARNESSES.contains(&dep.name.as_str()) {
                wrong.push(format!("{arrow}: nothing depends on a harness"));
                continue;
            }
            match kind(name) {
                Some("harness") | None => {}
                Some(k) if dep_kind == "plugin" => {
                    wrong.push(format!("{arrow}: a {k} never depends on a plugin"));
                }
                Some(_) if dep.name == TEST_SUPPORT => {
                    if !dep.dev {
                        wrong.push(format!("{arrow}: test-support is a dev-dependency only"));
                    }
                }
                Some("plugin") => {}
                Some(_) => {
                    if name == TEST_SUPPORT {
                        // The harness stands on the lowest layer only.
                        if layer_of(&dep.name) != Some(0) {
                            wrong.push(format!("{arrow}: test-support uses layer 0 only"));
                        }
                        continue;
                    }
                    match (layer_of(name), layer_of(&dep.name)) {
                        (Some(a), Some(b)) if b < a => {}
                        (a, b) => wrong.push(format!(
                            "{arrow}: an upward or sideways arrow (layer {a:?} -> {b:?})"
                        )),
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the crate graph breaks its layers (LAYERS in tests/tests/layout.rs):\n  {}",
        wrong.join("\n  ")
    );
}

/// The crate roots of a member: src/lib.rs, src/main.rs, src/bin/*.rs and
/// src/bin/*/main.rs.
fn crate_roots(dir: &Path) -> Vec<PathBuf> {
    let src = dir.join("src");
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.is_file())
        .collect();
    for entry in std::fs::read_dir(src.join("bin"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "rs") {
            roots.push(p);
        } else if p.join("main.rs").is_file() {
            roots.push(p.join("main.rs"));
        }
    }
    roots
}

/// Source without comments, string contents and `#[cfg(test)]` modules
/// (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break; // test modules close the file, by convention
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        kept.push_str(code);
        kept.push('\n');
    }
    // Blank string literals, so paths in messages do not count.
    let mut out = String::with_capacity(kept.len());
    let mut in_str = false;
    let mut prev = ' ';
    for c in kept.chars() {
        if c == '"' && prev != '\\' && prev != '\'' {
            in_str = !in_str;
            out.push('"');
        } else if !in_str {
            out.push(c);
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    out
}

/// `mod x;` declarations of a file (any visibility or attributes).
fn declared_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub ")
                .or_else(|| l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// The first segment of each path after `prefix` in `code`: `crate::a::b`
/// gives `a`, `crate::{a::X, b}` gives `a` and `b`.
fn first_segments(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back().unwrap_or(' ');
        if before.is_alphanumeric() || before == '_' || before == ':' {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(item.trim().split("::").next().unwrap_or("").to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(item.trim().split("::").next().unwrap_or("").to_string());
        } else {
            let seg: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
                .collect();
            out.push(seg);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The files of top-level module `name` of the crate rooted in `dir`.
fn module_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = dir.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let sub = dir.join(name);
    if sub.is_dir() {
        let mut inner = Vec::new();
        rust_sources(&sub, &mut inner);
        files.extend(inner);
    }
    files
}

/// The module path of `file` below the crate root folder `dir`:
/// `a.rs` and `a/mod.rs` are `[a]`, `a/b.rs` is `[a, b]`.
fn module_path(dir: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(dir).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

const ROOT: &str = "<crate root>";

/// Edges between the top-level modules of one crate (and its root, for
/// items defined in the root itself): `use crate::x`, `crate::x::…` and
/// `super::` paths that leave the module.
fn module_edges(root: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let dir = root.parent().unwrap();
    let root_code = code_of(&std::fs::read_to_string(root).unwrap());
    let modules = declared_modules(&root_code);
    // `pub use m::Item` in the root: `crate::Item` lives in m.
    let mut reexported: Vec<(String, String)> = Vec::new();
    for line in root_code.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ") {
            let m = rest.split("::").next().unwrap_or_default().to_string();
            if !modules.contains(&m) {
                continue;
            }
            for item in rest.split(|c: char| !c.is_alphanumeric() && c != '_') {
                reexported.push((item.to_string(), m.clone()));
            }
        }
    }
    let target = |seg: &str| -> Option<String> {
        if modules.iter().any(|m| m == seg) {
            return Some(seg.to_string());
        }
        if let Some((_, m)) = reexported.iter().find(|(i, _)| i == seg) {
            return Some(m.clone());
        }
        // An item of the root itself (or a glob): the root.
        Some(ROOT.to_string())
    };
    let mut edges = Vec::new();
    for m in &modules {
        for file in module_files(dir, m) {
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            let path = module_path(dir, &file);
            let mut segs: Vec<String> = first_segments(&code, "crate::");
            // `super::` from a file at module path `[m, …]` of length L,
            // repeated k times, names the module at depth L - k: only at
            // depth 0 (the root) does it leave `m`.
            for (i, _) in code.match_indices("super::") {
                let before = code[..i].chars().next_back().unwrap_or(' ');
                if before == ':' || before.is_alphanumeric() || before == '_' {
                    continue; // counted with the first `super::`
                }
                let rest = &code[i..];
                let mut ups = 0;
                while rest[ups * 7..].starts_with("super::") {
                    ups += 1;
                }
                if ups >= path.len() {
                    let after = &rest[ups * 7..];
                    segs.extend(
                        first_segments(&format!(" x::{after}"), "x::")
                            .into_iter()
                            .take(1),
                    );
                }
            }
            for seg in segs {
                if let Some(t) = target(&seg)
                    && &t != m
                {
                    edges.push((m.clone(), t));
                }
            }
        }
    }
    // The root's own uses of its modules (not its re-exports, which are
    // the face, not a dependency).
    for line in root_code.lines() {
        let t = line.trim();
        if t.starts_with("pub use ") || t.starts_with("pub mod ") || t.starts_with("mod ") {
            continue;
        }
        for m in &modules {
            let p = format!("{m}::");
            if t.match_indices(&p).any(|(i, _)| {
                let before = t[..i].chars().next_back().unwrap_or(' ');
                !(before.is_alphanumeric() || before == '_' || before == ':')
            }) {
                edges.push((ROOT.to_string(), m.clone()));
            }
        }
    }
    edges.sort();
    edges.dedup();
    (modules, edges)
}

/// A cycle in `edges`, as the list of its nodes, first repeated last.
fn find_cycle(edges: &[(String, String)]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &[(String, String)],
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        stack.push(node.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(c) = visit(to, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.push(node.to_string());
        None
    }
    let mut done = Vec::new();
    for (from, _) in edges {
        if let Some(c) = visit(from, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_circle_between_the_top_level_modules_of_a_crate() {
    let mut circles = Vec::new();
    let mut crates_seen = 0;
    for (_, dir) in members() {
        for root in crate_roots(&repo().join(&dir)) {
            crates_seen += 1;
            let (_, edges) = module_edges(&root);
            if let Some(cycle) = find_cycle(&edges) {
                let rel = root
                    .strip_prefix(repo())
                    .unwrap_or(&root)
                    .display()
                    .to_string();
                circles.push(format!(
                    "{}: {}",
                    rel.trim_start_matches("../"),
                    cycle.join(" -> ")
                ));
            }
        }
    }
    assert!(crates_seen > 20, "found only {crates_seen} crate roots");
    assert!(
        circles.is_empty(),
        "modules that import each other (through `crate::`/`super::`):\n  {}",
        circles.join("\n  ")
    );
}

/// The checker itself finds what it is for.
#[test]
fn the_structure_checks_see_a_circle_and_a_layer_break() {
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .map(|(x, y)| (x.to_string(), y.to_string()));
    assert_eq!(
        find_cycle(&edges).unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
    assert!(find_cycle(&edges[1..]).is_none());
    let segs = first_segments("use crate::{a::X, b};\nlet y = crate::c::f();", "crate::");
    assert_eq!(segs, ["a", "b", "c"]);
    let deps = manifest_deps(
        "[dependencies]\ncni.workspace = true\n[dev-dependencies]\ntest-support = { path = \"x\" }\n[dependencies.link]\nworkspace = true\n",
    );
    let deps: Vec<(String, bool)> = deps.into_iter().map(|d| (d.name, d.dev)).collect();
    assert_eq!(
        deps,
        [
            ("cni".to_string(), false),
            ("test-support".to_string(), true),
            ("link".to_string(), false)
        ]
    );
    assert!(layer_of("netns") < layer_of("link") && layer_of("link") < layer_of("attach"));
    assert!(layer_of("cni") < layer_of("attach"));
}
