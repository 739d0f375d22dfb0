//! `cni-bench`: this project's plugins against the Go reference plugins, in
//! one run, through the same runtime crate, inside throwaway namespaces.
//!
//! Measures the chain bridge + host-local + portmap (ADD, CHECK, DEL at 0,
//! 100 and 500 attached containers, iptables and nftables backends), the
//! programs each verb executes, peak RSS per plugin invocation, installed
//! sizes, 64 concurrent ADDs, and host-local alone with 10,000 existing
//! reservations. Writes `results.json` and `RESULTS.md` to the output
//! directory; `scripts/bench-chart.py` draws the chart from the JSON.
//!
//! When exec'd under a plugin's name from a wrapper directory it is the
//! measuring wrapper instead (see `wrapper.rs`).

mod chain;
mod concurrency;
mod host_local;
mod lab;
mod report;
mod stats;
mod wrapper;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};

use lab::{Lab, Variant};

pub type Fallible<T> = Result<T, String>;

const ALL_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Err once Ctrl-C was pressed, so every guard on the way out cleans up.
pub fn check_interrupted() -> Fallible<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

struct Options {
    ours: PathBuf,
    reference: PathBuf,
    out: PathBuf,
    attached: Vec<usize>,
    concurrent: usize,
    reservations: u32,
    quick: bool,
}

const USAGE: &str = "usage: cni-bench [--ours DIR] [--reference DIR] [--out DIR] [--quick]

  --ours DIR       this project's plugins (default: the directory of cni-bench)
  --reference DIR  the Go reference plugins (default: /usr/lib/cni)
  --out DIR        where results.json and RESULTS.md go (default: docs/bench)
  --quick          a smoke run: 0 and 10 attached, few repetitions

Needs root (network namespaces) and strace. Everything runs in throwaway
namespaces and temporary directories.";

fn parse_args() -> Fallible<Options> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut o = Options {
        ours: exe_dir,
        reference: PathBuf::from("/usr/lib/cni"),
        out: PathBuf::from("docs/bench"),
        attached: vec![0, 100, 500],
        concurrent: 64,
        reservations: 10_000,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--ours" => o.ours = value()?.into(),
            "--reference" => o.reference = value()?.into(),
            "--out" => o.out = value()?.into(),
            "--quick" => {
                o.quick = true;
                o.attached = vec![0, 10];
                o.concurrent = 8;
                o.reservations = 1000;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// Repetitions per point: fewer where each round is slow.
fn reps(o: &Options, attached: usize) -> usize {
    match (o.quick, attached) {
        (true, _) => 3,
        (false, 0) => 40,
        (false, n) if n <= 100 => 25,
        _ => 15,
    }
}

fn preflight(o: &Options) -> Fallible<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("cni-bench needs root (network namespaces): run `sudo make bench`".into());
    }
    for dir in [&o.ours, &o.reference] {
        for p in ALL_PLUGINS {
            if !dir.join(p).is_file() {
                return Err(format!(
                    "{} missing (build with `make build`)",
                    dir.join(p).display()
                ));
            }
        }
    }
    let strace = std::process::Command::new("strace").arg("-V").output();
    if !strace.is_ok_and(|o| o.status.success()) {
        return Err("strace is needed to count executed programs: apt-get install strace".into());
    }
    Ok(())
}

fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine(o: &Options) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let reference = shell("dpkg-query", &["-W", "containernetworking-plugins"]);
    json!({
        "date": shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "cpu": cpu,
        "nproc": shell("nproc", &[]).parse::<u64>().unwrap_or(0),
        "kernel": shell("uname", &["-sr"]),
        "reference": format!("{} ({})", o.reference.display(), if reference.is_empty() { "unknown package".into() } else { reference.replace('\t', " ") }),
        "ours_dir": o.ours.display().to_string(),
    })
}

fn sizes(o: &Options) -> Fallible<Value> {
    let mut ours = Map::new();
    let mut reference = Map::new();
    let (mut ot, mut rt) = (0u64, 0u64);
    for p in ALL_PLUGINS {
        let size = |dir: &Path| {
            std::fs::metadata(dir.join(p))
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", dir.join(p).display()))
        };
        let (a, b) = (size(&o.ours)?, size(&o.reference)?);
        ot += a;
        rt += b;
        ours.insert((*p).into(), json!(a));
        reference.insert((*p).into(), json!(b));
    }
    let file = |dir: &Path| shell("file", &["-b", &dir.join("bridge").display().to_string()]);
    Ok(json!({
        "ours": ours, "reference": reference, "ours_total": ot, "reference_total": rt,
        "note": format!("`file bridge`: ours: {}; reference: {}", file(&o.ours), file(&o.reference)),
    }))
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
fn rss_floor(o: &Options) -> Fallible<Value> {
    let lab = Lab::new(variants(o).remove(0))?;
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
    for (name, dir) in [("ours", &o.ours), ("reference", &o.reference)] {
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
fn kernel_floor(o: &Options) -> Fallible<Value> {
    let lab = Lab::new(variants(o).remove(0))?;
    let (mut exec, mut add, mut del) = (Vec::new(), Vec::new(), Vec::new());
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
    Ok(json!({
        "exec_true_ms": stats::median_ms(&exec),
        "ip_veth_add_ms": stats::median_ms(&add),
        "ip_veth_del_ms": stats::median_ms(&del),
    }))
}

fn variants(o: &Options) -> Vec<Variant> {
    vec![
        Variant {
            implementation: "ours",
            backend: "iptables",
            plugin_dir: o.ours.clone(),
        },
        Variant {
            implementation: "reference",
            backend: "iptables",
            plugin_dir: o.reference.clone(),
        },
        Variant {
            implementation: "ours",
            backend: "nftables",
            plugin_dir: o.ours.clone(),
        },
    ]
}

fn key(v: &Variant) -> String {
    format!("{}/{}", v.implementation, v.backend)
}

fn run(o: &Options) -> Fallible<Value> {
    let started = Instant::now();
    let load_before = shell("cat", &["/proc/loadavg"]);
    let floor = rss_floor(o)?;
    let kernel = kernel_floor(o)?;
    let mut chain = Map::new();
    let mut conc = Map::new();
    let all = variants(o);
    // The reference has no nftables backend: iptables compares two labs
    // with interleaved rounds, nftables measures ours alone.
    let groups: Vec<Vec<Variant>> = vec![
        all.iter()
            .filter(|v| v.backend == "iptables")
            .cloned()
            .collect(),
        all.iter()
            .filter(|v| v.backend == "nftables")
            .cloned()
            .collect(),
    ];
    let mut controls = Map::new();
    for group in groups {
        // Each of ours gets a control lab that stays at 0 attached and is
        // measured in the same interleaved rounds, so "N attached vs 0" is
        // a comparison made at the same moment, not minutes apart on a
        // machine whose load changes.
        let mut labs = Vec::new();
        let mut is_control = Vec::new();
        for v in &group {
            labs.push(Lab::new(v.clone())?);
            is_control.push(false);
        }
        for v in group.iter().filter(|v| v.implementation == "ours") {
            labs.push(Lab::new(v.clone())?);
            is_control.push(true);
        }
        let mut points: Vec<Vec<Value>> = vec![Vec::new(); labs.len()];
        for &n in &o.attached {
            let mut attach_s = Vec::new();
            for (lab, &control) in labs.iter_mut().zip(&is_control) {
                let t = Instant::now();
                if !control {
                    lab.attach_until(n)?;
                }
                attach_s.push(t.elapsed().as_secs_f64());
            }
            check_interrupted()?;
            let refs: Vec<&Lab> = labs.iter().collect();
            let measured = chain::measure(&refs, reps(o, n))?;
            for (i, mut p) in measured.into_iter().enumerate() {
                p["attach_seconds"] = json!(attach_s[i]);
                if is_control[i] {
                    p["measured_with"] = json!(n);
                    points[i].push(p);
                    continue;
                }
                eprintln!(
                    "[{:>4.0}s] {}: {n} attached: ADD {:.1} ms, DEL {:.1} ms, ADD+DEL {:.1} ms{}",
                    started.elapsed().as_secs_f64(),
                    labs[i].variant.label(),
                    p["add_ms"].as_f64().unwrap_or(0.0),
                    p["del_ms"].as_f64().unwrap_or(0.0),
                    p["add_del_ms"].as_f64().unwrap_or(0.0),
                    if p["check_error"].is_null() {
                        ""
                    } else {
                        " (CHECK fails)"
                    },
                );
                points[i].push(p);
            }
            check_interrupted()?;
        }
        let variants: Vec<Variant> = labs.iter().map(|l| l.variant.clone()).collect();
        drop(labs);
        for ((v, pts), control) in variants.iter().zip(points).zip(is_control) {
            if control {
                controls.insert(key(v), Value::Array(pts));
            } else {
                chain.insert(key(v), Value::Array(pts));
            }
        }
    }
    for v in &all {
        let lab = Lab::new(v.clone())?;
        let c = concurrency::measure(&lab, o.concurrent)?;
        eprintln!(
            "[{:>4.0}s] {}: {} concurrent ADDs: {:.0} ms, {} failures, {} duplicates",
            started.elapsed().as_secs_f64(),
            v.label(),
            o.concurrent,
            c["add_wall_ms"].as_f64().unwrap_or(0.0),
            c["add_failures"],
            c["duplicate_addresses"]
        );
        conc.insert(key(v), c);
        drop(lab);
        check_interrupted()?;
    }

    let mut hl = Map::new();
    for (name, dir) in [("ours", &o.ours), ("reference", &o.reference)] {
        let bin = dir.join("host-local");
        let reps = if o.quick { 3 } else { 30 };
        let pts = vec![
            host_local::measure(&bin, 0, reps)?,
            host_local::measure(&bin, o.reservations, reps)?,
        ];
        eprintln!(
            "[{:>4.0}s] host-local {name}: ADD {:.1} -> {:.1} ms, DEL {:.1} -> {:.1} ms",
            started.elapsed().as_secs_f64(),
            pts[0]["add_ms"].as_f64().unwrap_or(0.0),
            pts[1]["add_ms"].as_f64().unwrap_or(0.0),
            pts[0]["del_ms"].as_f64().unwrap_or(0.0),
            pts[1]["del_ms"].as_f64().unwrap_or(0.0),
        );
        hl.insert(name.into(), Value::Array(pts));
        check_interrupted()?;
    }

    Ok(json!({
        "machine": machine(o),
        "load_average": {"start": load_before, "end": shell("cat", &["/proc/loadavg"])},
        "attached": o.attached,
        "chain": chain,
        "control_at_0": controls,
        "concurrency": conc,
        "host_local": hl,
        "sizes": sizes(o)?,
        "rss_floor_kb": floor,
        "kernel_floor_ms": kernel,
        "duration_seconds": started.elapsed().as_secs_f64(),
        "method": [
            "Each variant runs in its own throwaway host namespace (which the bench thread enters, so the runtime execs every plugin there) with its own temporary result cache and host-local dataDir.",
            "Both implementations are driven by the same `runtime::Runtime` with the same conflist (cniVersion 1.0.0); the reference ignores the backend keys it does not know.",
            "Attached containers are real: a namespace each, attached through the same chain (veth, address, one hostPort each), so bridge ports, reservations and netfilter rules grow with N.",
            "Latency: median over the repetitions after one warm-up round; the measured container is added, checked and deleted in each round. On iptables, ours and the reference have a lab each and their rounds alternate, so other load on the machine falls on both alike.",
            "Scaling: each of ours also has a control lab that stays at 0 attached and is measured in the same alternating rounds as every N; the goal \"N attached ≤ 1.2× 0 attached\" compares N with that control, measured at the same moment.",
            "Processes: one extra round with every plugin exec'd as `strace -f -e trace=execve` (CNI_PATH pointing at the real plugins, so delegates are traced too).",
            "Peak RSS: one extra round with every plugin exec'd by a wrapper that `wait4`s it (ru_maxrss: max over the plugin and the descendants it reaped).",
            "Concurrency: N threads released by one barrier, each `Runtime::add` on its own namespace; then N concurrent DELs; leaks counted afterwards (reservation files, host veths, netfilter lines naming a container address or id).",
            "host-local alone: reservations written as files in the shared on-disk format, one untimed DEL first, then ADD/DEL rounds.",
        ],
    }))
}

fn main() {
    wrapper::run_if_wrapper();
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            std::process::exit(2);
        }
    };
    // Absolute, so wrapper symlinks into them work from anywhere.
    let mut o = o;
    for dir in [&mut o.ours, &mut o.reference] {
        if let Ok(abs) = std::fs::canonicalize(&*dir) {
            *dir = abs;
        }
    }
    if let Err(e) = preflight(&o) {
        eprintln!("cni-bench: {e}");
        std::process::exit(1);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let results = match run(&o) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            std::process::exit(1);
        }
    };
    let write = |name: &str, text: String| -> Fallible<()> {
        std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
        let path = o.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok(())
    };
    let pretty = serde_json::to_string_pretty(&results).unwrap_or_default();
    if let Err(e) = write("results.json", pretty + "\n")
        .and_then(|()| write("RESULTS.md", report::markdown(&results)))
    {
        eprintln!("cni-bench: {e}");
        std::process::exit(1);
    }
}
