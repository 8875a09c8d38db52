//! Faults a test arms through the simulator's handle, keyed by an account or
//! a mailbox: the next N calls (one-shot) or a share of the calls (by rate)
//! answer as Exchange does under that fault.

use std::collections::HashMap;

use super::Operation;
use crate::shared::Applies;

/// A fault Exchange can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Fault {
    /// HTTP 500 with the SOAP fault `ErrorServerBusy` and, in its detail,
    /// `BackOffMilliseconds` = `backoff_ms` (none when 0).
    ServerBusy {
        /// The delay the fault asks for.
        backoff_ms: u64,
    },
    /// HTTP 503 with an empty body, as a front end with no back end answers.
    Http503,
    /// HTTP 500 with the SOAP fault `ErrorExceededConnectionCount`.
    ConnectionCount,
    /// `SyncFolderItems` answers `ErrorInvalidSyncStateData` (other
    /// operations are not affected).
    InvalidSyncState,
    /// HTTP 401 with an empty body, as for a wrong password.
    Unauthorized,
}

impl Applies<Operation> for Fault {
    fn applies_to(self, operation: Operation) -> bool {
        !matches!(self, Fault::InvalidSyncState) || operation == Operation::SyncFolderItems
    }
}

/// The faults armed for one account or mailbox.
pub(crate) type Faults = crate::shared::Faults<Fault, Operation>;

/// Faults by lower-cased account name or SMTP address.
pub(crate) type FaultTable = HashMap<String, Faults>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_faults_come_first_and_run_out() {
        let mut faults = Faults::default();
        faults.arm(Fault::InvalidSyncState, None, 1);
        faults.arm(Fault::Http503, None, 2);
        assert_eq!(faults.take(Operation::GetItem, || 0.5), Some(Fault::Http503));
        assert_eq!(
            faults.take(Operation::SyncFolderItems, || 0.5),
            Some(Fault::InvalidSyncState)
        );
        assert_eq!(faults.take(Operation::SyncFolderItems, || 0.5), Some(Fault::Http503));
        assert_eq!(faults.take(Operation::SyncFolderItems, || 0.5), None);
    }

    #[test]
    fn a_rate_answers_the_share_of_calls_drawn_below_it() {
        let mut faults = Faults::default();
        faults.set_rate(Fault::ConnectionCount, 0.25);
        assert_eq!(faults.take(Operation::GetItem, || 0.1), Some(Fault::ConnectionCount));
        assert_eq!(faults.take(Operation::GetItem, || 0.3), None);
        faults.set_rate(Fault::ConnectionCount, 0.0);
        assert_eq!(faults.take(Operation::GetItem, || 0.0), None);
    }
}
