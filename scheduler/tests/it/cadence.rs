//! Users are synced once per interval, never twice at once, and only when
//! their effective status is enabled.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, organization, session_count, users, wait_until};

use crate::support::{scheduler, sessions_by_user, users_synced_at_least, worker};

#[tokio::test]
async fn a_user_is_synced_once_per_interval_and_never_twice_at_once() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let ids = users(&env.pool, org, 30, SyncStatus::Enabled, Utc::now(), true).await;
    let interval = chrono::Duration::seconds(3);
    let scheduler = scheduler(
        &env,
        &[("SYNCFLEET_SYNC_INTERVAL", "3s"), ("SYNCFLEET_SCHEDULER_TICK", "100ms")],
    );
    let worker = worker(&env, &[]);

    wait_until(Duration::from_secs(60), "every user to sync four times", || async {
        users_synced_at_least(&env, 4).await == ids.len() as i64
    })
    .await;
    scheduler.stop().await;
    worker.stop().await;

    for (user, sessions) in sessions_by_user(&env).await {
        assert!(
            sessions.iter().all(|session| session.status == "succeeded"),
            "{user}: {sessions:?}"
        );
        // After the first run every job is for the user's own slot, one
        // interval after the previous one: none skipped, none doubled.
        for pair in sessions[1..].windows(2) {
            assert_eq!(
                pair[1].scheduled_at - pair[0].scheduled_at,
                interval,
                "{user}: {sessions:?}"
            );
        }
        for pair in sessions.windows(2) {
            let ended = pair[0].ended_at.unwrap();
            assert!(
                ended <= pair[1].started_at,
                "{user}: two sessions overlapped: {sessions:?}"
            );
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn disabled_users_and_users_of_disabled_organizations_are_not_scheduled() {
    let env = TestEnv::new().await;
    let enabled_org = organization(&env.pool, AccessType::Office365, true).await;
    let disabled_org = organization(&env.pool, AccessType::Office365, false).await;
    let control = users(&env.pool, enabled_org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let mut idle = Vec::new();
    for status in [
        SyncStatus::Disabled,
        SyncStatus::Paused,
        SyncStatus::DisabledAuthError,
        SyncStatus::DisabledOtherError,
    ] {
        idle.extend(users(&env.pool, enabled_org, 2, status, Utc::now(), true).await);
    }
    let seeded_at = Utc::now();
    let in_disabled_org = users(&env.pool, disabled_org, 3, SyncStatus::Enabled, seeded_at, true).await;
    let scheduler = scheduler(
        &env,
        &[("SYNCFLEET_SYNC_INTERVAL", "1s"), ("SYNCFLEET_SCHEDULER_TICK", "100ms")],
    );
    let worker = worker(&env, &[]);

    // Users of a disabled organization keep their slot moving (so the
    // scheduler's scan does not grow with them), without ever being synced.
    wait_until(
        Duration::from_secs(30),
        "three control syncs and the others' slots moved",
        || async {
            let advanced: i64 =
                sqlx::query_scalar("SELECT count(*) FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.organization_id = $1 AND r.next_sync_at > $2")
                    .bind(disabled_org)
                    .bind(seeded_at)
                    .fetch_one(&env.pool)
                    .await
                    .unwrap();
            session_count(&env.pool, control, "succeeded").await >= 3 && advanced == 3
        },
    )
    .await;
    scheduler.stop().await;
    worker.stop().await;

    for user in idle.iter().chain(&in_disabled_org) {
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(sessions, 0, "user {user} must not be synced");
    }
    env.cleanup().await;
}
