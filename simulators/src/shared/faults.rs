//! Faults a test arms: one-shot (the next N calls, to one endpoint or to any
//! the fault applies to, oldest armed first) or by rate (each call the fault
//! applies to, with a probability, after any one-shot). Each simulator says
//! what its faults are and which calls (`E`) each applies to.

/// A fault and the calls it may answer.
pub(crate) trait Applies<E>: Copy + PartialEq {
    /// Whether a call to `endpoint` may answer with this fault.
    fn applies_to(self, endpoint: E) -> bool;
}

#[derive(Debug)]
struct Armed<F, E> {
    fault: F,
    endpoint: Option<E>,
    remaining: u32,
}

/// The faults armed for one account, mailbox or org (or a whole server).
#[derive(Debug)]
pub(crate) struct Faults<F, E> {
    armed: Vec<Armed<F, E>>,
    rates: Vec<(F, f64)>,
}

impl<F, E> Default for Faults<F, E> {
    fn default() -> Self {
        Self {
            armed: Vec::new(),
            rates: Vec::new(),
        }
    }
}

impl<F: Applies<E>, E: Copy + PartialEq> Faults<F, E> {
    /// The next `times` calls `fault` applies to (to `endpoint` only, when
    /// given) answer with it.
    pub(crate) fn arm(&mut self, fault: F, endpoint: Option<E>, times: u32) {
        if times > 0 {
            self.armed.push(Armed {
                fault,
                endpoint,
                remaining: times,
            });
        }
    }

    /// Each call `fault` applies to answers with it with `probability`
    /// (above 1 counts as 1; 0, less or NaN removes the rate).
    pub(crate) fn set_rate(&mut self, fault: F, probability: f64) {
        self.rates.retain(|(armed, _)| *armed != fault);
        if probability > 0.0 {
            self.rates.push((fault, probability.min(1.0)));
        }
    }

    /// The fault this call to `endpoint` answers with, if any: an armed one
    /// first, else one by rate; `draw` gives a uniform number in `[0, 1)` for
    /// each rate that applies.
    pub(crate) fn take(&mut self, endpoint: E, mut draw: impl FnMut() -> f64) -> Option<F> {
        self.take_armed(endpoint).or_else(|| {
            self.rates
                .iter()
                .find(|(fault, probability)| fault.applies_to(endpoint) && draw() < *probability)
                .map(|(fault, _)| *fault)
        })
    }

    /// The armed fault this call to `endpoint` answers with, if any (rates
    /// left aside).
    pub(crate) fn take_armed(&mut self, endpoint: E) -> Option<F> {
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

    /// Disarms every fault, rates included.
    pub(crate) fn clear(&mut self) {
        self.armed.clear();
        self.rates.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault of a test that applies to even endpoints only.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Even(u8);

    impl Applies<u8> for Even {
        fn applies_to(self, endpoint: u8) -> bool {
            endpoint.is_multiple_of(2)
        }
    }

    #[test]
    fn one_shot_faults_answer_oldest_first_where_they_apply_then_run_out() {
        let mut faults = Faults::default();
        faults.arm(Even(1), Some(4), 1);
        faults.arm(Even(2), None, 2);
        faults.arm(Even(3), None, 0);
        assert_eq!(faults.take(1, || 0.0), None);
        assert_eq!(faults.take(2, || 0.0), Some(Even(2)));
        assert_eq!(faults.take(4, || 0.0), Some(Even(1)));
        assert_eq!(faults.take(4, || 0.0), Some(Even(2)));
        assert_eq!(faults.take(4, || 0.0), None);
    }

    #[test]
    fn a_rate_answers_when_the_draw_falls_under_it_and_zero_removes_it() {
        let mut faults = Faults::default();
        faults.set_rate(Even(1), 0.5);
        assert_eq!(faults.take(2, || 0.4), Some(Even(1)));
        assert_eq!(faults.take(2, || 0.6), None);
        assert_eq!(faults.take(3, || 0.0), None);
        assert_eq!(faults.take_armed(2), None);
        faults.set_rate(Even(1), 7.0);
        assert_eq!(faults.take(2, || 0.99), Some(Even(1)));
        faults.set_rate(Even(1), f64::NAN);
        assert_eq!(faults.take(2, || 0.0), None);
        faults.set_rate(Even(1), 0.5);
        faults.clear();
        assert_eq!(faults.take(2, || 0.0), None);
    }
}
