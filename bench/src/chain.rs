//! The chain benchmark: ADD, CHECK, DEL of one more container on a network
//! that already has N attached, timed around the runtime call (so it is what
//! a container runtime waits for: every plugin exec, delegate and helper).
//! Then, untimed, instrumented rounds: peak RSS, wall time and exec count
//! of every plugin, delegate and helper (logging wrappers, three rounds),
//! and every program the plugin trees executed (`strace -f`, one round).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::TempNetns;
use runtime::Attachment;
use serde_json::{Map, Value, json};

use crate::Fallible;
use crate::lab::{Lab, MEASURED_HOST_PORT, port_mapping};
use crate::stats::{median, median_ms};
use crate::wrapper::{self, Mode};

/// Timings and costs of one (variant, attached) point per lab. The labs'
/// rounds are interleaved (round 1 of each, round 2 of each, ...), so load
/// from elsewhere on the machine falls on every implementation alike.
pub fn measure(labs: &[&Lab], reps: usize) -> Fallible<Vec<Value>> {
    measure_container(labs, reps, ContainerIpv6::AsCreated)
}

/// The measured container's IPv6, as its namespace has it before ADD.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ContainerIpv6 {
    /// A new namespace's default: on (a link-local address, MLD reports).
    AsCreated,
    /// `disable_ipv6=1` for `all` and `default` in the container's
    /// namespace before ADD (a runtime or image may do that; the plugins
    /// never do), so its `eth0` sends no IPv6 at all.
    Off,
}

/// [`measure`], with the measured containers' IPv6 as `ipv6` says.
pub fn measure_container(labs: &[&Lab], reps: usize, ipv6: ContainerIpv6) -> Fallible<Vec<Value>> {
    struct Series {
        /// Kept alive (the measured container) until the series is done.
        _ns: TempNetns,
        att: Attachment,
        add: Vec<Duration>,
        del: Vec<Duration>,
        check: Vec<Duration>,
        add_del: Vec<Duration>,
        check_error: Option<String>,
    }
    let mut series = Vec::new();
    for _ in labs {
        let ns = TempNetns::new("cni-bench-ctr").map_err(|e| e.to_string())?;
        if ipv6 == ContainerIpv6::Off {
            disable_ipv6(&ns)?;
        }
        let mut att = Attachment::new("measured", &ns.path().display().to_string(), "eth0");
        att.capability_args
            .insert("portMappings".into(), port_mapping(MEASURED_HOST_PORT));
        series.push(Series {
            _ns: ns,
            att,
            add: vec![],
            del: vec![],
            check: vec![],
            add_del: vec![],
            check_error: None,
        });
    }
    // Round 0 is a warm-up (page cache, first netfilter table creation).
    for round in 0..=reps {
        crate::check_interrupted()?;
        for (lab, s) in labs.iter().zip(series.iter_mut()) {
            lab.enter()?;
            let att = &s.att;
            let t = Instant::now();
            lab.runtime
                .add(&lab.network, att)
                .map_err(|e| format!("{}: ADD: {e}", lab.variant.label()))?;
            let a = t.elapsed();
            let t = Instant::now();
            let checked = lab.runtime.check(&lab.network, att);
            let c = t.elapsed();
            let t = Instant::now();
            lab.runtime
                .del(&lab.network, att)
                .map_err(|e| format!("{}: DEL: {e}", lab.variant.label()))?;
            let d = t.elapsed();
            if round == 0 {
                continue;
            }
            match checked {
                Ok(_) => s.check.push(c),
                Err(e) => {
                    s.check_error.get_or_insert_with(|| e.to_string());
                }
            }
            s.add.push(a);
            s.del.push(d);
            s.add_del.push(a + d);
        }
    }
    let mut out = Vec::new();
    for (lab, s) in labs.iter().zip(&series) {
        lab.enter()?;
        let instrumented = instrumented_round(lab, &s.att)?;
        let dumps = dump_costs();
        out.push(json!({
            "attached": lab.attached(),
            "reps": reps,
            "add_ms": median_ms(&s.add),
            "del_ms": median_ms(&s.del),
            "check_ms": if s.check.is_empty() { Value::Null } else { json!(median_ms(&s.check)) },
            "check_failures": reps - s.check.len(),
            "check_error": s.check_error,
            "add_del_ms": median_ms(&s.add_del),
            "add_samples_ms": samples(&s.add),
            "del_samples_ms": samples(&s.del),
            "rss_kb": instrumented["rss_kb"],
            "program_wall_ms": instrumented["wall_ms"],
            "program_calls": instrumented["calls"],
            "execs": instrumented["execs"],
            "dump_ms": dumps,
        }));
    }
    Ok(out)
}

fn samples(d: &[Duration]) -> Vec<f64> {
    d.iter().map(|x| x.as_secs_f64() * 1000.0).collect()
}

/// What reading the whole netfilter state costs at this size: what any
/// tool that loads the ruleset before changing it pays on every call.
fn dump_costs() -> Value {
    let mut out = Map::new();
    for (label, prog, args) in [
        ("iptables-save -t nat", "iptables-save", &["-t", "nat"][..]),
        ("nft list ruleset", "nft", &["list", "ruleset"]),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let ok = std::process::Command::new(prog)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                times.push(t.elapsed());
            }
        }
        out.insert(label.into(), json!(median_ms(&times)));
    }
    Value::Object(out)
}

/// Programs the plugins run that the rss round wraps too.
const HELPERS: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "nft",
];

/// One program in one instrumented round: its largest peak RSS (KiB), its
/// summed wall time (ms) and how many times it ran.
type ProgramRound = (i64, f64, usize);

/// Rounds of the rss measurement; the median per program is reported.
const RSS_ROUNDS: usize = 3;

/// A directory with every plugin and helper under its own name, for
/// wrappers that wrap delegates and helpers too.
fn real_dir(lab: &Lab) -> Fallible<PathBuf> {
    let dir = lab.state_dir().join("real");
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for p in lab.variant.plugins() {
        let target = lab.variant.plugin_dir.join(p);
        std::os::unix::fs::symlink(&target, dir.join(p))
            .map_err(|e| format!("symlink {}: {e}", target.display()))?;
    }
    for h in HELPERS {
        if let Some(target) = std::env::split_paths(&path)
            .map(|d| d.join(h))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(&target, dir.join(h))
                .map_err(|e| format!("symlink {}: {e}", target.display()))?;
        }
    }
    Ok(dir)
}

fn run_verb(
    rt: &runtime::Runtime,
    lab: &Lab,
    att: &Attachment,
    verb: &str,
    what: &str,
) -> Fallible<()> {
    let r = match verb {
        "ADD" => rt.add(&lab.network, att).map(|_| ()),
        "CHECK" => rt.check(&lab.network, att).map(|_| ()),
        _ => rt.del(&lab.network, att),
    };
    // CHECK failures are reported by the timed rounds.
    if verb != "CHECK" {
        r.map_err(|e| format!("{} ({what}): {verb}: {e}", lab.variant.label()))?;
    }
    Ok(())
}

/// Untimed rounds through the wrappers: peak RSS and wall time per program
/// (each plugin tree, and each delegate and helper on its own), then the
/// programs every verb executes.
fn instrumented_round(lab: &Lab, att: &Attachment) -> Fallible<Value> {
    const VERBS: [&str; 3] = ["ADD", "CHECK", "DEL"];
    let real = real_dir(lab)?;
    let dir = lab.state_dir().join("wrap-rss");
    let log = lab.state_dir().join("log-rss");
    let mut names: Vec<&str> = lab.variant.plugins().to_vec();
    names.extend(HELPERS.iter().filter(|h| real.join(h).exists()));
    wrapper::install(&dir, &real, &log, Mode::Rss, &names, true)?;
    let rt = lab.runtime_from(&dir);
    // verb -> program -> per-round (max peak, summed wall time, calls)
    let mut samples: BTreeMap<&str, BTreeMap<String, Vec<ProgramRound>>> = BTreeMap::new();
    for _ in 0..RSS_ROUNDS {
        for verb in VERBS {
            run_verb(&rt, lab, att, verb, "rss wrappers")?;
            let mut round: BTreeMap<String, ProgramRound> = BTreeMap::new();
            for (program, kb, ms) in wrapper::collect(&log)?.rss {
                let e = round.entry(program).or_default();
                e.0 = e.0.max(kb);
                e.1 += ms;
                e.2 += 1;
            }
            for (program, v) in round {
                samples
                    .entry(verb)
                    .or_default()
                    .entry(program)
                    .or_default()
                    .push(v);
            }
        }
    }
    let mut rss = Map::new();
    let mut wall = Map::new();
    let mut calls = Map::new();
    for (verb, programs) in samples {
        let (mut r, mut w, mut c) = (Map::new(), Map::new(), Map::new());
        for (program, v) in programs {
            let mut kb: Vec<f64> = v.iter().map(|x| x.0 as f64).collect();
            let mut ms: Vec<f64> = v.iter().map(|x| x.1).collect();
            r.insert(program.clone(), json!(median(&mut kb) as i64));
            w.insert(program.clone(), json!(median(&mut ms)));
            c.insert(program, json!(v.iter().map(|x| x.2).max().unwrap_or(0)));
        }
        rss.insert(verb.into(), Value::Object(r));
        wall.insert(verb.into(), Value::Object(w));
        calls.insert(verb.into(), Value::Object(c));
    }

    let dir = lab.state_dir().join("wrap-strace");
    let log = lab.state_dir().join("log-strace");
    wrapper::install(
        &dir,
        &lab.variant.plugin_dir,
        &log,
        Mode::Strace,
        lab.variant.plugins(),
        false,
    )?;
    let rt = lab.runtime_from(&dir);
    let mut execs = Map::new();
    for verb in VERBS {
        run_verb(&rt, lab, att, verb, "strace")?;
        let mut programs: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0;
        for (_, _, progs) in wrapper::collect(&log)?.execs {
            for p in progs {
                *programs.entry(p).or_default() += 1;
                total += 1;
            }
        }
        execs.insert(verb.into(), json!({"total": total, "by_program": programs}));
    }
    Ok(json!({"rss_kb": rss, "wall_ms": wall, "calls": calls, "execs": execs}))
}

/// IPv6 off in namespace `ns` for every interface it has and will have.
fn disable_ipv6(ns: &TempNetns) -> Fallible<()> {
    crate::lab::set_ipv6_conf(ns, &["all", "default"], "disable_ipv6", "1")
}
