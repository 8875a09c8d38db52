//! What one session costs: the services' own counters read before and after
//! a window of sessions, divided by the sessions that ended in it.
//!
//! - PostgreSQL: transactions and row writes of the load test's scratch
//!   database (`pg_stat_database`), and how many updates of `users` were HOT
//!   (`pg_stat_user_tables`); statement counts need `pg_stat_statements`,
//!   which is read when the server has it loaded.
//! - Redis: commands by name from `INFO commandstats` (the whole server: other
//!   clients of the same Redis count too).
//! - HTTP calls by provider, as the sessions counted them (their `calls`).
//! - CPU milliseconds by process: the fleet's processes, and PostgreSQL,
//!   RabbitMQ and Redis found in `/proc` by name (the whole servers).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use super::processes;
use crate::scratch::rounded;

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    transactions: i64,
    rows_written: i64,
    /// Row updates and HOT ones, of the tables a session writes per user.
    updates: BTreeMap<String, (i64, i64)>,
    statements: Option<i64>,
    redis: BTreeMap<String, i64>,
    cpu: BTreeMap<&'static str, f64>,
}

/// The services whose CPU is read from `/proc` by command name.
const SERVICES: &[(&str, &[&str])] = &[
    ("postgresql", &["postgres"]),
    ("rabbitmq", &["beam.smp", "erl_child_setup", "epmd"]),
    ("redis", &["redis-server"]),
];

/// CPU seconds of every process whose command name is one of `names`, with
/// the children they reaped (connections that closed).
fn cpu_of_names(names: &[&str]) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| names.contains(&comm.trim()))
        })
        .filter_map(processes::cpu_seconds_with_children)
        .sum()
}

/// The postmaster of the server `pool` is connected to, from its data
/// directory's `postmaster.pid` (readable when the server runs on this
/// machine and the role may read `data_directory`).
async fn postmaster_pid(pool: &PgPool) -> Option<u32> {
    let directory: String = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        .fetch_one(pool)
        .await
        .ok()?;
    let pid_file = std::fs::read_to_string(std::path::Path::new(&directory).join("postmaster.pid")).ok()?;
    pid_file.lines().next()?.trim().parse().ok()
}

/// CPU seconds of `root` (with the children it reaped) and of its live
/// children.
fn cpu_of_tree(root: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.get(stat.rfind(')')? + 2..)?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid == root || parent_of(*pid) == Some(root))
        .filter_map(processes::cpu_seconds_with_children)
        .sum()
}

/// Reads `INFO commandstats`: calls by command.
async fn redis_commands(redis_url: &secrecy::SecretString) -> anyhow::Result<BTreeMap<String, i64>> {
    let client = redis::Client::open(redis_url.expose_secret())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|field| field.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect())
}

impl Snapshot {
    /// Reads every counter now; `fleet_cpu` are the fleet's processes' CPU
    /// seconds by name.
    pub async fn take(
        pool: &PgPool,
        redis_url: &secrecy::SecretString,
        fleet_cpu: BTreeMap<&'static str, f64>,
    ) -> anyhow::Result<Self> {
        let (transactions, rows_written): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        let updates: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, n_tup_upd, n_tup_hot_upd \
             FROM pg_stat_user_tables WHERE relname IN ('users', 'user_runs')",
        )
        .fetch_all(pool)
        .await?;
        let updates = updates
            .into_iter()
            .map(|(table, all, hot)| (table, (all, hot)))
            .collect();
        // Only where the server loads the extension (shared_preload_libraries).
        let statements: Option<i64> = sqlx::query_scalar(
            "SELECT sum(s.calls)::int8 FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .ok()
        .flatten();
        // The PostgreSQL server of the scratch database only, when its
        // postmaster can be found (another cluster on the machine is not ours).
        let postmaster = postmaster_pid(pool).await;
        let mut cpu = fleet_cpu;
        for (service, names) in SERVICES {
            let seconds = match (*service, postmaster) {
                ("postgresql", Some(postmaster)) => cpu_of_tree(postmaster),
                _ => cpu_of_names(names),
            };
            cpu.insert(service, seconds);
        }
        Ok(Self {
            transactions,
            rows_written,
            updates,
            statements,
            redis: redis_commands(redis_url).await?,
            cpu,
        })
    }

    /// The cost per session of the `sessions` that ended between `self` and
    /// `later`, with the HTTP calls they counted.
    pub fn per_session(&self, later: &Snapshot, sessions: i64, calls: &BTreeMap<String, i64>) -> serde_json::Value {
        let per = |value: f64| rounded(value / sessions.max(1) as f64, 2);
        let redis: BTreeMap<&str, f64> = later
            .redis
            .iter()
            .filter_map(|(name, calls)| {
                let delta = calls - self.redis.get(name).copied().unwrap_or_default();
                (delta > 0).then(|| (name.as_str(), per(delta as f64)))
            })
            .collect();
        let cpu: BTreeMap<&str, f64> = later
            .cpu
            .iter()
            .map(|(name, seconds)| {
                let before = self.cpu.get(name).copied().unwrap_or_default();
                (*name, per((seconds - before) * 1000.0))
            })
            .collect();
        let fleet_ms: f64 = ["workers", "scheduler", "postgresql", "rabbitmq", "redis"]
            .iter()
            .filter_map(|name| cpu.get(name))
            .sum();
        // Per table: updates per session and the share of them HOT.
        let updates: BTreeMap<&str, serde_json::Value> = later
            .updates
            .iter()
            .map(|(table, (all, hot))| {
                let (all_before, hot_before) = self.updates.get(table).copied().unwrap_or_default();
                let (all, hot) = (all - all_before, hot - hot_before);
                let value = serde_json::json!({
                    "per_session": per(all as f64),
                    "hot_percent": rounded(100.0 * hot as f64 / all.max(1) as f64, 1),
                });
                (table.as_str(), value)
            })
            .collect();
        serde_json::json!({
            "sessions": sessions,
            "postgresql": {
                "transactions": per((later.transactions - self.transactions) as f64),
                "statements": later.statements.zip(self.statements).map(|(after, before)| per((after - before) as f64)),
                "rows_written": per((later.rows_written - self.rows_written) as f64),
                "updates": updates,
            },
            "redis_commands": redis,
            // The fleet's limiter speaks to Redis in scripts only: a round
            // trip is one EVALSHA (or EVAL when the script was not cached).
            "redis_script_round_trips": redis.get("evalsha").copied().unwrap_or_default()
                + redis.get("eval").copied().unwrap_or_default(),
            "http_calls_by_provider": calls
                .iter()
                .map(|(provider, count)| (provider.clone(), per(*count as f64)))
                .collect::<BTreeMap<_, _>>(),
            "cpu_ms": cpu,
            "fleet_cpu_ms": rounded(fleet_ms, 2),
            "note": "fleet_cpu_ms is workers + scheduler + PostgreSQL + RabbitMQ + Redis; the services are read whole (other clients count too); Redis counts commands (a script's inner commands included; its round trips are its EVALSHA calls), statements need pg_stat_statements",
        })
    }
}

/// The HTTP calls by provider that the sessions ended in `[from, to)`
/// counted, and how many sessions those are.
pub async fn session_calls(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(i64, BTreeMap<String, i64>)> {
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE ended_at >= $1 AND ended_at < $2")
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
    let calls: Vec<(String, i64)> = sqlx::query_as(
        "SELECT provider, sum(count::int8)::int8 FROM sync_sessions, jsonb_each_text(calls) AS call(provider, count) \
         WHERE ended_at >= $1 AND ended_at < $2 GROUP BY provider",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok((sessions, calls.into_iter().collect()))
}
