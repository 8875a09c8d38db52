//! PostgreSQL: the pool, the embedded migrations and partition maintenance.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::CommonConfig;

/// The migrations of `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens the pool. Connections use UTC so partition bounds and dates agree
/// whatever the server's time zone.
pub async fn connect(config: &CommonConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::query("SET TIME ZONE 'UTC'").execute(connection).await?;
                Ok(())
            })
        })
        .connect(config.database_url.expose_secret())
        .await
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
        let created: i32 = sqlx::query_scalar(
            "SELECT syncfleet_ensure_partitions($1, $2, (now() AT TIME ZONE 'UTC')::date - 1, \
             (now() AT TIME ZONE 'UTC')::date + $3::int + 1)",
        )
        .bind(table)
        .bind(step)
        .bind(ahead as i32)
        .fetch_one(pool)
        .await?;
        let dropped: i32 =
            sqlx::query_scalar("SELECT syncfleet_drop_partitions($1, $2, now() - make_interval(days => $3::int))")
                .bind(table)
                .bind(step)
                .bind(keep_days as i32)
                .fetch_one(pool)
                .await?;
        report.created += created;
        report.dropped += dropped;
    }
    Ok(report)
}
