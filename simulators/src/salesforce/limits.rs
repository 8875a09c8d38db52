//! The daily API allocation: a rolling 24 hours of calls per org, counted in
//! one-minute buckets, and the `Sforce-Limit-Info` value every answer carries.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The rolling window Salesforce counts the daily allocation over.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
const BUCKET: Duration = Duration::from_secs(60);

/// The org's use of its daily allocation at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls counted in the last 24 hours.
    pub used: u64,
    /// The org's daily allocation.
    pub max: u64,
}

impl ApiUsage {
    /// The value of the `Sforce-Limit-Info` header.
    pub fn header_value(&self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }
}

/// Calls in the last 24 hours against a configurable maximum.
#[derive(Debug)]
pub(crate) struct DailyAllocation {
    max: u64,
    origin: Instant,
    /// (bucket index since `origin`, calls in that bucket), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl DailyAllocation {
    pub(crate) fn new(max: u64, origin: Instant) -> Self {
        Self {
            max,
            origin,
            buckets: VecDeque::new(),
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / BUCKET.as_secs()
    }

    fn prune(&mut self, now: Instant) {
        let window_buckets = WINDOW.as_secs() / BUCKET.as_secs();
        let current = self.bucket(now);
        while let Some(&(bucket, _)) = self.buckets.front() {
            if bucket + window_buckets <= current {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// The usage now, without counting a call.
    pub(crate) fn usage(&mut self, now: Instant) -> ApiUsage {
        self.prune(now);
        ApiUsage {
            used: self.buckets.iter().map(|(_, calls)| calls).sum(),
            max: self.max,
        }
    }

    /// Counts one call and returns the usage including it, or refuses it
    /// (returning the usage as it stands) when the allocation is spent.
    pub(crate) fn try_consume(&mut self, now: Instant) -> Result<ApiUsage, ApiUsage> {
        let usage = self.usage(now);
        if usage.used >= usage.max {
            return Err(usage);
        }
        let bucket = self.bucket(now);
        match self.buckets.back_mut() {
            Some((last, calls)) if *last == bucket => *calls += 1,
            _ => self.buckets.push_back((bucket, 1)),
        }
        Ok(ApiUsage {
            used: usage.used + 1,
            max: usage.max,
        })
    }

    /// Replaces the window's history with `used` calls made now (tests use it
    /// to bring an org near its limit without making the calls).
    pub(crate) fn set_used(&mut self, used: u64, now: Instant) {
        self.buckets.clear();
        if used > 0 {
            self.buckets.push_back((self.bucket(now), used));
        }
    }

    pub(crate) fn set_max(&mut self, max: u64) {
        self.max = max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_maximum_are_refused_until_the_window_rolls_past_them() {
        let origin = Instant::now();
        let mut allocation = DailyAllocation::new(2, origin);
        assert_eq!(allocation.try_consume(origin), Ok(ApiUsage { used: 1, max: 2 }));
        let later = origin + Duration::from_secs(3600);
        assert_eq!(allocation.try_consume(later), Ok(ApiUsage { used: 2, max: 2 }));
        assert_eq!(allocation.try_consume(later), Err(ApiUsage { used: 2, max: 2 }));

        // A day after the first call only the second one is still counted.
        let next_day = origin + WINDOW + Duration::from_secs(60);
        assert_eq!(allocation.try_consume(next_day), Ok(ApiUsage { used: 2, max: 2 }));
        assert_eq!(allocation.usage(next_day + WINDOW), ApiUsage { used: 0, max: 2 });
    }

    #[test]
    fn the_header_reads_used_over_max() {
        assert_eq!(ApiUsage { used: 7, max: 15000 }.header_value(), "api-usage=7/15000");
    }
}
