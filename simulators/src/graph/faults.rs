//! Faults a test arms for one mailbox: the next N calls (to one endpoint, or
//! to any the fault applies to) answer as Graph does under that fault, or
//! each call does with a probability.

use std::time::Duration;

use serde::Deserialize;

use super::Endpoint;
use crate::shared::Applies;

/// A fault Graph can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// `429 TooManyRequests`, with `Retry-After` when given a delay (whole
    /// seconds, rounded up, as the header carries).
    Throttled {
        /// The delay `Retry-After` asks for.
        #[serde(default, with = "seconds")]
        retry_after: Option<Duration>,
    },
    /// `503 ServiceUnavailable` without `Retry-After`.
    ServerError,
    /// `504 GatewayTimeout`.
    GatewayTimeout,
    /// `401 InvalidAuthenticationToken`; the mailbox's access tokens are
    /// expired too, as when the session was ended elsewhere.
    Unauthorized,
    /// `403 ErrorAccessDenied`, as when consent was withdrawn.
    AccessDenied,
    /// `410 Gone` `syncStateNotFound`; delta calls only.
    SyncStateNotFound,
}

impl Applies<Endpoint> for Fault {
    fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            Fault::SyncStateNotFound => endpoint == Endpoint::MessagesDelta,
            // Graph checks the access token of a `$batch` once, for the
            // whole batch: an ended session refuses the batch itself.
            Fault::Unauthorized => endpoint != Endpoint::Token,
            _ => !matches!(endpoint, Endpoint::Token | Endpoint::Batch),
        }
    }
}

/// `Option<Duration>` as whole seconds in the control API.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
    }
}

/// The faults armed for one mailbox: one-shot ones oldest first, then rates.
pub(crate) type Faults = crate::shared::Faults<Fault, Endpoint>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_answers_the_next_n_matching_calls_then_rates_apply() {
        let mut faults = Faults::default();
        faults.arm(Fault::ServerError, Some(Endpoint::Events), 2);
        faults.arm(Fault::SyncStateNotFound, None, 1);
        assert_eq!(faults.take(Endpoint::Token, || 0.0), None);
        assert_eq!(faults.take(Endpoint::Contacts, || 0.0), None);
        assert_eq!(
            faults.take(Endpoint::MessagesDelta, || 0.0),
            Some(Fault::SyncStateNotFound)
        );
        assert_eq!(faults.take(Endpoint::Events, || 0.0), Some(Fault::ServerError));
        assert_eq!(faults.take(Endpoint::Events, || 0.0), Some(Fault::ServerError));
        assert_eq!(faults.take(Endpoint::Events, || 0.0), None);

        faults.set_rate(Fault::GatewayTimeout, 0.5);
        assert_eq!(faults.take(Endpoint::Events, || 0.4), Some(Fault::GatewayTimeout));
        assert_eq!(faults.take(Endpoint::Events, || 0.6), None);
        assert_eq!(faults.take(Endpoint::Batch, || 0.0), None);
        faults.set_rate(Fault::GatewayTimeout, 0.0);
        assert_eq!(faults.take(Endpoint::Events, || 0.0), None);
    }

    #[test]
    fn a_throttled_fault_reads_its_delay_in_seconds() {
        let fault: Fault = serde_json::from_str(r#"{"kind":"throttled","retry_after":3}"#).unwrap();
        assert_eq!(
            fault,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let fault: Fault = serde_json::from_str(r#"{"kind":"throttled"}"#).unwrap();
        assert_eq!(fault, Fault::Throttled { retry_after: None });
    }
}
