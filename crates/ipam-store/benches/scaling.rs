//! ADD (allocate) and DEL (release) cost with 0 and with 10,000 existing
//! reservations in the same directory. The goal of issue 3 is a ratio of at
//! most 2; the reference reads every reservation on each call.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipam_store::{Owner, Range, RangeSet, Store, allocate};

const ROUNDS: u32 = 300;

fn main() {
    let set = RangeSet::new(vec![
        Range::new("10.128.0.0/16".parse().unwrap(), None, None, None).unwrap(),
    ])
    .unwrap();
    let empty = measure(&set, 0);
    let full = measure(&set, 10_000);
    println!(
        "ADD: {:?} with 0, {:?} with 10k existing -> ratio {:.2}",
        empty.0,
        full.0,
        full.0.as_secs_f64() / empty.0.as_secs_f64()
    );
    println!(
        "DEL: {:?} with 0, {:?} with 10k existing -> ratio {:.2}",
        empty.1,
        full.1,
        full.1.as_secs_f64() / empty.1.as_secs_f64()
    );
}

/// Mean (ADD, DEL) time per call with `existing` reservations present.
fn measure(set: &RangeSet, existing: u32) -> (Duration, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "bench").unwrap();
    // Pre-existing reservations as the Go plugin would have written them,
    // high in the range so the allocator's next candidate is free.
    for i in 0..existing {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a80_8000 + i));
        fs::write(store.dir().join(ip.to_string()), format!("old{i}\r\neth0")).unwrap();
    }
    // First touch rebuilds the index; that one-time cost is not what we measure.
    store
        .lock()
        .unwrap()
        .lookup(&Owner::new("warmup", "eth0"))
        .unwrap();

    let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let owner = Owner::new(format!("bench{round}"), "eth0");
        let t = Instant::now();
        {
            let mut locked = store.lock().unwrap();
            allocate(&mut locked, set, 0, &owner, None).unwrap();
        }
        add += t.elapsed();
        let t = Instant::now();
        {
            let mut locked = store.lock().unwrap();
            locked.release(&owner).unwrap();
        }
        del += t.elapsed();
    }
    (add / ROUNDS, del / ROUNDS)
}
