//! `cni-bench`: this project's plugins against the Go reference plugins, in
//! one run, through the same runtime crate, inside throwaway namespaces.
//!
//! Measures the chain bridge + host-local + portmap (ADD, CHECK, DEL at 0,
//! 100 and 500 attached containers, iptables and nftables backends), the
//! programs each verb executes, peak RSS per plugin invocation, installed
//! sizes, 64 concurrent ADDs, and host-local alone with 10,000 existing
//! reservations; and podman 4's default chain (bridge + host-local,
//! portmap, firewall, tuning) ours against the reference. Writes `results.json` and `RESULTS.md` to the output
//! directory; `scripts/bench-chart.py` draws the chart from the JSON.
//!
//! When exec'd under a plugin's name from a wrapper directory it is the
//! measuring wrapper instead (see `wrapper.rs`).

mod basics;
mod chain;
mod concurrency;
mod floor_chain;
mod floors;
mod host_local;
mod lab;
mod machine;
mod report;
mod report_cells;
mod report_goals;
mod stats;
mod wrapper;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};

use basics::on_signal;
pub use basics::{ALL_PLUGINS, Fallible, check_interrupted};
use lab::{Chain, Lab, Variant};

/// Needed too, by the podman chain only.
const PODMAN_PLUGINS: &[&str] = &["firewall", "tuning"];

struct Options {
    ours: PathBuf,
    reference: PathBuf,
    out: PathBuf,
    attached: Vec<usize>,
    concurrent: usize,
    reservations: u32,
    quick: bool,
    /// `--only podman`: the podman chain row alone.
    only_podman: bool,
    /// `--only chain`: ours' chain rows (both backends, with their
    /// 0-attached controls) alone, no reference lab.
    only_chain: bool,
    /// `--only floor`: the floor row alone.
    only_floor: bool,
    /// `--rounds N`: repetitions per point instead of the default.
    rounds: Option<usize>,
}

const USAGE: &str = "usage: cni-bench [--ours DIR] [--reference DIR] [--out DIR] [--quick]
                 [--only podman|chain|floor] [--rounds N] [--attached N,M,...]

  --ours DIR       this project's plugins (default: the directory of cni-bench)
  --reference DIR  the Go reference plugins (default: /usr/lib/cni)
  --out DIR        where results.json and RESULTS.md go (default: docs/bench)
  --quick          a smoke run: 0 and 10 attached, few repetitions
  --only podman    only podman 4's default chain (bridge + host-local,
                   portmap, firewall, tuning), ours vs the reference
  --only chain     only ours' chain rows on both backends, each N beside
                   its 0-attached control (no reference, no other scenario)
  --only floor     only the floor row (the chain's kernel work in this
                   process, no exec)
  --rounds N       N timed rounds per point (default 40, 3 with --quick)
  --attached LIST  the attached counts measured, e.g. 0,500 (default
                   0,100,500; 0,10 with --quick)

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
        only_podman: false,
        only_chain: false,
        only_floor: false,
        rounds: None,
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
            "--only" => match value()?.as_str() {
                "podman" => o.only_podman = true,
                "chain" => o.only_chain = true,
                "floor" => o.only_floor = true,
                other => {
                    return Err(format!(
                        "--only: unknown scenario {other:?} (known: podman, chain, floor)"
                    ));
                }
            },
            "--attached" => {
                let v = value()?;
                let list: Option<Vec<usize>> =
                    v.split(',').map(|n| n.trim().parse().ok()).collect();
                o.attached = list
                    .filter(|l| !l.is_empty())
                    .ok_or(format!("--attached: {v:?} is not a list of numbers"))?;
            }
            "--rounds" => {
                let v = value()?;
                o.rounds = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--rounds: {v:?} is not a positive number"))?,
                );
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

/// Ours on each backend at `n` attached and a control lab at 0, measured
/// in the same interleaved rounds, with the measured container's IPv6 off.
fn chain_ipv6_off(o: &Options, n: usize, started: Instant) -> Fallible<Value> {
    let mut out = Map::new();
    for v in variants(o)
        .into_iter()
        .filter(|v| v.implementation == "ours")
    {
        let mut at_n = Lab::new(v.clone())?;
        let control = Lab::new(v.clone())?;
        at_n.attach_until(n)?;
        check_interrupted()?;
        let pts =
            chain::measure_container(&[&at_n, &control], reps(o, n), chain::ContainerIpv6::Off)?;
        let [p, c] = <[Value; 2]>::try_from(pts).map_err(|_| "two points expected".to_string())?;
        eprintln!(
            "[{:>4.0}s] {}, measured container's IPv6 off: {n} attached ADD+DEL {:.1} ms, control at 0 {:.1} ms",
            started.elapsed().as_secs_f64(),
            v.label(),
            p["add_del_ms"].as_f64().unwrap_or(0.0),
            c["add_del_ms"].as_f64().unwrap_or(0.0),
        );
        out.insert(
            key(&v),
            json!({"attached": n, "at_n": p, "control_at_0": c}),
        );
    }
    Ok(Value::Object(out))
}

/// Repetitions per point. As many at 500 as at 0: a DEL's time is mostly
/// the kernel's RCU grace periods, which vary by ±10 ms from one DEL to
/// the next, and the scaling goal compares medians of both.
fn reps(o: &Options, _attached: usize) -> usize {
    o.rounds.unwrap_or(if o.quick { 3 } else { 40 })
}

fn preflight(o: &Options) -> Fallible<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("cni-bench needs root (network namespaces): run `sudo make bench`".into());
    }
    for dir in [&o.ours, &o.reference] {
        for p in ALL_PLUGINS.iter().chain(PODMAN_PLUGINS) {
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

fn variants(o: &Options) -> Vec<Variant> {
    vec![
        Variant {
            implementation: "ours",
            backend: "iptables",
            plugin_dir: o.ours.clone(),
            chain: Chain::Bench,
        },
        Variant {
            implementation: "reference",
            backend: "iptables",
            plugin_dir: o.reference.clone(),
            chain: Chain::Bench,
        },
        Variant {
            implementation: "ours",
            backend: "nftables",
            plugin_dir: o.ours.clone(),
            chain: Chain::Bench,
        },
    ]
}

/// podman 4's default chain at 0 attached, ours and the reference in
/// interleaved rounds (the same machinery as the bench chain).
fn podman_chain(o: &Options, started: Instant) -> Fallible<Value> {
    let mut labs = Vec::new();
    for (implementation, dir) in [("ours", &o.ours), ("reference", &o.reference)] {
        labs.push(Lab::new(Variant {
            implementation,
            backend: "iptables",
            plugin_dir: dir.clone(),
            chain: Chain::Podman,
        })?);
    }
    let refs: Vec<&Lab> = labs.iter().collect();
    let measured = chain::measure(&refs, reps(o, 0))?;
    let mut out = Map::new();
    for (lab, p) in labs.iter().zip(measured) {
        eprintln!(
            "[{:>4.0}s] {}: 0 attached: ADD {:.1} ms, CHECK {}, DEL {:.1} ms, ADD+DEL {:.1} ms",
            started.elapsed().as_secs_f64(),
            lab.variant.label(),
            p["add_ms"].as_f64().unwrap_or(0.0),
            p["check_ms"]
                .as_f64()
                .map_or("fails".into(), |c| format!("{c:.1} ms")),
            p["del_ms"].as_f64().unwrap_or(0.0),
            p["add_del_ms"].as_f64().unwrap_or(0.0),
        );
        out.insert(lab.variant.implementation.into(), Value::Array(vec![p]));
    }
    drop(labs);
    check_interrupted()?;
    Ok(Value::Object(out))
}

fn key(v: &Variant) -> String {
    format!("{}/{}", v.implementation, v.backend)
}

fn run(o: &Options) -> Fallible<Value> {
    let started = Instant::now();
    let load_before = machine::load_average();
    if o.only_podman {
        let podman = podman_chain(o, started)?;
        return Ok(json!({
            "only": "podman",
            "machine": machine::describe(&o.ours, &o.reference),
            "load_average": {"start": load_before, "end": machine::load_average()},
            "podman_chain": podman,
            "duration_seconds": started.elapsed().as_secs_f64(),
        }));
    }
    // A failed floor row costs its own figures only, not the run.
    let floor_at = |n: usize| {
        floor_chain::measure(&o.ours, reps(o, n), n).unwrap_or_else(|e| {
            eprintln!("cni-bench: floor row at {n} attached: {e}");
            json!({ "error": e })
        })
    };
    let floor_chain = floor_at(0);
    check_interrupted()?;
    // The same kernel work with the largest N attached: how much of the
    // chain's growth with N is the kernel's own.
    let max_attached = o.attached.iter().copied().max().unwrap_or(0);
    let floor_chain_max = if max_attached > 0 {
        let f = floor_at(max_attached);
        check_interrupted()?;
        f
    } else {
        Value::Null
    };
    if o.only_floor {
        return Ok(json!({
            "only": "floor",
            "machine": machine::describe(&o.ours, &o.reference),
            "load_average": {"start": load_before, "end": machine::load_average()},
            "floor_chain": floor_chain,
            "floor_chain_max": floor_chain_max,
            "duration_seconds": started.elapsed().as_secs_f64(),
        }));
    }
    eprintln!(
        "[{:>4.0}s] floor (one process, netlink): ADD {:.1} ms, DEL {:.1} ms to published removal ({:.1} ms to the blocking call's return)",
        started.elapsed().as_secs_f64(),
        floor_chain["add_ms"].as_f64().unwrap_or(0.0),
        floor_chain["del_ms"].as_f64().unwrap_or(0.0),
        floor_chain["del_blocking_ms"].as_f64().unwrap_or(0.0),
    );
    if !floor_chain_max.is_null() {
        eprintln!(
            "[{:>4.0}s] floor at {max_attached} attached: ADD {:.1} ms, DEL {:.1} ms to published removal",
            started.elapsed().as_secs_f64(),
            floor_chain_max["add_ms"].as_f64().unwrap_or(0.0),
            floor_chain_max["del_ms"].as_f64().unwrap_or(0.0),
        );
    }
    let mut chain = Map::new();
    let mut conc = Map::new();
    let mut all = variants(o);
    if o.only_chain {
        all.retain(|v| v.implementation == "ours");
    }
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
            let mut settle_s = Vec::new();
            for (lab, &control) in labs.iter_mut().zip(&is_control) {
                let t = Instant::now();
                let settled = if control {
                    std::time::Duration::ZERO
                } else {
                    lab.attach_until(n)?
                };
                attach_s.push(t.elapsed().as_secs_f64());
                settle_s.push(settled.as_secs_f64());
            }
            check_interrupted()?;
            let refs: Vec<&Lab> = labs.iter().collect();
            let measured = chain::measure(&refs, reps(o, n))?;
            for (i, mut p) in measured.into_iter().enumerate() {
                p["attach_seconds"] = json!(attach_s[i]);
                p["settle_seconds"] = json!(settle_s[i]);
                if is_control[i] {
                    p["measured_with"] = json!(n);
                    points[i].push(p);
                    continue;
                }
                eprintln!(
                    "[{:>4.0}s] {}: {n} attached (settled in {:.1} s): ADD {:.1} ms, DEL {:.1} ms, ADD+DEL {:.1} ms{}",
                    started.elapsed().as_secs_f64(),
                    labs[i].variant.label(),
                    settle_s[i],
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
    // Diagnostic: the largest N against 0 again, ours only, with the
    // measured container's IPv6 off — what is left of the growth once the
    // bridge has none of the new container's MLD reports to flood.
    let ipv6_off = if max_attached > 0 {
        let d = chain_ipv6_off(o, max_attached, started)?;
        check_interrupted()?;
        d
    } else {
        Value::Null
    };
    if o.only_chain {
        return Ok(json!({
            "only": "chain",
            "chain_container_ipv6_off": ipv6_off,
            "machine": machine::describe(&o.ours, &o.reference),
            "load_average": {"start": load_before, "end": machine::load_average()},
            "attached": o.attached,
            "chain": chain,
            "control_at_0": controls,
            "floor_chain": floor_chain,
            "floor_chain_max": floor_chain_max,
            "duration_seconds": started.elapsed().as_secs_f64(),
        }));
    }
    let floor = floors::rss(&o.ours, &o.reference)?;
    let kernel = floors::kernel(&o.ours)?;
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

    let podman = podman_chain(o, started)?;

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
        "machine": machine::describe(&o.ours, &o.reference),
        "load_average": {"start": load_before, "end": machine::load_average()},
        "attached": o.attached,
        "chain": chain,
        "control_at_0": controls,
        "podman_chain": podman,
        "concurrency": conc,
        "host_local": hl,
        "sizes": machine::sizes(&o.ours, &o.reference)?,
        "rss_floor_kb": floor,
        "kernel_floor_ms": kernel,
        "floor_chain": floor_chain,
        "floor_chain_max": floor_chain_max,
        "chain_container_ipv6_off": ipv6_off,
        "duration_seconds": started.elapsed().as_secs_f64(),
        "method": [
            "Each variant runs in its own throwaway host namespace (which the bench thread enters, so the runtime execs every plugin there) with its own temporary result cache and host-local dataDir.",
            "Both implementations are driven by the same `runtime::Runtime` with the same conflist (cniVersion 1.0.0); the reference ignores the backend keys it does not know.",
            "Attached containers are real: a namespace each, attached through the same chain (veth, address, one hostPort each), so bridge ports, reservations and netfilter rules grow with N. After attaching, the lab waits until its bridge is quiet (at most 5 frames in 500 ms, at most 30 s): each new container's IPv6 start-up traffic, which the bridge floods to every port, goes on for seconds after its ADD, and N attached is measured on a settled node. A dropped lab waits until the kernel has destroyed its containers' namespaces (no veth left in its host namespace, at most 30 s), so the next measurement does not share the machine with that cleanup.",
            "Latency: median over the repetitions after one warm-up round; the measured container is added, checked and deleted in each round. On iptables, ours and the reference have a lab each and their rounds alternate, so other load on the machine falls on both alike.",
            "Scaling: each of ours also has a control lab that stays at 0 attached and is measured in the same alternating rounds as every N; the goal \"N attached ≤ 1.2× 0 attached\" compares N with that control, measured at the same moment.",
            "Processes: one extra round with every plugin exec'd as `strace -f -e trace=execve` (CNI_PATH pointing at the real plugins, so delegates are traced too).",
            "Floor row: the chain's kernel work done by the bench process itself over netlink, no exec and no CNI (veth pair into a fresh namespace on the bridge, container address, up and default route, masquerade and one host port as nf_tables transactions; then the rules torn down and the container end deleted). DEL is timed to the published removal (the RTM_DELLINK notification of the host end on a socket subscribed before the request) and, beside it, to the return of the blocking delete call, which runs beside the next round as the plugins' detached request does. Measured at 0 and at the largest N (containers attached first by our plugins, nftables backend, on the same bridge). The process floor: each chain plugin spawned with CNI_COMMAND=VERSION and waited for.",
            "IPv6-off diagnostic: at the largest N, ours on each backend against a control lab at 0 in the same rounds, with `disable_ipv6=1` (all, default) in the measured container's namespace before ADD, so its eth0 sends nothing for the bridge to flood.",
            "Peak RSS: one extra round with every plugin exec'd by a wrapper that `wait4`s it (ru_maxrss: max over the plugin and the descendants it reaped).",
            "Concurrency: N threads released by one barrier, each `Runtime::add` on its own namespace; then N concurrent DELs; leaks counted afterwards (reservation files, host veths, netfilter lines naming a container address or id).",
            "host-local alone: reservations written as files in the shared on-disk format, one untimed DEL first, then ADD/DEL rounds.",
            "podman chain: podman 4's default network (87-podman-bridge.conflist: cniVersion 0.4.0, bridge + host-local, portmap, firewall, tuning, no backend keys; only the network name and host-local's dataDir changed), one hostPort, 0 attached, ours and the reference in alternating rounds.",
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
