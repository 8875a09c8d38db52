//! Quota units per minute: a sliding 60-second window counted in one-second
//! buckets, kept per user (mailbox) and per project (OAuth client).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The window Gmail's per-minute limits are counted over.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Units spent in the last minute.
#[derive(Debug)]
pub(crate) struct UnitWindow {
    origin: Instant,
    /// (second since `origin`, units spent in that second), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl UnitWindow {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            origin,
            buckets: VecDeque::new(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn prune(&mut self, now: Instant) {
        let current = self.second(now);
        while let Some(&(second, _)) = self.buckets.front() {
            if second + WINDOW.as_secs() <= current {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Units spent in the minute up to `now`.
    pub(crate) fn used(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.buckets.iter().map(|(_, units)| units).sum()
    }

    /// Whether `units` more fit under `limit` now; if not, how long until
    /// enough of the spent units leave the window.
    pub(crate) fn check(&mut self, units: u64, limit: u64, now: Instant) -> Result<(), Duration> {
        let used = self.used(now);
        if used + units <= limit {
            return Ok(());
        }
        if units > limit {
            return Err(WINDOW);
        }
        let current = self.second(now);
        let mut freed = 0;
        for &(second, spent) in &self.buckets {
            freed += spent;
            if used - freed + units <= limit {
                let leaves = second + WINDOW.as_secs();
                return Err(Duration::from_secs(leaves.saturating_sub(current).max(1)));
            }
        }
        Err(WINDOW)
    }

    /// Counts `units` spent now.
    pub(crate) fn charge(&mut self, units: u64, now: Instant) {
        if units == 0 {
            return;
        }
        let second = self.second(now);
        match self.buckets.back_mut() {
            Some((last, spent)) if *last == second => *spent += units,
            _ => self.buckets.push_back((second, units)),
        }
    }

    /// Replaces the window with `units` spent now (tests bring a mailbox near
    /// its limit without making the calls).
    pub(crate) fn set_used(&mut self, units: u64, now: Instant) {
        self.buckets.clear();
        self.charge(units, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_over_the_limit_are_refused_until_the_minute_rolls_past_them() {
        let origin = Instant::now();
        let mut window = UnitWindow::new(origin);
        window.charge(10, origin);
        let later = origin + Duration::from_secs(20);
        window.charge(5, later);
        assert_eq!(window.check(5, 20, later), Ok(()));
        // 10 units must leave: the first bucket does so 40 seconds later.
        assert_eq!(window.check(6, 20, later), Err(Duration::from_secs(40)));
        assert_eq!(window.check(21, 20, later), Err(WINDOW));
        let after_first = origin + Duration::from_secs(60);
        assert_eq!(window.used(after_first), 5);
        assert_eq!(window.check(15, 20, after_first), Ok(()));
    }
}
