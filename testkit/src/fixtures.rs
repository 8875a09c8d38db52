//! Organizations and users in the shapes the tests need, inserted in bulk.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use syncfleet_common::domain::{AccessType, SyncStatus};
use uuid::Uuid;

/// Creates an organization and returns its id.
pub async fn organization(pool: &PgPool, access_type: AccessType, sync_enabled: bool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(format!("ext-{}", id.simple()))
    .bind(format!("Organization {}", &id.simple().to_string()[24..]))
    .bind(access_type.as_str())
    .bind(sync_enabled)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// Creates `count` users of an organization with the given status, due at
/// `next_sync_at`, with mailbox and CRM configured (or not); returns their ids.
///
/// "Configured" means the credential rows exist: this build's sync work checks
/// that they are there and never decrypts them, so the fixture stores opaque
/// bytes rather than real ciphertexts.
pub async fn users(
    pool: &PgPool,
    organization_id: Uuid,
    count: usize,
    status: SyncStatus,
    next_sync_at: DateTime<Utc>,
    configured: bool,
) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    // One transaction: a scheduler never sees the users due at their
    // creation (their run rows' default) rather than at `next_sync_at`.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, sync_status, salesforce_instance_url) \
         SELECT id, $2, 'User ' || left(id::text, 8), id::text || '@example.test', $3, \
                CASE WHEN $4 THEN 'https://example.my.salesforce.test' END \
         FROM UNNEST($1::uuid[]) AS id",
    )
    .bind(&ids)
    .bind(organization_id)
    .bind(status.as_str())
    .bind(configured)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE user_runs SET next_sync_at = $2 WHERE user_id = ANY($1)")
        .bind(&ids)
        .bind(next_sync_at)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    if configured {
        sqlx::query(
            "INSERT INTO credentials (id, user_id, kind, key_version, nonce, ciphertext) \
             SELECT gen_random_uuid(), user_id, kind, 1, '\\x00'::bytea, '\\x00'::bytea \
             FROM UNNEST($1::uuid[]) AS user_id, \
                  UNNEST(ARRAY['mailbox_refresh_token', 'crm_refresh_token']) AS kind",
        )
        .bind(&ids)
        .execute(pool)
        .await
        .unwrap();
    }
    ids
}

/// Marks users as queued with these cadence jobs, as the scheduler would.
pub async fn mark_queued(pool: &PgPool, users: &[Uuid], jobs: &[Uuid]) {
    sqlx::query(
        "UPDATE user_runs r SET queued_job_id = d.job, queued_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS d(id, job) WHERE r.user_id = d.id",
    )
    .bind(users)
    .bind(jobs)
    .execute(pool)
    .await
    .unwrap();
}

/// Sessions of a user by status.
pub async fn session_count(pool: &PgPool, user_id: Uuid, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync_sessions_all WHERE user_id = $1 AND status = $2")
        .bind(user_id)
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// All sessions with a status.
pub async fn sessions_with_status(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync_sessions_all WHERE status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until a backend other than `after` is blocked on a lock while it
/// runs a statement containing `statement` (a service writing a row the test
/// holds); answers its pid.
pub async fn blocked_on_lock(pool: &PgPool, statement: &str, after: Option<i32>) -> i32 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let blocked: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND strpos(query, $2) > 0 \
             AND pid IS DISTINCT FROM $1 LIMIT 1",
        )
        .bind(after)
        .bind(statement)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(blocked) = blocked {
            return blocked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {statement:?} waited on the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits as [`blocked_on_lock`] does, then terminates that backend: the
/// connection resets under the service, as when PostgreSQL restarts.
/// Answers its pid.
pub async fn reset_blocked(pool: &PgPool, statement: &str, after: Option<i32>) -> i32 {
    let pid = blocked_on_lock(pool, statement, after).await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(terminated, "the blocked backend {pid} was not terminated");
    pid
}
