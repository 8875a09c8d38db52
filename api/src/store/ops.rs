//! The operator console's reads and the dead jobs' replay and discard: the
//! leader lease, due users, the fleet's minutes (written by the workers'
//! heartbeats and the scheduler leader), heartbeats, dead jobs, Salesforce
//! usage and suspended users.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, postgres::PgRow};
use syncfleet_common::{
    domain::{DeadJobStatus, SessionStatus, SyncStatus},
    queue::JobKind,
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;
use crate::routes::list;

/// The scheduler's leader, as its lease row says.
#[derive(Debug, Serialize, ToSchema)]
pub struct Leader {
    pub holder: String,
    pub term: i64,
    /// When this holder took the lease.
    pub since: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

/// The lease's holder while it holds.
pub async fn leader(pool: &PgPool) -> StoreResult<Option<Leader>> {
    let row = sqlx::query!(
        "SELECT holder AS \"holder!\", term, acquired_at, expires_at FROM leader_leases \
         WHERE name = 'scheduler' AND holder IS NOT NULL AND expires_at > now()"
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Leader {
        holder: row.holder.to_string(),
        term: row.term,
        since: row.acquired_at,
        expires_at: row.expires_at,
    }))
}

/// Users whose slot passed and whose job is not queued yet.
pub async fn due_not_queued(pool: &PgPool) -> StoreResult<i64> {
    Ok(sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM user_runs WHERE next_sync_at <= now() AND queued_job_id IS NULL"
    )
    .fetch_one(pool)
    .await?)
}

/// The outbox's backlog and its oldest email.
pub async fn outbox(pool: &PgPool) -> StoreResult<(i64, Option<DateTime<Utc>>)> {
    let row = sqlx::query!(
        "SELECT count(*) AS \"backlog!\", min(created_at) AS oldest FROM email_outbox \
         WHERE status IN ('pending', 'sending')"
    )
    .fetch_one(pool)
    .await?;
    Ok((row.backlog, row.oldest))
}

/// Dead jobs neither replayed nor discarded.
pub async fn dead_jobs_waiting(pool: &PgPool) -> StoreResult<i64> {
    Ok(sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM dead_jobs WHERE status = $1",
        DeadJobStatus::Dead as DeadJobStatus
    )
    .fetch_one(pool)
    .await?)
}

/// One value of the fleet's minutes, summed over its sources.
#[derive(Debug)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub label: String,
    pub value: f64,
}

/// A series' minutes since `since`, oldest first.
pub async fn minutes(pool: &PgPool, series: &str, since: DateTime<Utc>) -> StoreResult<Vec<Minute>> {
    Ok(sqlx::query_as!(
        Minute,
        "SELECT minute, label, sum(value) AS \"value!\" FROM fleet_minutes \
         WHERE series = $1 AND minute >= $2 GROUP BY minute, label ORDER BY minute, label",
        series,
        since
    )
    .fetch_all(pool)
    .await?)
}

/// A worker as its heartbeat row says.
#[derive(Debug)]
pub struct WorkerRow {
    pub worker_id: String,
    pub version: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub interval_ms: i32,
    pub draining: bool,
    pub stopped_at: Option<DateTime<Utc>>,
    pub in_flight: serde_json::Value,
    /// Whether its heartbeat is more than three intervals late.
    pub silent: bool,
}

/// Every worker seen in the last day, most recently seen first.
pub async fn workers(pool: &PgPool) -> StoreResult<Vec<WorkerRow>> {
    Ok(sqlx::query_as!(
        WorkerRow,
        "SELECT worker_id, version, host, started_at, last_seen_at, interval_ms, draining, stopped_at, in_flight, \
                last_seen_at < now() - make_interval(secs => 3 * interval_ms / 1000.0) AS \"silent!\" \
         FROM worker_heartbeats WHERE last_seen_at > now() - interval '1 day' \
         ORDER BY last_seen_at DESC, worker_id"
    )
    .fetch_all(pool)
    .await?)
}

/// A Salesforce org's last reported usage.
#[derive(Debug)]
pub struct OrgUsage {
    pub org: String,
    pub used: i64,
    pub allocation: i64,
    pub reserve_percent: i16,
    pub observed_at: DateTime<Utc>,
}

/// Every org's usage reported in the last day, the nearest to its limit first.
pub async fn salesforce_usage(pool: &PgPool) -> StoreResult<Vec<OrgUsage>> {
    Ok(sqlx::query_as!(
        OrgUsage,
        "SELECT org, used, allocation, reserve_percent, observed_at FROM salesforce_org_usage \
         WHERE observed_at > now() - interval '1 day' \
         ORDER BY used::float8 / allocation DESC, org LIMIT 500"
    )
    .fetch_all(pool)
    .await?)
}

/// A dead job as the console lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct DeadJob {
    pub id: Uuid,
    /// The job's id; null for a message that was not a job.
    pub job_id: Option<Uuid>,
    /// Null for a message that was not a job.
    pub kind: Option<JobKind>,
    /// The queue it died in.
    pub queue: String,
    /// `delivery_limit` (crashed or timed out too often), `retries_exhausted`,
    /// `rejected` (unreadable) or the worker's own reason.
    pub reason: String,
    pub deliveries: Option<i32>,
    pub dead_at: DateTime<Utc>,
    pub user_id: Option<Uuid>,
    pub user_email: Option<String>,
    pub organization_id: Option<Uuid>,
    pub organization_name: Option<String>,
    pub status: DeadJobStatus,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who replayed or discarded it.
    pub resolved_by: Option<String>,
    /// The job the replay published.
    pub replay_job_id: Option<Uuid>,
    /// The job's last error, as its sessions or its admin job recorded it.
    pub last_error: Option<String>,
}

const DEAD_COLUMNS: &str = "d.id, d.job_id, d.kind, d.queue, d.reason, d.deliveries, d.dead_at, d.user_id, \
     u.email AS user_email, d.organization_id, o.name AS organization_name, d.status, d.resolved_at, \
     d.resolved_by, d.replay_job_id, d.last_error";
const DEAD_FROM: &str =
    "dead_jobs d LEFT JOIN users u ON u.id = d.user_id LEFT JOIN organizations o ON o.id = d.organization_id";

/// Which dead jobs a list or a bulk action covers.
#[derive(Debug, Default, Clone)]
pub struct DeadFilter {
    /// `Dead` when `None`.
    pub status: Option<DeadJobStatus>,
    pub reason: Option<String>,
    pub kind: Option<JobKind>,
    pub organization_id: Option<Uuid>,
    /// Dead at or after.
    pub since: Option<DateTime<Utc>>,
}

impl DeadFilter {
    fn push(&self, builder: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>) {
        builder
            .push(" WHERE d.status = ")
            .push_bind(self.status.unwrap_or(DeadJobStatus::Dead));
        if let Some(reason) = &self.reason {
            builder.push(" AND d.reason = ").push_bind(reason.clone());
        }
        if let Some(kind) = self.kind {
            builder.push(" AND d.kind = ").push_bind(kind);
        }
        if let Some(organization) = self.organization_id {
            builder.push(" AND d.organization_id = ").push_bind(organization);
        }
        if let Some(since) = self.since {
            builder.push(" AND d.dead_at >= ").push_bind(since);
        }
    }
}

/// How many dead jobs match, and the rows of `page` among them.
pub async fn dead_page(pool: &PgPool, filter: &DeadFilter, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    super::counted_page(pool, DEAD_COLUMNS, DEAD_FROM, |builder| filter.push(builder), page).await
}

/// The ids of the dead jobs a filter covers, oldest first, at most `limit`.
pub async fn dead_ids(pool: &PgPool, filter: &DeadFilter, limit: i64) -> StoreResult<Vec<Uuid>> {
    let mut builder = sqlx::QueryBuilder::new("SELECT d.id FROM dead_jobs d");
    filter.push(&mut builder);
    builder.push(" ORDER BY d.dead_at, d.id LIMIT ").push_bind(limit);
    Ok(builder.build_query_scalar().fetch_all(pool).await?)
}

/// One dead job with its payload, locked when `lock` (for its replay or discard).
pub async fn dead_job(connection: &mut PgConnection, id: Uuid, lock: bool) -> StoreResult<Option<(DeadJob, Vec<u8>)>> {
    let lock = if lock { " FOR UPDATE OF d" } else { "" };
    let row: Option<PgRow> = sqlx::query(&format!(
        "SELECT {DEAD_COLUMNS}, d.payload FROM {DEAD_FROM} WHERE d.id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let payload: Vec<u8> = sqlx::Row::try_get(&row, "payload")?;
    Ok(Some((sqlx::FromRow::from_row(&row)?, payload)))
}

/// A session of a job, for its inspection.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub session_id: Option<Uuid>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// The session's status.
    pub status: SessionStatus,
    pub error: Option<String>,
}

/// The sessions a job ran, oldest first.
pub async fn attempts(pool: &PgPool, job_id: Uuid) -> StoreResult<Vec<Attempt>> {
    Ok(sqlx::query_as!(
        Attempt,
        "SELECT id AS \"session_id?\", attempt, started_at, status AS \"status: _\", \
                COALESCE(error_message, CASE WHEN status = $2 THEN 'the worker running it stopped or crashed' END) AS error \
         FROM sync_sessions WHERE job_id = $1 ORDER BY started_at, id LIMIT 100",
        job_id,
        SessionStatus::Abandoned as SessionStatus
    )
    .fetch_all(pool)
    .await?)
}

/// Marks a dead job that waits for an operator `to` by `who`: replayed with
/// the job that replays it, or discarded (no job).
pub async fn resolve(
    tx: &mut PgConnection,
    id: Uuid,
    who: &str,
    to: DeadJobStatus,
    replay_job_id: Option<Uuid>,
) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE dead_jobs SET status = $3, resolved_at = now(), resolved_by = $2, replay_job_id = $4 \
         WHERE id = $1 AND status = $5",
        id,
        who,
        to as DeadJobStatus,
        replay_job_id,
        DeadJobStatus::Dead as DeadJobStatus
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// What a cadence replay found of the user's queued job.
pub enum Queued {
    /// The replay is the user's queued job now.
    Replay,
    /// The user has this job queued already (the next slot's).
    Already(Uuid),
    /// The user is gone.
    NoUser,
}

/// Makes `job_id` the user's queued cadence job unless one is queued.
pub async fn queue_cadence_replay(tx: &mut PgConnection, user_id: Uuid, job_id: Uuid) -> StoreResult<Queued> {
    let row = sqlx::query!(
        "SELECT queued_job_id FROM user_runs WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        None => Ok(Queued::NoUser),
        Some(row) if row.queued_job_id.is_some_and(|queued| queued != job_id) => {
            Ok(Queued::Already(row.queued_job_id.unwrap_or(job_id)))
        }
        Some(_) => {
            sqlx::query!(
                "UPDATE user_runs SET queued_job_id = $2, queued_at = now() WHERE user_id = $1",
                user_id,
                job_id
            )
            .execute(&mut *tx)
            .await?;
            Ok(Queued::Replay)
        }
    }
}

/// Whether the user still exists.
pub async fn user_exists(tx: &mut PgConnection, user_id: Uuid) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS \"exists!\"",
        user_id
    )
    .fetch_one(tx)
    .await?)
}

/// Copies a dead job's admin job record (a force sync's or an admin
/// action's) under the replay's id, queued again and requested by `who`.
pub async fn copy_admin_job(tx: &mut PgConnection, from: Uuid, to: Uuid, who: &str) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by, request) \
         SELECT $2, action, organization_id, user_id, $3, request FROM admin_jobs WHERE id = $1 \
         ON CONFLICT (id) DO NOTHING",
        from,
        to,
        who
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A user auto-suspend disabled.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct SuspendedUser {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub organization_id: Uuid,
    pub organization_name: String,
    /// `auth`, `throttling` or `other`.
    pub class: String,
    pub sync_status: SyncStatus,
    /// The error that suspended the user.
    pub last_error: Option<String>,
    pub suspended_at: DateTime<Utc>,
}

/// The suspended users of a class and organization, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspendedGroup {
    pub class: String,
    pub organization_id: Uuid,
    pub organization_name: String,
    pub count: i64,
}

const SUSPENDED_STATUSES: &str = "('disabled_auth_error', 'disabled_throttling_error', 'disabled_other_error')";
const CLASS_SQL: &str = "CASE u.sync_status WHEN 'disabled_auth_error' THEN 'auth' \
     WHEN 'disabled_throttling_error' THEN 'throttling' ELSE 'other' END";

/// Suspended users by class and organization, the largest groups first.
pub async fn suspended_groups(pool: &PgPool) -> StoreResult<Vec<SuspendedGroup>> {
    Ok(sqlx::query_as!(
        SuspendedGroup,
        "SELECT CASE u.sync_status WHEN 'disabled_auth_error' THEN 'auth' \
                  WHEN 'disabled_throttling_error' THEN 'throttling' ELSE 'other' END AS \"class!\", \
                u.organization_id, o.name AS organization_name, count(*) AS \"count!\" \
         FROM users u JOIN organizations o ON o.id = u.organization_id \
         WHERE u.sync_status IN ('disabled_auth_error', 'disabled_throttling_error', 'disabled_other_error') \
         GROUP BY 1, u.organization_id, o.name ORDER BY 4 DESC, 3, 1 LIMIT 500"
    )
    .fetch_all(pool)
    .await?)
}

/// Which suspended users a list covers.
#[derive(Debug, Default)]
pub struct SuspendedFilter {
    pub organization_id: Option<Uuid>,
    /// The `sync_status` of the class asked for.
    pub status: Option<SyncStatus>,
}

/// How many suspended users match, and the rows of `page` among them.
pub async fn suspended_page(
    pool: &PgPool,
    filter: &SuspendedFilter,
    page: &list::Page,
) -> StoreResult<(i64, Vec<PgRow>)> {
    let columns = format!(
        "u.id AS user_id, u.email, u.name, u.organization_id, o.name AS organization_name, {CLASS_SQL} AS class, \
         u.sync_status, u.disabled_reason AS last_error, u.sync_status_changed_at AS suspended_at"
    );
    super::counted_page(
        pool,
        &columns,
        "users u JOIN organizations o ON o.id = u.organization_id",
        |builder| {
            builder.push(format!(" WHERE u.sync_status IN {SUSPENDED_STATUSES}"));
            if let Some(status) = filter.status {
                builder.push(" AND u.sync_status = ").push_bind(status);
            }
            if let Some(organization) = filter.organization_id {
                builder.push(" AND u.organization_id = ").push_bind(organization);
            }
        },
        page,
    )
    .await
}
