//! One scheduling pass: take due users, publish their jobs with confirms,
//! then commit their new slots. A crash between the confirm and the commit
//! publishes a job twice (the worker drops the copy the commit did not
//! record); it never loses one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use syncfleet_common::{
    cadence,
    domain::Trigger,
    queue::{JobEnvelope, PublishError, Publisher, Route},
    telemetry,
};
use tracing::info_span;
use uuid::Uuid;

use crate::leader;

/// How long a batch's publishing may take before the batch is abandoned.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Jobs published.
    pub published: u64,
    /// Due users whose slot was skipped: the user or its organization not
    /// syncing, or a session of theirs (a force sync) already running.
    pub skipped: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("this instance is no longer the leader")]
    NotLeader,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publishing failed: {0}")]
    Publish(#[from] PublishError),
    #[error("publishing timed out after {0:?}")]
    PublishTimeout(Duration),
}

struct DueUser {
    id: Uuid,
    next_sync_at: DateTime<Utc>,
    /// The user and its organization both sync.
    enabled: bool,
    running: bool,
    now: DateTime<Utc>,
}

/// One scheduling pass of the leader: `holder` and `term` fence the
/// leadership for every transaction of the pass.
pub struct Tick<'a> {
    pub pool: &'a PgPool,
    pub publisher: &'a Publisher,
    pub holder: Uuid,
    pub term: i64,
    pub interval: Duration,
    pub batch_size: i64,
}

impl Tick<'_> {
    /// Publishes the jobs of every due user, a batch per transaction, until
    /// no user is due.
    pub async fn run(&self) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        loop {
            let batch = self.schedule_batch().await?;
            report.published += batch.published;
            report.skipped += batch.skipped;
            if ((batch.published + batch.skipped) as i64) < self.batch_size {
                return Ok(report);
            }
        }
    }

    async fn schedule_batch(&self) -> Result<TickReport, TickError> {
        let mut tx = self.pool.begin().await?;
        if !leader::fence(&mut tx, self.holder, self.term).await? {
            return Err(TickError::NotLeader);
        }
        let due = sqlx::query_as!(
            DueUser,
            "SELECT r.user_id AS id, r.next_sync_at, \
                    u.sync_status = 'enabled' AND o.sync_enabled AS \"enabled!\", \
                    (r.running_session_id IS NOT NULL AND r.lease_expires_at > now()) AS \"running!\", \
                    now() AS \"now!\" \
             FROM user_runs r JOIN users u ON u.id = r.user_id JOIN organizations o ON o.id = u.organization_id \
             WHERE r.next_sync_at <= now() AND r.queued_job_id IS NULL \
             ORDER BY r.next_sync_at \
             LIMIT $1 \
             FOR UPDATE OF r SKIP LOCKED",
            self.batch_size
        )
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(TickReport::default());
        }

        let mut ids = Vec::with_capacity(due.len());
        let mut next_slots = Vec::with_capacity(due.len());
        let mut job_ids: Vec<Option<Uuid>> = Vec::with_capacity(due.len());
        let mut jobs = Vec::with_capacity(due.len());
        // One trace per job, begun here and continued by the worker; each span
        // stays open until the job is confirmed and committed.
        let mut spans = Vec::with_capacity(due.len());
        for user in &due {
            ids.push(user.id);
            next_slots.push(cadence::next_slot(user.id, self.interval, user.now));
            if user.enabled && !user.running {
                let mut job = JobEnvelope::sync(user.id, Trigger::Cadence, user.next_sync_at);
                let span = info_span!(parent: None, "schedule_job", job_id = %job.job_id, user_id = %user.id);
                job.trace = telemetry::trace_context(&span);
                spans.push(span);
                job_ids.push(Some(job.job_id));
                jobs.push(job);
            } else {
                job_ids.push(None);
            }
        }

        if !jobs.is_empty() {
            tokio::time::timeout(PUBLISH_TIMEOUT, self.publisher.publish(Route::Cadence, &jobs))
                .await
                .map_err(|_| TickError::PublishTimeout(PUBLISH_TIMEOUT))??;
        }
        sqlx::query!(
            "UPDATE user_runs r \
             SET next_sync_at = d.next_sync_at, queued_job_id = d.job_id, \
                 queued_at = CASE WHEN d.job_id IS NULL THEN NULL ELSE now() END \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[]) AS d(id, next_sync_at, job_id) \
             WHERE r.user_id = d.id",
            &ids,
            &next_slots,
            &job_ids as &[Option<Uuid>]
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(spans);
        Ok(TickReport {
            published: jobs.len() as u64,
            skipped: (due.len() - jobs.len()) as u64,
        })
    }
}

/// Releases expired user leases, ending their sessions as abandoned, and
/// lets users whose cadence job was lost be scheduled again.
///
/// Neither the lease nor the queued job is indexed (a claim and a close stay
/// HOT): expired leases are found by a scan of the run rows (narrow, and
/// once per sweep interval), lost jobs through the slot index (the scheduler
/// moved the slot on when it queued the job, so a job still queued long
/// after its slot passed is lost).
pub async fn sweep(pool: &PgPool, queued_job_timeout: Duration) -> Result<(u64, u64), sqlx::Error> {
    let abandoned = sqlx::query_scalar!(
        "SELECT count(*) FILTER (WHERE abandon_session(user_id, running_session_id)) AS \"abandoned!\" \
         FROM (SELECT user_id, running_session_id FROM user_runs \
               WHERE running_started_at IS NOT NULL AND lease_expires_at < now() \
               LIMIT 10000 FOR UPDATE SKIP LOCKED) expired",
    )
    .fetch_one(pool)
    .await? as u64;
    let recovered = sqlx::query!(
        "UPDATE user_runs SET queued_job_id = NULL, queued_at = NULL \
         WHERE next_sync_at <= now() AND queued_job_id IS NOT NULL \
           AND queued_at < now() - $1 * interval '1 millisecond' AND running_session_id IS NULL",
        queued_job_timeout.as_millis() as f64
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok((abandoned, recovered))
}
