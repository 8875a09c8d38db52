//! Faults a test arms for one mailbox: the next N calls (to one endpoint, or
//! to any the fault applies to) answer as Graph does under that fault, or
//! each call does with a probability.

use std::time::Duration;

use serde::Deserialize;

use super::Endpoint;

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

impl Fault {
    fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            Fault::SyncStateNotFound => endpoint == Endpoint::MessagesDelta,
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

#[derive(Debug)]
struct Armed {
    fault: Fault,
    endpoint: Option<Endpoint>,
    remaining: u32,
}

/// The faults armed for one mailbox: one-shot ones oldest first, then rates.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Armed>,
    rates: Vec<(Fault, f64)>,
}

impl Faults {
    pub(crate) fn arm(&mut self, fault: Fault, endpoint: Option<Endpoint>, times: u32) {
        if times > 0 {
            self.armed.push(Armed {
                fault,
                endpoint,
                remaining: times,
            });
        }
    }

    pub(crate) fn set_rate(&mut self, fault: Fault, probability: f64) {
        self.rates.retain(|(armed, _)| *armed != fault);
        let probability = probability.clamp(0.0, 1.0);
        if probability > 0.0 {
            self.rates.push((fault, probability));
        }
    }

    /// The fault this call to `endpoint` answers with, if any; `roll` draws a
    /// number in `[0, 1)` for each rate that applies.
    pub(crate) fn take(&mut self, endpoint: Endpoint, mut roll: impl FnMut() -> f64) -> Option<Fault> {
        let index = self
            .armed
            .iter()
            .position(|armed| armed.fault.applies_to(endpoint) && armed.endpoint.is_none_or(|only| only == endpoint));
        if let Some(index) = index {
            let armed = &mut self.armed[index];
            let fault = armed.fault;
            armed.remaining -= 1;
            if armed.remaining == 0 {
                self.armed.remove(index);
            }
            return Some(fault);
        }
        self.rates
            .iter()
            .find(|(fault, probability)| fault.applies_to(endpoint) && roll() < *probability)
            .map(|(fault, _)| *fault)
    }

    pub(crate) fn clear(&mut self) {
        self.armed.clear();
        self.rates.clear();
    }
}

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
