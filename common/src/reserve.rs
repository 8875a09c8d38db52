//! The reserve of a Salesforce org's daily API allocation: the share the
//! fleet leaves to the org's other clients, and when an org is near it. The
//! console shows it per org and the scheduler leader's gauge counts the orgs
//! near it, both with this one rule.

/// A Salesforce org's daily API usage, as its last answer reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgUsage {
    /// Calls made in the last 24 hours.
    pub used: i64,
    /// The org's daily allocation.
    pub allocation: i64,
    /// The share of the allocation left to the org's other clients.
    pub reserve_percent: i16,
}

impl OrgUsage {
    /// What the fleet may use: the allocation less the reserve, rounded
    /// down, at least one call.
    pub fn usable(self) -> i64 {
        let kept = 100 - i64::from(self.reserve_percent.clamp(0, 100));
        (self.allocation.saturating_mul(kept) / 100).max(1)
    }

    /// Whether the org used 90% or more of what the fleet may use.
    pub fn near_reserve(self) -> bool {
        self.used.saturating_mul(10) >= self.usable().saturating_mul(9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: i64, allocation: i64, reserve_percent: i16) -> OrgUsage {
        OrgUsage {
            used,
            allocation,
            reserve_percent,
        }
    }

    #[test]
    fn the_usable_share_is_the_allocation_less_the_reserve_rounded_down() {
        assert_eq!(usage(0, 15_000, 10).usable(), 13_500);
        assert_eq!(usage(0, 15, 10).usable(), 13, "13.5 rounds down");
        assert_eq!(usage(0, 1, 99).usable(), 1, "at least one call");
    }

    #[test]
    fn an_org_is_near_the_reserve_from_90_percent_of_the_usable_share() {
        // Usable 13: 90% of it is 11.7, so 12 calls are near and 11 are not
        // (the exact allocation less the reserve, 13.5, would put the edge
        // at 12.15: the rule goes by the usable share the console shows).
        assert!(usage(12, 15, 10).near_reserve());
        assert!(!usage(11, 15, 10).near_reserve());
        assert!(usage(12_150, 15_000, 10).near_reserve());
        assert!(!usage(12_149, 15_000, 10).near_reserve());
    }

    #[test]
    fn extreme_reports_neither_overflow_nor_panic() {
        assert!(usage(i64::MAX, i64::MAX, 0).near_reserve());
        assert!(!usage(0, i64::MAX, 0).near_reserve());
        assert_eq!(usage(0, 100, 120).usable(), 1);
    }
}
