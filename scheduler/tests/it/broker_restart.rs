//! The broker restarts during a publishing burst: nothing is lost, and the
//! scheduler and workers reconnect on their own.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{PrivateBroker, TestEnv, organization, users, wait_until};

use crate::support::{scheduler, users_synced_at_least, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarts_during_a_publishing_burst_and_no_job_is_lost() {
    let broker = PrivateBroker::start().await;
    let env = TestEnv::with_broker(&broker.url()).await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let count = 10_000;
    users(&env.pool, org, count, SyncStatus::Enabled, Utc::now(), true).await;
    let scheduler = scheduler(
        &env,
        &[
            ("SYNCFLEET_SYNC_INTERVAL", "1h"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
            ("SYNCFLEET_SCHEDULER_BATCH", "250"),
        ],
    );
    let worker = worker(&env, &[("SYNCFLEET_WORKER_CONCURRENCY", "64")]);
    wait_until(Duration::from_secs(60), "the burst to start", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL OR last_session_id IS NOT NULL",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap()
            > 0
    })
    .await;

    broker.restart().await;
    wait_until(Duration::from_secs(240), "every user to be synced", || async {
        users_synced_at_least(&env, 1).await == count as i64
    })
    .await;
    scheduler.stop().await;
    worker.stop().await;

    // A user whose hashed slot fell inside the test syncs again, for that
    // slot; no slot may be synced twice.
    let doubled_slots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT user_id, scheduled_at FROM sync_sessions WHERE status = 'succeeded' \
         GROUP BY user_id, scheduled_at HAVING count(*) > 1) AS doubled",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(doubled_slots, 0);
    env.cleanup().await;
    drop(broker);
}
