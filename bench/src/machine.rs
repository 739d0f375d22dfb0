//! The machine a run happened on, and the installed size of the binaries
//! compared.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::{ALL_PLUGINS, Fallible};

/// Standard output of a small command, trimmed; empty if it failed.
fn output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `/proc/loadavg`: the machine is shared, so its load is part of a result.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn describe(ours: &Path, reference: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let package = output("dpkg-query", &["-W", "containernetworking-plugins"]);
    json!({
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "cpu": cpu,
        "nproc": output("nproc", &[]).parse::<u64>().unwrap_or(0),
        "kernel": output("uname", &["-sr"]),
        "reference": format!(
            "{} ({})",
            reference.display(),
            if package.is_empty() { "unknown package".into() } else { package.replace('\t', " ") }
        ),
        // Relative to where the bench ran (normally the repository), so the
        // committed report names no machine's paths.
        "ours_dir": std::env::current_dir()
            .ok()
            .and_then(|cwd| ours.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
            .unwrap_or_else(|| ours.display().to_string()),
    })
}

/// Bytes of each of the four plugins, as installed (ours: the release
/// profile strips them).
pub fn sizes(ours: &Path, reference: &Path) -> Fallible<Value> {
    let mut o = Map::new();
    let mut r = Map::new();
    let (mut ot, mut rt) = (0u64, 0u64);
    for p in ALL_PLUGINS {
        let size = |dir: &Path| {
            std::fs::metadata(dir.join(p))
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", dir.join(p).display()))
        };
        let (a, b) = (size(ours)?, size(reference)?);
        ot += a;
        rt += b;
        o.insert((*p).into(), json!(a));
        r.insert((*p).into(), json!(b));
    }
    let file = |dir: &Path| output("file", &["-b", &dir.join("bridge").display().to_string()]);
    Ok(json!({
        "ours": o, "reference": r, "ours_total": ot, "reference_total": rt,
        "note": format!("`file bridge`: ours: {}; reference: {}", file(ours), file(reference)),
    }))
}
