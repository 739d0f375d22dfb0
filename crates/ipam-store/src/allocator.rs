//! Picking an address from a range set: a requested one, or the next free
//! one round-robin after `last_reserved_ip.<set index>`, in the reference's
//! order so that both implementations hand out the same sequence.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::ip_math::{canonical, next_ip};
use crate::range::Range;
use crate::range_set::RangeSet;
use crate::reservation::Owner;
use crate::store::LockedStore;

/// An address handed out, with its subnet's prefix and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub address: IpNetwork,
    pub gateway: IpAddr,
}

/// Reserves one address of `set` (index `set_index`) for `owner`.
///
/// With `requested`, exactly that address (it must be allocatable in the
/// set and free). Without, the owner must not already hold an address of
/// the set (a second ADD for the same attachment is refused, as in the
/// reference), and the first free address after the last reserved one is
/// taken, wrapping across the ranges of the set.
pub fn allocate(
    store: &mut LockedStore<'_>,
    set: &RangeSet,
    set_index: usize,
    owner: &Owner,
    requested: Option<IpAddr>,
) -> Result<Allocation> {
    if let Some(ip) = requested {
        let ip = canonical(ip);
        let unavailable = || Error::RequestedUnavailable {
            ip,
            set: set.to_string(),
        };
        let range = set.range_for(ip).ok_or_else(unavailable)?;
        if ip == range.gateway() {
            return Err(Error::RequestedGateway(ip));
        }
        if !range.is_allocatable(ip) || !store.reserve(ip, owner, set_index)? {
            return Err(unavailable());
        }
        return Ok(allocation(range, ip));
    }

    if let Some(ip) = store
        .lookup(owner)?
        .into_iter()
        .find(|ip| set.contains(*ip))
    {
        return Err(Error::Duplicate {
            ip,
            id: owner.container_id.clone(),
        });
    }

    for ip in RoundRobin::new(set, store.last_reserved(set_index)) {
        // Candidates come from the set's ranges, so this always finds one.
        let Some(range) = set.range_for(ip) else {
            continue;
        };
        if store.reserve(ip, owner, set_index)? {
            return Ok(allocation(range, ip));
        }
    }
    Err(Error::Exhausted(set.to_string()))
}

fn allocation(range: &Range, ip: IpAddr) -> Allocation {
    let subnet = range.subnet();
    Allocation {
        // `ip` lies in `subnet`, so the prefix fits its family; the fallback
        // (the subnet itself) is never taken.
        address: IpNetwork::new(ip, subnet.prefix()).unwrap_or(subnet),
        gateway: range.gateway(),
    }
}

/// Candidate addresses in the reference's order: start right after `last`
/// if it lies in the set, else at the first range's start; step through
/// each range's window and on to the next range (wrapping), skipping every
/// address that may not be handed out; stop after one full turn.
pub struct RoundRobin<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: Option<IpAddr>,
    first: Option<IpAddr>,
    done: bool,
}

impl<'a> RoundRobin<'a> {
    pub fn new(set: &'a RangeSet, last: Option<IpAddr>) -> RoundRobin<'a> {
        let resume = last.map(canonical).and_then(|ip| {
            set.ranges()
                .iter()
                .position(|r| r.contains(ip))
                .map(|i| (i, ip))
        });
        let (range, cur) = match resume {
            Some((i, ip)) => (i, Some(ip)),
            None => (0, None),
        };
        RoundRobin {
            set,
            range,
            cur,
            first: None,
            done: false,
        }
    }

    /// The next address in window order, allocatable or not.
    fn step(&mut self) -> IpAddr {
        let ranges = self.set.ranges();
        let next = match self.cur {
            None => ranges[self.range].start(),
            Some(cur) if cur == ranges[self.range].end() => {
                self.range = (self.range + 1) % ranges.len();
                ranges[self.range].start()
            }
            // Inside a window that ends at or below the family's last
            // address, so there is always a next one.
            Some(cur) => next_ip(cur).unwrap_or(ranges[self.range].start()),
        };
        self.cur = Some(next);
        next
    }
}

impl Iterator for RoundRobin<'_> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<IpAddr> {
        while !self.done {
            let ip = self.step();
            match self.first {
                None => self.first = Some(ip),
                Some(first) if first == ip => {
                    self.done = true;
                    break;
                }
                Some(_) => {}
            }
            if self.set.ranges()[self.range].is_allocatable(ip) {
                return Some(ip);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(&str, Option<&str>, Option<&str>)]) -> RangeSet {
        RangeSet::new(
            ranges
                .iter()
                .map(|(s, a, b)| {
                    Range::new(
                        s.parse().unwrap(),
                        a.map(|a| a.parse().unwrap()),
                        b.map(|b| b.parse().unwrap()),
                        None,
                    )
                    .unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    fn order(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        RoundRobin::new(set, last.map(|l| l.parse().unwrap()))
            .map(|ip| ip.to_string())
            .collect()
    }

    #[test]
    fn fresh_set_starts_after_the_gateway() {
        let s = set(&[("10.0.0.0/29", None, None)]);
        assert_eq!(
            order(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn resumes_after_last_and_wraps_across_ranges() {
        let s = set(&[("10.0.0.0/29", None, None), ("10.0.1.0/29", None, None)]);
        assert_eq!(
            order(&s, Some("10.0.1.5")),
            [
                "10.0.1.6", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.2",
                "10.0.1.3", "10.0.1.4", "10.0.1.5"
            ]
        );
    }

    #[test]
    fn last_outside_the_set_restarts_at_the_beginning() {
        let s = set(&[("10.0.0.0/29", Some("10.0.0.4"), None)]);
        assert_eq!(
            order(&s, Some("192.168.0.1")),
            ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }
}
