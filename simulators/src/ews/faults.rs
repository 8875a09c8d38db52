//! Faults a test arms through the simulator's handle, keyed by an account or
//! a mailbox: the next N calls (one-shot) or a share of the calls (by rate)
//! answer as Exchange does under that fault.

use std::collections::HashMap;

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

impl Fault {
    fn applies_to(self, sync_folder_items: bool) -> bool {
        !matches!(self, Fault::InvalidSyncState) || sync_folder_items
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    remaining: u32,
}

/// The faults armed for one account or mailbox.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Armed>,
    rates: Vec<(Fault, f64)>,
}

impl Faults {
    pub(crate) fn arm(&mut self, fault: Fault, times: u32) {
        if times > 0 {
            self.armed.push(Armed {
                fault,
                remaining: times,
            });
        }
    }

    pub(crate) fn set_rate(&mut self, fault: Fault, probability: f64) {
        self.rates.retain(|(armed, _)| *armed != fault);
        if probability > 0.0 {
            self.rates.push((fault, probability.min(1.0)));
        }
    }

    /// The fault this call answers with: an armed one-shot first, else one
    /// drawn by rate (`draw` gives a uniform number in [0, 1)).
    pub(crate) fn take(&mut self, sync_folder_items: bool, mut draw: impl FnMut() -> f64) -> Option<Fault> {
        if let Some(index) = self
            .armed
            .iter()
            .position(|armed| armed.fault.applies_to(sync_folder_items))
        {
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
            .filter(|(fault, _)| fault.applies_to(sync_folder_items))
            .find(|(_, probability)| draw() < *probability)
            .map(|(fault, _)| *fault)
    }

    pub(crate) fn clear(&mut self) {
        self.armed.clear();
        self.rates.clear();
    }
}

/// Faults by lower-cased account name or SMTP address.
pub(crate) type FaultTable = HashMap<String, Faults>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_faults_come_first_and_run_out() {
        let mut faults = Faults::default();
        faults.arm(Fault::InvalidSyncState, 1);
        faults.arm(Fault::Http503, 2);
        assert_eq!(faults.take(false, || 0.5), Some(Fault::Http503));
        assert_eq!(faults.take(true, || 0.5), Some(Fault::InvalidSyncState));
        assert_eq!(faults.take(true, || 0.5), Some(Fault::Http503));
        assert_eq!(faults.take(true, || 0.5), None);
    }

    #[test]
    fn a_rate_answers_the_share_of_calls_drawn_below_it() {
        let mut faults = Faults::default();
        faults.set_rate(Fault::ConnectionCount, 0.25);
        assert_eq!(faults.take(false, || 0.1), Some(Fault::ConnectionCount));
        assert_eq!(faults.take(false, || 0.3), None);
        faults.set_rate(Fault::ConnectionCount, 0.0);
        assert_eq!(faults.take(false, || 0.0), None);
    }
}
