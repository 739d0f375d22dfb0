//! The measuring wrapper: `cni-bench` installed (as a symlink) under a
//! plugin's name in a wrapper directory. The runtime execs the wrapper
//! instead of the plugin; the wrapper runs the real plugin and records what
//! that one invocation cost.
//!
//! Two modes, never mixed in one run, because each distorts what the other
//! measures:
//! - `rss`: fork+exec the real plugin and `wait4` it. The kernel reports, for
//!   a reaped child, the larger of its own peak RSS and that of every
//!   descendant it reaped (`getrusage(RUSAGE_BOTH)` on the zombie), so the
//!   figure is "peak RSS of the plugin or of any process it waited for"
//!   (its IPAM delegate, iptables, nft). The wrapper itself is the parent and
//!   is not counted.
//! - `strace`: replace ourselves by `strace -f -e trace=execve` running the
//!   real plugin, so every program the plugin tree executes is logged.
//!
//! In both modes the real plugin gets `CNI_PATH` = the real directory, so its
//! delegate (bridge → host-local) is the real binary and is part of its tree.
//!
//! The wrapper is configured by `bench-wrapper.json` next to the symlink, not
//! by the environment, so the runtime's environment stays exactly what a
//! plain run would see.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// Name of the configuration file in a wrapper directory.
pub const CONFIG_FILE: &str = "bench-wrapper.json";

/// How a wrapper directory measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Rss,
    Strace,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Rss => "rss",
            Mode::Strace => "strace",
        }
    }
}

/// Environment variable naming the wrapper directory for nested wrappers:
/// a plugin execs a helper by bare name (`iptables-restore`), so the
/// wrapper cannot find its configuration from `argv[0]`.
const DIR_ENV: &str = "CNI_BENCH_WRAPPER_DIR";

/// A directory of wrappers for `plugins`, logging into `log_dir`. With
/// `nest`, the plugins' delegates (`CNI_PATH`) and helpers (`PATH`) are
/// wrapped too, so each program's own peak and time are logged; `real_dir`
/// must then hold every wrapped name.
pub fn install(
    dir: &Path,
    real_dir: &Path,
    log_dir: &Path,
    mode: Mode,
    plugins: &[&str],
    nest: bool,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("locate cni-bench itself: {e}"))?;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    fs::create_dir_all(log_dir).map_err(|e| format!("create {}: {e}", log_dir.display()))?;
    for p in plugins {
        let link = dir.join(p);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&exe, &link)
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
    }
    let conf = json!({
        "real": real_dir.display().to_string(),
        "log": log_dir.display().to_string(),
        "mode": mode.as_str(),
        "nest": nest,
    });
    fs::write(dir.join(CONFIG_FILE), conf.to_string())
        .map_err(|e| format!("write {}: {e}", dir.join(CONFIG_FILE).display()))
}

/// If this process was started as a wrapper, run as one and never return.
/// Called first thing in `main`.
pub fn run_if_wrapper() {
    let Some(argv0) = std::env::args_os().next() else {
        return;
    };
    let argv0 = PathBuf::from(argv0);
    let Some(name) = argv0.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if name == "cni-bench" {
        return;
    }
    let dir = match argv0.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => match std::env::var_os(DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => return,
        },
    };
    let Ok(text) = fs::read_to_string(dir.join(CONFIG_FILE)) else {
        return;
    };
    let name = name.to_string();
    let name = name.as_str();
    let code = match wrap(name, &dir, &text) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cni-bench wrapper for {name}: {e}");
            // A CNI-shaped error, so the runtime reports it sensibly.
            println!("{}", json!({"cniVersion": "1.0.0", "code": 999, "msg": e}));
            1
        }
    };
    std::process::exit(code);
}

fn wrap(name: &str, dir: &Path, conf_text: &str) -> Result<i32, String> {
    let conf: Value = serde_json::from_str(conf_text).map_err(|e| format!("{CONFIG_FILE}: {e}"))?;
    let field = |k: &str| {
        conf[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{CONFIG_FILE}: missing {k}"))
    };
    let real_dir = PathBuf::from(field("real")?);
    let log_dir = PathBuf::from(field("log")?);
    let real = real_dir.join(name);
    let verb = std::env::var("CNI_COMMAND").unwrap_or_default();
    let pid = std::process::id();
    match field("mode")?.as_str() {
        "strace" => {
            let out = log_dir.join(format!("strace.{name}.{verb}.{pid}"));
            let err = Command::new("strace")
                .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
                .arg(&out)
                .arg(&real)
                .env("CNI_PATH", &real_dir)
                .exec();
            Err(format!("exec strace: {err}"))
        }
        "rss" => {
            let mut cmd = Command::new(&real);
            cmd.args(std::env::args_os().skip(1));
            if conf["nest"].as_bool() == Some(true) {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![dir.to_path_buf()];
                dirs.extend(std::env::split_paths(&path).filter(|d| d != dir));
                let path = std::env::join_paths(dirs).map_err(|e| format!("PATH: {e}"))?;
                cmd.env(DIR_ENV, dir).env("PATH", path);
                if std::env::var_os("CNI_PATH").is_some() {
                    cmd.env("CNI_PATH", dir);
                }
            } else {
                cmd.env("CNI_PATH", &real_dir);
            }
            // Force fork+exec instead of posix_spawn's vfork: a vforked
            // child shares our memory, and the kernel carries that memory's
            // peak into the child's ru_maxrss across exec. A forked child
            // starts from our (small) anonymous memory only, which lowers
            // the floor under every figure.
            // SAFETY: the closure does nothing, so it is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| Ok(()));
            }
            let started = std::time::Instant::now();
            let child = cmd
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", real.display()))?;
            let (code, maxrss_kb) = wait_with_rusage(child.id())?;
            let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
            let line = json!({"plugin": name, "verb": verb, "maxrss_kb": maxrss_kb, "wall_ms": wall_ms, "exit": code});
            let path = log_dir.join(format!("rss.{name}.{verb}.{pid}"));
            let mut f = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(code)
        }
        other => Err(format!("{CONFIG_FILE}: unknown mode {other:?}")),
    }
}

/// `wait4` the child: its exit code and peak RSS (KiB) over it and the
/// descendants it reaped.
pub fn wait_with_rusage(pid: u32) -> Result<(i32, i64), String> {
    let pid = libc::pid_t::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live locals of the right type.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4 {pid}: {err}"));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, usage.ru_maxrss))
}

/// What the wrappers logged since the last call, removing the logs.
pub struct Collected {
    /// (program, peak RSS KiB, wall ms) per wrapped invocation.
    pub rss: Vec<(String, i64, f64)>,
    /// (plugin, verb, programs executed by its tree, the plugin included).
    pub execs: Vec<(String, String, Vec<String>)>,
}

pub fn collect(log_dir: &Path) -> Result<Collected, String> {
    let mut c = Collected {
        rss: Vec::new(),
        execs: Vec::new(),
    };
    let entries = fs::read_dir(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = fs::remove_file(&path);
        // kind.program.verb.pid; program names have no dots, the verb may
        // be empty (a helper exec'd without CNI_COMMAND).
        let parts: Vec<&str> = file.splitn(4, '.').collect();
        let [kind, plugin, verb, _pid] = parts[..] else {
            continue;
        };
        match kind {
            "rss" => {
                let v: Value = serde_json::from_str(text.trim())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                c.rss.push((
                    plugin.into(),
                    v["maxrss_kb"].as_i64().unwrap_or(0),
                    v["wall_ms"].as_f64().unwrap_or(0.0),
                ));
            }
            "strace" => c
                .execs
                .push((plugin.into(), verb.into(), successful_execs(&text))),
            _ => {}
        }
    }
    c.rss.sort_by(|a, b| a.0.cmp(&b.0));
    c.execs.sort();
    Ok(c)
}

/// Programs (base names) whose `execve` succeeded, in an `strace -f -o` log.
/// With `-f` a call may be split into `execve("/p", ... <unfinished ...>`
/// and `<... execve resumed>) = 0` lines of the same pid.
pub fn successful_execs(log: &str) -> Vec<String> {
    let mut pending: std::collections::HashMap<&str, String> = Default::default();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(call) = rest.strip_prefix("execve(\"") {
            let prog = call.split('"').next().unwrap_or("").to_string();
            let base = prog.rsplit('/').next().unwrap_or("").to_string();
            if rest.ends_with("<unfinished ...>") {
                pending.insert(pid, base);
            } else if rest.ends_with("= 0") {
                out.push(base);
            }
        } else if rest.starts_with("<... execve resumed>")
            && let Some(base) = pending.remove(pid)
            && rest.ends_with("= 0")
        {
            out.push(base);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_successful_execs_including_split_ones() {
        let log = "10 execve(\"/usr/lib/cni/bridge\", [\"bridge\"], 0x7ffd /* 9 vars */) = 0\n\
                   11 execve(\"/usr/local/sbin/iptables\", [\"iptables\"], 0x1 /* 9 vars */) = -1 ENOENT (No such file or directory)\n\
                   11 execve(\"/usr/sbin/iptables\", [\"iptables\"], 0x1 /* 9 vars */ <unfinished ...>\n\
                   12 execve(\"/usr/lib/cni/host-local\", [\"host-local\"], 0x1 /* 9 vars */) = 0\n\
                   11 <... execve resumed>)                = 0\n";
        assert_eq!(
            successful_execs(log),
            vec!["bridge", "host-local", "iptables"]
        );
    }
}
