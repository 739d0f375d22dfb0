//! The parts of the `bandwidth` plugin that need no kernel: the
//! configuration, the token-bucket parameters the reference derives from
//! it, and the ifb's name. The binary (`main.rs`) applies them.

pub mod config;

use sha2::{Digest, Sha512};

pub use config::{Bandwidth, Limit};

/// The reference's tbf latency: the queue holds 25 ms of traffic beyond
/// the burst.
pub const LATENCY_MS: f64 = 25.0;

/// Microseconds per second (tc's `TIME_UNITS_PER_SEC`).
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// Scheduler ticks per microsecond of every current kernel (1000/64).
pub const DEFAULT_TICKS_PER_USEC: f64 = 15.625;

/// Prefix and length of the ifb's name (`bwp` + hex of a hash).
pub const IFB_PREFIX: &str = "bwp";
const IFB_NAME_LEN: usize = 15;

/// A tbf's parameters in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfParams {
    /// Bytes per second.
    pub rate: u64,
    /// The burst as the time it takes to send it, in scheduler ticks.
    pub buffer: u32,
    /// Bytes queued at most.
    pub limit: u32,
}

/// The reference's arithmetic (`createTBF` in `ifb_creator.go`), float
/// rounding and 32-bit wrap-around included, so the qdiscs read the same
/// in `tc qdisc show` and each implementation's CHECK accepts the other's:
/// buffer = ticks(burst / rate), limit = rate × latency + burst. The
/// wrap-around matters for Kubernetes: containerd and CRI-O send a burst
/// of 2^32 - 1 bits, whose bucket in ticks exceeds 32 bits at any rate
/// below ~150 Mbit/s. `None` when the rate is below one byte per second
/// or the burst does not fit 32 bits of bytes (both refused by
/// [`config::parse`]).
pub fn tbf_params(l: &Limit, ticks_per_usec: f64) -> Option<TbfParams> {
    let rate = l.rate / 8;
    let burst = u32::try_from(l.burst / 8).ok()?;
    if rate == 0 {
        return None;
    }
    let usecs = go_u32(burst as f64 * TIME_UNITS_PER_SEC / rate as f64);
    let buffer = go_u32(usecs as f64 * ticks_per_usec);
    let latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
    let queued = go_u32(rate as f64 * latency / TIME_UNITS_PER_SEC);
    Some(TbfParams {
        rate,
        buffer,
        limit: queued.wrapping_add(burst),
    })
}

/// Go's `uint32(f)` as the reference's builds (amd64) compute it: through
/// a 64-bit integer, keeping the low 32 bits. Every value here is below
/// 2^63 (a burst under 2^32 bytes, a rate of at least one byte per second).
fn go_u32(f: f64) -> u32 {
    (f as i64) as u32
}

/// `bwp` + the first 12 hex digits of sha512(network + container id):
/// the reference's `getIfbDeviceName`, so either implementation finds the
/// other's ifb.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let mut name = String::from(IFB_PREFIX);
    for b in digest {
        if name.len() >= IFB_NAME_LEN {
            break;
        }
        name.push_str(&format!("{b:02x}"));
    }
    name.truncate(IFB_NAME_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_name_as_the_reference() {
        // Made by the Go plugin for network "net1", container "abc".
        assert_eq!(ifb_name("net1", "abc"), "bwp30f8de359c7f");
        assert_eq!(ifb_name("net1", "abc").len(), 15);
    }

    #[test]
    fn tbf_as_the_reference() {
        // 8 Mbit/s, 800 kbit burst: what `tc -d qdisc show` reports for the
        // Go plugin ("rate 8Mbit burst 100000b lat 25ms").
        let p = tbf_params(
            &Limit {
                rate: 8_000_000,
                burst: 800_000,
            },
            DEFAULT_TICKS_PER_USEC,
        )
        .unwrap();
        assert_eq!(p.rate, 1_000_000);
        assert_eq!(p.buffer, 1_562_500);
        assert_eq!(p.limit, 125_000);
        // The reference's unit test: 8 bit/s, 8 bit burst.
        let p = tbf_params(&Limit { rate: 8, burst: 8 }, DEFAULT_TICKS_PER_USEC).unwrap();
        assert_eq!((p.rate, p.buffer, p.limit), (1, 15_625_000, 1));
    }

    #[test]
    fn kubernetes_burst_wraps_as_in_the_reference() {
        // containerd's burst for the `kubernetes.io/*-bandwidth`
        // annotations; the Go plugin's qdisc reads "burst 193273526b lat
        // 275s" at 10 Mbit/s.
        let l = Limit {
            rate: 10_000_000,
            burst: u32::MAX as u64,
        };
        let p = tbf_params(&l, DEFAULT_TICKS_PER_USEC).unwrap();
        assert_eq!(p.buffer, 2_415_919_079);
        assert_eq!(p.limit, 31_250 + 536_870_911);
    }

    #[test]
    fn out_of_range_is_none() {
        assert!(
            tbf_params(
                &Limit {
                    rate: 8,
                    burst: 1 << 40
                },
                15.625
            )
            .is_none()
        );
        assert!(tbf_params(&Limit { rate: 4, burst: 8 }, 15.625).is_none());
    }
}
