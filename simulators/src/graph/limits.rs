//! Outlook's throttling of one app on one mailbox: at most
//! `mailbox_concurrency` requests in flight, and at most
//! `requests_per_window` requests in a sliding `window`.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::GraphConfig;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// Too many requests in flight: `ApplicationThrottled`
    /// "MailboxConcurrency".
    Concurrency { retry_after: Duration },
    /// The window is full: retry when its oldest request leaves it.
    Rate { retry_after: Duration },
}

/// The requests of one mailbox in flight and in the window.
#[derive(Debug, Default)]
pub(crate) struct MailboxLimits {
    in_flight: usize,
    recent: VecDeque<Instant>,
}

impl MailboxLimits {
    /// Admits a request (it holds a slot until [`MailboxLimits::release`])
    /// or says why not; a refused request is not counted in the window.
    pub(crate) fn admit(&mut self, config: &GraphConfig, now: Instant) -> Result<(), Throttle> {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= config.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= config.requests_per_window {
            let retry_after = self
                .recent
                .front()
                .map(|oldest| (*oldest + config.window).saturating_duration_since(now))
                .unwrap_or(config.window);
            return Err(Throttle::Rate { retry_after });
        }
        if self.in_flight >= config.mailbox_concurrency {
            return Err(Throttle::Concurrency {
                retry_after: config.concurrency_retry_after,
            });
        }
        self.in_flight += 1;
        self.recent.push_back(now);
        Ok(())
    }

    /// Frees the slot of a request admitted before.
    pub(crate) fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_seconds(delay: Duration) -> u64 {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(concurrency: usize, per_window: usize) -> GraphConfig {
        GraphConfig {
            mailbox_concurrency: concurrency,
            requests_per_window: per_window,
            window: Duration::from_secs(600),
            ..GraphConfig::default()
        }
    }

    #[test]
    fn requests_past_the_concurrency_are_refused_until_one_is_released() {
        let config = config(2, 100);
        let now = Instant::now();
        let mut limits = MailboxLimits::default();
        assert_eq!(limits.admit(&config, now), Ok(()));
        assert_eq!(limits.admit(&config, now), Ok(()));
        assert!(matches!(limits.admit(&config, now), Err(Throttle::Concurrency { .. })));
        limits.release();
        assert_eq!(limits.admit(&config, now), Ok(()));
        assert_eq!(limits.in_flight, 2);
    }

    #[test]
    fn a_full_window_asks_to_wait_until_its_oldest_request_leaves_it() {
        let config = config(10, 2);
        let start = Instant::now();
        let mut limits = MailboxLimits::default();
        limits.admit(&config, start).unwrap();
        limits.release();
        limits.admit(&config, start + Duration::from_secs(100)).unwrap();
        limits.release();
        let refused = limits.admit(&config, start + Duration::from_secs(200));
        assert_eq!(
            refused,
            Err(Throttle::Rate {
                retry_after: Duration::from_secs(400)
            })
        );
        assert_eq!(limits.admit(&config, start + Duration::from_secs(600)), Ok(()));
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_seconds(Duration::from_secs(4)), 4);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
