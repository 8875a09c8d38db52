//! The leader's fleet-wide gauges count what the operator console shows:
//! users auto-suspended by class, dead jobs waiting for an operator, and the
//! Salesforce orgs near their reserve by the console's own rule.

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use syncfleet_common::domain::{AccessType, DeadJobStatus, SyncStatus};
use syncfleet_testkit::{TestEnv, free_port, gauge, organization, users, wait_until};
use uuid::Uuid;

use crate::support::scheduler;

async fn dead_job(env: &TestEnv, status: DeadJobStatus) {
    let resolved = (status != DeadJobStatus::Dead).then(Utc::now);
    let replay = (status == DeadJobStatus::Replayed).then(Uuid::now_v7);
    sqlx::query(
        "INSERT INTO dead_jobs (id, queue, reason, payload, status, resolved_at, replay_job_id) \
         VALUES ($1, 'test.sync', 'rejected', '\\x00', $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(status)
    .bind(resolved)
    .bind(replay)
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn usage(env: &TestEnv, org: &str, used: i64, allocation: i64, reserve_percent: i16) {
    sqlx::query(
        "INSERT INTO salesforce_org_usage (org, used, allocation, reserve_percent, observed_at) \
         VALUES ($1, $2, $3, $4, now())",
    )
    .bind(org)
    .bind(used)
    .bind(allocation)
    .bind(reserve_percent)
    .execute(&env.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_gauges_count_suspended_users_dead_jobs_and_orgs_near_the_reserve_as_the_console_does() {
    let env = TestEnv::new().await;
    let organization = organization(&env.pool, AccessType::Office365, true).await;
    let later = Utc::now() + Span::hours(1);
    users(&env.pool, organization, 2, SyncStatus::DisabledAuthError, later, true).await;
    users(&env.pool, organization, 1, SyncStatus::DisabledOtherError, later, true).await;
    users(&env.pool, organization, 1, SyncStatus::Disabled, later, true).await;
    dead_job(&env, DeadJobStatus::Dead).await;
    dead_job(&env, DeadJobStatus::Replayed).await;
    dead_job(&env, DeadJobStatus::Discarded).await;
    // 10% of 15 kept: the fleet may use 13, and 90% of that is 11.7. The
    // exact allocation less the reserve (13.5) would leave 12 short of it.
    usage(&env, "near.my.salesforce.com", 12, 15, 10).await;
    usage(&env, "below.my.salesforce.com", 11, 15, 10).await;
    usage(&env, "far.my.salesforce.com", 100, 15_000, 10).await;

    let port = free_port();
    let leader = scheduler(
        &env,
        &[
            ("SYNCFLEET_OPS_LISTEN", &format!("127.0.0.1:{port}")),
            ("SYNCFLEET_SWEEP_INTERVAL", "200ms"),
        ],
    );
    let expected = [
        ("syncfleet_salesforce_orgs_near_reserve", 1),
        ("syncfleet_dead_jobs_waiting", 1),
        ("syncfleet_users_auto_suspended{class=\"auth\"}", 2),
        ("syncfleet_users_auto_suspended{class=\"throttling\"}", 0),
        ("syncfleet_users_auto_suspended{class=\"other\"}", 1),
    ];
    wait_until(Duration::from_secs(30), "the leader's gauges", || async {
        for (name, value) in expected {
            if gauge(port, name).await != Some(value) {
                return false;
            }
        }
        true
    })
    .await;
    leader.stop().await;
    env.cleanup().await;
}
