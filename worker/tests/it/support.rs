//! Sync work for tests, and an in-process worker.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use syncfleet_common::domain::{IssueSource, Trigger};
use syncfleet_common::queue::{JobEnvelope, Route};
use syncfleet_testkit::TestEnv;
use syncfleet_worker::{
    WorkerConfig,
    sync::{FailureClass, SessionContext, SettingsCheck, SyncFailure, SyncWork},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A worker running in this process until `stop`.
pub struct RunningWorker {
    pub shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

pub fn start<W: SyncWork>(env: &TestEnv, work: W, extra: &[(&str, &str)]) -> RunningWorker {
    let mut settings = vec![("SYNCFLEET_USER_LEASE", "3s"), ("SYNCFLEET_SHUTDOWN_GRACE", "5s")];
    settings.extend_from_slice(extra);
    let config = WorkerConfig::from_source(&env.source(&settings)).unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(work), shutdown.clone()));
    RunningWorker { shutdown, handle }
}

/// Publishes a force-sync job for a user on the priority queue.
pub async fn force_sync(env: &TestEnv, user: Uuid) -> JobEnvelope {
    let job = JobEnvelope::sync(user, Trigger::Force, chrono::Utc::now());
    env.publisher()
        .await
        .publish(Route::Priority, std::slice::from_ref(&job))
        .await
        .unwrap();
    job
}

/// Publishes a cadence job for a user and records it as queued, as the
/// scheduler does.
pub async fn cadence_sync(env: &TestEnv, user: Uuid) -> JobEnvelope {
    let job = JobEnvelope::sync(user, Trigger::Cadence, chrono::Utc::now());
    syncfleet_testkit::mark_queued(&env.pool, &[user], &[job.job_id]).await;
    env.publisher()
        .await
        .publish(Route::Cadence, std::slice::from_ref(&job))
        .await
        .unwrap();
    job
}

/// The settings check after a pause: a session that takes time.
pub struct Slow(pub Duration);

impl SyncWork for Slow {
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        tokio::time::sleep(self.0).await;
        SettingsCheck.run(session).await
    }
}

/// Panics for one user, checks settings for the others.
pub struct PanicsFor(pub Uuid);

impl SyncWork for PanicsFor {
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        if session.user_id == self.0 {
            panic!("poison job for this user");
        }
        SettingsCheck.run(session).await
    }
}

/// Fails with a transient error the first `failures` times, then succeeds.
pub struct FailsTransiently {
    pub failures: u32,
    pub seen: Arc<AtomicU32>,
}

impl SyncWork for FailsTransiently {
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(SyncFailure::new(
                FailureClass::Transient,
                IssueSource::Mailbox,
                "mailbox server answered 503",
            ));
        }
        SettingsCheck.run(session).await
    }
}

/// Stops at its "budget" for the first `chunks` sessions of a user, as a
/// first sync of a large mailbox does; counts the sessions it ran.
pub struct Chunked {
    pub chunks: u32,
    pub seen: Arc<AtomicU32>,
}

impl SyncWork for Chunked {
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        SettingsCheck.run(session).await?;
        let run = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        session.continuation = run <= self.chunks;
        Ok(())
    }
}

/// Fails every session with one class.
pub struct AlwaysFails(pub FailureClass);

impl SyncWork for AlwaysFails {
    async fn run(&self, _session: &mut SessionContext) -> Result<(), SyncFailure> {
        Err(SyncFailure::new(self.0, IssueSource::Mailbox, "refused"))
    }
}
