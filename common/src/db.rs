//! PostgreSQL: the pool, the embedded migrations and partition maintenance.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::CommonConfig,
    reconnect::{self, Failure},
};

/// The migrations of `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long one attempt to reach PostgreSQL may take while waiting for it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool's options. Connections use UTC so partition bounds and dates
/// agree whatever the server's time zone.
fn pool_options(config: &CommonConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::query!("SET TIME ZONE 'UTC'").execute(connection).await?;
                Ok(())
            })
        })
}

/// The connection options the URL describes; an error is bad configuration.
fn connect_options(config: &CommonConfig) -> Result<PgConnectOptions, sqlx::Error> {
    config.database_url.expose_secret().parse()
}

/// Opens the pool, connecting at once (tools and tests).
pub async fn connect(config: &CommonConfig) -> Result<PgPool, sqlx::Error> {
    pool_options(config).connect_with(connect_options(config)?).await
}

/// The pool, without connecting: connections are opened when first needed,
/// so a service can answer its probes while PostgreSQL is unreachable. Only
/// a malformed URL is an error.
pub fn lazy_pool(config: &CommonConfig) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(config).connect_lazy_with(connect_options(config)?))
}

/// Waits until PostgreSQL accepts a connection, retrying with backoff while
/// it is unreachable (refused, timed out, starting up or shutting down).
/// `Ok(false)` when `shutdown` fires first. A refusal that retrying cannot
/// mend (a bad password, a database that does not exist) is returned at once.
pub async fn wait_until_reachable(config: &CommonConfig, shutdown: &CancellationToken) -> Result<bool, sqlx::Error> {
    let options = connect_options(config)?;
    let reached = reconnect::until_reached(shutdown, "PostgreSQL", || async {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                Ok(())
            }
            Ok(Err(error)) if is_unreachable(&error) => Err(Failure::Unreachable(error)),
            Ok(Err(error)) => Err(Failure::Fatal(error)),
            Err(_) => Err(Failure::Unreachable(sqlx::Error::PoolTimedOut)),
        }
    })
    .await?;
    Ok(reached.is_some())
}

/// Whether `error` means PostgreSQL could not be reached now, as opposed to
/// refusing what it was asked.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // Connection exceptions (08), a server starting up or shutting down
        // (57P), too many connections (53300).
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P") || code == "53300"),
        _ => false,
    }
}

/// Whether a statement that failed with `error` may pass if tried again:
/// the server or the connection went away, or a conflict (serialization
/// failure, deadlock) that a retry resolves.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
        }),
        other => is_unreachable(other),
    }
}

/// The backoff of a write retried while [`is_transient`] holds: from 50 ms,
/// doubling up to `max_delay`, jittered, for `total` at the most.
pub fn transient_backoff(max_delay: Duration, total: Duration) -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(max_delay)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(total))
}

/// Applies pending migrations; safe to run concurrently (sqlx takes an
/// advisory lock) and repeatedly.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// How long each kind of history is kept (O4).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Sessions and their issues, in days.
    pub sessions_days: u32,
    /// Session logs, in days.
    pub logs_days: u32,
    /// Activities, in days.
    pub activities_days: u32,
    /// How many days of partitions to keep ready ahead of today.
    pub ahead_days: u32,
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions created.
    pub created: i32,
    /// Partitions dropped.
    pub dropped: i32,
}

/// Creates the partitions needed ahead of time and drops whole partitions
/// past their retention: nothing is deleted row by row.
pub async fn maintain_partitions(pool: &PgPool, retention: Retention) -> Result<MaintenanceReport, sqlx::Error> {
    let tables: [(&str, &str, u32); 4] = [
        ("sync_sessions", "day", retention.sessions_days),
        ("sync_issues", "day", retention.sessions_days),
        ("sync_session_logs", "day", retention.logs_days),
        ("activities", "month", retention.activities_days),
    ];
    let mut report = MaintenanceReport::default();
    for (table, step, keep_days) in tables {
        let ahead = if step == "month" {
            retention.ahead_days.max(62)
        } else {
            retention.ahead_days
        };
        let created = sqlx::query_scalar!(
            "SELECT syncfleet_ensure_partitions($1, $2, (now() AT TIME ZONE 'UTC')::date - 1, \
             (now() AT TIME ZONE 'UTC')::date + $3::int + 1) AS \"created!\"",
            table,
            step,
            ahead as i32
        )
        .fetch_one(pool)
        .await?;
        let dropped = sqlx::query_scalar!(
            "SELECT syncfleet_drop_partitions($1, $2, now() - make_interval(days => $3::int)) AS \"dropped!\"",
            table,
            step,
            keep_days as i32
        )
        .fetch_one(pool)
        .await?;
        report.created += created;
        report.dropped += dropped;
    }
    Ok(report)
}
