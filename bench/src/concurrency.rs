//! 64 concurrent ADDs on one network (as a node starting a burst of pods),
//! then 64 concurrent DELs: wall time, failures, duplicate addresses, and
//! whatever is left behind afterwards (reservations, veths, rules).

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Instant;

use netns::TempNetns;
use runtime::Attachment;
use serde_json::{Value, json};

use crate::Fallible;
use crate::lab::{Lab, port_mapping};

const FIRST_PORT: u16 = 30000;

pub fn measure(lab: &Lab, n: usize) -> Fallible<Value> {
    let mut containers = Vec::with_capacity(n);
    for i in 0..n {
        let ns = TempNetns::new("cni-bench-par").map_err(|e| e.to_string())?;
        let mut att = Attachment::new(&format!("par{i}"), &ns.path().display().to_string(), "eth0");
        let port = FIRST_PORT + u16::try_from(i).map_err(|e| e.to_string())?;
        att.capability_args
            .insert("portMappings".into(), port_mapping(port));
        containers.push((ns, att));
    }
    let before_links = veths(lab)?;

    let barrier = Barrier::new(n);
    let run = |verb: &str| -> (f64, Vec<Result<Value, String>>) {
        let start = Instant::now();
        let outcomes = std::thread::scope(|s| {
            let handles: Vec<_> = containers
                .iter()
                .map(|(_, att)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        if verb == "ADD" {
                            lab.runtime
                                .add(&lab.network, att)
                                .map_err(|e| e.to_string())
                        } else {
                            lab.runtime
                                .del(&lab.network, att)
                                .map(|()| Value::Null)
                                .map_err(|e| e.to_string())
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                .collect::<Vec<_>>()
        });
        (start.elapsed().as_secs_f64() * 1000.0, outcomes)
    };

    let (add_ms, adds) = run("ADD");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut add_errors = Vec::new();
    for r in &adds {
        match r {
            Ok(res) => {
                for ip in res["ips"].as_array().into_iter().flatten() {
                    if let Some(a) = ip["address"].as_str() {
                        *seen.entry(a.to_string()).or_default() += 1;
                    }
                }
            }
            Err(e) => add_errors.push(e.clone()),
        }
    }
    let duplicates: usize = seen.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
    let attached_links = veths(lab)?;

    let (del_ms, dels) = run("DEL");
    let del_errors: Vec<String> = dels.into_iter().filter_map(Result::err).collect();

    // What is left: reservation files (lock and last_reserved_ip.* are
    // bookkeeping), host links beyond the bridge, mapping rules.
    let leaked_reservations = std::fs::read_dir(lab.ipam_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .count()
        })
        .unwrap_or(0);
    let after_links = veths(lab)?;
    let rules = netfilter_dump();
    let leaked_rules = rules
        .lines()
        .filter(|l| {
            seen.keys().any(|a| {
                let ip = a.split('/').next().unwrap_or(a);
                contains_word(l, ip)
            }) || containers
                .iter()
                .any(|(_, att)| contains_word(l, &att.container_id))
        })
        .count();
    let mut errors: Vec<String> = add_errors.iter().chain(&del_errors).cloned().collect();
    errors.sort();
    errors.dedup();
    errors.truncate(5);
    Ok(json!({
        "containers": n,
        "add_wall_ms": add_ms,
        "add_failures": add_errors.len(),
        "distinct_addresses": seen.len(),
        "duplicate_addresses": duplicates,
        "veths_while_attached": attached_links.saturating_sub(before_links),
        "del_wall_ms": del_ms,
        "del_failures": del_errors.len(),
        "leaked_reservations": leaked_reservations,
        "leaked_links": after_links.saturating_sub(before_links),
        "leaked_rules": leaked_rules,
        "sample_errors": errors,
    }))
}

/// Host-side veth ends (their peer lives in another namespace: `name@ifN`).
fn veths(lab: &Lab) -> Fallible<usize> {
    Ok(lab
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter(|l| l.contains("@if"))
        .count())
}

/// Every netfilter rule of the current namespace, both tools.
pub fn netfilter_dump() -> String {
    test_support::netfilter_rules(|program| std::process::Command::new(program))
}

/// `word` occurs in `line` not as part of a longer token (10.90.0.2 must
/// not match 10.90.0.23; par1 not par12).
fn contains_word(line: &str, word: &str) -> bool {
    let ok = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '.'));
    line.match_indices(word).any(|(i, _)| {
        ok(line[..i].chars().next_back()) && ok(line[i + word.len()..].chars().next())
    })
}
