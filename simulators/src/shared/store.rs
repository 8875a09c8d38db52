//! A simulator's state behind its lock, with its configuration beside it.

use std::sync::{Mutex, PoisonError};

/// The configuration `C` and the state `S` every route and the handle share.
#[derive(Debug)]
pub(crate) struct Store<C, S> {
    pub config: C,
    state: Mutex<S>,
}

impl<C, S: Default> Store<C, S> {
    /// `config` and a fresh state.
    pub(crate) fn new(config: C) -> Self {
        Self {
            config,
            state: Mutex::new(S::default()),
        }
    }
}

impl<C, S> Store<C, S> {
    /// Runs `act` on the state. The lock is never held across an await.
    pub(crate) fn with<T>(&self, act: impl FnOnce(&mut S) -> T) -> T {
        // A panic in another request cannot leave the state half-written in a
        // way worth refusing every later request for.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        act(&mut state)
    }
}
