//! A scheduler started while PostgreSQL is unreachable: alive, not ready,
//! waiting for it; scheduling once it answers; stopped cleanly by SIGTERM
//! meanwhile.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{
    Forwarder, TestEnv, becomes_ready, free_port, organization, stays_alive_unready, stop_gracefully, users, wait_until,
};

/// Starts a scheduler whose database is behind `database`, its probes on
/// `ops_port`.
fn spawn_scheduler(env: &TestEnv, database: &Forwarder, ops_port: u16) -> std::process::Child {
    env.spawn(
        "syncfleet-scheduler",
        &[
            ("SYNCFLEET_DATABASE_URL", &database.url(&env.database_url)),
            ("SYNCFLEET_OPS_LISTEN", &format!("127.0.0.1:{ops_port}")),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
            ("SYNCFLEET_LEADER_LEASE", "2s"),
        ],
    )
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_started_before_postgresql_waits_for_it_then_schedules() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let database = Forwarder::to_url(&env.database_url);
    let ops_port = free_port();
    let mut scheduler = spawn_scheduler(&env, &database, ops_port);
    stays_alive_unready(&mut scheduler, ops_port).await;

    database.open().await;
    becomes_ready(ops_port).await;
    wait_until(Duration::from_secs(30), "the due user's job", || async {
        sqlx::query_scalar::<_, Option<uuid::Uuid>>("SELECT queued_job_id FROM user_runs WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(scheduler.try_wait().unwrap().is_none(), "the scheduler exited");
    stop_gracefully(scheduler);
    env.cleanup().await;
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_postgresql_stops_the_scheduler_cleanly() {
    let env = TestEnv::new().await;
    let database = Forwarder::to_url(&env.database_url);
    let ops_port = free_port();
    let mut scheduler = spawn_scheduler(&env, &database, ops_port);
    stays_alive_unready(&mut scheduler, ops_port).await;
    stop_gracefully(scheduler);
    env.cleanup().await;
}
