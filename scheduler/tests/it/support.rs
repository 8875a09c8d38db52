//! An in-process scheduler and worker, and reading sessions back.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use syncfleet_scheduler::SchedulerConfig;
use syncfleet_testkit::TestEnv;
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A service running in this process until `stop`.
pub struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

pub fn scheduler(env: &TestEnv, extra: &[(&str, &str)]) -> Running {
    let config = SchedulerConfig::from_source(&env.source(extra)).unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(syncfleet_scheduler::run(config, shutdown.clone()));
    Running { shutdown, handle }
}

pub fn worker(env: &TestEnv, extra: &[(&str, &str)]) -> Running {
    let config = WorkerConfig::from_source(&env.source(extra)).unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown.clone()));
    Running { shutdown, handle }
}

/// One session as the tests look at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub user_id: Uuid,
    pub status: String,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Every session, per user, in start order.
pub async fn sessions_by_user(env: &TestEnv) -> HashMap<Uuid, Vec<SessionRow>> {
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT user_id, status, scheduled_at, started_at, ended_at FROM sync_sessions ORDER BY started_at",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let mut by_user: HashMap<Uuid, Vec<SessionRow>> = HashMap::new();
    for row in rows {
        by_user.entry(row.user_id).or_default().push(row);
    }
    by_user
}

/// Users with at least `count` succeeded sessions.
pub async fn users_synced_at_least(env: &TestEnv, count: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT user_id FROM sync_sessions WHERE status = 'succeeded' \
         GROUP BY user_id HAVING count(*) >= $1) AS synced",
    )
    .bind(count)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}
