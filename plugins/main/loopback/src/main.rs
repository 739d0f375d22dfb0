//! The `loopback` plugin: `lo` up on ADD, down on DEL, checked on CHECK.
//!
//! Same behaviour as the reference, plus: the skeleton refuses a `CNI_NETNS`
//! that is the plugin's own namespace *before* touching it, so a runtime bug
//! can never take the host's `lo` down.

use cni::{CniResult, Error, Interface, IpConfig, Plugin, Request, Result, code};
use ipnetwork::IpNetwork;
use link::flags;
use netns::NetNs;

struct Loopback;

const LO: &str = "lo";

/// Open the container's namespace. `Ok(None)` when it is already gone.
fn open_netns(path: &str) -> Result<Option<NetNs>> {
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(netns::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(Error::new(code::INVALID_NETNS, e.to_string())),
    }
}

fn require_netns(path: &str) -> Result<NetNs> {
    open_netns(path)?.ok_or_else(|| {
        Error::new(
            code::INVALID_NETNS,
            format!("failed to open netns {path:?}: no such file or directory"),
        )
    })
}

/// Run `f` on a thread inside the container's namespace. `lo` needs no
/// netlink: the flag ioctls and getifaddrs keep this binary small.
fn inside<T: Send>(ns: &NetNs, f: impl FnOnce() -> link::Result<T> + Send) -> Result<T> {
    ns.run(f)
        .map_err(|e| Error::new(code::INVALID_NETNS, e.to_string()))?
        .map_err(|e| Error::internal(e.to_string()))
}

impl Plugin for Loopback {
    const NAME: &'static str = "loopback";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let prev = req.prev_result()?;
        let ns = require_netns(&req.netns)?;
        let addrs: Vec<IpNetwork> = inside(&ns, || {
            flags::set_up(LO, true)?;
            flags::addresses_of(LO)
        })?;
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(Error::internal(format!(
                "loopback interface found with non-loopback address {:?}",
                bad.ip().to_string()
            )));
        }
        if let Some(prev) = prev {
            // Chained after another plugin: pass its result on unchanged.
            return Ok(prev);
        }
        let first = |v4: bool| {
            addrs.iter().find(|a| a.is_ipv4() == v4).map(|a| IpConfig {
                address: *a,
                gateway: None,
                interface: Some(0),
            })
        };
        Ok(CniResult {
            interfaces: vec![Interface {
                name: LO.into(),
                mac: Some("00:00:00:00:00:00".into()),
                sandbox: Some(req.netns.clone()),
                ..Default::default()
            }],
            ips: [first(true), first(false)].into_iter().flatten().collect(),
            ..Default::default()
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        if req.netns.is_empty() {
            return Ok(());
        }
        let Some(ns) = open_netns(&req.netns)? else {
            return Ok(());
        };
        inside(&ns, || flags::set_up(LO, false))
    }

    fn check(&self, req: &Request) -> Result<()> {
        let ns = require_netns(&req.netns)?;
        match inside(&ns, || flags::is_up(LO))? {
            Some(true) => Ok(()),
            Some(false) => Err(Error::internal("loopback interface is down")),
            None => Err(Error::internal("loopback interface not found")),
        }
    }
}

fn main() {
    cni::run(&Loopback)
}

/// Everything that is decided before `lo` is touched, run through the
/// skeleton as a runtime would, without root and without a namespace.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const GONE: &str = "/nonexistent/netns/loopback-test";

    /// Run one verb; (exit status, stdout as JSON or Null when empty).
    fn run(command: &str, netns: &str, conf: Value) -> (i32, Value) {
        let env = |k: &str| -> Option<String> {
            match k {
                "CNI_COMMAND" => Some(command.to_string()),
                "CNI_CONTAINERID" => Some("c1".into()),
                "CNI_NETNS" => Some(netns.to_string()),
                "CNI_IFNAME" => Some("lo".into()),
                "CNI_PATH" => Some("/nonexistent".into()),
                _ => None,
            }
        };
        let stdin = serde_json::to_vec(&conf).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = cni::dispatch(&Loopback, &env, &mut stdin.as_slice(), &mut out, &mut err);
        let out = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (status, out)
    }

    fn conf() -> Value {
        json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})
    }

    #[test]
    fn add_and_check_with_a_missing_netns_are_invalid_netns_errors() {
        for verb in ["ADD", "CHECK"] {
            let (status, out) = run(verb, GONE, conf());
            assert_eq!(status, 1, "{verb}");
            assert_eq!(out["code"], code::INVALID_NETNS, "{verb}");
            assert_eq!(
                out["msg"],
                format!("failed to open netns {GONE:?}: no such file or directory")
            );
        }
    }

    #[test]
    fn del_after_the_netns_is_gone_succeeds_silently() {
        assert_eq!(run("DEL", GONE, conf()), (0, Value::Null));
        assert_eq!(run("DEL", "", conf()), (0, Value::Null));
    }

    #[test]
    fn a_malformed_prev_result_is_refused_before_the_netns_is_opened() {
        let mut c = conf();
        c["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]});
        let (status, out) = run("ADD", GONE, c);
        assert_eq!(status, 1);
        let msg = out["msg"].as_str().unwrap_or_default();
        assert!(msg.starts_with("failed to parse prevResult"), "{out}");
    }

    #[test]
    fn version_lists_every_supported_version() {
        let (status, out) = run("VERSION", "", json!({"cniVersion": "1.1.0"}));
        assert_eq!(status, 0);
        assert_eq!(out["cniVersion"], cni::version::CURRENT);
        assert_eq!(out["supportedVersions"], json!(cni::version::SUPPORTED));
    }
}
