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

/// DEL at 0 attached against the floor row's DEL (published removal).
pub fn del_floor_goal(s: &mut String, r: &Value) {
    let f = &r["floor_chain"]["del_ms"];
    for b in ["ours/iptables", "ours/nftables"] {
        let o = &point(r, b, 0)["del_ms"];
        let q = ratio(o, f);
        let _ = writeln!(
            s,
            "| DEL ≤ 1.5× the floor row at 0 attached ({b}; floor: the same kernel work in one process, to published removal) | {} ms vs {} ms = {} | {} |",
            ms(o),
            ms(f),
            ratio_text(q),
            verdict(q.map(|q| q <= 1.5)),
        );
    }
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

/// The floor row on its own.
pub fn floor_table(s: &mut String, r: &Value) {
    let f = &r["floor_chain"];
    if f.is_null() {
        return;
    }
    if let Some(e) = f["error"].as_str() {
        let _ = writeln!(s, "\nThe floor row failed: `{}`", e.replace('`', "'"));
        return;
    }
    let _ = writeln!(
        s,
        "\n### Floor row: the chain's kernel work in one already-running process (median of {}, ms)\n\n\
         No exec, no CNI: veth pair into a fresh namespace on the bridge, the container's address, link up and \
         default route, masquerade and one host port as nf_tables transactions; then the rules torn down by \
         netlink and the container end deleted. The published removal is the RTM_DELLINK notification of the \
         host end, read from a socket subscribed before the request.\n\n\
         | ADD | DEL (to published removal) | DEL (to the blocking call's return) | ADD+DEL | rules teardown | veth removal published | veth delete call returns |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} | {} |",
        f["reps"],
        ms(&f["add_ms"]),
        ms(&f["del_ms"]),
        ms(&f["del_blocking_ms"]),
        ms(&f["add_del_ms"]),
        ms(&f["rules_teardown_ms"]),
        ms(&f["veth_removal_published_ms"]),
        ms(&f["veth_removal_blocking_ms"]),
    );
    let parts: Vec<String> = f["add_parts_ms"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {}", ms(v)))
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(s, "\nADD's parts, ms: {}.", parts.join(", "));
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
