//! Admin jobs (M8): the actions that touch outside services, queued by the
//! API on the priority queue with their row in `admin_jobs`: the checks of
//! the settings, the CRM, the mailbox and the sidebar add-in; the add-in's
//! installation and removal; the mailbox's reset and re-initialization.
//!
//! A job runs in three steps.
//! 1. Start, one transaction: lock the user's row (the API holds it until its
//!    commit, so a job published just before waits for its row), then read
//!    the job's row. A job that already ended is dropped: a redelivery runs
//!    nothing twice. A mutating action takes the user's lease under its job
//!    id, as a session does under its session id, so it never runs beside a
//!    session of the same user; while a live session (or another mutating
//!    job) holds the lease, the delivery is deferred, as a session's is.
//!    Checks only read and take no lease.
//! 2. Run: [`SyncWork::admin`] with the real connectors, while a heartbeat
//!    renews the lease of a mutating action.
//! 3. Finish, one transaction: end the job's row `succeeded` with a `result`
//!    or `failed` with an `error`, release the lease (fenced: a job that lost
//!    it writes nothing and is handed back), apply the action's effect on the
//!    user's row and record its activity.
//!
//! Retries. A check answers what it finds at once: an unreachable or
//! throttling provider is its finding, and the job fails with that error. A
//! mutating action that meets a passing fault (transient, throttled, the
//! fleet's own limit) is retried like a session, up to [`MUTATION_ATTEMPTS`]
//! attempts (its row stays `running` meanwhile, its lease released); then,
//! or at once on a refusal that retrying cannot fix (authorization,
//! settings), it fails. Either way the message is acknowledged once the
//! job's row says how it ended: the admin reads the result, nothing is
//! retried forever.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgPool, Postgres, Transaction};
pub use syncfleet_common::queue::AdminAction;
use syncfleet_common::{
    domain::{IssueSource, Scope, SyncStatus},
    queue::JobEnvelope,
};
use syncfleet_connectors::{
    ConnectorError, Provider,
    mailbox::{AddinStatus, Mailbox},
    salesforce::SalesforceClient,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

use crate::{
    config::WorkerConfig,
    consumer::{Verdict, heartbeat},
    session::Claimed,
    sync::{FailureClass, SessionContext, SyncFailure, SyncWork, gate::provider_name, settings::Settings},
};

/// Attempts of a mutating action that meets passing faults (fewer when the
/// worker's own limit is lower).
pub const MUTATION_ATTEMPTS: u32 = 3;

/// What an action found or did outside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminOutcome {
    /// What was checked and found, or done: the start of the job's `result`.
    pub result: Map<String, Value>,
    /// The add-in's state the action found or left, for the user's row.
    pub sidebar: Option<AddinStatus>,
}

impl AdminOutcome {
    fn of(result: Value) -> Self {
        Self {
            result: match result {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            sidebar: None,
        }
    }

    fn sidebar(status: AddinStatus) -> Self {
        Self {
            sidebar: Some(status),
            ..Self::of(json!({ "sidebar": sidebar_text(status) }))
        }
    }
}

fn sidebar_text(status: AddinStatus) -> &'static str {
    match status {
        AddinStatus::Installed => "installed",
        AddinStatus::NotInstalled => "not_installed",
    }
}

/// The finding of a settings check that passed.
pub(crate) fn settings_found(settings: &Settings) -> AdminOutcome {
    AdminOutcome::of(json!({
        "settings": "complete",
        "access_type": settings.access_type,
        "address": settings.email,
        "salesforce_instance_url": settings.salesforce_instance_url,
    }))
}

/// Salesforce's side of check-crm: a refresh and a light call.
pub(crate) async fn on_crm(crm: &SalesforceClient) -> Result<AdminOutcome, ConnectorError> {
    let limits = crm.limits().await?;
    let user = crm.resolve_user_id().await?;
    Ok(AdminOutcome::of(json!({
        "crm": "reachable",
        "salesforce_user_id": user,
        "daily_api_requests": { "remaining": limits.remaining, "max": limits.max },
    })))
}

/// The mailbox's side of an action, whatever the provider.
pub(crate) async fn on_mailbox<M: Mailbox>(
    mailbox: &M,
    provider: Provider,
    address: &str,
    action: AdminAction,
) -> Result<AdminOutcome, ConnectorError> {
    match action {
        AdminAction::CheckMailbox => {
            mailbox.check().await?;
            Ok(AdminOutcome::of(json!({
                "mailbox": "reachable",
                "provider": provider_name(provider),
                "address": address,
            })))
        }
        AdminAction::ResetMailbox => {
            mailbox.reset().await?;
            Ok(AdminOutcome::of(json!({
                "mailbox": "reset",
                "removed": "the product's category and folders",
            })))
        }
        AdminAction::InstallSidebar => {
            mailbox.install_addin().await?;
            Ok(AdminOutcome::sidebar(AddinStatus::Installed))
        }
        AdminAction::RemoveSidebar => {
            mailbox.remove_addin().await?;
            Ok(AdminOutcome::sidebar(AddinStatus::NotInstalled))
        }
        AdminAction::CheckSidebar => Ok(AdminOutcome::sidebar(mailbox.addin_status().await?)),
        AdminAction::CheckSettings | AdminAction::CheckCrm | AdminAction::ReinitializeMailbox => {
            Err(ConnectorError::Permanent {
                provider,
                message: format!("{action} does not run against the mailbox"),
            })
        }
    }
}

/// The job's state when it starts.
struct Started {
    organization_id: Uuid,
    requested_by: String,
    at: DateTime<Utc>,
}

/// What the start decided.
enum Start {
    Run(Started),
    Drop(&'static str),
    /// The user's lease is held for about this long.
    Busy(Duration),
}

struct UserLease {
    organization_id: Uuid,
    running_session_id: Option<Uuid>,
    lease_remaining_ms: Option<f64>,
}

/// Step 1: decides whether the job runs now; if so marks it running and,
/// for a mutating action, takes the user's lease; one transaction.
async fn start(
    pool: &PgPool,
    job: &JobEnvelope,
    user_id: Uuid,
    action: AdminAction,
    lease: Duration,
) -> Result<Start, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(user) = sqlx::query_as!(
        UserLease,
        "SELECT u.organization_id, r.running_session_id, \
                EXTRACT(EPOCH FROM (r.lease_expires_at - now()))::float8 * 1000 AS lease_remaining_ms \
         FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.id = $1 FOR UPDATE OF u, r",
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Start::Drop("the user no longer exists"));
    };
    // A statement of its own: it sees what the API committed while this
    // transaction waited for the row lock.
    let row = sqlx::query!(
        "SELECT status, requested_by FROM admin_jobs WHERE id = $1 AND user_id = $2",
        job.job_id,
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, requested_by)) = row.map(|row| (row.status, row.requested_by)) else {
        return Ok(Start::Drop(
            "the job has no admin job row (its request was not committed)",
        ));
    };
    if matches!(status.as_str(), "succeeded" | "failed") {
        return Ok(Start::Drop("the admin job already ended"));
    }
    if action.mutates() {
        if let Some(holder) = user.running_session_id {
            let remaining = user.lease_remaining_ms.unwrap_or(0.0);
            if remaining > 0.0 {
                return Ok(Start::Busy(Duration::from_millis(remaining as u64)));
            }
            // The holder's lease expired: its worker died or stalled. A
            // session it held ends as abandoned, as a session's claim does.
            // (The holder may be another admin job: no session then.)
            crate::session::abandon(&mut tx, user_id, holder).await?;
        }
        sqlx::query!(
            "UPDATE user_runs SET running_session_id = $2, lease_expires_at = now() + $3 * interval '1 millisecond' \
             WHERE user_id = $1",
            user_id,
            job.job_id,
            lease.as_millis() as f64
        )
        .execute(&mut *tx)
        .await?;
    }
    let at = sqlx::query_scalar!(
        "UPDATE admin_jobs SET status = 'running', started_at = COALESCE(started_at, now()) \
         WHERE id = $1 RETURNING started_at AS \"started_at!\"",
        job.job_id
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Start::Run(Started {
        organization_id: user.organization_id,
        requested_by,
        at,
    }))
}

/// Releases the user's lease if this job still holds it.
async fn release(pool: &PgPool, user_id: Uuid, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE user_runs SET running_session_id = NULL, lease_expires_at = NULL \
         WHERE user_id = $1 AND running_session_id = $2",
        user_id,
        job_id
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Runs an admin job's delivery to its verdict; the second value is its
/// outcome for the metrics.
pub(crate) async fn handle<W: SyncWork>(
    pool: &PgPool,
    work: &Arc<W>,
    config: &WorkerConfig,
    hard_stop: &CancellationToken,
    job: &JobEnvelope,
    user_id: Uuid,
) -> (Verdict, &'static str) {
    let Some(action) = job.admin_action().and_then(AdminAction::from_action) else {
        let reason = format!("unknown admin action {:?}", job.admin_action().unwrap_or_default());
        return (Verdict::DeadLetter(reason), "dead_lettered");
    };
    let started = match start(pool, job, user_id, action, config.user_lease)
        .instrument(info_span!("start_admin_job", action = %action))
        .await
    {
        Ok(Start::Run(started)) => started,
        Ok(Start::Drop(reason)) => {
            info!(reason, "Admin job dropped.");
            return (Verdict::Ack, "dropped");
        }
        Ok(Start::Busy(remaining)) => {
            info!(
                lease_remaining_ms = remaining.as_millis() as u64,
                "The user's lease is held; deferring the admin job."
            );
            return (Verdict::Defer(remaining + Duration::from_millis(250)), "deferred");
        }
        Err(error) => {
            warn!(%error, "Could not start the admin job; deferring.");
            return (Verdict::Defer(Duration::from_secs(5)), "deferred");
        }
    };

    let Some(result) = run(pool, work, config, hard_stop, job, user_id, action, &started).await else {
        return (Verdict::HandBack, "handed_back");
    };
    let ending = match result {
        Ok(outcome) => Ok(outcome),
        Err(failure) if action.mutates() && failure.class.is_retryable() => {
            if job.attempt < MUTATION_ATTEMPTS.min(config.retry.max_attempts) {
                let backoff = config.retry.delay_after(job.attempt);
                let delay = failure.retry_after.map_or(backoff, |asked| asked.max(backoff));
                info!(%failure, retry_in_ms = delay.as_millis() as u64, "The admin action met a passing fault; retrying.");
                if let Err(error) = release(pool, user_id, job.job_id).await {
                    warn!(%error, "Could not release the user's lease; it expires on its own.");
                }
                return (Verdict::Retry(delay), "retried");
            }
            Err(format!("{} (gave up after {} attempts)", failure.message, job.attempt))
        }
        Err(failure) => Err(failure.message),
    };
    let status = if ending.is_ok() { "succeeded" } else { "failed" };
    match finish(pool, job, user_id, action, &started, ending)
        .instrument(info_span!("finish_admin_job"))
        .await
    {
        Ok(true) => {
            info!(action = %action, status, "Admin job finished.");
            (Verdict::Ack, status)
        }
        Ok(false) => {
            warn!("The user's lease was lost before the admin job could be written; handing it back.");
            (Verdict::HandBack, "handed_back")
        }
        Err(error) => {
            error!(%error, "Could not write the admin job; handing it back.");
            if let Err(error) = release(pool, user_id, job.job_id).await {
                warn!(%error, "Could not release the user's lease; it expires on its own.");
            }
            (Verdict::HandBack, "handed_back")
        }
    }
}

/// Step 2: the work's action, in a task of its own (a crash fails the job)
/// while a mutating action's lease is renewed. `None` when the worker shuts
/// down or the lease was lost: the job is handed back.
#[allow(clippy::too_many_arguments)]
async fn run<W: SyncWork>(
    pool: &PgPool,
    work: &Arc<W>,
    config: &WorkerConfig,
    hard_stop: &CancellationToken,
    job: &JobEnvelope,
    user_id: Uuid,
    action: AdminAction,
    started: &Started,
) -> Option<Result<AdminOutcome, SyncFailure>> {
    let lost = CancellationToken::new();
    let finished = CancellationToken::new();
    // The lease is held under the job's id, as a session's under its own.
    let holder = Claimed {
        session_id: job.job_id,
        started_at: started.at,
        user_id,
        organization_id: started.organization_id,
        after_abandoned: false,
    };
    let renewal = action.mutates().then(|| {
        tokio::spawn(heartbeat(
            pool.clone(),
            holder,
            config.user_lease,
            lost.clone(),
            finished.clone(),
        ))
    });
    // An admin job has no session: the context carries the job's id instead.
    let mut context = SessionContext::new(pool.clone(), job.job_id, user_id, started.organization_id, job.clone());
    context.scope = Scope::Check;
    let work = work.clone();
    let mut task = tokio::spawn(
        async move { work.admin(&mut context, action).await }.instrument(info_span!("admin_action", action = %action)),
    );
    let joined = tokio::select! {
        joined = &mut task => Some(joined),
        _ = hard_stop.cancelled() => None,
        _ = lost.cancelled() => None,
    };
    finished.cancel();
    if let Some(renewal) = renewal {
        let _ = renewal.await;
    }
    match joined {
        Some(Ok(result)) => Some(result),
        Some(Err(join_error)) => {
            error!(error = %join_error, "The admin action crashed; the job fails.");
            Some(Err(SyncFailure::new(
                FailureClass::Permanent,
                IssueSource::Engine,
                "the admin action crashed in the worker",
            )))
        }
        None => {
            task.abort();
            warn!("The worker is stopping or lost the user's lease; handing the admin job back.");
            if let Err(error) = release(pool, user_id, job.job_id).await {
                warn!(%error, "Could not release the user's lease; it expires on its own.");
            }
            None
        }
    }
}

/// Step 3, one transaction: the job's row ends, the lease is released, and a
/// success applies the action's effect on the user and records its activity.
/// `false` when a mutating job lost the lease: nothing is written.
async fn finish(
    pool: &PgPool,
    job: &JobEnvelope,
    user_id: Uuid,
    action: AdminAction,
    started: &Started,
    ending: Result<AdminOutcome, String>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if action.mutates() {
        // The user's row before its run row, as every transaction locking
        // both (the effects below write the user's row).
        sqlx::query_scalar!("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let released = sqlx::query!(
            "UPDATE user_runs SET running_session_id = NULL, lease_expires_at = NULL \
             WHERE user_id = $1 AND running_session_id = $2",
            user_id,
            job.job_id
        )
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() == 0 {
            return Ok(false);
        }
    }
    let status = sqlx::query_scalar!("SELECT status FROM admin_jobs WHERE id = $1 FOR UPDATE", job.job_id)
        .fetch_optional(&mut *tx)
        .await?;
    if !matches!(status.as_deref(), Some("queued" | "running")) {
        // Another delivery of this job ended it meanwhile (or the user was
        // deleted): its writes stand.
        info!("The admin job ended meanwhile; only the lease is released.");
        tx.commit().await?;
        return Ok(true);
    }
    let (status, result, error) = match ending {
        Ok(outcome) => {
            let result = apply(&mut tx, job, user_id, action, started, outcome).await?;
            ("succeeded", Some(Value::Object(result)), None)
        }
        Err(message) => ("failed", None, Some(message)),
    };
    sqlx::query!(
        "UPDATE admin_jobs SET status = $2, finished_at = now(), result = $3, error = $4 WHERE id = $1",
        job.job_id,
        status,
        result,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A successful action's effect on the user's row and its activity; answers
/// the job's result.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    job: &JobEnvelope,
    user_id: Uuid,
    action: AdminAction,
    started: &Started,
    outcome: AdminOutcome,
) -> Result<Map<String, Value>, sqlx::Error> {
    let mut result = outcome.result;
    if let Some(status) = outcome.sidebar {
        sqlx::query!(
            "UPDATE users SET sidebar_status = $2, updated_at = now() WHERE id = $1",
            user_id,
            sidebar_text(status)
        )
        .execute(&mut **tx)
        .await?;
    }
    let activity = match action {
        AdminAction::InstallSidebar => Some((
            "sidebar_installed",
            "The sidebar add-in was installed in the mailbox.".to_owned(),
        )),
        AdminAction::RemoveSidebar => Some((
            "sidebar_removed",
            "The sidebar add-in was removed from the mailbox.".to_owned(),
        )),
        AdminAction::ResetMailbox => {
            let previous = sqlx::query_scalar!(
                r#"SELECT sync_status AS "sync_status: SyncStatus" FROM users WHERE id = $1 FOR UPDATE"#,
                user_id
            )
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query!(
                "UPDATE users SET mailbox_status = 'not_initialized', sync_status = $3, disabled_reason = $2, \
                     sync_status_changed_at = CASE WHEN sync_status <> $3 THEN now() \
                         ELSE sync_status_changed_at END, \
                     updated_at = now() \
                 WHERE id = $1",
                user_id,
                format!(
                    "the mailbox was reset by {}; enabling sync initializes it again",
                    started.requested_by
                ),
                SyncStatus::Disabled as SyncStatus
            )
            .execute(&mut **tx)
            .await?;
            result.insert("mailbox_status".to_owned(), json!("not_initialized"));
            result.insert("sync_status".to_owned(), json!(SyncStatus::Disabled));
            // Turning a syncing user off is the audit's "sync disabled and
            // customization uninstalled"; otherwise only the mailbox changed.
            let kind = if previous == SyncStatus::Enabled {
                "sync_disabled_customization_uninstalled"
            } else {
                "mailbox_reset"
            };
            Some((
                kind,
                format!(
                    "The product's category and folders were removed from the mailbox; synchronization is disabled \
                     (it was {}). Enabling it initializes the mailbox again.",
                    previous.as_str().replace('_', " ")
                ),
            ))
        }
        AdminAction::ReinitializeMailbox => {
            let streams = sqlx::query!("DELETE FROM sync_state WHERE user_id = $1", user_id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            // The mail's mappings go; those of the CRM's events and contacts
            // written into the mailbox stay: they are how the fresh sync
            // finds those items again, instead of writing a copy of each.
            let mappings = sqlx::query!(
                "DELETE FROM item_mappings WHERE user_id = $1 AND direction = 'mailbox_to_crm'",
                user_id
            )
            .execute(&mut **tx)
            .await?
            .rows_affected();
            sqlx::query!(
                "WITH reset AS ( \
                     UPDATE users SET mailbox_status = 'not_initialized', updated_at = now() WHERE id = $1 RETURNING id \
                 ) \
                 UPDATE user_runs SET next_sync_at = now() WHERE user_id IN (SELECT id FROM reset)",
                user_id
            )
            .execute(&mut **tx)
            .await?;
            result.insert("mailbox_status".to_owned(), json!("not_initialized"));
            result.insert("sync_state_cleared".to_owned(), json!(streams));
            result.insert("mappings_cleared".to_owned(), json!(mappings));
            Some((
                "mailbox_reinitialized",
                format!(
                    "The sync state ({streams} stream(s)) and the mappings of {mappings} message(s) were dropped; \
                     the next sync starts afresh."
                ),
            ))
        }
        AdminAction::CheckSettings | AdminAction::CheckCrm | AdminAction::CheckMailbox | AdminAction::CheckSidebar => {
            None
        }
    };
    if let Some((kind, details)) = activity {
        sqlx::query!(
            "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            Uuid::now_v7(),
            started.organization_id,
            user_id,
            &started.requested_by,
            kind,
            format!("{details} (job {})", job.job_id)
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(result)
}
