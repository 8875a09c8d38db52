//! What every benchmark shares: a fresh database and queue prefix, removed
//! afterwards; the parsers of its whole-number flags; latency summaries.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use syncfleet_common::{
    config::CommonConfig,
    queue::{self, Topology},
};
use uuid::Uuid;

/// A benchmark's own database and queue prefix.
pub struct Scratch {
    admin: PgConnection,
    database: String,
    /// Where the benchmark's database is.
    pub database_url: String,
    /// The benchmark's queue prefix.
    pub prefix: String,
}

impl Scratch {
    /// Creates a database of its own named `{base}_{run}` on
    /// `SYNCFLEET_BENCH_DATABASE_SERVER` (default the local PostgreSQL), and
    /// picks a new queue prefix starting with `prefix`. Databases of the same
    /// base that earlier runs left are dropped, unless a run still uses them
    /// (the drop waits for no connection, so a run in parallel keeps its own).
    pub async fn create(base: &'static str, prefix: &str) -> anyhow::Result<Self> {
        let server = std::env::var("SYNCFLEET_BENCH_DATABASE_SERVER")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database d WHERE datname LIKE $1 \
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)",
        )
        .bind(format!("{base}\\_%"))
        .fetch_all(&mut admin)
        .await?;
        for database in left {
            // A run that connected since: its database stays.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\""))
                .execute(&mut admin)
                .await;
        }
        let run = &Uuid::new_v4().simple().to_string()[..8];
        let database = format!("{base}_{run}");
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            admin,
            database_url: format!("{server}/{database}"),
            database,
            prefix: format!("{prefix}-{run}"),
        })
    }

    /// Deletes the prefix's queues and exchanges, then the database (close
    /// the benchmark's pools first).
    pub async fn remove(mut self, common: &CommonConfig) -> anyhow::Result<()> {
        let topology = Topology::new(self.prefix.clone(), common.delivery_limit);
        let connection = queue::connect(&common.amqp_url, "loadtest cleanup").await?;
        let channel = connection.create_channel().await?;
        topology.delete(&channel).await?;
        channel.close(200, "done".into()).await?;
        connection.close(200, "done".into()).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database))
            .execute(&mut self.admin)
            .await?;
        Ok(())
    }
}

/// The value parser of a count flag: a whole number, at least 1.
pub fn count(value: &str) -> Result<usize, String> {
    at_least(1)(value)
}

/// The value parser of a whole-number flag of at least `minimum`; clap's
/// error names the flag and the value.
pub fn at_least(minimum: usize) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |value| match value.parse::<usize>() {
        Ok(number) if number >= minimum => Ok(number),
        Ok(_) => Err(format!("must be at least {minimum}")),
        Err(_) => Err("takes a whole number".to_owned()),
    }
}

/// `value` rounded to `digits` decimals, for reports.
pub fn rounded(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The settings pointing a worker at simulators whose Graph (and its token
/// endpoint) answers at `graph`; `label` names the benchmark's own OAuth
/// clients. Salesforce is reached at each user's instance URL.
pub fn simulator_settings(graph: &str, label: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYNCFLEET_GRAPH_URL", graph.to_owned()),
        (
            "SYNCFLEET_MICROSOFT_TOKEN_URL",
            format!("{graph}/organizations/oauth2/v2.0/token"),
        ),
        ("SYNCFLEET_MICROSOFT_CLIENT_ID", format!("syncfleet-{label}-app")),
        ("SYNCFLEET_MICROSOFT_CLIENT_SECRET", format!("syncfleet-{label}-secret")),
        (
            "SYNCFLEET_SALESFORCE_CLIENT_ID",
            format!("syncfleet-{label}-connected-app"),
        ),
        ("SYNCFLEET_ALLOW_LOCAL_URLS", "true".to_owned()),
    ]
}

/// Count, p50, p99 and max in milliseconds.
pub fn latency_summary(latencies: &[Duration]) -> serde_json::Value {
    let mut sorted: Vec<f64> = latencies.iter().map(|latency| latency.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let at = |quantile: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
        (sorted[index] * 10.0).round() / 10.0
    };
    serde_json::json!({ "count": sorted.len(), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_a_whole_number_of_at_least_one() {
        assert_eq!(count("500"), Ok(500));
        assert_eq!(count("0"), Err("must be at least 1".to_owned()));
        assert_eq!(at_least(10)("9"), Err("must be at least 10".to_owned()));
        for bad in ["many", "-3", "1.5", ""] {
            assert_eq!(count(bad), Err("takes a whole number".to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn a_summary_reads_its_quantiles_from_the_sorted_latencies() {
        let latencies: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(
            latency_summary(&latencies),
            serde_json::json!({ "count": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0 })
        );
    }
}
