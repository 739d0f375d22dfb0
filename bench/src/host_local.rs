//! host-local alone: ADD and DEL with 0 and with 10,000 existing
//! reservations. The reservations are written in the on-disk format both
//! implementations share (one file per address holding
//! `<container id>\r\n<ifname>`), which is what a busy node's dataDir holds.
//! host-local touches no network state, so it runs in the bench's own
//! namespace.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
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
    let cni_path = binary.parent().unwrap_or(Path::new("/"));
    let env: [(&str, &OsStr); 5] = [
        ("CNI_COMMAND", verb.as_ref()),
        ("CNI_CONTAINERID", id.as_ref()),
        ("CNI_NETNS", netns.as_ref()),
        ("CNI_IFNAME", "eth0".as_ref()),
        ("CNI_PATH", cni_path.as_os_str()),
    ];
    let mut cmd = Command::new(binary);
    test_support::runtime_env(&mut cmd, env);
    let start = Instant::now();
    let out = test_support::run_with_stdin(&mut cmd, conf.as_bytes())
        .map_err(|e| format!("run {}: {e}", binary.display()))?;
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
