//! Human-readable summaries of an ADD result. The raw JSON is available
//! with `--json`; this is for people at a terminal.

use std::fmt::Write;

use cni::CniResult;
use serde_json::Value;

/// Interfaces, addresses, routes, DNS and port mappings. The result is read
/// in the version it declares, so 0.1.0–1.1.0 results all print alike.
pub fn result_summary(result: &Value, port_mappings: Option<&Value>) -> Result<String, String> {
    let version = result
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(cni::version::CURRENT);
    let parsed = CniResult::from_value(result.clone(), version)
        .map_err(|e| format!("the result cannot be summarised ({e}); use --json"))?;
    let mut out = String::new();
    if !parsed.interfaces.is_empty() {
        out.push_str("interfaces:\n");
        for (i, iface) in parsed.interfaces.iter().enumerate() {
            let place = match &iface.sandbox {
                Some(sandbox) if !sandbox.is_empty() => format!("in {sandbox}"),
                _ => "host".to_string(),
            };
            let mac = iface.mac.as_deref().unwrap_or("");
            let _ = writeln!(out, "  [{i}] {:<16} {mac:<17} {place}", iface.name);
        }
    }
    if !parsed.ips.is_empty() {
        out.push_str("addresses:\n");
        for ip in &parsed.ips {
            let _ = write!(out, "  {}", ip.address);
            if let Some(gw) = ip.gateway {
                let _ = write!(out, " gateway {gw}");
            }
            if let Some(index) = ip.interface {
                let name = parsed
                    .interfaces
                    .get(index)
                    .map_or("?", |i| i.name.as_str());
                let _ = write!(out, " on {name}");
            }
            out.push('\n');
        }
    }
    if !parsed.routes.is_empty() {
        out.push_str("routes:\n");
        for route in &parsed.routes {
            let _ = write!(out, "  {}", route.dst);
            if let Some(gw) = route.gw {
                let _ = write!(out, " via {gw}");
            }
            out.push('\n');
        }
    }
    let dns = &parsed.dns;
    let mut parts = Vec::new();
    for (label, list) in [
        ("nameservers", &dns.nameservers),
        ("search", &dns.search),
        ("options", &dns.options),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label} {}", list.join(" ")));
        }
    }
    if !dns.domain.is_empty() {
        parts.push(format!("domain {}", dns.domain));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "dns: {}", parts.join("; "));
    }

    let mappings = port_mappings
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty());
    if let Some(mappings) = mappings {
        out.push_str("port mappings:\n");
        for m in mappings {
            let num = |key| m.get(key).and_then(Value::as_u64).unwrap_or(0);
            let protocol = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
            let host = match m.get("hostIP").and_then(Value::as_str) {
                Some(ip) if !ip.is_empty() => format!("{ip}:{}", num("hostPort")),
                _ => num("hostPort").to_string(),
            };
            let _ = writeln!(out, "  {protocol} {host} -> {}", num("containerPort"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summarises_a_bridge_result() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni-rs0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/c"}
            ],
            "ips": [{"address": "10.89.0.2/24", "gateway": "10.89.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.0.1"}],
            "dns": {"nameservers": ["10.89.0.1"]}
        });
        let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        let text = result_summary(&result, Some(&maps)).unwrap();
        assert!(text.contains("[2] eth0"), "{text}");
        assert!(text.contains("in /run/netns/c"), "{text}");
        assert!(
            text.contains("10.89.0.2/24 gateway 10.89.0.1 on eth0"),
            "{text}"
        );
        assert!(text.contains("0.0.0.0/0 via 10.89.0.1"), "{text}");
        assert!(text.contains("dns: nameservers 10.89.0.1"), "{text}");
        assert!(text.contains("tcp 8080 -> 80"), "{text}");
    }

    #[test]
    fn summarises_an_old_result() {
        let result = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0"}]}});
        let text = result_summary(&result, None).unwrap();
        assert!(text.contains("10.1.0.5/16 gateway 10.1.0.1"), "{text}");
        assert!(text.contains("  0.0.0.0/0\n"), "{text}");
    }
}
