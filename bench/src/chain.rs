//! The chain benchmark: ADD, CHECK, DEL of one more container on a network
//! that already has N attached, timed around the runtime call (so it is what
//! a container runtime waits for: every plugin exec, delegate and helper).
//! Then, untimed, one instrumented round per measuring mode: peak RSS per
//! plugin invocation, and every program the plugin trees executed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use netns::TempNetns;
use runtime::Attachment;
use serde_json::{Value, json};

use crate::Fallible;
use crate::lab::{Lab, MEASURED_HOST_PORT, port_mapping};
use crate::stats::median_ms;
use crate::wrapper::{self, Mode};

const PLUGINS: &[&str] = &["bridge", "host-local", "portmap"];

/// Timings and costs of one (variant, attached) point.
pub fn measure(lab: &Lab, reps: usize) -> Fallible<Value> {
    let ns = TempNetns::new("cni-bench-ctr").map_err(|e| e.to_string())?;
    let mut att = Attachment::new("measured", &ns.path().display().to_string(), "eth0");
    att.capability_args
        .insert("portMappings".into(), port_mapping(MEASURED_HOST_PORT));

    let (mut add, mut del, mut check, mut add_del) = (vec![], vec![], vec![], vec![]);
    let mut check_error = None;
    // Round 0 is a warm-up (page cache, first netfilter table creation).
    for round in 0..=reps {
        let t = Instant::now();
        lab.runtime
            .add(&lab.network, &att)
            .map_err(|e| format!("{}: ADD: {e}", lab.variant.label()))?;
        let a = t.elapsed();
        let t = Instant::now();
        let checked = lab.runtime.check(&lab.network, &att);
        let c = t.elapsed();
        let t = Instant::now();
        lab.runtime
            .del(&lab.network, &att)
            .map_err(|e| format!("{}: DEL: {e}", lab.variant.label()))?;
        let d = t.elapsed();
        if round == 0 {
            continue;
        }
        match checked {
            Ok(_) => check.push(c),
            Err(e) => {
                check_error.get_or_insert_with(|| e.to_string());
            }
        }
        add.push(a);
        del.push(d);
        add_del.push(a + d);
    }
    let instrumented = instrumented_round(lab, &att)?;
    Ok(json!({
        "attached": lab.attached(),
        "reps": reps,
        "add_ms": median_ms(&add),
        "del_ms": median_ms(&del),
        "check_ms": if check.is_empty() { Value::Null } else { json!(median_ms(&check)) },
        "check_failures": reps - check.len(),
        "check_error": check_error,
        "add_del_ms": median_ms(&add_del),
        "add_samples_ms": samples(&add),
        "del_samples_ms": samples(&del),
        "rss_kb": instrumented["rss_kb"],
        "execs": instrumented["execs"],
    }))
}

fn samples(d: &[Duration]) -> Vec<f64> {
    d.iter().map(|x| x.as_secs_f64() * 1000.0).collect()
}

/// One ADD, CHECK, DEL through the wrappers in each mode. CHECK failures are
/// ignored here (the timed rounds report them).
fn instrumented_round(lab: &Lab, att: &Attachment) -> Fallible<Value> {
    let mut rss: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut execs: BTreeMap<String, Value> = BTreeMap::new();
    for mode in [Mode::Rss, Mode::Strace] {
        let dir = lab.state_dir().join(format!("wrap-{mode:?}"));
        let log = lab.state_dir().join(format!("log-{mode:?}"));
        wrapper::install(&dir, &lab.variant.plugin_dir, &log, mode, PLUGINS)?;
        let rt = lab.runtime_from(&dir);
        for verb in ["ADD", "CHECK", "DEL"] {
            let r = match verb {
                "ADD" => rt.add(&lab.network, att).map(|_| ()),
                "CHECK" => rt.check(&lab.network, att).map(|_| ()),
                _ => rt.del(&lab.network, att),
            };
            if verb != "CHECK" {
                r.map_err(|e| format!("{} ({mode:?} wrapper): {verb}: {e}", lab.variant.label()))?;
            }
            let got = wrapper::collect(&log)?;
            for (plugin, v, kb) in got.rss {
                let e = rss.entry(v).or_default().entry(plugin).or_default();
                *e = (*e).max(kb);
            }
            let mut programs: BTreeMap<String, usize> = BTreeMap::new();
            let mut total = 0;
            for (_, _, progs) in &got.execs {
                for p in progs {
                    *programs.entry(p.clone()).or_default() += 1;
                    total += 1;
                }
            }
            if mode == Mode::Strace {
                execs.insert(verb.into(), json!({"total": total, "by_program": programs}));
            }
        }
    }
    Ok(json!({"rss_kb": rss, "execs": execs}))
}
