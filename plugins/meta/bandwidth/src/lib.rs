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
/// rounding included, so the qdiscs read the same in `tc qdisc show`:
/// buffer = ticks(burst / rate), limit = rate × latency + burst. `None`
/// when a value does not fit the kernel's 32 bits (the reference would
/// wrap around).
pub fn tbf_params(l: &Limit, ticks_per_usec: f64) -> Option<TbfParams> {
    let rate = l.rate / 8;
    let burst = u32::try_from(l.burst / 8).ok()?;
    if rate == 0 {
        return None;
    }
    let usecs = burst as f64 * TIME_UNITS_PER_SEC / rate as f64;
    let usecs = fit_u32(usecs)?;
    let buffer = fit_u32(usecs as f64 * ticks_per_usec)?;
    let latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
    let queued = fit_u32(rate as f64 * latency / TIME_UNITS_PER_SEC)?;
    let limit = queued.checked_add(burst)?;
    Some(TbfParams {
        rate,
        buffer,
        limit,
    })
}

/// Go's `uint32(f)` for values that fit; `None` for those that do not.
fn fit_u32(f: f64) -> Option<u32> {
    (f.is_finite() && (0.0..=u32::MAX as f64).contains(&f)).then_some(f as u32)
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
