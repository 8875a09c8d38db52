//! Group commit: the requests of many tasks in one round trip.
//!
//! Hundreds of sessions are in flight in a worker, and most of them claim
//! and close alike. A [`Batcher`] queues their requests and runs them
//! together: the first request of a batch waits for one of a few slots, and
//! whatever queued meanwhile (up to a bound) joins it. Under load batches
//! grow on their own; a lone request goes at once, nothing waits on a timer,
//! unless the batcher was started with a linger (for round trips far shorter
//! than the gaps between requests, where batches would not grow otherwise).
//! Each caller gets its own answer only once the round trip that carried it
//! is over (for a statement: committed).

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// A queue of requests written together, `R` in, `A` out.
pub struct Batcher<R, A> {
    sender: mpsc::UnboundedSender<(R, oneshot::Sender<A>)>,
}

impl<R: Send + 'static, A: Send + 'static> Batcher<R, A> {
    /// Starts the batcher: at most `max_batch` requests per call of `run`,
    /// at most `slots` calls at once. `run` answers each request, in order.
    /// Needs a Tokio runtime.
    pub fn start<F, Fut>(max_batch: usize, slots: usize, run: F) -> Self
    where
        F: Fn(Vec<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        Self::start_lingering(max_batch, slots, Duration::ZERO, run)
    }

    /// [`Batcher::start`], where the first request of a batch also waits up
    /// to `linger` (once it has a slot) for others to join it, unless the
    /// batch fills first.
    pub fn start_lingering<F, Fut>(max_batch: usize, slots: usize, linger: Duration, run: F) -> Self
    where
        F: Fn(Vec<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(R, oneshot::Sender<A>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(slots.max(1)));
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                // Requests queue while every slot is busy: they all join.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + linger;
                while batch.len() < max_batch.max(1) {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(mpsc::error::TryRecvError::Empty) if !linger.is_zero() => {
                            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                                Ok(Some(request)) => batch.push(request),
                                _ => break,
                            }
                        }
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<R>, Vec<oneshot::Sender<A>>) = batch.into_iter().unzip();
                let run = run.clone();
                tokio::spawn(async move {
                    let answers = run(requests).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // A caller that went away learns nothing; what was
                        // written stays written, as after a crash.
                        let _ = reply.send(answer);
                    }
                    drop(slot);
                });
            }
        });
        Self { sender }
    }

    /// Queues `request` and waits for its answer; `None` when the batcher is
    /// gone or its run did not answer this request.
    pub async fn submit(&self, request: R) -> Option<A> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((request, reply)).ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn requests_queued_while_a_batch_runs_go_together_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let (release, released) = tokio::sync::watch::channel(false);
        let batcher = Arc::new(Batcher::start(8, 1, move |requests: Vec<u32>| {
            seen.lock().unwrap().push(requests.len());
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|go| *go).await;
                requests.into_iter().map(|request| request * 10).collect()
            }
        }));
        let mut callers = Vec::new();
        for request in 0..20u32 {
            let batcher = batcher.clone();
            callers.push(tokio::spawn(async move { batcher.submit(request).await }));
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for (request, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap(), Some(request as u32 * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|size| *size <= 8), "{sizes:?}");
        assert!(sizes.len() < 20, "nothing was batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lingering_batch_waits_for_a_request_that_comes_soon_and_goes_once_full() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::start_lingering(
            2,
            1,
            Duration::from_secs(10),
            move |requests: Vec<u32>| {
                seen.lock().unwrap().push(requests.clone());
                async move { requests }
            },
        ));
        let started = std::time::Instant::now();
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1).await }
        });
        // Without the linger the first request would have gone alone.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(batcher.submit(2).await, Some(2));
        assert_eq!(first.await.unwrap(), Some(1));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the full batch waited out the linger"
        );
        assert_eq!(*sizes.lock().unwrap(), vec![vec![1, 2]]);

        // A lone request goes when the linger is over.
        let lone = Batcher::start_lingering(
            8,
            1,
            Duration::from_millis(20),
            |requests: Vec<u32>| async move { requests },
        );
        assert_eq!(lone.submit(3).await, Some(3));
    }
}
