//! Customization pushes (M14), from the push queue: the API recorded the
//! push (the pusher's saved customization, snapshotted) and one
//! `push_recipients` row per recipient, all `pending`.
//!
//! 1. Start: take the push's advisory lock (the API holds it from before its
//!    publish to its commit, so a push is read whole or not at all) and read
//!    the push. A push that is not there (its request rolled back) or has
//!    ended is dropped: a redelivery applies nothing twice.
//! 2. Batches, each one transaction and one set-based statement: take up to
//!    `SYNCFLEET_PUSH_BATCH_SIZE` pending recipients (`FOR UPDATE SKIP
//!    LOCKED`, so two workers never take the same ones), replace their
//!    customization with the pushed document (source `pushed`, the next
//!    version), write an activity and a notification asking to restart
//!    Outlook, announce the notification to the live streams (`pg_notify`,
//!    delivered at commit), mark them `applied` (`failed` for one who left
//!    the organization meanwhile) and count them on the push. A worker
//!    killed mid-batch loses only an uncommitted transaction: the next
//!    delivery takes those recipients again, and every recipient is applied
//!    in exactly one committed batch.
//! 3. The transaction of the batch that leaves no recipient pending also
//!    completes the push (counts recomputed from the recipients) and writes
//!    the pusher's email into the outbox under the push's dedupe key. Every
//!    batch updates the push's row first, so two workers' last batches are
//!    serialized and exactly one of them sees nothing pending.
//!
//! A job yields after [`TIME_BUDGET`] (the same job is put back on the push
//! queue) and on shutdown, so no delivery runs for long.

use std::time::Duration;

use sqlx::PgPool;
use syncfleet_common::queue::JobEnvelope;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::{config::WorkerConfig, consumer::Verdict};

/// How long one delivery applies batches before it puts the job back.
pub const TIME_BUDGET: Duration = Duration::from_secs(60);
/// The `NOTIFY` channel of the api's live notification streams.
pub const NOTIFY_CHANNEL: &str = "syncfleet_notifications";

/// Runs `sqlx::$query!` on a statement that announces a notification row
/// (its columns in scope) on [`NOTIFY_CHANNEL`] with the payload the api's
/// live streams read, spelled here once: the payload goes between `$before`
/// and `$after` (string literals, which the compile-checked macros join
/// with `+`).
macro_rules! notification_json {
    ($query:ident, $before:literal, $after:literal $(, $argument:expr)* $(,)?) => {
        sqlx::$query!(
            $before
                + "json_build_object('id', id, 'user_id', user_id, 'kind', kind, 'title', title, 'body', body, \
         'payload', payload, 'created_at', created_at, 'read_at', read_at)::text"
                + $after
            $(, $argument)*
        )
    };
}
pub(crate) use notification_json;

/// The push as a batch needs it.
#[derive(Debug)]
struct Push {
    organization_id: Uuid,
    version: i64,
    document: serde_json::Value,
    status: String,
    /// Who the recipients are told pushed it.
    pusher: String,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    taken: i64,
    completed: bool,
}

/// Runs a push job's delivery to its verdict; the second value is its
/// outcome for the metrics.
pub(crate) async fn handle(
    pool: &PgPool,
    config: &WorkerConfig,
    hard_stop: &CancellationToken,
    job: &JobEnvelope,
) -> (Verdict, &'static str) {
    let Some(push_id) = job.push_id() else {
        return (
            Verdict::DeadLetter("a push job without params.push_id".to_owned()),
            "dead_lettered",
        );
    };
    let push = match start(pool, push_id)
        .instrument(info_span!("start_push", %push_id))
        .await
    {
        Ok(Some(push)) if matches!(push.status.as_str(), "completed" | "failed") => {
            info!(%push_id, "The push already ended; dropped.");
            return (Verdict::Ack, "dropped");
        }
        Ok(Some(push)) => push,
        Ok(None) => {
            info!(%push_id, "The push is not recorded (its request was not committed); dropped.");
            return (Verdict::Ack, "dropped");
        }
        Err(error) => {
            warn!(%error, %push_id, "Could not start the push; deferring.");
            return (Verdict::Defer(Duration::from_secs(5)), "deferred");
        }
    };
    let started = Instant::now();
    let mut batches = 0_u64;
    loop {
        if hard_stop.is_cancelled() {
            info!(%push_id, batches, "The worker is stopping; handing the push back.");
            return (Verdict::HandBack, "handed_back");
        }
        if started.elapsed() >= TIME_BUDGET {
            info!(%push_id, batches, "The push used its time budget; putting it back on the queue.");
            return (Verdict::HandBack, "yielded");
        }
        match batch(pool, push_id, &push, config.push_batch_size)
            .instrument(info_span!("push_batch", %push_id))
            .await
        {
            Ok(Batch { completed: true, .. }) => {
                info!(%push_id, batches = batches + 1, "Customization push completed.");
                return (Verdict::Ack, "completed");
            }
            Ok(Batch { taken: 0, .. }) => {
                // Nothing pending is free: another worker holds the last
                // recipients, and its last batch completes the push. Look
                // again later, in case that worker dies.
                info!(%push_id, "The push's last recipients are being applied elsewhere; checking later.");
                return (Verdict::Defer(Duration::from_secs(5)), "deferred");
            }
            Ok(Batch { .. }) => batches += 1,
            Err(error) => {
                warn!(%error, %push_id, "A push batch failed (rolled back); retrying later.");
                return (Verdict::Defer(Duration::from_secs(5)), "deferred");
            }
        }
    }
}

/// Step 1: waits for the API's transaction (the push's lock), reads the
/// push and marks it running.
async fn start(pool: &PgPool, push_id: Uuid) -> Result<Option<Push>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The key is the push's id as PostgreSQL spells a `uuid` as text, as the
    // api's lock binds it.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('syncfleet.push:' || $1::text, 0))",
        push_id.hyphenated().to_string()
    )
    .execute(&mut *tx)
    .await?;
    let push = sqlx::query_as!(
        Push,
        "UPDATE pushes p SET status = CASE WHEN p.status = 'queued' THEN 'running' ELSE p.status END \
         WHERE p.id = $1 \
         RETURNING p.organization_id, p.customization_version AS version, p.document, p.status, \
             coalesce((SELECT u.name || ' <' || u.email || '>' FROM users u WHERE u.id = p.pusher_user_id), \
                      p.requested_by) AS \"pusher!\"",
        push_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(push)
}

/// Step 2 (and 3 for the last batch): one transaction.
async fn batch(pool: &PgPool, push_id: Uuid, push: &Push, size: i64) -> Result<Batch, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let counts = notification_json!(
        query,
        "WITH batch AS ( \
             SELECT user_id FROM push_recipients \
             WHERE push_id = $1 AND status = 'pending' \
             ORDER BY user_id LIMIT $2 FOR UPDATE SKIP LOCKED \
         ), reachable AS ( \
             SELECT u.id FROM users u JOIN batch b ON b.user_id = u.id WHERE u.organization_id = $3 \
         ), saved AS ( \
             INSERT INTO customizations (user_id, document, source) \
             SELECT id, $4, 'pushed' FROM reachable ORDER BY id \
             ON CONFLICT (user_id) DO UPDATE SET version = customizations.version + 1, \
                 document = EXCLUDED.document, source = 'pushed', saved_at = now() \
             RETURNING user_id, version \
         ), audit AS ( \
             INSERT INTO activities (id, organization_id, user_id, actor, kind, details) \
             SELECT gen_random_uuid(), $3, user_id, $5::text, 'customization_pushed', \
                    format('customization pushed by %s (their version %s), saved as version %s (push %s)', \
                           $5, $6::int8, version, $1) \
             FROM saved \
         ), notes AS ( \
             INSERT INTO notifications (id, user_id, kind, title, body, payload) \
             SELECT gen_random_uuid(), user_id, 'customization_pushed', 'Your customization was updated', \
                    format('%s pushed their customization to you. Restart Outlook to apply it.', $5), \
                    jsonb_build_object('push_id', $1, 'version', version, 'from', $5, 'restart_outlook', true) \
             FROM saved \
             RETURNING id, user_id, kind, title, body, payload, created_at, read_at \
         ), announced AS ( \
             SELECT pg_notify($7, ",
        ") \
             FROM notes \
         ), marked AS ( \
             UPDATE push_recipients r SET \
                 status = CASE WHEN s.user_id IS NULL THEN 'failed' ELSE 'applied' END, \
                 error = CASE WHEN s.user_id IS NULL THEN 'the user left the organization before the push reached them' END, \
                 updated_at = now() \
             FROM batch b LEFT JOIN saved s ON s.user_id = b.user_id \
             WHERE r.push_id = $1 AND r.user_id = b.user_id \
             RETURNING r.status \
         ), counted AS ( \
             UPDATE pushes SET status = 'running', \
                 applied = applied + (SELECT count(*) FROM marked WHERE status = 'applied'), \
                 failed = failed + (SELECT count(*) FROM marked WHERE status = 'failed') \
             WHERE id = $1 \
             RETURNING id \
         ) \
         SELECT (SELECT count(*) FROM marked) + 0 * (SELECT count(*) FROM counted) AS \"taken!\", \
                (SELECT count(*) FROM announced) AS \"notified!\"",
        push_id,
        size,
        push.organization_id,
        &push.document,
        &push.pusher,
        push.version,
        NOTIFY_CHANNEL
    )
    .fetch_one(&mut *tx)
    .await?;
    let (taken, notified) = (counts.taken, counts.notified);
    // A statement of its own: its snapshot sees every batch committed before
    // this transaction took the push's row (in `counted` above).
    let completed = sqlx::query_scalar!(
        "WITH done AS ( \
             UPDATE pushes p SET status = 'completed', finished_at = now(), \
                 applied = counts.applied, failed = p.total - counts.applied \
             FROM (SELECT count(*) FILTER (WHERE status = 'applied')::int AS applied \
                   FROM push_recipients WHERE push_id = $1) AS counts \
             WHERE p.id = $1 AND p.status NOT IN ('completed', 'failed') \
               AND NOT EXISTS (SELECT 1 FROM push_recipients r WHERE r.push_id = $1 AND r.status = 'pending') \
             RETURNING p.id, p.pusher_user_id, p.requested_by, p.customization_version, p.total, p.applied, p.failed \
         ), addressed AS ( \
             SELECT done.*, ARRAY( \
                 SELECT DISTINCT address FROM unnest(ARRAY[ \
                     (SELECT coalesce(u.notification_email, u.email) FROM users u WHERE u.id = done.pusher_user_id), \
                     CASE WHEN done.requested_by ~ '^[^@[:space:]]+@[^@[:space:]]+\\.[^@[:space:]]+$' \
                          THEN done.requested_by END]) AS address \
                 WHERE address IS NOT NULL) AS recipients \
             FROM done \
         ), mail AS ( \
             INSERT INTO email_outbox (id, dedupe_key, kind, recipients, subject, body_text) \
             SELECT $2, 'push_completed:' || id, 'push_completed', recipients, \
                    format('Customization push completed: %s of %s users updated', applied, total), \
                    format(E'Your customization (version %s) was pushed to %s users.\\n\\nApplied: %s\\nFailed: %s\\n\\nThe recipients were asked to restart Outlook to apply it.\\n\\nPush: %s', \
                           customization_version, total, applied, failed, id) \
             FROM addressed WHERE cardinality(recipients) > 0 \
             ON CONFLICT (dedupe_key) DO NOTHING \
         ) \
         SELECT count(*) AS \"completed!\" FROM done",
        push_id,
        Uuid::now_v7()
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::debug!(%push_id, taken, notified, "Push batch committed.");
    Ok(Batch {
        taken,
        completed: completed == 1,
    })
}
