//! host-local's ranges (ipam-store's Range and RangeSet, what host-local
//! builds from `ranges`/`subnet`/`rangeStart`/`rangeEnd`/`gateway`):
//! any subnet, bounds and gateway are either refused or give a range whose
//! bounds lie in the subnet, start ≤ end, and whose queries do not panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ipnetwork::IpNetwork;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Addr {
    V4(u32),
    V6(u128),
}

impl Addr {
    fn ip(&self) -> IpAddr {
        match self {
            Addr::V4(a) => IpAddr::V4(Ipv4Addr::from(*a)),
            Addr::V6(a) => IpAddr::V6(Ipv6Addr::from(*a)),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct RangeInput {
    subnet: Addr,
    prefix: u8,
    start: Option<Addr>,
    end: Option<Addr>,
    gateway: Option<Addr>,
    probe: Addr,
}

fuzz_target!(|inputs: Vec<RangeInput>| {
    let mut ranges = Vec::new();
    for r in inputs.iter().take(8) {
        let Ok(subnet) = IpNetwork::new(r.subnet.ip(), r.prefix) else {
            continue;
        };
        let Ok(range) = ipam_store::Range::new(
            subnet,
            r.start.as_ref().map(Addr::ip),
            r.end.as_ref().map(Addr::ip),
            r.gateway.as_ref().map(Addr::ip),
        ) else {
            continue;
        };
        assert!(range.subnet().contains(range.start()), "{range:?}");
        assert!(range.subnet().contains(range.end()), "{range:?}");
        let _ = range.capacity();
        let _ = range.contains(r.probe.ip());
        let _ = range.is_allocatable(r.probe.ip());
        for other in &ranges {
            let _ = range.overlaps(other);
        }
        ranges.push(range);
    }
    if let Ok(set) = ipam_store::RangeSet::new(ranges) {
        let _ = set.capacity();
        for r in &inputs {
            let _ = set.is_allocatable(r.probe.ip());
            let _ = set.range_for(r.probe.ip());
        }
    }
});
