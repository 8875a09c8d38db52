//! Waiting for a dependency that does not answer yet: attempts spaced by an
//! exponential backoff with jitter, for as long as it takes, until the
//! service is asked to stop. A service never exits because PostgreSQL or
//! RabbitMQ is merely unreachable; only what retrying cannot mend (a bad
//! configuration, a refused login) ends it.

use std::{fmt::Display, time::Duration};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The delays between attempts: from 200 ms, doubling up to 15 s, jittered
/// so that a fleet restarted at once does not knock in step.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How an attempt failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The dependency did not answer: try again after the next delay.
    Unreachable(E),
    /// Trying again cannot help: give up with this error.
    Fatal(E),
}

/// Runs `attempt` until it succeeds, waiting the backoff's delays between
/// failures. `Ok(None)` when `shutdown` fires first; `Err` on a fatal failure.
pub async fn until_reached<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let mut delays = backoff();
    loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let error = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            outcome = attempt() => match outcome {
                Ok(value) => return Ok(Some(value)),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Unreachable(error)) => error,
            },
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(15));
        warn!(%error, retry_in_ms = delay.as_millis() as u64, "Cannot reach {what}; retrying.");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
