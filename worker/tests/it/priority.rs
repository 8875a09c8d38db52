//! Force syncs jump the cadence backlog; poison messages are dead-lettered.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::{
    domain::{AccessType, SyncStatus, Trigger},
    queue::{JobEnvelope, Route},
};
use syncfleet_testkit::{TestEnv, mark_queued, organization, session_count, sessions_with_status, users, wait_until};

use crate::support::{PanicsFor, Slow, force_sync, start};

#[tokio::test]
async fn a_force_sync_overtakes_a_backlog_of_10000_cadence_jobs() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let backlog_users = users(&env.pool, org, 10_000, SyncStatus::Enabled, Utc::now(), true).await;
    let forced_user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let jobs: Vec<JobEnvelope> = backlog_users
        .iter()
        .map(|user| JobEnvelope::sync(*user, Trigger::Cadence, Utc::now()))
        .collect();
    let job_ids: Vec<uuid::Uuid> = jobs.iter().map(|job| job.job_id).collect();
    mark_queued(&env.pool, &backlog_users, &job_ids).await;
    let publisher = env.publisher().await;
    for chunk in jobs.chunks(1000) {
        publisher.publish(Route::Cadence, chunk).await.unwrap();
    }
    assert_eq!(env.ready(Route::Cadence).await, 10_000);

    // Four cadence jobs at a time, 50 ms each: the backlog takes minutes.
    let worker = start(
        &env,
        Slow(Duration::from_millis(50)),
        &[
            ("SYNCFLEET_WORKER_CONCURRENCY", "4"),
            ("SYNCFLEET_WORKER_PRIORITY_CONCURRENCY", "4"),
        ],
    );
    wait_until(Duration::from_secs(60), "the backlog to start draining", || async {
        sessions_with_status(&env.pool, "succeeded").await >= 20
    })
    .await;

    force_sync(&env, forced_user).await;
    wait_until(Duration::from_secs(60), "the force sync to complete", || async {
        session_count(&env.pool, forced_user, "succeeded").await == 1
    })
    .await;
    let cadence_done: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE trigger = 'cadence'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let still_waiting = env.ready(Route::Cadence).await;
    assert!(
        cadence_done < 1_000,
        "the force sync waited behind {cadence_done} cadence jobs"
    );
    assert!(
        still_waiting > 9_000,
        "only {still_waiting} cadence jobs were still waiting"
    );

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_the_delivery_limit_and_others_keep_syncing() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let poisoned = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let healthy = users(&env.pool, org, 5, SyncStatus::Enabled, Utc::now(), true).await;
    let delivery_limit = i64::from(env.common().delivery_limit);
    let worker = start(&env, PanicsFor(poisoned), &[]);

    let poison_job = force_sync(&env, poisoned).await;
    // As the api records it, so the job's requester sees the outcome.
    sqlx::query(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by) \
         VALUES ($1, 'force-sync', $2, $3, 'test')",
    )
    .bind(poison_job.job_id)
    .bind(org)
    .bind(poisoned)
    .execute(&env.pool)
    .await
    .unwrap();
    for user in &healthy {
        force_sync(&env, *user).await;
    }
    wait_until(
        Duration::from_secs(60),
        "the poison job to be dead-lettered",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_jobs WHERE job_id = $1")
                .bind(poison_job.job_id)
                .fetch_one(&env.pool)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    for user in &healthy {
        wait_until(Duration::from_secs(30), "the healthy users to sync", || async {
            session_count(&env.pool, *user, "succeeded").await == 1
        })
        .await;
    }

    let (reason, queue): (String, String) = sqlx::query_as("SELECT reason, queue FROM dead_jobs WHERE job_id = $1")
        .bind(poison_job.job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(reason, "delivery_limit");
    assert!(queue.ends_with(".sync.priority"), "{queue}");
    // Each crashed run ends as abandoned; the broker stops after the limit.
    let crashed = session_count(&env.pool, poisoned, "abandoned").await;
    assert!(
        (delivery_limit..=delivery_limit + 1).contains(&crashed),
        "{crashed} crashed runs for a delivery limit of {delivery_limit}"
    );
    let issue: String = sqlx::query_scalar("SELECT message FROM sync_issues WHERE user_id = $1 AND source = 'engine'")
        .bind(poisoned)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(issue.contains("dead-lettered (delivery_limit)"), "{issue}");
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM admin_jobs WHERE id = $1")
            .bind(poison_job.job_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("dead-lettered"));

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_unreadable_message_goes_straight_to_the_dead_letter_queue() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let worker = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);

    env.publisher()
        .await
        .publish_bytes(Route::Priority, b"{\"version\": 1, \"job\": \"?\"")
        .await
        .unwrap();
    force_sync(&env, user).await;
    wait_until(Duration::from_secs(30), "the garbage to be recorded", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_jobs WHERE job_id IS NULL AND reason = 'rejected'")
            .fetch_one(&env.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    wait_until(Duration::from_secs(30), "the user to sync", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;

    worker.stop().await;
    env.cleanup().await;
}
