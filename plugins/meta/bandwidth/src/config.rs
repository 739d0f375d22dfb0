//! bandwidth's configuration: `ingressRate`, `ingressBurst`, `egressRate`,
//! `egressBurst` (bits per second and bits) at the top level or as the
//! `bandwidth` capability in `runtimeConfig`, validated as the reference
//! validates them (`parseConfig`, `validateRateAndBurst` in
//! `plugins/meta/bandwidth/main.go`).
//!
//! Keys match case-insensitively, as Go's JSON decoder matches them (the
//! reference's own tests send `runtimeConfig.bandWidth`).

use cni::{Error, Result};
use serde_json::{Map, Value};

/// The largest burst the kernel's 32-bit byte counters take (the
/// reference's "4GB").
const MAX_BURST_BYTES: u64 = u32::MAX as u64;

/// One direction's shaping, in the units of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// Bits per second.
    pub rate: u64,
    /// Bits.
    pub burst: u64,
}

impl Limit {
    pub fn is_set(&self) -> bool {
        self.rate > 0 && self.burst > 0
    }
}

/// The limits in effect, and where they came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// Toward the container.
    pub ingress: Limit,
    /// From the container.
    pub egress: Limit,
}

impl Bandwidth {
    pub fn is_zero(&self) -> bool {
        self.ingress == Limit::default() && self.egress == Limit::default()
    }
}

const KEYS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_config(msg)
}

/// The value of `key` in `obj`, matched as Go matches struct fields: an
/// exact match wins, otherwise the last case-insensitive one.
fn get_folded<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn number(v: &Value, path: &str) -> Result<u64> {
    match v {
        // Go leaves the field at zero for null.
        Value::Null => Ok(0),
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            invalid(format!(
                "{path}: invalid value {n}: must be a non-negative integer"
            ))
        }),
        other => Err(invalid(format!(
            "{path}: invalid value {other}: must be a non-negative integer"
        ))),
    }
}

/// The entry in `obj`, or `None` when it has none of the four keys (Go
/// allocates the embedded entry only when one of them is present).
fn entry(obj: &Map<String, Value>, prefix: &str) -> Result<Option<Bandwidth>> {
    let mut vals = [0u64; 4];
    let mut any = false;
    for (slot, key) in vals.iter_mut().zip(KEYS) {
        if let Some(v) = get_folded(obj, key) {
            any = true;
            *slot = number(v, &format!("{prefix}{key}"))?;
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(Bandwidth {
        ingress: Limit {
            rate: vals[0],
            burst: vals[1],
        },
        egress: Limit {
            rate: vals[2],
            burst: vals[3],
        },
    }))
}

/// The reference's three rules, in its order, with the keys and values
/// named; plus the rate floor below which the kernel would get a rate of
/// zero bytes per second (the reference divides by it).
fn validate(l: &Limit, prefix: &str, dir: &str) -> Result<()> {
    let (rk, bk) = (format!("{prefix}{dir}Rate"), format!("{prefix}{dir}Burst"));
    if l.burst == 0 && l.rate != 0 {
        return Err(invalid(format!(
            "if rate is set, burst must also be set ({rk} {}, {bk} 0)",
            l.rate
        )));
    }
    if l.rate == 0 && l.burst != 0 {
        return Err(invalid(format!(
            "if burst is set, rate must also be set ({bk} {}, {rk} 0)",
            l.burst
        )));
    }
    if l.burst / 8 >= MAX_BURST_BYTES {
        return Err(invalid(format!(
            "burst cannot be more than 4GB ({bk} {})",
            l.burst
        )));
    }
    if l.rate != 0 && l.rate < 8 {
        return Err(invalid(format!(
            "rate must be at least 8 bits per second ({rk} {})",
            l.rate
        )));
    }
    Ok(())
}

/// Parse stdin. `runtimeConfig.bandwidth` (the capability Kubernetes and
/// other runtimes pass) takes precedence over the top-level keys.
pub fn parse(stdin: &[u8]) -> Result<Bandwidth> {
    let root: Value = serde_json::from_slice(stdin)
        .map_err(|e| Error::decoding(format!("failed to parse network configuration: {e}")))?;
    let Value::Object(root) = root else {
        return Err(Error::decoding(
            "failed to parse network configuration: not a JSON object",
        ));
    };
    let from_runtime = match get_folded(&root, "runtimeConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(rc)) => match get_folded(rc, "bandwidth") {
            None | Some(Value::Null) => None,
            Some(Value::Object(bw)) => {
                Some(entry(bw, "runtimeConfig.bandwidth.")?.unwrap_or_default())
            }
            Some(other) => {
                return Err(invalid(format!(
                    "runtimeConfig.bandwidth: invalid value {other}: must be an object"
                )));
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "runtimeConfig: invalid value {other}: must be an object"
            )));
        }
    };
    // The top-level keys must decode even when the capability wins (Go
    // decodes both); only the limits in effect are validated.
    let top = entry(&root, "")?.unwrap_or_default();
    let (bw, prefix) = match from_runtime {
        Some(bw) => (bw, "runtimeConfig.bandwidth."),
        None => (top, ""),
    };
    validate(&bw.ingress, prefix, "ingress")?;
    validate(&bw.egress, prefix, "egress")?;
    Ok(bw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Bandwidth> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn top_level_keys() {
        let bw = p(
            json!({"name": "n", "type": "bandwidth", "ingressRate": 8000, "ingressBurst": 800,
            "egressRate": 16000, "egressBurst": 900}),
        )
        .unwrap();
        assert_eq!(
            bw.ingress,
            Limit {
                rate: 8000,
                burst: 800
            }
        );
        assert_eq!(
            bw.egress,
            Limit {
                rate: 16000,
                burst: 900
            }
        );
    }

    #[test]
    fn capability_overrides_and_matches_case_insensitively() {
        let bw = p(json!({"ingressRate": 123, "ingressBurst": 123,
            "runtimeConfig": {"bandWidth": {"egressRate": 16, "egressBurst": 9}}}))
        .unwrap();
        assert_eq!(bw.ingress, Limit::default());
        assert_eq!(bw.egress, Limit { rate: 16, burst: 9 });
    }

    #[test]
    fn overridden_top_level_keys_must_still_decode() {
        let e = p(json!({"ingressRate": "x",
            "runtimeConfig": {"bandwidth": {"egressRate": 16, "egressBurst": 9}}}))
        .unwrap_err();
        assert!(e.msg.starts_with("ingressRate"), "{}", e.msg);
    }

    #[test]
    fn nothing_configured_is_zero() {
        assert!(p(json!({"name": "n"})).unwrap().is_zero());
        assert!(
            p(json!({"runtimeConfig": {"bandwidth": null}}))
                .unwrap()
                .is_zero()
        );
    }

    #[test]
    fn reference_messages_with_keys_named() {
        let e = p(json!({"ingressRate": 0, "ingressBurst": 123})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.starts_with("if burst is set, rate must also be set"),
            "{}",
            e.msg
        );
        assert!(e.msg.contains("ingressBurst 123"), "{}", e.msg);
        let e = p(json!({"runtimeConfig": {"bandwidth": {"egressRate": 100}}})).unwrap_err();
        assert!(
            e.msg.starts_with("if rate is set, burst must also be set"),
            "{}",
            e.msg
        );
        assert!(
            e.msg.contains("runtimeConfig.bandwidth.egressRate 100"),
            "{}",
            e.msg
        );
        let e = p(json!({"egressRate": 100, "egressBurst": 34359738360u64})).unwrap_err();
        assert!(
            e.msg.starts_with("burst cannot be more than 4GB"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (v, key) in [
            (json!({"ingressRate": -1}), "ingressRate"),
            (json!({"egressBurst": "1M"}), "egressBurst"),
            (json!({"ingressRate": 1.5}), "ingressRate"),
            (
                json!({"runtimeConfig": {"bandwidth": {"egressRate": true}}}),
                "runtimeConfig.bandwidth.egressRate",
            ),
            (
                json!({"runtimeConfig": {"bandwidth": 5}}),
                "runtimeConfig.bandwidth",
            ),
        ] {
            let e = p(v).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.starts_with(key), "{}", e.msg);
        }
        assert_eq!(parse(b"{").unwrap_err().code, 6);
    }

    #[test]
    fn rates_the_kernel_cannot_take() {
        let e = p(json!({"ingressRate": 7, "ingressBurst": 8})).unwrap_err();
        assert!(e.msg.contains("at least 8"), "{}", e.msg);
        // Kubernetes' burst is taken at any rate (the bucket wraps as in
        // the reference).
        let bw = p(json!({"runtimeConfig": {"bandwidth":
            {"ingressRate": 8, "ingressBurst": 4294967295u64}}}))
        .unwrap();
        assert!(crate::tbf_params(&bw.ingress, crate::DEFAULT_TICKS_PER_USEC).is_some());
    }
}
