//! Customization pushes on the worker binary: killed with a batch in
//! flight, the push completes on another worker with every recipient
//! applied exactly once.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    queue::{JobEnvelope, Route},
};
use syncfleet_testkit::{TestEnv, organization, stop_gracefully, users, wait_until};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(120);

/// A recorded push, as the API records one.
pub struct Recorded {
    pub push_id: Uuid,
    pub pusher: Uuid,
    pub recipients: Vec<Uuid>,
}

/// Records a push of `pusher`'s saved customization (saving one first) to
/// `recipients`, as `POST /v1/pushes` does, and publishes its job.
pub async fn record_push(env: &TestEnv, organization_id: Uuid, pusher: Uuid, recipients: &[Uuid]) -> Recorded {
    let document = json!({"objects": {"Contact": {"visible": true, "fields": ["Name"]}}});
    sqlx::query("INSERT INTO customizations (user_id, document) VALUES ($1, $2)")
        .bind(pusher)
        .bind(&document)
        .execute(&env.pool)
        .await
        .unwrap();
    let push_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO pushes (id, organization_id, pusher_user_id, requested_by, customization_version, document, filter, total) \
         VALUES ($1, $2, $3, 'lead@acme.example', 1, $4, '{\"all\": true}', $5)",
    )
    .bind(push_id)
    .bind(organization_id)
    .bind(pusher)
    .bind(&document)
    .bind(i32::try_from(recipients.len()).unwrap())
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO push_recipients (push_id, user_id) SELECT $1, unnest($2::uuid[])")
        .bind(push_id)
        .bind(recipients)
        .execute(&env.pool)
        .await
        .unwrap();
    Recorded {
        push_id,
        pusher,
        recipients: recipients.to_vec(),
    }
}

/// Publishes a push's job on the push queue.
pub async fn publish(env: &TestEnv, push_id: Uuid) {
    env.publisher()
        .await
        .publish(Route::Push, &[JobEnvelope::push(push_id, Utc::now())])
        .await
        .unwrap();
}

/// The push's status, applied and failed counts.
pub async fn progress(env: &TestEnv, push_id: Uuid) -> (String, i32, i32) {
    sqlx::query_as("SELECT status, applied, failed FROM pushes WHERE id = $1")
        .bind(push_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_push_leaves_it_to_another_that_applies_every_recipient_exactly_once() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let pusher = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let mut recipients = users(&env.pool, org, 20_000, SyncStatus::Disabled, Utc::now(), false).await;
    recipients.sort();
    let push = record_push(&env, org, pusher, &recipients).await;

    // Batches take recipients in id order, 500 at a time: holding the lock
    // of the 5,001st recipient's customization stops the worker inside its
    // eleventh batch, ten batches committed.
    let blocker = recipients[5_000];
    sqlx::query("INSERT INTO customizations (user_id, version, document) VALUES ($1, 3, '{}')")
        .bind(blocker)
        .execute(&env.pool)
        .await
        .unwrap();
    let mut lock = PgConnection::connect(&env.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT 1 FROM customizations WHERE user_id = $1 FOR UPDATE")
        .bind(blocker)
        .execute(&mut lock)
        .await
        .unwrap();

    let settings = [("SYNCFLEET_PUSH_BATCH_SIZE", "500")];
    let mut first = env.spawn("syncfleet-worker", &settings);
    publish(&env, push.push_id).await;
    wait_until(LIMIT, "ten batches, and the eleventh waiting", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        progress(&env, push.push_id).await.1 == 5_000 && waiting == 1
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    // The dead worker's batch never commits.
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    assert_eq!(progress(&env, push.push_id).await, ("running".to_owned(), 5_000, 0));

    let second = env.spawn("syncfleet-worker", &settings);
    wait_until(LIMIT, "the push to complete", || async {
        progress(&env, push.push_id).await.0 == "completed"
    })
    .await;
    stop_gracefully(second);

    assert_eq!(progress(&env, push.push_id).await, ("completed".to_owned(), 20_000, 0));
    let per_recipient: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM activities a WHERE a.user_id = r.user_id AND a.kind = 'customization_pushed'), \
                (SELECT count(*) FROM notifications n WHERE n.user_id = r.user_id), \
                (SELECT version FROM customizations c WHERE c.user_id = r.user_id), \
                (SELECT count(*) FROM push_recipients p WHERE p.user_id = r.user_id AND p.status = 'applied') \
         FROM unnest($1::uuid[]) AS r(user_id) ORDER BY r.user_id",
    )
    .bind(&push.recipients)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for (index, counts) in per_recipient.iter().enumerate() {
        let version = if recipients[index] == blocker { 4 } else { 1 };
        assert_eq!(*counts, (1, 1, version, 1), "recipient {index}");
    }
    let emails: Vec<(Vec<String>, String)> =
        sqlx::query_as("SELECT recipients, subject FROM email_outbox WHERE kind = 'push_completed'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let pusher_email = format!("{}@example.test", push.pusher);
    assert_eq!(
        emails,
        [(
            vec![pusher_email, "lead@acme.example".to_owned()],
            "Customization push completed: 20000 of 20000 users updated".to_owned()
        )]
    );
    let documents: Vec<Value> =
        sqlx::query_scalar("SELECT DISTINCT document FROM customizations WHERE source = 'pushed'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(documents.len(), 1);
    env.cleanup().await;
}
