//! The wait every simulated call makes before it is answered.

use std::time::Duration;

use super::Random;

/// How long calls wait: `base` plus a uniformly random part of `jitter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Latency {
    /// What every call waits.
    pub base: Duration,
    /// The most a call waits on top of `base`.
    pub jitter: Duration,
}

impl Latency {
    /// The wait of one call.
    pub(crate) fn draw(self, random: &mut Random) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        self.base + self.jitter.mul_f64(random.next_f64())
    }
}

/// Waits `delay`; no timer at all when it is zero, the usual case.
pub(crate) async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_stays_within_base_and_base_plus_jitter() {
        let mut random = Random::seeded();
        let base = Duration::from_millis(10);
        let jitter = Duration::from_millis(5);
        let latency = Latency { base, jitter };
        for _ in 0..100 {
            let delay = latency.draw(&mut random);
            assert!(delay >= base && delay < base + jitter, "{delay:?}");
        }
        assert_eq!(
            Latency {
                base,
                ..Latency::default()
            }
            .draw(&mut random),
            base
        );
    }
}
