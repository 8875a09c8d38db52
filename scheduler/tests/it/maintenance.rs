//! Recovery sweeps and partition retention.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::{
    db::{self, Retention},
    domain::{AccessType, SyncStatus},
};
use syncfleet_testkit::{TestEnv, organization, users};
use uuid::Uuid;

#[tokio::test]
async fn the_sweep_abandons_sessions_whose_lease_expired_and_recovers_lost_jobs() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [crashed, lost, fresh] = users(&env.pool, org, 3, SyncStatus::Enabled, Utc::now(), true).await[..] else {
        unreachable!()
    };
    // A session running on its run row (its row is written when it ends)
    // whose worker died: its lease expired a minute ago.
    let session = Uuid::now_v7();
    sqlx::query(
        "UPDATE user_runs SET running_session_id = $2, lease_expires_at = now() - interval '1 minute', \
             running_started_at = now() - interval '5 minutes', running_job_id = gen_random_uuid(), \
             running_attempt = 1, running_trigger = 'cadence', running_scheduled_at = now() - interval '6 minutes', \
             running_worker_id = 'dead-worker', running_organization_id = $3 \
         WHERE user_id = $1",
    )
    .bind(crashed)
    .bind(session)
    .bind(org)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE user_runs SET queued_job_id = gen_random_uuid(), queued_at = now() - interval '3 hours' WHERE user_id = $1",
    )
    .bind(lost)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE user_runs SET queued_job_id = gen_random_uuid(), queued_at = now() WHERE user_id = $1")
        .bind(fresh)
        .execute(&env.pool)
        .await
        .unwrap();

    let (abandoned, recovered) = syncfleet_scheduler::sweep(&env.pool, Duration::from_secs(7200))
        .await
        .unwrap();
    assert_eq!((abandoned, recovered), (1, 1));
    let (status, worker, ended): (String, String, bool) =
        sqlx::query_as("SELECT status, worker_id, ended_at IS NOT NULL FROM sync_sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), worker.as_str(), ended),
        ("abandoned", "dead-worker", true)
    );
    let (running, last): (Option<Uuid>, Option<String>) = sqlx::query_as(
        "SELECT coalesce(running_session_id, running_job_id), last_session_status FROM user_runs WHERE user_id = $1",
    )
    .bind(crashed)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (running, last.as_deref()),
        (None, Some("abandoned")),
        "the lease is released"
    );
    let queued: Vec<(Uuid, bool)> =
        sqlx::query_as("SELECT user_id, queued_job_id IS NOT NULL FROM user_runs WHERE user_id = ANY($1)")
            .bind([lost, fresh])
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(
        queued.contains(&(lost, false)) && queued.contains(&(fresh, true)),
        "{queued:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn maintenance_creates_partitions_ahead_and_drops_whole_partitions_past_retention() {
    let env = TestEnv::new().await;
    let partitions = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'sync_sessions' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // An old partition, as a fleet that has run for a while has.
    sqlx::query("SELECT syncfleet_ensure_partitions('sync_sessions', 'day', current_date - 40, current_date - 38)")
        .execute(&env.pool)
        .await
        .unwrap();
    let old = format!(
        "sync_sessions_p{}",
        (Utc::now() - chrono::Duration::days(40)).format("%Y%m%d")
    );
    assert!(partitions(env.pool.clone()).await.contains(&old));

    let retention = Retention {
        sessions_days: 30,
        logs_days: 7,
        activities_days: 365,
        ahead_days: 14,
    };
    let report = db::maintain_partitions(&env.pool, retention).await.unwrap();
    let after = partitions(env.pool.clone()).await;
    assert!(!after.contains(&old), "{old} is past retention");
    let ahead = format!(
        "sync_sessions_p{}",
        (Utc::now() + chrono::Duration::days(14)).format("%Y%m%d")
    );
    assert!(after.contains(&ahead), "{ahead} should exist: {after:?}");
    assert!(report.created > 0 && report.dropped >= 2, "{report:?}");
    env.cleanup().await;
}
