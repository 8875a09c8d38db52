//! Faults a test arms through the simulator's handle: the next N calls (to one
//! endpoint, or to any it applies to) answer as Salesforce does under that fault.

use super::Endpoint;

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

impl Fault {
    fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            Fault::DuplicateOnCreate => endpoint == Endpoint::CompositeUpsert,
            _ => endpoint != Endpoint::Token,
        }
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    endpoint: Option<Endpoint>,
    remaining: u32,
}

/// The faults armed for one org, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Armed>,
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

    /// The fault this call to `endpoint` answers with, if one is armed for it.
    pub(crate) fn take(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let index = self
            .armed
            .iter()
            .position(|armed| armed.fault.applies_to(endpoint) && armed.endpoint.is_none_or(|only| only == endpoint))?;
        let armed = &mut self.armed[index];
        let fault = armed.fault;
        armed.remaining -= 1;
        if armed.remaining == 0 {
            self.armed.remove(index);
        }
        Some(fault)
    }

    pub(crate) fn clear(&mut self) {
        self.armed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_answers_the_next_n_matching_calls_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::ServiceUnavailable, Some(Endpoint::Query), 2);
        faults.arm(Fault::DuplicateOnCreate, None, 1);
        assert_eq!(faults.take(Endpoint::Limits), None);
        assert_eq!(faults.take(Endpoint::Query), Some(Fault::ServiceUnavailable));
        assert_eq!(faults.take(Endpoint::CompositeUpsert), Some(Fault::DuplicateOnCreate));
        assert_eq!(faults.take(Endpoint::CompositeUpsert), None);
        assert_eq!(faults.take(Endpoint::Query), Some(Fault::ServiceUnavailable));
        assert_eq!(faults.take(Endpoint::Query), None);
    }
}
