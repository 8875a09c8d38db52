//! A tiny random source (xorshift64) for fault rates, latency jitter and
//! ids; nothing cryptographic depends on it.

/// A xorshift64 sequence, seeded from a fresh UUID.
#[derive(Debug)]
pub(crate) struct Random(u64);

impl Random {
    /// A sequence no other one shares.
    pub(crate) fn seeded() -> Self {
        // Xorshift must not start from zero.
        Self(uuid::Uuid::new_v4().as_u64_pair().0 | 1)
    }

    /// The next number of the sequence.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniformly random number in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::seeded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_in_the_unit_interval_and_vary() {
        let mut random = Random::seeded();
        let draws: Vec<f64> = (0..1000).map(|_| random.next_f64()).collect();
        assert!(draws.iter().all(|draw| (0.0..1.0).contains(draw)));
        let below_half = draws.iter().filter(|draw| **draw < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
    }
}
