//! The floors under the figures: what the measuring method itself costs
//! (a wrapped `true`), what each plugin costs just to start (VERSION), what
//! the netfilter helpers cost on their own, and what the kernel charges for
//! exec'ing a program and for creating and deleting a veth pair.

use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::lab::{Chain, Lab, Variant};
use crate::stats::median_ms;
use crate::{ALL_PLUGINS, Fallible, wrapper};

/// A lab only for its namespace and temporary directory.
fn scratch(ours: &Path) -> Variant {
    Variant {
        implementation: "ours",
        backend: "iptables",
        plugin_dir: ours.to_path_buf(),
        chain: Chain::Bench,
    }
}

/// Peak RSS (KiB) of `name` run through an rss wrapper in `wrap_dir`, as
/// the chain rounds measure plugins, so the figures share one floor.
fn wrapped_rss(
    wrap_dir: &Path,
    log: &Path,
    name: &str,
    args: &[&str],
    input: &str,
) -> Fallible<i64> {
    use std::io::Write;
    let mut child = std::process::Command::new(wrap_dir.join(name))
        .args(args)
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {name}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let _ = child.wait();
    let got = wrapper::collect(log)?;
    got.rss
        .first()
        .map(|r| r.1)
        .ok_or_else(|| format!("no RSS logged for {name}"))
}

/// The floors under the per-invocation figures, measured through the same
/// wrapper: `true` (the wrapper's own share: a spawned child's peak starts
/// at its parent's size at the fork), each plugin answering VERSION
/// (start-up, no children), and each netfilter helper doing a trivial job
/// in an empty namespace.
pub fn rss(ours: &Path, reference: &Path) -> Fallible<Value> {
    let lab = Lab::new(scratch(ours))?;
    let real = lab.state_dir().join("floor-real");
    std::fs::create_dir_all(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    let helpers: [(&str, &str, &[&str], &str); 4] = [
        ("true", "/bin/true", &[], ""),
        ("iptables", "/usr/sbin/iptables", &["-t", "nat", "-S"], ""),
        (
            "iptables-restore",
            "/usr/sbin/iptables-restore",
            &["--noflush"],
            "*nat\nCOMMIT\n",
        ),
        ("nft", "/usr/sbin/nft", &["list", "ruleset"], ""),
    ];
    for (name, target, _, _) in &helpers {
        std::os::unix::fs::symlink(target, real.join(name))
            .map_err(|e| format!("symlink {target}: {e}"))?;
    }
    let log = lab.state_dir().join("floor-log");
    let wrap = lab.state_dir().join("floor-wrap");
    let names: Vec<&str> = helpers.iter().map(|h| h.0).collect();
    wrapper::install(&wrap, &real, &log, wrapper::Mode::Rss, &names, false)?;
    let mut helper_kb = Map::new();
    for (name, _, args, input) in &helpers {
        let label = format!("{name} {}", args.join(" "));
        helper_kb.insert(
            label.trim().to_string(),
            json!(wrapped_rss(&wrap, &log, name, args, input)?),
        );
    }
    let mut plugins = Map::new();
    for (name, dir) in [("ours", ours), ("reference", reference)] {
        let wrap = lab.state_dir().join(format!("floor-{name}"));
        wrapper::install(&wrap, dir, &log, wrapper::Mode::Rss, ALL_PLUGINS, false)?;
        let mut m = Map::new();
        for p in ALL_PLUGINS {
            m.insert(
                (*p).into(),
                json!(wrapped_rss(
                    &wrap,
                    &log,
                    p,
                    &[],
                    "{\"cniVersion\":\"1.0.0\"}"
                )?),
            );
        }
        plugins.insert(name.into(), Value::Object(m));
    }
    drop(lab);
    Ok(json!({"version_command": plugins, "helpers": helper_kb}))
}

/// What the kernel and the process model cost before any plugin logic:
/// exec'ing a trivial program, creating a veth pair with one end in another
/// namespace, and deleting it (unregistering a device waits for RCU grace
/// periods). Both implementations pay the veth costs on every ADD and DEL.
pub fn kernel(ours: &Path) -> Fallible<Value> {
    let lab = Lab::new(scratch(ours))?;
    let (mut exec, mut add, mut del) = (Vec::new(), Vec::new(), Vec::new());
    // Each plugin of the bench chain answering VERSION: the start-up and
    // exit every verb pays once per plugin (the process floor under DEL).
    let mut version: Vec<(&str, Vec<std::time::Duration>)> = scratch(ours)
        .plugins()
        .iter()
        .map(|p| (*p, Vec::new()))
        .collect();
    let run = |args: &[&str]| -> Fallible<std::time::Duration> {
        let t = Instant::now();
        lab.ip(args)?;
        Ok(t.elapsed())
    };
    for i in 0..15 {
        let ns = netns::TempNetns::new("cni-bench-floor").map_err(|e| e.to_string())?;
        let t = Instant::now();
        let _ = std::process::Command::new("true").status();
        exec.push(t.elapsed());
        for (plugin, times) in &mut version {
            times.push(version_exec(&ours.join(*plugin))?);
        }
        let name = format!("vfloor{i}");
        add.push(run(&[
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?);
        del.push(run(&["link", "del", &name])?);
    }
    drop(lab);
    let version_ms: Map<String, Value> = version
        .iter()
        .map(|(p, t)| ((*p).to_string(), json!(median_ms(t))))
        .collect();
    Ok(json!({
        "exec_true_ms": median_ms(&exec),
        "exec_version_ms": version_ms,
        "ip_veth_add_ms": median_ms(&add),
        "ip_veth_del_ms": median_ms(&del),
    }))
}

/// Spawn `bin` with `CNI_COMMAND=VERSION` and a config on stdin, as a
/// runtime does, and wait for it: the whole start-to-exit of one plugin.
fn version_exec(bin: &Path) -> Fallible<std::time::Duration> {
    use std::io::Write;
    let t = Instant::now();
    let mut child = std::process::Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{\"cniVersion\":\"1.0.0\"}");
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {}: {e}", bin.display()))?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(format!("{} VERSION: {}", bin.display(), out.status));
    }
    Ok(elapsed)
}
