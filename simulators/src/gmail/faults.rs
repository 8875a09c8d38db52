//! Faults a test arms through the simulator's handle: one-shot (the next N
//! calls, to one endpoint or to any it applies to) or by rate (each call it
//! applies to, with a probability). A batch's parts are calls of their own;
//! the batch envelope and the token endpoint take no fault.

use super::Endpoint;
use crate::shared::Applies;

/// A fault Gmail can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `403 userRateLimitExceeded`, without `Retry-After` (as Gmail often
    /// answers it).
    RateLimit,
    /// `403 dailyLimitExceeded`: the project's daily quota is spent.
    DailyLimit,
    /// `500 backendError`.
    ServerError,
    /// `401 authError`, as when the access token was revoked elsewhere.
    Unauthorized,
    /// `404 notFound` on `history.list`: the start history id is too old.
    StaleHistory,
}

impl Applies<Endpoint> for Fault {
    fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            Fault::StaleHistory => endpoint == Endpoint::HistoryList,
            _ => !matches!(endpoint, Endpoint::Token | Endpoint::Batch),
        }
    }
}

/// The faults armed for one mailbox: one-shot ones oldest first, then rates.
pub(crate) type Faults = crate::shared::Faults<Fault, Endpoint>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_fault_answers_the_next_n_matching_calls_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::StaleHistory, None, 1);
        faults.arm(Fault::ServerError, Some(Endpoint::MessagesGet), 2);
        let never = || 1.0;
        assert_eq!(faults.take(Endpoint::Profile, never), None);
        assert_eq!(faults.take(Endpoint::HistoryList, never), Some(Fault::StaleHistory));
        assert_eq!(faults.take(Endpoint::HistoryList, never), None);
        assert_eq!(faults.take(Endpoint::MessagesGet, never), Some(Fault::ServerError));
        assert_eq!(faults.take(Endpoint::MessagesGet, never), Some(Fault::ServerError));
        assert_eq!(faults.take(Endpoint::MessagesGet, never), None);
    }

    #[test]
    fn a_rate_answers_when_the_draw_falls_under_it() {
        let mut faults = Faults::default();
        faults.set_rate(Fault::RateLimit, 0.5);
        assert_eq!(faults.take(Endpoint::Profile, || 0.2), Some(Fault::RateLimit));
        assert_eq!(faults.take(Endpoint::Profile, || 0.7), None);
        assert_eq!(faults.take(Endpoint::Batch, || 0.0), None);
        faults.set_rate(Fault::RateLimit, 0.0);
        assert_eq!(faults.take(Endpoint::Profile, || 0.0), None);
    }
}
