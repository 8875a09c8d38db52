//! What the leader keeps for the operator console and its gauges: the queue
//! depths of the last day, minute by minute, and the fleet-wide counts read
//! from the database on every sweep.

use sqlx::PgPool;
use syncfleet_common::{
    domain::{DeadJobStatus, SyncStatus},
    reserve::OrgUsage,
};

/// The fleet-wide counts behind the leader's gauges.
pub struct Gauges {
    pub outbox_backlog: i64,
    pub outbox_oldest_seconds: i64,
    pub auto_suspended: [(&'static str, i64); 3],
    pub orgs_near_reserve: i64,
    pub dead_jobs_waiting: i64,
    pub workers_silent: i64,
}

/// Reads every gauge in one statement.
pub async fn gauges(pool: &PgPool) -> Result<Gauges, sqlx::Error> {
    // The orgs' usage comes back whole (an org a row), counted near the
    // reserve by the rule the console shows.
    let row = sqlx::query!(
        "SELECT \
           (SELECT count(*) FROM email_outbox WHERE status IN ('pending', 'sending')) AS \"outbox_backlog!\", \
           (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::bigint, 0) \
              FROM email_outbox WHERE status IN ('pending', 'sending')) AS \"outbox_oldest_seconds!\", \
           (SELECT count(*) FROM users WHERE sync_status = $1) AS \"suspended_auth!\", \
           (SELECT count(*) FROM users WHERE sync_status = $2) AS \"suspended_throttling!\", \
           (SELECT count(*) FROM users WHERE sync_status = $3) AS \"suspended_other!\", \
           usage.used AS \"usage_used!\", usage.allocation AS \"usage_allocation!\", \
           usage.reserve_percent AS \"usage_reserve_percent!\", \
           (SELECT count(*) FROM dead_jobs WHERE status = $4) AS \"dead_jobs_waiting!\", \
           (SELECT count(*) FROM worker_heartbeats \
              WHERE stopped_at IS NULL AND last_seen_at > now() - interval '1 hour' \
                AND last_seen_at < now() - make_interval(secs => 3 * interval_ms / 1000.0)) AS \"workers_silent!\" \
         FROM (SELECT COALESCE(array_agg(used ORDER BY org), '{}') AS used, \
                      COALESCE(array_agg(allocation ORDER BY org), '{}') AS allocation, \
                      COALESCE(array_agg(reserve_percent ORDER BY org), '{}') AS reserve_percent \
               FROM salesforce_org_usage) usage",
        SyncStatus::DisabledAuthError as SyncStatus,
        SyncStatus::DisabledThrottlingError as SyncStatus,
        SyncStatus::DisabledOtherError as SyncStatus,
        DeadJobStatus::Dead as DeadJobStatus,
    )
    .fetch_one(pool)
    .await?;
    let orgs_near_reserve = row
        .usage_used
        .iter()
        .zip(&row.usage_allocation)
        .zip(&row.usage_reserve_percent)
        .filter(|((used, allocation), reserve_percent)| {
            OrgUsage {
                used: **used,
                allocation: **allocation,
                reserve_percent: **reserve_percent,
            }
            .near_reserve()
        })
        .count();
    Ok(Gauges {
        outbox_backlog: row.outbox_backlog,
        outbox_oldest_seconds: row.outbox_oldest_seconds,
        auto_suspended: [
            ("auth", row.suspended_auth),
            ("throttling", row.suspended_throttling),
            ("other", row.suspended_other),
        ],
        orgs_near_reserve: i64::try_from(orgs_near_reserve).unwrap_or(i64::MAX),
        dead_jobs_waiting: row.dead_jobs_waiting,
        workers_silent: row.workers_silent,
    })
}

/// Records this minute's queue depths (the last reading of a minute wins).
pub async fn record_queue_depths(pool: &PgPool, depths: &[(&str, f64)]) -> Result<(), sqlx::Error> {
    if depths.is_empty() {
        return Ok(());
    }
    let (queues, values): (Vec<&str>, Vec<f64>) = depths.iter().copied().unzip();
    sqlx::query!(
        "INSERT INTO fleet_minutes (minute, series, label, source, value) \
         SELECT date_trunc('minute', now()), 'queue_depth', queue, 'scheduler', value \
         FROM UNNEST($1::text[], $2::float8[]) AS d(queue, value) \
         ON CONFLICT (minute, series, label, source) DO UPDATE SET value = EXCLUDED.value",
        &queues as &[&str],
        &values
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the console's history older than a day, and the heartbeats of
/// workers gone for a day.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let minutes = sqlx::query!("DELETE FROM fleet_minutes WHERE minute < now() - interval '1 day'")
        .execute(pool)
        .await?;
    let workers = sqlx::query!("DELETE FROM worker_heartbeats WHERE last_seen_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(minutes.rows_affected() + workers.rows_affected())
}
