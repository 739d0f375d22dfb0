//! Properties of the allocator over random ranges and random ADD/DEL
//! sequences, against a real store in a temp directory.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipam_store::{Owner, Range, RangeSet, Store, allocate};
use ipnetwork::IpNetwork;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Add,
    /// Release the n-th live attachment (modulo the number alive).
    Del(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Add), 1 => any::<usize>().prop_map(Op::Del)]
}

/// A small subnet (the `slot`-th of its family, so ranges of one set never
/// overlap), with a window that may include the network and broadcast
/// addresses and a gateway anywhere in the subnet.
fn range(v6: bool, slot: u32, prefix: u8, a: u32, b: u32, g: u32) -> Range {
    let host_bits = 32 - u32::from(prefix);
    let size = 1u32 << host_bits;
    let (subnet, off) = if v6 {
        let net = u128::from(Ipv6Addr::new(0x2001, 0xdb8, slot as u16, 0, 0, 0, 0, 0));
        let p = 128 - host_bits as u8;
        (
            IpNetwork::new(IpAddr::V6(Ipv6Addr::from(net)), p).unwrap(),
            net,
        )
    } else {
        let net = 0x0a00_0000 | (slot << 8);
        (
            IpNetwork::new(IpAddr::V4(Ipv4Addr::from(net)), prefix).unwrap(),
            u128::from(net),
        )
    };
    let at = |n: u32| -> IpAddr {
        let v = off + u128::from(n % size);
        if v6 {
            IpAddr::V6(Ipv6Addr::from(v))
        } else {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        }
    };
    let (lo, hi) = ((a % size).min(b % size), (a % size).max(b % size));
    Range::new(subnet, Some(at(lo)), Some(at(hi)), Some(at(g))).unwrap()
}

/// A range set of one to three ranges of one family.
fn range_set() -> impl Strategy<Value = RangeSet> {
    (
        any::<bool>(),
        proptest::collection::vec((26u8..=30, any::<u32>(), any::<u32>(), any::<u32>()), 1..=3),
    )
        .prop_map(|(v6, specs)| {
            let ranges = specs
                .into_iter()
                .enumerate()
                .map(|(slot, (p, a, b, g))| range(v6, slot as u32, p, a, b, g))
                .collect();
            RangeSet::new(ranges).unwrap()
        })
}

fn forbidden(set: &RangeSet, ip: IpAddr) -> bool {
    set.ranges().iter().any(|r| {
        let s = r.subnet();
        ip == r.gateway() || ip == s.network() || (s.is_ipv4() && ip == s.broadcast())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_duplicate_never_reserved_addresses_always_in_range(
        set in range_set(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "prop").unwrap();
        let mut live: Vec<(Owner, IpAddr)> = Vec::new();
        let mut next_id = 0;
        for op in ops {
            let mut locked = store.lock().unwrap();
            match op {
                Op::Add => {
                    next_id += 1;
                    let owner = Owner::new(format!("c{next_id}"), "eth0");
                    match allocate(&mut locked, &set, 0, &owner, None) {
                        Ok(a) => {
                            let ip = a.address.ip();
                            prop_assert!(set.contains(ip), "{ip} outside {set}");
                            prop_assert!(!forbidden(&set, ip), "{ip} is gateway/network/broadcast");
                            prop_assert!(live.iter().all(|(_, l)| *l != ip), "{ip} handed out twice");
                            live.push((owner, ip));
                        }
                        Err(e) => {
                            // Only when every allocatable address is live.
                            prop_assert_eq!(live.len() as u128, set.capacity(), "{}", e);
                        }
                    }
                }
                Op::Del(n) if !live.is_empty() => {
                    let (owner, ip) = live.remove(n % live.len());
                    prop_assert_eq!(locked.release(&owner).unwrap(), vec![ip]);
                }
                Op::Del(_) => {}
            }
            let on_disk: HashSet<IpAddr> =
                locked.reservations().unwrap().into_iter().map(|r| r.ip).collect();
            let expected: HashSet<IpAddr> = live.iter().map(|(_, ip)| *ip).collect();
            prop_assert_eq!(on_disk, expected);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A requested address is granted exactly when the set may hand it out
    /// and it is free; otherwise nothing is written.
    #[test]
    fn requested_address_granted_iff_allocatable_and_free(
        set in range_set(),
        picks in proptest::collection::vec((any::<usize>(), any::<u32>()), 1..20),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "prop").unwrap();
        let mut taken: HashSet<IpAddr> = HashSet::new();
        for (n, (r, offset)) in picks.into_iter().enumerate() {
            let range = &set.ranges()[r % set.ranges().len()];
            let subnet = range.subnet();
            let size = 1u128 << (if subnet.is_ipv4() { 32 } else { 128 } - u32::from(subnet.prefix()));
            let base = match subnet.network() {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            };
            let v = base + u128::from(offset) % size;
            let ip = match subnet.network() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
            };
            let owner = Owner::new(format!("r{n}"), "eth0");
            let mut locked = store.lock().unwrap();
            let got = allocate(&mut locked, &set, 0, &owner, Some(ip));
            let grantable = set.is_allocatable(ip) && !taken.contains(&ip);
            prop_assert_eq!(got.is_ok(), grantable, "{} in {}: {:?}", ip, set, got);
            if let Ok(a) = got {
                prop_assert_eq!(a.address.ip(), ip);
                taken.insert(ip);
            }
            let on_disk: HashSet<IpAddr> =
                locked.reservations().unwrap().into_iter().map(|r| r.ip).collect();
            prop_assert_eq!(&on_disk, &taken);
        }
    }
}
