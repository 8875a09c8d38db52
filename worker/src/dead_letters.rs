//! The dead-letter queue's reader: every job that exceeded its delivery limit
//! or its retries is kept in `dead_jobs` for operators, an engine issue is
//! recorded for its user, and the user is released so the scheduler queues
//! them again at their next slot.

use sqlx::PgPool;
use syncfleet_common::queue::{DeadLetter, JobKind};
use uuid::Uuid;

/// Records a dead letter; idempotent per job, so a redelivered dead letter
/// records nothing twice.
pub async fn record(pool: &PgPool, dead: &DeadLetter, payload: &[u8]) -> Result<(), sqlx::Error> {
    let job = dead.envelope.as_ref().ok();
    let job_id = job.map(|job| job.job_id);
    let user_id = job.and_then(|job| job.user_id);
    let mut tx = pool.begin().await?;
    // The kind and organization for the console's filters; the last error
    // the job's sessions (or its admin job) recorded, for its inspection.
    let inserted = sqlx::query!(
        "INSERT INTO dead_jobs (id, job_id, user_id, queue, reason, deliveries, payload, kind, organization_id, last_error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT organization_id FROM users WHERE id = $3), \
           COALESCE((SELECT error_message FROM sync_sessions WHERE job_id = $2 AND error_message IS NOT NULL \
                     ORDER BY started_at DESC LIMIT 1), \
                    (SELECT error FROM admin_jobs WHERE id = $2))) \
         ON CONFLICT (job_id) DO NOTHING",
        Uuid::now_v7(),
        job_id,
        user_id,
        dead.queue.as_deref().unwrap_or("unknown"),
        &dead.reason,
        dead.deliveries.map(|count| i32::try_from(count).unwrap_or(i32::MAX)),
        payload,
        job.map(|job| job.kind) as Option<JobKind>
    )
    .execute(&mut *tx)
    .await?;

    if let (Some(job_id), Some(user_id), 1) = (job_id, user_id, inserted.rows_affected()) {
        let deliveries = dead
            .deliveries
            .map(|count| format!(" after {count} deliveries"))
            .unwrap_or_default();
        let message = format!(
            "Job {job_id} was dead-lettered ({}){deliveries}; it will not be retried.",
            dead.reason
        );
        sqlx::query!(
            "INSERT INTO sync_issues (id, session_id, user_id, created_at, source, category, message) \
             SELECT $1, NULL, u.id, now(), 'engine', 'internal', $3 FROM users u WHERE u.id = $2",
            Uuid::now_v7(),
            user_id,
            &message
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE admin_jobs SET status = 'failed', finished_at = now(), error = $2 \
             WHERE id = $1 AND status IN ('queued', 'running')",
            job_id,
            &message
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE user_runs SET queued_job_id = NULL, queued_at = NULL WHERE user_id = $1 AND queued_job_id = $2",
            user_id,
            job_id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
