//! `macspoofchk`: only the container's MAC may send through its bridge port.
//! nftables `bridge nat` table with the reference's chain names and rule
//! comments, so rules made by either implementation are removed by both.
//! Each operation is one `nft -f -` transaction (teardown: one listing
//! first).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";

/// The per-attachment names, from the reference's `uniqueID(id, ifname)`.
struct Names {
    iface_chain: String,
    mac_chain: String,
    comment: String,
}

const COMMENT_PREFIX: &str = "macspoofchk-";

fn names(container_id: &str, ifname: &str) -> Names {
    names_of(&format!("{container_id}-{ifname}"))
}

fn names_of(id: &str) -> Names {
    Names {
        iface_chain: format!("cni-br-iface-{id}"),
        mac_chain: format!("cni-br-iface-{id}-mac"),
        comment: format!("{COMMENT_PREFIX}{id}"),
    }
}

/// Install the rules for host port `host_ifname` and container MAC `mac`.
/// The container id and ifname were validated by the skeleton (no quotes
/// or spaces), the others are ours.
pub fn setup(container_id: &str, ifname: &str, host_ifname: &str, mac: &str) -> Result<(), String> {
    let n = names(container_id, ifname);
    let script = format!(
        "add table bridge {TABLE}\n\
         add chain bridge {TABLE} {BASE_CHAIN} {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add chain bridge {TABLE} {ic}\n\
         flush chain bridge {TABLE} {ic}\n\
         add chain bridge {TABLE} {mc}\n\
         flush chain bridge {TABLE} {mc}\n\
         add rule bridge {TABLE} {BASE_CHAIN} iifname \"{host_ifname}\" jump {ic} comment \"{c}\"\n\
         add rule bridge {TABLE} {ic} jump {mc} comment \"{c}\"\n\
         add rule bridge {TABLE} {mc} ether saddr {mac} return comment \"{c}\"\n\
         add rule bridge {TABLE} {mc} drop comment \"{c}\"\n",
        ic = n.iface_chain,
        mc = n.mac_chain,
        c = n.comment,
    );
    nft_apply(&script)
}

/// Remove the attachment's rules and chains; nothing to remove is success.
pub fn teardown(container_id: &str, ifname: &str) -> Result<(), String> {
    let Some(listing) = nft_list_table()? else {
        return Ok(());
    };
    remove(&listing, &[names(container_id, ifname)])
}

/// GC: remove the rules of attachments not in `keep` whose host port is a
/// port of `bridge` — or no longer exists (then they protect nothing and
/// belong to no one). The chain names carry no network name, so a port on
/// another bridge means another network's attachment: left alone.
pub fn gc(
    keep: &[(String, String)],
    port_bridge: impl Fn(&str) -> Result<Option<String>, String>,
    bridge: &str,
) -> Result<(), String> {
    let Some(listing) = nft_list_table()? else {
        return Ok(());
    };
    let kept: std::collections::HashSet<String> = keep
        .iter()
        .map(|(id, ifname)| names(id, ifname).comment)
        .collect();
    let mut stale = Vec::new();
    for rule in base_rules(&listing) {
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let Some(id) = comment.strip_prefix(COMMENT_PREFIX) else {
            continue;
        };
        if kept.contains(comment) {
            continue;
        }
        let ours = match host_port_of(rule) {
            Some(port) => port_bridge(port)?.is_none_or(|b| b == bridge),
            None => false,
        };
        if ours {
            stale.push(names_of(id));
        }
    }
    remove(&listing, &stale)
}

fn base_rules(listing: &Value) -> impl Iterator<Item = &Value> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["chain"] == BASE_CHAIN)
}

/// The `iifname "<port>"` of a base-chain rule.
fn host_port_of(rule: &Value) -> Option<&str> {
    rule["expr"].as_array()?.iter().find_map(|e| {
        let m = e.get("match")?;
        (m["left"]["meta"]["key"] == "iifname")
            .then(|| m["right"].as_str())
            .flatten()
    })
}

/// One transaction removing the base-chain rules and chains of `attachments`.
fn remove(listing: &Value, attachments: &[Names]) -> Result<(), String> {
    if attachments.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for rule in base_rules(listing) {
        if attachments
            .iter()
            .any(|n| rule["comment"] == n.comment.as_str())
            && let Some(handle) = rule["handle"].as_u64()
        {
            script.push_str(&format!(
                "delete rule bridge {TABLE} {BASE_CHAIN} handle {handle}\n"
            ));
        }
    }
    let mut chains = Vec::new();
    for item in listing["nftables"].as_array().into_iter().flatten() {
        if let Some(name) = item.get("chain").and_then(|c| c["name"].as_str())
            && attachments
                .iter()
                .any(|n| name == n.iface_chain || name == n.mac_chain)
        {
            chains.push(name.to_string());
        }
    }
    // The iface chain jumps to the mac chain: empty both, then delete in
    // that order.
    chains.sort_by_key(|c| c.ends_with("-mac"));
    for c in &chains {
        script.push_str(&format!("flush chain bridge {TABLE} {c}\n"));
    }
    for c in &chains {
        script.push_str(&format!("delete chain bridge {TABLE} {c}\n"));
    }
    if script.is_empty() {
        return Ok(());
    }
    nft_apply(&script)
}

/// Whether the attachment's drop rule is in place (for CHECK).
pub fn check(container_id: &str, ifname: &str) -> Result<(), String> {
    let n = names(container_id, ifname);
    let listing = nft_list_table()?.ok_or("macspoofchk table bridge nat is missing")?;
    let has_jump = listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| {
            i.get("rule")
                .is_some_and(|r| r["chain"] == BASE_CHAIN && r["comment"] == n.comment.as_str())
        });
    if has_jump {
        Ok(())
    } else {
        Err(format!("macspoofchk rule {:?} is missing", n.comment))
    }
}

fn nft_list_table() -> Result<Option<Value>, String> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "bridge", TABLE])
        .output()
        .map_err(|e| format!("failed to run nft: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(format!("nft list table bridge {TABLE}: {}", err.trim()));
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| format!("nft list table bridge {TABLE}: {e}"))
}

fn nft_apply(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("failed to write to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("failed to wait for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
