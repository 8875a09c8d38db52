//! The session row and the per-user lease, in the database.
//!
//! A claim locks the user's row, so it waits for an api transaction that is
//! publishing this very job, then its run row (`user_runs`: the lease, the
//! queued job, the last session), and decides in one transaction whether the
//! job runs. A running session lives on the run row (what the admins' views
//! and the sweep need of it); its own row is written once, when it ends
//! (`sync_sessions_all` shows both). Finishing a session is fenced by the lease: a worker that lost
//! its lease cannot close a session or touch the user. A transaction locking
//! both rows locks the user's first; the group commit's statements lock the
//! run rows alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use syncfleet_common::{
    domain::{IssueCategory, IssueSource, Scope, SessionStatus, SyncStatus, Trigger},
    queue::JobEnvelope,
    session_log::SessionLog,
};
use uuid::Uuid;

use crate::sync::{
    NewIssue,
    settings::{Settings, query_with_settings, settings_row},
};

/// What a claim decided.
#[derive(Debug)]
pub enum Claim {
    /// The session is open and the lease is ours; the user's settings were
    /// read by the claim's statement.
    Run(Claimed, Box<Settings>),
    /// Nothing to do: the reason is logged and the message acknowledged.
    Drop(&'static str),
    /// Another live session holds the user's lease for about this long.
    Busy(Duration),
    /// The job was recorded as a skipped session (sync disabled meanwhile).
    Skipped,
}

/// A session this worker holds the lease for.
#[derive(Debug, Clone, Copy)]
pub struct Claimed {
    pub session_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    /// The user's session before this one was abandoned (its worker died or
    /// stalled): that worker may still hold a rotated refresh token whose
    /// store has not landed (or have left it in its spool), so a refusal of
    /// the stored one is not conclusive.
    pub after_abandoned: bool,
}

/// Decides whether `job` runs now, and if so opens its session and takes the
/// user's lease, in one transaction.
///
/// `redelivered` is the broker's flag: a first-attempt cadence job that was
/// never delivered before and is still the user's queued job cannot have run,
/// so the look-up of earlier sessions is skipped for it (the common case).
pub async fn claim(
    pool: &PgPool,
    job: &JobEnvelope,
    user_id: Uuid,
    worker_id: &str,
    lease: Duration,
    redelivered: bool,
) -> Result<Claim, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The user's row locked, with the settings the session starts from (one
    // statement instead of a second transaction).
    let user = query_with_settings!(
        "SELECT u.organization_id, u.sync_status AS \"sync_status: SyncStatus\", r.queued_job_id, r.running_session_id, \
                r.last_session_status AS \"last_session_status: SessionStatus\", \
                EXTRACT(EPOCH FROM (r.lease_expires_at - now()))::float8 * 1000 AS lease_remaining_ms, \
                o.sync_enabled AS organization_enabled, ",
        " FROM users u JOIN user_runs r ON r.user_id = u.id JOIN organizations o ON o.id = u.organization_id \
         WHERE u.id = $1 FOR UPDATE OF u, r",
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else {
        return Ok(Claim::Drop("the user no longer exists"));
    };

    let mut after_abandoned = user.last_session_status == Some(SessionStatus::Abandoned);
    if let Some(running) = user.running_session_id {
        let remaining = user.lease_remaining_ms.unwrap_or(0.0);
        if remaining > 0.0 {
            return Ok(Claim::Busy(Duration::from_millis(remaining as u64)));
        }
        // The lease expired: its worker died or stalled. Its session ends as
        // abandoned and this job may take over.
        abandon(&mut tx, user_id, running).await?;
        after_abandoned = true;
    }

    let fresh_cadence_job =
        job.trigger == Trigger::Cadence && job.attempt == 1 && !redelivered && user.queued_job_id == Some(job.job_id);
    let already_done = !fresh_cadence_job && already_ran(&mut tx, job).await?;
    if already_done {
        tx.commit().await?;
        return Ok(Claim::Drop("this attempt of the job already ran"));
    }
    if job.trigger == Trigger::Cadence && user.queued_job_id != Some(job.job_id) {
        tx.commit().await?;
        return Ok(Claim::Drop("a newer cadence job superseded this one"));
    }
    let session_id = Uuid::now_v7();
    let skipped = effective_disabled_reason(user.organization_enabled, user.sync_status);
    let started_at = if skipped.is_none() {
        // The session runs on the user's run row (the lease, and what the
        // admins' views and the sweep need of it), a HOT update; its own
        // row is written once, when it ends.
        sqlx::query_scalar!(
            "WITH running AS ( \
                 UPDATE user_runs SET running_session_id = $1, \
                     lease_expires_at = now() + $9 * interval '1 millisecond', \
                     running_started_at = now(), running_job_id = $4, running_attempt = $5, running_trigger = $6, \
                     running_scheduled_at = $7, running_worker_id = $8, running_organization_id = $3 \
                 WHERE user_id = $2 \
             ), admin_job AS ( \
                 UPDATE admin_jobs SET status = 'running', started_at = COALESCE(started_at, now()), \
                     finished_at = NULL, result = NULL, error = NULL \
                 WHERE id = $4 AND $6 <> 'cadence' AND status IN ('queued', 'running') \
             ) \
             SELECT now() AS \"started_at!\"",
            session_id,
            user_id,
            user.organization_id,
            job.job_id,
            attempt(job),
            job.trigger as Trigger,
            job.scheduled_at,
            worker_id,
            lease.as_millis() as f64
        )
        .fetch_one(&mut *tx)
        .await?
    } else {
        // A skipped session ends at once: its row, and, being the end of its
        // job, the user may be queued again.
        sqlx::query_scalar!(
            "WITH session AS ( \
                 INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, scope, status, \
                                            scheduled_at, started_at, ended_at, worker_id, error_category, \
                                            error_source, error_message) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'check', 'skipped', $7, now(), now(), $8, 'settings', 'engine', $9) \
                 RETURNING started_at \
             ), bookkeeping AS ( \
                 UPDATE user_runs SET \
                     queued_job_id = CASE WHEN queued_job_id = $4 THEN NULL ELSE queued_job_id END, \
                     queued_at = CASE WHEN queued_job_id = $4 THEN NULL ELSE queued_at END, \
                     last_session_id = $1, last_session_at = now(), last_session_status = 'skipped' \
                 WHERE user_id = $2 \
             ), admin_job AS ( \
                 UPDATE admin_jobs SET status = 'failed', started_at = COALESCE(started_at, now()), \
                     finished_at = now(), error = $9, \
                     result = jsonb_build_object('session_id', $1, 'session_status', 'skipped') \
                 WHERE id = $4 AND $6 <> 'cadence' AND status IN ('queued', 'running') \
             ) \
             SELECT started_at FROM session",
            session_id,
            user_id,
            user.organization_id,
            job.job_id,
            attempt(job),
            job.trigger as Trigger,
            job.scheduled_at,
            worker_id,
            skipped
        )
        .fetch_one(&mut *tx)
        .await?
    };
    tx.commit().await?;
    if skipped.is_some() {
        return Ok(Claim::Skipped);
    }
    let organization_id = user.organization_id;
    Ok(Claim::Run(
        Claimed {
            session_id,
            started_at,
            user_id,
            organization_id,
            after_abandoned,
        },
        Box::new(Settings::from_row(settings_row!(user), user_id, organization_id)),
    ))
}

/// A claim the group commit may take: the first delivery of the first
/// attempt of a cadence job (the steady state). Any other job, and any of
/// these the batch does not open (the user busy, disabled, superseded, gone),
/// goes through [`claim`], which decides every case.
#[derive(Debug)]
pub struct FastClaim {
    pub job_id: Uuid,
    pub user_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
    pub attempt: i32,
}

impl FastClaim {
    /// The fast claim of `job`, if it may take one.
    pub fn of(job: &JobEnvelope, user_id: Uuid, redelivered: bool) -> Option<Self> {
        (job.trigger == Trigger::Cadence && job.attempt == 1 && !redelivered).then(|| Self {
            job_id: job.job_id,
            user_id,
            scheduled_at: job.scheduled_at,
            attempt: attempt(job),
        })
    }
}

/// What the group commit answered one fast claim: the session opened, or
/// `None` to decide it with [`claim`]; `Err` when the batch failed.
pub type FastClaimed = Result<Option<(Claimed, Box<Settings>)>, ()>;

/// Runs a batch of fast claims; answers each request in order.
pub async fn claim_together(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    requests: Vec<FastClaim>,
) -> Vec<FastClaimed> {
    let session_ids: Vec<Uuid> = requests.iter().map(|_| Uuid::now_v7()).collect();
    let user_ids: Vec<Uuid> = requests.iter().map(|request| request.user_id).collect();
    let job_ids: Vec<Uuid> = requests.iter().map(|request| request.job_id).collect();
    let scheduled: Vec<DateTime<Utc>> = requests.iter().map(|request| request.scheduled_at).collect();
    let attempts: Vec<i32> = requests.iter().map(|request| request.attempt).collect();
    // Each user whose run row still names the job as queued, holds no lease
    // and may sync takes the lease and runs the session on its run row (a
    // HOT update of the run row alone; the session's row is written when it
    // ends), and its settings come back with it.
    let rows = query_with_settings!(
        "UPDATE user_runs r SET running_session_id = x.session_id, \
                 lease_expires_at = now() + $6 * interval '1 millisecond', \
                 running_started_at = now(), running_job_id = x.job_id, running_attempt = x.attempt, \
                 running_trigger = 'cadence', running_scheduled_at = x.scheduled_at, running_worker_id = $7, \
                 running_organization_id = u.organization_id \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::int[]) \
                      AS x(user_id, job_id, session_id, scheduled_at, attempt), \
                  users u, organizations o \
             WHERE r.user_id = x.user_id AND u.id = r.user_id AND o.id = u.organization_id \
               AND r.queued_job_id = x.job_id AND r.running_session_id IS NULL \
               AND u.sync_status = 'enabled' AND o.sync_enabled \
         RETURNING u.id AS user_id, u.organization_id, x.session_id AS \"session_id!\", \
             r.running_started_at AS \"started_at!\", \
             r.last_session_status AS \"last_session_status: SessionStatus\", ",
        "",
        &user_ids,
        &job_ids,
        &session_ids,
        &scheduled,
        &attempts,
        lease.as_millis() as f64,
        worker_id
    )
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, claims = requests.len(), "A batch of claims failed; each is decided on its own.");
            return requests.iter().map(|_| Err(())).collect();
        }
    };
    let mut opened: std::collections::HashMap<Uuid, _> = rows.into_iter().map(|row| (row.session_id, row)).collect();
    session_ids
        .iter()
        .map(|session_id| {
            Ok(opened.remove(session_id).map(|row| {
                let claimed = Claimed {
                    session_id: *session_id,
                    started_at: row.started_at,
                    user_id: row.user_id,
                    organization_id: row.organization_id,
                    after_abandoned: row.last_session_status == Some(SessionStatus::Abandoned),
                };
                let (user_id, organization_id) = (row.user_id, row.organization_id);
                let settings = Settings::from_row(settings_row!(row), user_id, organization_id);
                (claimed, Box::new(settings))
            }))
        })
        .collect()
}

/// Whether a session of this attempt (or a later one) of the job has ended
/// other than abandoned (a session's row is written when it ends). Sessions
/// start after their job was enqueued, which bounds the partitions searched.
async fn already_ran(tx: &mut Transaction<'_, Postgres>, job: &JobEnvelope) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM sync_sessions \
                        WHERE job_id = $1 AND attempt >= $2 AND started_at >= $3 \
                          AND status <> 'abandoned') AS \"ran!\"",
        job.job_id,
        attempt(job),
        job.enqueued_at - chrono::Duration::minutes(10)
    )
    .fetch_one(&mut **tx)
    .await
}

fn attempt(job: &JobEnvelope) -> i32 {
    i32::try_from(job.attempt).unwrap_or(i32::MAX)
}

fn effective_disabled_reason(organization_enabled: bool, sync_status: SyncStatus) -> Option<String> {
    if !organization_enabled {
        return Some("synchronization is disabled for the organization".to_owned());
    }
    match sync_status {
        SyncStatus::Enabled => None,
        _ => Some(format!(
            "synchronization is {} for the user",
            sync_status.as_str().replace('_', " ")
        )),
    }
}

/// Ends the user's session `held` as abandoned and releases its lease (see
/// the `abandon_session` function); the caller holds the run row's lock and
/// decided the lease expired. An admin job's lease is released, no session
/// written. Answers whether a session was abandoned.
pub async fn abandon(tx: &mut Transaction<'_, Postgres>, user_id: Uuid, held: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!("SELECT abandon_session($1, $2) AS \"abandoned!\"", user_id, held)
        .fetch_one(&mut **tx)
        .await
}

/// Extends the lease; `false` means it is no longer ours.
pub async fn renew(pool: &PgPool, claimed: &Claimed, lease: Duration) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE user_runs SET lease_expires_at = now() + $3 * interval '1 millisecond' \
         WHERE user_id = $1 AND running_session_id = $2",
        claimed.user_id,
        claimed.session_id,
        lease.as_millis() as f64
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// How a session ends.
#[derive(Debug)]
pub struct Ending {
    pub status: SessionStatus,
    pub scope: Scope,
    pub error: Option<(IssueCategory, IssueSource, String)>,
    pub issues: Vec<NewIssue>,
    pub log: SessionLog,
    pub items_to_crm: i32,
    pub items_to_mailbox: i32,
    pub calls: serde_json::Value,
    /// The cursors the session advanced (stream, token), stored with the
    /// close: every CRM write they cover is done by then.
    pub cursors: Vec<(String, String)>,
    /// Whether the job is over (the user may be scheduled again); false when
    /// it will be retried or handed back.
    pub job_done: bool,
    /// The follow-up job that continues this session's work: it becomes the
    /// user's queued job in the same statement.
    pub continue_with: Option<Uuid>,
    /// The class of a failed session for the consecutive-failure count
    /// (`auth`, `throttling`, `other`); `None` resets the count on success.
    pub failure_class: Option<&'static str>,
    /// The count of that class at which the user's sync is disabled.
    pub suspend_at: Option<i32>,
    /// The token endpoint (or EWS, the password) refused the stored grant:
    /// the credential is marked refused and the user asked to reconnect.
    /// Any other authorization failure (an API's 401 after a good refresh)
    /// leaves the credential alone.
    pub grant_refused: bool,
}

impl Ending {
    /// Whether the session succeeded without changing anything (no item
    /// either way, no issue, nothing left for a follow-up): its session row
    /// says all there is, so no log is compressed and stored for it (the api
    /// answers a one-line summary for it).
    pub fn is_quiet(&self) -> bool {
        self.status == SessionStatus::Succeeded
            && self.issues.is_empty()
            && self.items_to_crm == 0
            && self.items_to_mailbox == 0
            && self.continue_with.is_none()
            && self.job_done
    }

    /// An ending with no work recorded, for sessions cut short by the engine.
    pub fn interrupted(status: SessionStatus, message: &str) -> Self {
        let mut log = SessionLog::new();
        log.push("engine", "error", message);
        Self {
            status,
            scope: Scope::Check,
            error: Some((IssueCategory::Internal, IssueSource::Engine, message.to_owned())),
            issues: Vec::new(),
            log,
            items_to_crm: 0,
            items_to_mailbox: 0,
            calls: serde_json::json!({}),
            cursors: Vec::new(),
            job_done: false,
            continue_with: None,
            failure_class: None,
            suspend_at: None,
            grant_refused: false,
        }
    }
}

/// Closes the session with its issues, log and advanced cursors, releases
/// the lease and, when the job is done, lets the scheduler queue the user
/// again; all in one statement. `false` means the lease was lost and nothing was written.
pub async fn finish(pool: &PgPool, claimed: &Claimed, job: &JobEnvelope, ending: Ending) -> Result<bool, sqlx::Error> {
    let (error_category, error_source, error_message) = match &ending.error {
        Some((category, source, message)) => (Some(*category), Some(*source), Some(message.as_str())),
        None => (None, None, None),
    };
    let issue_ids: Vec<Uuid> = ending.issues.iter().map(|_| Uuid::now_v7()).collect();
    let issue_sources: Vec<IssueSource> = ending.issues.iter().map(|issue| issue.source).collect();
    let issue_categories: Vec<IssueCategory> = ending.issues.iter().map(|issue| issue.category).collect();
    let issue_items: Vec<Option<&str>> = ending.issues.iter().map(|issue| issue.item_ref.as_deref()).collect();
    let issue_messages: Vec<&str> = ending.issues.iter().map(|issue| issue.message.as_str()).collect();
    let (cursor_streams, cursor_tokens): (Vec<&str>, Vec<&str>) = ending
        .cursors
        .iter()
        .map(|(stream, token)| (stream.as_str(), token.as_str()))
        .unzip();
    // One statement, so one atomic write and one round trip; every part is
    // conditional on `released`, the lease check.
    //
    // A refused grant marks the credential refused (and asks to reconnect)
    // only when the refusal is conclusive: the credential was stored before
    // this session started (a grant stored since is not the one refused).
    // A refusal right after an abandoned session never comes here as
    // refused: the worker fails that session as transient (see
    // `Claimed::after_abandoned`), and its retry's refusal decides. `notified`, the addresses
    // a user's alerts go to, is read only by an email that is written.
    let released = crate::push::notification_json!(
        query_scalar,
        "WITH locked AS ( \
             SELECT id, organization_id, email, coalesce(notification_email, email) AS notify, sync_status \
             FROM users WHERE id = $1 FOR UPDATE \
         ), running AS ( \
             SELECT * FROM user_runs WHERE user_id = $1 AND running_session_id = $2 \
         ), released AS ( \
             UPDATE user_runs SET running_session_id = NULL, lease_expires_at = NULL, \
                 running_started_at = NULL, running_job_id = NULL, running_attempt = NULL, running_trigger = NULL, \
                 running_scheduled_at = NULL, running_worker_id = NULL, running_organization_id = NULL, \
                 queued_job_id = CASE WHEN $21::uuid IS NOT NULL THEN $21 \
                     WHEN $4 AND queued_job_id = $5 THEN NULL ELSE queued_job_id END, \
                 queued_at = CASE WHEN $21::uuid IS NOT NULL THEN now() \
                     WHEN $4 AND queued_job_id = $5 THEN NULL ELSE queued_at END, \
                 consecutive_failures = CASE WHEN $6 = 'abandoned' OR $22 = 'deferred' THEN consecutive_failures \
                     WHEN $22::text IS NULL THEN 0 \
                     WHEN failure_class = $22 THEN consecutive_failures + 1 ELSE 1 END, \
                 failure_class = CASE WHEN $6 = 'abandoned' OR $22 = 'deferred' THEN failure_class ELSE $22 END, \
                 last_session_id = $2, last_session_at = now(), last_session_status = $6 \
             FROM locked \
             WHERE user_id = $1 AND running_session_id = $2 \
             RETURNING locked.id, locked.organization_id, locked.email, locked.notify, \
                 $23::int IS NOT NULL AND locked.sync_status = 'enabled' AND consecutive_failures = $23 \
                     AND failure_class = $22 AS suspended \
         ), suspended_user AS ( \
             UPDATE users SET sync_status = 'disabled_' || $22 || '_error', \
                 disabled_reason = format('%s consecutive sessions failed (%s): %s', $23, $22, $14::text), \
                 sync_status_changed_at = now() \
             FROM released WHERE users.id = released.id AND released.suspended \
         ), notified AS ( \
             SELECT ARRAY(SELECT DISTINCT recipient FROM unnest(notify || ARRAY( \
                        SELECT coalesce(a.notification_email, a.email) FROM users a \
                        WHERE a.organization_id = released.organization_id AND a.role = 'org_admin')) AS recipient) \
                        AS recipients \
             FROM released \
         ), suspension AS ( \
             INSERT INTO activities (id, organization_id, user_id, actor, kind, details) \
             SELECT $24, organization_id, id, 'system', 'disabled_' || $22 || '_error', \
                    format('Synchronization disabled after %s consecutive failed sessions (%s). Last error: %s', \
                           $23, $22, $14) \
             FROM released WHERE suspended \
         ), suspension_email AS ( \
             INSERT INTO email_outbox (id, dedupe_key, kind, recipients, subject, body_text) \
             SELECT $25, 'sync_suspended:' || $2, 'sync_suspended', \
                    (SELECT recipients FROM notified), \
                    format('Synchronization stopped for %s', email), \
                    format(E'Synchronization of the mailbox %s with Salesforce has been disabled after %s consecutive failed sessions (%s).\\n\\nLast error: %s\\n\\n%s', \
                           email, $23, $22, $14, \
                           CASE $22 WHEN 'auth' THEN 'Authorize the mailbox and Salesforce again, then enable synchronization.' \
                                    WHEN 'throttling' THEN 'The providers kept refusing calls; enable synchronization again once the limits are back.' \
                                    ELSE 'Check the settings and the sync issues, then enable synchronization again.' END) \
             FROM released WHERE suspended \
         ), closed AS ( \
             INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, scope, status, \
                                        scheduled_at, started_at, ended_at, worker_id, items_to_crm, \
                                        items_to_mailbox, issue_count, calls, error_category, error_source, \
                                        error_message) \
             SELECT $2, $1, running_organization_id, running_job_id, running_attempt, running_trigger, $7, $6, \
                    running_scheduled_at, running_started_at, now(), running_worker_id, $8, $9, $10, $11, $12, \
                    $13, $14 \
             FROM running WHERE EXISTS (SELECT 1 FROM released) \
         ), issues AS ( \
             INSERT INTO sync_issues (id, session_id, user_id, created_at, source, category, item_ref, message) \
             SELECT issue.id, $2, $1, now(), issue.source, issue.category, issue.item_ref, issue.message \
             FROM UNNEST($15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[]) \
                  AS issue(id, source, category, item_ref, message) \
             WHERE EXISTS (SELECT 1 FROM released) \
         ), log AS ( \
             INSERT INTO sync_session_logs (session_id, user_id, started_at, log_gzip) \
             SELECT $2, $1, $3, $20 WHERE $20::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM released) \
             ON CONFLICT (session_id, started_at) DO UPDATE SET log_gzip = EXCLUDED.log_gzip \
         ), refused AS ( \
             UPDATE credentials SET refused_at = now() \
             WHERE user_id = $1 AND refused_at IS NULL AND $31 AND EXISTS (SELECT 1 FROM released) \
               AND updated_at < $3 \
               AND kind = ANY(CASE $13 WHEN 'mailbox' THEN ARRAY['mailbox_refresh_token', 'mailbox_password'] \
                                       WHEN 'crm' THEN ARRAY['crm_refresh_token'] ELSE ARRAY[]::text[] END) \
             RETURNING kind \
         ), reconnect AS ( \
             SELECT released.*, \
                    CASE WHEN $13 = 'crm' THEN 'Reconnect Salesforce' ELSE 'Reconnect your mailbox' END AS title, \
                    CASE WHEN $13 = 'crm' \
                         THEN format('Salesforce refused the authorization of %s (%s). Until it is reconnected, no mail is logged to Salesforce. Authorize Salesforce again and synchronization resumes at once.', released.email, $14) \
                         ELSE format('The mailbox %s refused its authorization (%s). Until it is reconnected, its mail is not logged to Salesforce. Sign in to the mailbox again and synchronization resumes at once.', released.email, $14) END AS body \
             FROM released WHERE EXISTS (SELECT 1 FROM refused) \
         ), reconnect_email AS ( \
             INSERT INTO email_outbox (id, dedupe_key, kind, recipients, subject, body_text) \
             SELECT $28, 'reconnect:' || $2, 'reconnect', \
                    (SELECT recipients FROM notified), \
                    format('%s: %s', title, email), body \
             FROM reconnect WHERE NOT suspended \
         ), reconnect_note AS ( \
             INSERT INTO notifications (id, user_id, kind, title, body, payload) \
             SELECT $29, id, 'reconnect', title, body, jsonb_build_object('side', $13) FROM reconnect \
             RETURNING id, user_id, kind, title, body, payload, created_at, read_at \
         ), reconnect_announced AS ( \
             SELECT pg_notify($30, ",
        ") \
             FROM reconnect_note \
         ), cursors AS ( \
             INSERT INTO sync_state (user_id, stream, token) \
             SELECT $1, cursor.stream, cursor.token FROM UNNEST($26::text[], $27::text[]) AS cursor(stream, token) \
             WHERE EXISTS (SELECT 1 FROM released) \
             ON CONFLICT (user_id, stream) DO UPDATE SET token = EXCLUDED.token, updated_at = now() \
         ), admin_job AS ( \
             UPDATE admin_jobs SET \
                 status = CASE WHEN $6 IN ('succeeded', 'succeeded_with_issues') THEN 'succeeded' ELSE 'failed' END, \
                 finished_at = now(), error = $14, \
                 result = jsonb_build_object('session_id', $2, 'session_status', $6, 'issues', $10) \
             WHERE id = $5 AND $4 AND EXISTS (SELECT 1 FROM released) \
         ) \
         SELECT (SELECT count(*) FROM released) + 0 * (SELECT count(*) FROM reconnect_announced) AS \"released!\"",
        claimed.user_id,
        claimed.session_id,
        claimed.started_at,
        ending.job_done,
        job.job_id,
        ending.status as SessionStatus,
        ending.scope as Scope,
        ending.items_to_crm,
        ending.items_to_mailbox,
        i32::try_from(ending.issues.len()).unwrap_or(i32::MAX),
        &ending.calls,
        error_category as Option<IssueCategory>,
        error_source as Option<IssueSource>,
        error_message,
        &issue_ids,
        &issue_sources as &[IssueSource],
        &issue_categories as &[IssueCategory],
        &issue_items as &[Option<&str>],
        &issue_messages as &[&str],
        (!ending.is_quiet()).then(|| ending.log.to_gzip()),
        ending.continue_with,
        ending.failure_class,
        ending.suspend_at,
        Uuid::now_v7(),
        Uuid::now_v7(),
        &cursor_streams as &[&str],
        &cursor_tokens as &[&str],
        Uuid::now_v7(),
        Uuid::now_v7(),
        crate::push::NOTIFY_CHANNEL,
        ending.grant_refused
    )
    .fetch_one(pool)
    .await?;
    Ok(released == 1)
}

/// A close the group commit may take: a cadence session that succeeded
/// without changing anything (see [`Ending::is_quiet`]); only its cursors and
/// calls differ from one to the next. Any other ending goes through [`finish`].
#[derive(Debug)]
pub struct QuietClose {
    pub claimed: Claimed,
    pub job_id: Uuid,
    pub scope: Scope,
    pub calls: serde_json::Value,
    pub cursors: Vec<(String, String)>,
}

impl QuietClose {
    /// The quiet close of `ending`, if it is one.
    pub fn of(claimed: &Claimed, job: &JobEnvelope, ending: &Ending) -> Option<Self> {
        let quiet = job.trigger == Trigger::Cadence
            && ending.is_quiet()
            && ending.error.is_none()
            && ending.failure_class.is_none();
        quiet.then(|| Self {
            claimed: *claimed,
            job_id: job.job_id,
            scope: ending.scope,
            calls: ending.calls.clone(),
            cursors: ending.cursors.clone(),
        })
    }
}

/// Runs a batch of quiet closes; answers each in order whether its lease
/// still held (`false`: nothing was written for it), `Err` when the batch failed.
pub async fn close_quietly_together(pool: &PgPool, closes: Vec<QuietClose>) -> Vec<Result<bool, ()>> {
    let mut cursor_users = Vec::new();
    let mut cursor_streams = Vec::new();
    let mut cursor_tokens = Vec::new();
    for close in &closes {
        for (stream, token) in &close.cursors {
            cursor_users.push(close.claimed.user_id);
            cursor_streams.push(stream.as_str());
            cursor_tokens.push(token.as_str());
        }
    }
    let user_ids: Vec<Uuid> = closes.iter().map(|close| close.claimed.user_id).collect();
    let session_ids: Vec<Uuid> = closes.iter().map(|close| close.claimed.session_id).collect();
    let job_ids: Vec<Uuid> = closes.iter().map(|close| close.job_id).collect();
    let scopes: Vec<Scope> = closes.iter().map(|close| close.scope).collect();
    let calls: Vec<serde_json::Value> = closes.iter().map(|close| close.calls.clone()).collect();
    // What [`finish`] writes for such a session, set-based (a HOT update of
    // each run row and the session's row, written once); each close is
    // fenced by its own lease.
    let released = sqlx::query_scalar!(
        "WITH running AS ( \
             SELECT u.* FROM user_runs u JOIN UNNEST($1::uuid[], $2::uuid[]) AS r(user_id, session_id) \
                 ON u.user_id = r.user_id AND u.running_session_id = r.session_id \
         ), released AS ( \
             UPDATE user_runs u SET running_session_id = NULL, lease_expires_at = NULL, \
                 running_started_at = NULL, running_job_id = NULL, running_attempt = NULL, running_trigger = NULL, \
                 running_scheduled_at = NULL, running_worker_id = NULL, running_organization_id = NULL, \
                 queued_job_id = CASE WHEN u.queued_job_id = r.job_id THEN NULL ELSE u.queued_job_id END, \
                 queued_at = CASE WHEN u.queued_job_id = r.job_id THEN NULL ELSE u.queued_at END, \
                 consecutive_failures = 0, failure_class = NULL, \
                 last_session_id = r.session_id, last_session_at = now(), last_session_status = 'succeeded' \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[]) \
                      AS r(user_id, session_id, job_id, scope, calls) \
             WHERE u.user_id = r.user_id AND u.running_session_id = r.session_id \
             RETURNING r.* \
         ), closed AS ( \
             INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, scope, status, \
                                        scheduled_at, started_at, ended_at, worker_id, calls) \
             SELECT released.session_id, released.user_id, running.running_organization_id, \
                    running.running_job_id, running.running_attempt, running.running_trigger, released.scope, \
                    'succeeded', running.running_scheduled_at, running.running_started_at, now(), \
                    running.running_worker_id, released.calls \
             FROM released JOIN running ON running.user_id = released.user_id \
         ), cursors AS ( \
             INSERT INTO sync_state (user_id, stream, token) \
             SELECT c.user_id, c.stream, c.token \
             FROM UNNEST($6::uuid[], $7::text[], $8::text[]) AS c(user_id, stream, token) \
             WHERE c.user_id IN (SELECT user_id FROM released) \
             ON CONFLICT (user_id, stream) DO UPDATE SET token = EXCLUDED.token, updated_at = now() \
         ) \
         SELECT session_id AS \"session_id!\" FROM released",
        &user_ids,
        &session_ids,
        &job_ids,
        &scopes as &[Scope],
        &calls,
        &cursor_users,
        &cursor_streams as &[&str],
        &cursor_tokens as &[&str]
    )
    .fetch_all(pool)
    .await;
    match released {
        Ok(released) => {
            let released: std::collections::HashSet<Uuid> = released.into_iter().collect();
            closes
                .iter()
                .map(|close| Ok(released.contains(&close.claimed.session_id)))
                .collect()
        }
        Err(error) => {
            tracing::warn!(%error, closes = closes.len(), "A batch of closes failed; each is written on its own.");
            closes.iter().map(|_| Err(())).collect()
        }
    }
}
