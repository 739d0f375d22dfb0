//! The goal rows of the floor, CHECK and memory goals, and the floor
//! row's own table (RESULTS.md, see `report.rs`).

use std::fmt::Write;

use serde_json::Value;

use crate::report_cells::{ms, point, ratio, ratio_text, verdict};

/// Programs that are plugins, not helpers: on CHECK every other program
/// executed is a helper the goal wants gone.
const PLUGINS: &[&str] = &[
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "firewall",
    "tuning",
];

/// DEL at 0 attached against the floor row's DEL (published removal), and
/// beside it the process floor: the floor plus one start-to-exit of each
/// plugin the chain execs (VERSION), which no exec'd chain can go under.
pub fn del_floor_goal(s: &mut String, r: &Value) {
    let f = &r["floor_chain"]["del_ms"];
    let execs: Option<f64> = r["kernel_floor_ms"]["exec_version_ms"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| m.values().filter_map(Value::as_f64).sum());
    let process_floor = f.as_f64().zip(execs).map(|(f, e)| f + e);
    let why = match (execs, process_floor, f.as_f64()) {
        (Some(e), Some(p), Some(fl)) if fl > 0.0 => format!(
            ": the chain execs bridge, host-local and portmap, and their start-up and exit alone (VERSION) take {e:.1} ms; with the floor that is {p:.1} ms = {:.2}× the floor before any CNI work",
            p / fl
        ),
        _ => String::new(),
    };
    for b in ["ours/iptables", "ours/nftables"] {
        let o = &point(r, b, 0)["del_ms"];
        let q = ratio(o, f);
        let vs_process = process_floor
            .and_then(|p| o.as_f64().map(|o| o / p))
            .map_or(String::new(), |x| format!("; {x:.2}× the process floor"));
        let _ = writeln!(
            s,
            "| DEL ≤ 1.5× the floor row at 0 attached ({b}; floor: the same kernel work in one process, to published removal) | {} ms vs {} ms = {}{vs_process} | {}{} |",
            ms(o),
            ms(f),
            ratio_text(q),
            verdict(q.map(|q| q <= 1.5)),
            if q.is_some_and(|q| q > 1.5) {
                why.as_str()
            } else {
                ""
            },
        );
    }
}

/// The floor row's own growth from 0 to its largest N (ADD+DEL), for the
/// "N attached vs 0" goal rows: the part of the chain's growth that is the
/// kernel's, whoever makes the requests.
pub fn floor_growth(r: &Value) -> Option<(f64, f64, u64)> {
    let (z, n) = (&r["floor_chain"], &r["floor_chain_max"]);
    let (a, b) = (z["add_del_ms"].as_f64()?, n["add_del_ms"].as_f64()?);
    (a > 0.0).then(|| (a, b, n["attached"].as_u64().unwrap_or(0)))
}

/// CHECK at the largest N against the control lab's CHECK in the same
/// rounds, and the helpers CHECK executes, per backend.
pub fn check_goals(s: &mut String, r: &Value, max_attached: u64) {
    for b in ["ours/iptables", "ours/nftables"] {
        let f = &point(r, b, max_attached)["check_ms"];
        let z = r["control_at_0"][b]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|p| p["measured_with"].as_u64() == Some(max_attached))
            })
            .map_or(&Value::Null, |p| &p["check_ms"]);
        let q = ratio(f, z);
        let _ = writeln!(
            s,
            "| CHECK: ours at {max_attached} attached ≤ 1.2× ours at 0 ({b}; 0 = control lab in the same rounds) | {} ms vs {} ms = {} | {} |",
            ms(f),
            ms(z),
            ratio_text(q),
            verdict(q.map(|q| q <= 1.2)),
        );
    }
    for b in ["ours/iptables", "ours/nftables"] {
        let by_program = &point(r, b, 0)["execs"]["CHECK"]["by_program"];
        let helpers: Vec<String> = by_program
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !PLUGINS.contains(&k.as_str()))
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        let measured = by_program.is_object();
        let _ = writeln!(
            s,
            "| 0 helper processes on CHECK ({b}, strace) | {} | {} |",
            if !measured {
                "—".to_string()
            } else if helpers.is_empty() {
                "none".to_string()
            } else {
                helpers.join(", ")
            },
            verdict(measured.then_some(helpers.is_empty())),
        );
    }
}

/// (label, ours KiB, reference KiB) of every plugin and verb the bench
/// measures RSS for: the bench chain (iptables) and the podman chain.
fn rss_pairs(r: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let sources = [
        (
            "",
            &point(r, "ours/iptables", 0)["rss_kb"],
            &point(r, "reference/iptables", 0)["rss_kb"],
        ),
        (
            "podman chain ",
            &r["podman_chain"]["ours"][0]["rss_kb"],
            &r["podman_chain"]["reference"][0]["rss_kb"],
        ),
    ];
    for (prefix, o, g) in sources {
        for verb in ["ADD", "CHECK", "DEL"] {
            for plugin in PLUGINS {
                let ours = &o[verb][*plugin];
                if ours.is_null() {
                    continue;
                }
                out.push((
                    format!("{prefix}{plugin} {verb}"),
                    ours.clone(),
                    g[verb][*plugin].clone(),
                ));
            }
        }
    }
    out
}

/// Peak RSS ≤ 1/2 of the reference for every plugin and verb measured.
pub fn rss_goal(s: &mut String, r: &Value) {
    let pairs = rss_pairs(r);
    let mut worst: Option<(f64, &str)> = None;
    let mut over = Vec::new();
    let mut unpaired = Vec::new();
    for (label, o, g) in &pairs {
        match ratio(o, g) {
            Some(q) => {
                if q > 0.5 {
                    over.push(format!("{label} {q:.2}×"));
                }
                if worst.is_none_or(|(w, _)| q > w) {
                    worst = Some((q, label));
                }
            }
            None => unpaired.push(label.as_str()),
        }
    }
    let _ = writeln!(
        s,
        "| peak RSS ≤ 1/2 of the reference for every plugin and verb (per invocation, with its children; bench chain on iptables and podman chain) | worst: {}{}{} | {} |",
        worst.map_or("—".into(), |(q, w)| format!("{w} {q:.2}×")),
        if over.is_empty() {
            String::new()
        } else {
            format!("; over 0.5×: {}", over.join(", "))
        },
        if unpaired.is_empty() {
            String::new()
        } else {
            format!(
                "; no reference figure (its chain failed before): {}",
                unpaired.join(", ")
            )
        },
        verdict(worst.map(|(q, _)| q <= 0.5)),
    );
}

/// The floor row on its own, at 0 attached and at the largest N.
pub fn floor_table(s: &mut String, r: &Value) {
    let f = &r["floor_chain"];
    if f.is_null() {
        return;
    }
    // A failed row says so in its own line below.
    let reps = [f, &r["floor_chain_max"]]
        .into_iter()
        .find_map(|row| row["reps"].as_u64())
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "\n### Floor row: the chain's kernel work in one already-running process (median of {}, ms)\n\n\
         No exec, no CNI: veth pair into a fresh namespace on the bridge, the container's address, link up and \
         default route, masquerade and one host port as nf_tables transactions; then the rules torn down by \
         netlink and the container end deleted. The published removal is the RTM_DELLINK notification of the \
         host end, read from a socket subscribed before the request. At N attached, N containers were first \
         attached to the same bridge by our plugins (nftables backend).\n\n\
         | attached | ADD | DEL (to published removal) | DEL (to the blocking call's return) | ADD+DEL | rules teardown | veth removal published | veth delete call returns |\n\
         |---|---|---|---|---|---|---|---|",
        reps,
    );
    for row in [f, &r["floor_chain_max"]] {
        if row.is_null() {
            continue;
        }
        if let Some(e) = row["error"].as_str() {
            let _ = writeln!(s, "| — | failed: `{}` |||||||", e.replace('`', "'"));
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row["attached"].as_u64().unwrap_or(0),
            ms(&row["add_ms"]),
            ms(&row["del_ms"]),
            ms(&row["del_blocking_ms"]),
            ms(&row["add_del_ms"]),
            ms(&row["rules_teardown_ms"]),
            ms(&row["veth_removal_published_ms"]),
            ms(&row["veth_removal_blocking_ms"]),
        );
    }
    for row in [f, &r["floor_chain_max"]] {
        let parts: Vec<String> = row["add_parts_ms"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {}", ms(v)))
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(
                s,
                "\nADD's parts at {} attached, ms: {}.",
                row["attached"].as_u64().unwrap_or(0),
                parts.join(", ")
            );
        }
    }
    if let Some(e) = r["kernel_floor_ms"]["exec_version_ms"].as_object() {
        let parts: Vec<String> = e.iter().map(|(k, v)| format!("{k} {}", ms(v))).collect();
        if !parts.is_empty() {
            let _ = writeln!(
                s,
                "\nThe process floor: each plugin of the chain spawned with `CNI_COMMAND=VERSION` and waited for (median of 15, ms): {}.",
                parts.join(", ")
            );
        }
    }
}

/// Peak RSS of every plugin of the podman chain, ours against the reference.
pub fn podman_rss_table(s: &mut String, r: &Value) {
    let (o, g) = (
        &r["podman_chain"]["ours"][0]["rss_kb"],
        &r["podman_chain"]["reference"][0]["rss_kb"],
    );
    if o.is_null() {
        return;
    }
    let _ = writeln!(
        s,
        "\npodman 4's default chain (0 attached, iptables), the same measurement for every plugin it runs:\n\n\
         | verb | program | ours | reference | ratio |\n|---|---|---|---|---|"
    );
    for verb in ["ADD", "CHECK", "DEL"] {
        for plugin in PLUGINS {
            let (ov, gv) = (&o[verb][*plugin], &g[verb][*plugin]);
            if ov.is_null() && gv.is_null() {
                continue;
            }
            let cell = |v: &Value| {
                if v.is_null() {
                    "—".to_string()
                } else {
                    v.to_string()
                }
            };
            let _ = writeln!(
                s,
                "| {verb} | {plugin} | {} | {} | {} |",
                cell(ov),
                cell(gv),
                ratio_text(ratio(ov, gv))
            );
        }
    }
}
