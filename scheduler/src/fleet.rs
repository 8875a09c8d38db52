//! What the leader keeps for the operator console and its gauges: the queue
//! depths of the last day, minute by minute, and the fleet-wide counts read
//! from the database on every sweep.

use sqlx::PgPool;

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
    let row: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM email_outbox WHERE status IN ('pending', 'sending')), \
           (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::bigint, 0) \
              FROM email_outbox WHERE status IN ('pending', 'sending')), \
           (SELECT count(*) FROM users WHERE sync_status = 'disabled_auth_error'), \
           (SELECT count(*) FROM users WHERE sync_status = 'disabled_throttling_error'), \
           (SELECT count(*) FROM users WHERE sync_status = 'disabled_other_error'), \
           (SELECT count(*) FROM salesforce_org_usage \
              WHERE used * 1000 >= allocation * (100 - reserve_percent) * 9), \
           (SELECT count(*) FROM dead_jobs WHERE status = 'dead'), \
           (SELECT count(*) FROM worker_heartbeats \
              WHERE stopped_at IS NULL AND last_seen_at > now() - interval '1 hour' \
                AND last_seen_at < now() - make_interval(secs => 3 * interval_ms / 1000.0))",
    )
    .fetch_one(pool)
    .await?;
    Ok(Gauges {
        outbox_backlog: row.0,
        outbox_oldest_seconds: row.1,
        auto_suspended: [("auth", row.2), ("throttling", row.3), ("other", row.4)],
        orgs_near_reserve: row.5,
        dead_jobs_waiting: row.6,
        workers_silent: row.7,
    })
}

/// Records this minute's queue depths (the last reading of a minute wins).
pub async fn record_queue_depths(pool: &PgPool, depths: &[(&str, f64)]) -> Result<(), sqlx::Error> {
    if depths.is_empty() {
        return Ok(());
    }
    let (queues, values): (Vec<&str>, Vec<f64>) = depths.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO fleet_minutes (minute, series, label, source, value) \
         SELECT date_trunc('minute', now()), 'queue_depth', queue, 'scheduler', value \
         FROM UNNEST($1::text[], $2::float8[]) AS d(queue, value) \
         ON CONFLICT (minute, series, label, source) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(&queues)
    .bind(&values)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the console's history older than a day, and the heartbeats of
/// workers gone for a day.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let minutes = sqlx::query("DELETE FROM fleet_minutes WHERE minute < now() - interval '1 day'")
        .execute(pool)
        .await?;
    let workers = sqlx::query("DELETE FROM worker_heartbeats WHERE last_seen_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(minutes.rows_affected() + workers.rows_affected())
}
