//! Tokens a simulator hands out that stay valid for a fixed time after they
//! were issued (Graph's delta and skip tokens): looked up by value, dropped
//! oldest first once past their lifetime. Dropping costs what is dropped, not
//! what is kept: a simulator holding a million mailboxes' delta tokens must
//! not scan them all on every answer.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// Tokens by value, with the order they were issued in.
#[derive(Debug)]
pub(crate) struct Issued<T> {
    by_token: HashMap<String, T>,
    /// (issued, token), oldest first: tokens are issued under the state's
    /// lock at `Instant::now()`, so in time order.
    order: VecDeque<(Instant, String)>,
}

impl<T> Default for Issued<T> {
    fn default() -> Self {
        Self {
            by_token: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> Issued<T> {
    /// The token's value, if it was issued and not dropped yet (whether it
    /// is still live is the caller's to judge, by its own issue time).
    pub(crate) fn get(&self, token: &str) -> Option<&T> {
        self.by_token.get(token)
    }

    /// Keeps `token`, issued at `issued`.
    pub(crate) fn insert(&mut self, token: String, issued: Instant, value: T) {
        self.order.push_back((issued, token.clone()));
        self.by_token.insert(token, value);
    }

    /// Drops the tokens issued `lifetime` or longer before `now`.
    pub(crate) fn prune(&mut self, now: Instant, lifetime: Duration) {
        while let Some((issued, _)) = self.order.front() {
            if now.saturating_duration_since(*issued) < lifetime {
                break;
            }
            if let Some((_, token)) = self.order.pop_front() {
                self.by_token.remove(&token);
            }
        }
    }

    /// How many tokens are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_token.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_past_their_lifetime_are_dropped_oldest_first() {
        let start = Instant::now();
        let mut issued = Issued::default();
        for (index, seconds) in [0, 10, 20].into_iter().enumerate() {
            issued.insert(format!("t{index}"), start + Duration::from_secs(seconds), index);
        }
        issued.prune(start + Duration::from_secs(25), Duration::from_secs(15));
        assert_eq!(issued.get("t0"), None);
        assert_eq!(issued.get("t1"), None);
        assert_eq!(issued.get("t2"), Some(&2));
        assert_eq!(issued.len(), 1);
        issued.prune(start + Duration::from_secs(100), Duration::from_secs(15));
        assert_eq!(issued.len(), 0);
    }
}
