//! Failures a test arms: the next N transactions answer a given reply code
//! at one stage, or each does with some probability.

use std::time::Duration;

use crate::shared::{Applies, Latency, Random};

/// Where in a transaction an armed failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStage {
    /// Instead of `250` to `MAIL FROM`: the transaction does not start.
    MailFrom,
    /// Instead of `250` after the message's final `.`: the message is read
    /// and discarded.
    DataEnd,
}

/// A reply code a failure cannot answer with: only 4xx (transient) and 5xx
/// (permanent) codes are failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a 4xx or 5xx SMTP reply code")]
pub struct InvalidReplyCode(pub u16);

pub(super) fn checked_code(code: u16) -> Result<u16, InvalidReplyCode> {
    if (400..=599).contains(&code) {
        Ok(code)
    } else {
        Err(InvalidReplyCode(code))
    }
}

/// The text that follows a failure's code, with its enhanced status code.
pub(super) fn failure_text(code: u16) -> &'static str {
    match code {
        421 => "4.3.2 Service not available, closing transmission channel",
        450 => "4.2.1 Mailbox unavailable, try again later",
        451 => "4.3.0 Requested action aborted: local error in processing",
        452 => "4.3.1 Insufficient system storage",
        550 => "5.7.1 Requested action not taken: mailbox unavailable",
        552 => "5.3.4 Requested mail action aborted: exceeded storage allocation",
        553 => "5.1.3 Requested action not taken: mailbox name not allowed",
        554 => "5.3.0 Transaction failed",
        400..=499 => "4.0.0 Temporary failure",
        _ => "5.0.0 Permanent failure",
    }
}

/// A failure: the reply code it answers at its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    stage: FaultStage,
    code: u16,
}

impl Applies<FaultStage> for Failure {
    fn applies_to(self, stage: FaultStage) -> bool {
        self.stage == stage
    }
}

/// The armed failures, oldest first, the fault rates and the randomness
/// behind rates and latency jitter.
#[derive(Debug, Default)]
pub(super) struct Faults {
    failures: crate::shared::Faults<Failure, FaultStage>,
    random: Random,
}

impl Faults {
    pub(super) fn arm(&mut self, stage: FaultStage, code: u16, times: u32) {
        self.failures.arm(Failure { stage, code }, None, times);
    }

    /// Sets the probability of `code` at `stage`, replacing the stage's
    /// earlier rate for that code.
    pub(super) fn set_rate(&mut self, stage: FaultStage, code: u16, probability: f64) {
        self.failures.set_rate(Failure { stage, code }, probability);
    }

    pub(super) fn clear(&mut self) {
        self.failures.clear();
    }

    /// The code this transaction answers at `stage`, if a failure applies.
    pub(super) fn take(&mut self, stage: FaultStage) -> Option<u16> {
        let random = &mut self.random;
        self.failures
            .take(stage, || random.next_f64())
            .map(|failure| failure.code)
    }

    /// `base` plus a uniformly random part of `jitter`.
    pub(super) fn delay(&mut self, base: Duration, jitter: Duration) -> Duration {
        Latency { base, jitter }.draw(&mut self.random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_failure_answers_the_next_n_transactions_at_its_stage_only() {
        let mut faults = Faults::default();
        faults.arm(FaultStage::DataEnd, 554, 1);
        faults.arm(FaultStage::MailFrom, 451, 2);
        assert_eq!(faults.take(FaultStage::MailFrom), Some(451));
        assert_eq!(faults.take(FaultStage::DataEnd), Some(554));
        assert_eq!(faults.take(FaultStage::DataEnd), None);
        assert_eq!(faults.take(FaultStage::MailFrom), Some(451));
        assert_eq!(faults.take(FaultStage::MailFrom), None);
    }

    #[test]
    fn a_rate_of_one_always_fails_and_zero_turns_it_off() {
        let mut faults = Faults::default();
        faults.set_rate(FaultStage::MailFrom, 421, 1.0);
        assert!((0..50).all(|_| faults.take(FaultStage::MailFrom) == Some(421)));
        faults.set_rate(FaultStage::MailFrom, 421, 0.0);
        assert!((0..50).all(|_| faults.take(FaultStage::MailFrom).is_none()));
    }

    #[test]
    fn a_half_rate_fails_about_half_the_time() {
        let mut faults = Faults::default();
        faults.set_rate(FaultStage::DataEnd, 451, 0.5);
        let failed = (0..2000).filter(|_| faults.take(FaultStage::DataEnd).is_some()).count();
        assert!((800..1200).contains(&failed), "{failed}");
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut faults = Faults::default();
        let base = Duration::from_millis(10);
        let jitter = Duration::from_millis(5);
        for _ in 0..100 {
            let delay = faults.delay(base, jitter);
            assert!(delay >= base && delay < base + jitter, "{delay:?}");
        }
    }

    #[test]
    fn only_4xx_and_5xx_codes_are_failures() {
        assert_eq!(checked_code(451), Ok(451));
        assert_eq!(checked_code(250), Err(InvalidReplyCode(250)));
        assert_eq!(checked_code(600), Err(InvalidReplyCode(600)));
    }
}
