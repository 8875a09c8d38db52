//! Faults a test arms through the simulator's handle: the next N calls (to one
//! endpoint, or to any it applies to) answer as Salesforce does under that fault.

use super::Endpoint;
use crate::shared::Applies;

/// A fault Salesforce can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Every record of a collection call fails with `UNABLE_TO_LOCK_ROW`; other
    /// calls answer `400 UNABLE_TO_LOCK_ROW`.
    UnableToLockRow,
    /// `503 SERVER_UNAVAILABLE`.
    ServiceUnavailable,
    /// `401 INVALID_SESSION_ID`, as when the session was ended elsewhere.
    InvalidSession,
    /// `403 REQUEST_LIMIT_EXCEEDED` from the concurrent long-request limit
    /// (`ConcurrentPerOrgLongTxn Limit exceeded.`), not the daily allocation.
    ConcurrentRequestLimit,
    /// An upsert's records that would be created were created an instant
    /// earlier by a concurrent writer: each answers `DUPLICATE_VALUE` on the
    /// external id, naming the existing record. Applies to upserts only.
    DuplicateOnCreate,
}

impl Applies<Endpoint> for Fault {
    fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            Fault::DuplicateOnCreate => endpoint == Endpoint::CompositeUpsert,
            _ => endpoint != Endpoint::Token,
        }
    }
}

/// The faults armed for one org, oldest first (Salesforce has no rates).
pub(crate) type Faults = crate::shared::Faults<Fault, Endpoint>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_answers_the_next_n_matching_calls_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::ServiceUnavailable, Some(Endpoint::Query), 2);
        faults.arm(Fault::DuplicateOnCreate, None, 1);
        assert_eq!(faults.take_armed(Endpoint::Limits), None);
        assert_eq!(faults.take_armed(Endpoint::Query), Some(Fault::ServiceUnavailable));
        assert_eq!(
            faults.take_armed(Endpoint::CompositeUpsert),
            Some(Fault::DuplicateOnCreate)
        );
        assert_eq!(faults.take_armed(Endpoint::CompositeUpsert), None);
        assert_eq!(faults.take_armed(Endpoint::Query), Some(Fault::ServiceUnavailable));
        assert_eq!(faults.take_armed(Endpoint::Query), None);
    }
}
