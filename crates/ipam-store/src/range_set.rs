//! A range set: the ranges one attachment gets exactly one address from.
//! All ranges of a set share a family and do not overlap.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::range::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Checks the set like the reference's `RangeSet.Canonicalize`.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet> {
        let Some(first) = ranges.first() else {
            return Err(Error::EmptyRangeSet);
        };
        if ranges.iter().any(|r| r.is_ipv4() != first.is_ipv4()) {
            return Err(Error::MixedFamilies);
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(Error::RangesOverlap(a.to_string(), b.to_string()));
            }
        }
        Ok(RangeSet { ranges })
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    pub fn is_ipv4(&self) -> bool {
        self.ranges[0].is_ipv4()
    }

    /// The range whose window holds `ip`.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// `ip` could be handed out by this set.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some_and(|r| r.is_allocatable(ip))
    }

    /// Number of addresses the set can hand out in total.
    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .map(Range::capacity)
            .fold(0u128, u128::saturating_add)
    }

    /// Some range of one set overlaps some range of the other.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }
}

/// `a-b,c-d`, the reference's `RangeSet.String`, used inside error messages.
impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str) -> Range {
        Range::new(subnet.parse().unwrap(), None, None, None).unwrap()
    }

    #[test]
    fn mixed_families_and_overlaps_are_refused() {
        assert_eq!(
            RangeSet::new(vec![range("10.0.0.0/24"), range("2001:db8::/64")])
                .unwrap_err()
                .to_string(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::new(vec![range("10.0.0.0/24"), range("10.0.0.0/16")])
                .unwrap_err()
                .to_string(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.255.254 overlap"
        );
        assert_eq!(
            RangeSet::new(vec![]).unwrap_err().to_string(),
            "empty range set"
        );
    }

    #[test]
    fn display_joins_ranges() {
        let set = RangeSet::new(vec![range("10.0.0.0/30"), range("10.0.1.0/30")]).unwrap();
        assert_eq!(set.to_string(), "10.0.0.1-10.0.0.2,10.0.1.1-10.0.1.2");
        assert_eq!(set.capacity(), 2);
    }
}
