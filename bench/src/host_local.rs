//! host-local alone: ADD and DEL with 0 and with 10,000 existing
//! reservations. The reservations are written in the on-disk format both
//! implementations share (one file per address holding
//! `<container id>\r\n<ifname>`), which is what a busy node's dataDir holds.
//! host-local touches no network state, so it runs in the bench's own
//! namespace.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Fallible;
use crate::stats::median_ms;

const NETWORK: &str = "hlbench";
/// 10.128.0.0/16: room for 10,000 reservations and the measured ones.
const BASE: u32 = 0x0a80_0000;

pub fn measure(binary: &Path, existing: u32, reps: usize) -> Fallible<Value> {
    let dir = tempfile::Builder::new()
        .prefix("cni-bench-hl-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.128.0.0/16"}]],
            "dataDir": dir.path().display().to_string(),
        }
    })
    .to_string();
    // Any namespace but ours: the skeleton refuses CNI_NETNS = its own.
    let ns = netns::TempNetns::new("cni-bench-hl").map_err(|e| e.to_string())?;
    let netns = ns.path().display().to_string();
    let net_dir = dir.path().join(NETWORK);
    std::fs::create_dir_all(&net_dir).map_err(|e| format!("{}: {e}", net_dir.display()))?;
    for i in 0..existing {
        let ip = Ipv4Addr::from(BASE + 0x100 + i);
        let path = net_dir.join(ip.to_string());
        std::fs::write(&path, format!("old{i}\r\neth0"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // Untimed: lets an implementation build whatever it caches (our index)
    // once, as it would have on a node that grew to 10,000 over time.
    call(binary, &netns, "DEL", "warmup", &conf)?;
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..reps {
        let id = format!("m{i}");
        add.push(call(binary, &netns, "ADD", &id, &conf)?);
        del.push(call(binary, &netns, "DEL", &id, &conf)?);
    }
    Ok(json!({
        "existing": existing,
        "reps": reps,
        "add_ms": median_ms(&add),
        "del_ms": median_ms(&del),
    }))
}

fn call(binary: &Path, netns: &str, verb: &str, id: &str, conf: &str) -> Fallible<Duration> {
    let start = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", binary.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(conf.as_bytes())
            .map_err(|e| format!("write config to {}: {e}", binary.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {}: {e}", binary.display()))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {verb} {id}: {}{}",
            binary.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(took)
}
