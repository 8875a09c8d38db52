//! Customization pushes through the api, the broker and a real worker:
//! selected users and all users with filters, progress, permissions (a user
//! of another organization is never reached) and the completion email in
//! the outbox.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users, wait_until};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Api, send};

const LIMIT: Duration = Duration::from_secs(30);

/// A worker in this process until `stop`.
pub struct Worker {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    pub fn start(env: &TestEnv) -> Self {
        let config = WorkerConfig::from_source(&env.source(&[("SYNCFLEET_PUSH_BATCH_SIZE", "2")])).unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown.clone()));
        Self { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// The document pushers save.
pub fn pushed_document() -> Value {
    json!({
        "schema_version": 1,
        "objects": {"Contact": {"visible": true, "fields": ["Name", "Phone"], "order": 1}},
        "behavior": {"auto_open": true}
    })
}

/// An organization's admin as an add-in user (who may push), with a user
/// token and a saved customization; returns the user and the token.
pub async fn pusher(env: &TestEnv, api: &Api, org: Uuid) -> (Uuid, String) {
    let pusher = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    sqlx::query("UPDATE users SET role = 'org_admin', name = 'Ada Pusher', notification_email = 'ada@pusher.example' WHERE id = $1")
        .bind(pusher)
        .execute(&env.pool)
        .await
        .unwrap();
    let token = create_token(&env.pool, "user", None, Some(pusher), "ada@pusher.example")
        .await
        .unwrap();
    let saved = send(
        api,
        "PUT",
        &format!("/v1/users/{pusher}/customization"),
        &token,
        &json!({"document": pushed_document()}),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    (pusher, token)
}

/// Waits for a push to complete and answers its view.
pub async fn completed(api: &Api, token: &str, push: &str) -> Value {
    let path = format!("/v1/pushes/{push}");
    wait_until(LIMIT, "the push to complete", || async {
        http(api.address, "GET", &path, Some(token)).await.json()["status"] == "completed"
    })
    .await;
    http(api.address, "GET", &path, Some(token)).await.json()
}

async fn customization(env: &TestEnv, user: Uuid) -> Option<(i64, String, Value)> {
    sqlx::query_as("SELECT version, source, document FROM customizations WHERE user_id = $1")
        .bind(user)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

async fn count(env: &TestEnv, sql: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(user).fetch_one(&env.pool).await.unwrap()
}

async fn rows(env: &TestEnv, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_push_to_selected_colleagues_replaces_their_customization_notifies_them_and_emails_the_pusher() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (pusher, token) = pusher(&env, &api, org).await;
    let [first, second, third, bystander] = users(&env.pool, org, 4, SyncStatus::Enabled, Utc::now(), false).await[..]
    else {
        unreachable!()
    };
    // A recipient with a customization of their own: it is replaced, its
    // version grows.
    sqlx::query("INSERT INTO customizations (user_id, version, document) VALUES ($1, 4, '{\"mine\": true}')")
        .bind(first)
        .execute(&env.pool)
        .await
        .unwrap();
    let worker = Worker::start(&env);

    let response = send(
        &api,
        "POST",
        "/v1/pushes",
        &token,
        &json!({"user_ids": [first, second, third]}),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    let queued = response.json();
    assert_eq!(
        (
            &queued["total"],
            &queued["customization_version"],
            &queued["all"],
            &queued["pusher_user_id"]
        ),
        (&json!(3), &json!(1), &json!(false), &json!(pusher))
    );
    let view = completed(&api, &token, queued["id"].as_str().unwrap()).await;
    assert_eq!(
        (&view["total"], &view["applied"], &view["failed"], &view["pending"]),
        (&json!(3), &json!(3), &json!(0), &json!(0)),
        "{view}"
    );
    assert!(view["finished_at"].is_string());

    assert_eq!(
        customization(&env, first).await,
        Some((5, "pushed".to_owned(), pushed_document()))
    );
    for recipient in [second, third] {
        assert_eq!(
            customization(&env, recipient).await,
            Some((1, "pushed".to_owned(), pushed_document()))
        );
    }
    assert_eq!(customization(&env, bystander).await, None, "not selected, not reached");
    for recipient in [first, second, third] {
        let notes: Vec<(String, String, Value)> =
            sqlx::query_as("SELECT kind, body, payload FROM notifications WHERE user_id = $1")
                .bind(recipient)
                .fetch_all(&env.pool)
                .await
                .unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].0, "customization_pushed");
        assert!(notes[0].1.contains("Restart Outlook"), "{notes:?}");
        assert_eq!(notes[0].2["push_id"], queued["id"]);
        let activities = count(
            &env,
            "SELECT count(*) FROM activities WHERE user_id = $1 AND kind = 'customization_pushed'",
            recipient,
        )
        .await;
        assert_eq!(activities, 1);
    }
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM activities WHERE user_id = $1 AND kind = 'customization_push_queued'",
            pusher
        )
        .await,
        1
    );
    let emails: Vec<(Vec<String>, String, String)> =
        sqlx::query_as("SELECT recipients, subject, body_text FROM email_outbox WHERE kind = 'push_completed'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].0, ["ada@pusher.example"]);
    assert_eq!(emails[0].1, "Customization push completed: 3 of 3 users updated");
    assert!(emails[0].2.contains("Applied: 3\nFailed: 0"), "{}", emails[0].2);

    worker.stop().await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_push_to_all_reaches_only_the_matching_users_of_the_pushers_organization() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other_org = organization(&env.pool, AccessType::Office365, true).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (pusher, _) = pusher(&env, &api, org).await;
    // Product users have a Salesforce authorization (`configured`).
    let product = users(&env.pool, org, 3, SyncStatus::Enabled, Utc::now(), true).await;
    let others = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await;
    let foreign = users(&env.pool, other_org, 3, SyncStatus::Enabled, Utc::now(), true).await;
    sqlx::query("UPDATE users SET name = 'Maria Garcia' WHERE id = ANY($1)")
        .bind([product[0], others[0], foreign[0]])
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET role = 'org_admin' WHERE id = $1")
        .bind(product[1])
        .execute(&env.pool)
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "root@fleet.example")
        .await
        .unwrap();
    let worker = Worker::start(&env);
    let push = |filter: Value| {
        let (api, admin, env) = (&api, &admin, &env);
        async move {
            let response = send(
                api,
                "POST",
                "/v1/pushes",
                admin,
                &json!({"all": true, "from_user_id": pusher, "filter": filter}),
            )
            .await;
            assert_eq!(response.status, 202, "{}", response.body);
            let id = response.json()["id"].as_str().unwrap().to_owned();
            let view = completed(api, admin, &id).await;
            let reached: Vec<Uuid> = sqlx::query_scalar(
                "SELECT user_id FROM push_recipients WHERE push_id = $1 AND status = 'applied' ORDER BY user_id",
            )
            .bind(id.parse::<Uuid>().unwrap())
            .fetch_all(&env.pool)
            .await
            .unwrap();
            (view, reached)
        }
    };
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids
    };

    let (view, reached) = push(json!({"product_users_only": true, "name": "garcia"})).await;
    assert_eq!(reached, [product[0]], "{view}");
    assert_eq!(view["filter"], json!({"product_users_only": true, "name": "garcia"}));
    let (_, reached) = push(json!({"role": "org_admin"})).await;
    assert_eq!(reached, [product[1]], "the pusher is never a recipient");
    let (_, reached) = push(json!({"email": "@example.test"})).await;
    assert_eq!(reached, sorted([&product[..], &others[..]].concat()));
    let (view, reached) = push(json!({})).await;
    assert_eq!(reached, sorted([&product[..], &others[..]].concat()));
    assert_eq!((&view["total"], &view["applied"]), (&json!(5), &json!(5)));

    for user in &foreign {
        assert_eq!(
            customization(&env, *user).await,
            None,
            "another organization is never reached"
        );
        assert_eq!(
            count(&env, "SELECT count(*) FROM notifications WHERE user_id = $1", *user).await,
            0
        );
    }
    // "Only product users" now also finds the users who received a push.
    let (_, reached) = push(json!({"product_users_only": true})).await;
    assert_eq!(reached, sorted([&product[..], &others[..]].concat()));

    worker.stop().await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn pushes_stay_inside_the_organization_and_are_refused_whole_with_nothing_written() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other_org = organization(&env.pool, AccessType::Office365, true).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (pusher, pusher_token) = pusher(&env, &api, org).await;
    let [colleague, unsaved] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let foreign = users(&env.pool, other_org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let plain_user = create_token(&env.pool, "user", None, Some(colleague), "colleague@example.test")
        .await
        .unwrap();
    let foreign_admin = create_token(&env.pool, "org_admin", Some(other_org), None, "boss@other.example")
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    sqlx::query("UPDATE users SET role = 'org_admin' WHERE id = $1")
        .bind(unsaved)
        .execute(&env.pool)
        .await
        .unwrap();
    let unsaved_token = create_token(&env.pool, "user", None, Some(unsaved), "unsaved@example.test")
        .await
        .unwrap();

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        // A plain user may not push (the seed's "special permissions").
        (&plain_user, json!({"all": true}), 403, "forbidden"),
        // A user pushes their own customization only.
        (
            &pusher_token,
            json!({"all": true, "from_user_id": colleague}),
            403,
            "forbidden",
        ),
        // Another organization's user is not there, listed or as the pusher.
        (
            &pusher_token,
            json!({"user_ids": [colleague, foreign]}),
            404,
            "user_ids[1]",
        ),
        (
            &foreign_admin,
            json!({"all": true, "from_user_id": pusher}),
            404,
            "from_user_id",
        ),
        (&lead, json!({"all": true}), 400, "from_user_id"),
        (&unsaved_token, json!({"all": true}), 409, "no_saved_customization"),
        (&pusher_token, json!({"user_ids": [pusher]}), 409, "no_recipients"),
        (
            &pusher_token,
            json!({"all": true, "filter": {"group": "Nobody"}}),
            400,
            "filter.group",
        ),
        (
            &pusher_token,
            json!({"all": true, "filter": {"profile": "x"}}),
            400,
            "filter.profile",
        ),
        (&pusher_token, json!({"user_ids": [], "all": false}), 400, "user_ids"),
    ];
    for (token, request, status, expected) in cases {
        let response = send(&api, "POST", "/v1/pushes", token, &request).await;
        assert_eq!(response.status, status, "{request}: {}", response.body);
        let error = &response.json()["error"];
        assert!(
            error["field"] == expected || error["code"] == expected,
            "{request}: {}",
            response.body
        );
    }
    assert_eq!(rows(&env, "pushes").await, 0);
    assert_eq!(rows(&env, "push_recipients").await, 0);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM activities WHERE user_id = $1 AND kind LIKE 'customization_push%'",
            pusher
        )
        .await,
        0
    );

    // The organization's admin pushes on the pusher's behalf; another
    // organization's admin does not see the push.
    let response = send(
        &api,
        "POST",
        "/v1/pushes",
        &lead,
        &json!({"all": true, "from_user_id": pusher}),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    let path = format!("/v1/pushes/{}", response.json()["id"].as_str().unwrap());
    assert_eq!(http(api.address, "GET", &path, Some(&pusher_token)).await.status, 200);
    assert_eq!(http(api.address, "GET", &path, Some(&foreign_admin)).await.status, 404);
    assert_eq!(http(api.address, "GET", &path, Some(&plain_user)).await.status, 404);
    let recipients: Vec<Uuid> = sqlx::query_scalar("SELECT user_id FROM push_recipients ORDER BY user_id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let mut expected = vec![colleague, unsaved];
    expected.sort();
    assert_eq!(recipients, expected, "never the pusher, never another organization");
    api.stop().await;
    env.cleanup().await;
}
