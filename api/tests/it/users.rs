//! Reading users and switching their synchronization, one at a time and in bulk.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, users};
use uuid::Uuid;

use crate::Api;

async fn activities(env: &TestEnv, user: Uuid) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, actor FROM activities WHERE user_id = $1 ORDER BY occurred_at")
        .bind(user)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn enabling_a_suspended_user_clears_the_suspension_records_an_activity_and_makes_them_due() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let user = users(&env.pool, org, 1, SyncStatus::DisabledAuthError, later, true).await[0];
    sqlx::query("UPDATE user_runs SET consecutive_failures = 6, failure_class = 'auth' WHERE user_id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let token = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let path = format!("/v1/users/{user}/actions/enable-sync");
    let first = http(api.address, "POST", &path, Some(&token)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let result = first.json();
    assert_eq!(result["changed"], true);
    assert_eq!(result["user"]["sync_status"], "enabled");
    assert_eq!(result["user"]["effective_sync_status"], "enabled");
    let (failures, due): (i32, bool) =
        sqlx::query_as("SELECT consecutive_failures, next_sync_at <= now() FROM user_runs WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((failures, due), (0, true));

    let again = http(api.address, "POST", &path, Some(&token)).await;
    assert_eq!(
        again.json()["changed"],
        false,
        "enabling an enabled user changes nothing"
    );
    assert_eq!(
        activities(&env, user).await,
        [("sync_enabled".to_owned(), "lead@acme.test".to_owned())]
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn disabling_records_who_did_it_and_the_effective_status_follows_the_organization() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let disabled_org = organization(&env.pool, AccessType::Gmail, false).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let in_disabled_org = users(&env.pool, disabled_org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let response = http(
        api.address,
        "POST",
        &format!("/v1/users/{user}/actions/disable-sync"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let view = &response.json()["user"];
    assert_eq!(view["sync_status"], "disabled");
    assert_eq!(view["disabled_reason"], "disabled by root@example.test");
    assert_eq!(
        activities(&env, user).await,
        [("sync_disabled".to_owned(), "root@example.test".to_owned())]
    );

    let other = http(
        api.address,
        "GET",
        &format!("/v1/users/{in_disabled_org}"),
        Some(&token),
    )
    .await;
    assert_eq!(other.status, 200);
    let other = other.json();
    assert_eq!(
        (other["sync_status"].as_str(), other["effective_sync_status"].as_str()),
        (Some("enabled"), Some("organization_disabled"))
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_user_token_may_not_switch_synchronization() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [me, colleague] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), true).await[..] else {
        unreachable!()
    };
    let token = create_token(&env.pool, "user", None, Some(me), "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let own = http(
        api.address,
        "POST",
        &format!("/v1/users/{me}/actions/disable-sync"),
        Some(&token),
    )
    .await;
    assert_eq!(
        (own.status, own.json()["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let theirs = http(
        api.address,
        "POST",
        &format!("/v1/users/{colleague}/actions/disable-sync"),
        Some(&token),
    )
    .await;
    assert_eq!(theirs.status, 404);
    assert_eq!(
        http(api.address, "GET", &format!("/v1/users/{me}"), Some(&token))
            .await
            .status,
        200
    );
    assert!(activities(&env, me).await.is_empty());
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bulk_action_answers_one_result_per_user_in_order() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other_org = organization(&env.pool, AccessType::Office365, true).await;
    let enabled = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let disabled = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), true).await[0];
    let elsewhere = users(&env.pool, other_org, 1, SyncStatus::Disabled, Utc::now(), true).await[0];
    let missing = Uuid::new_v4();
    let token = create_token(&env.pool, "org_admin", Some(org), None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let selection = json!({ "user_ids": [enabled, disabled, elsewhere, missing] }).to_string();
    let response = http_with_body(
        api.address,
        "POST",
        "/v1/users/actions/enable-sync",
        Some(&token),
        &selection,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let results = response.json();
    let summary: Vec<(String, bool, Value)> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["user_id"].as_str().unwrap().to_owned(),
                item["ok"].as_bool().unwrap(),
                item["changed"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (enabled.to_string(), true, json!(false)),
            (disabled.to_string(), true, json!(true)),
            (elsewhere.to_string(), false, Value::Null),
            (missing.to_string(), false, Value::Null),
        ]
    );
    assert_eq!(results[2]["error"]["code"], "not_found");
    let untouched: String = sqlx::query_scalar("SELECT sync_status FROM users WHERE id = $1")
        .bind(elsewhere)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(untouched, "disabled", "another organization's user is not changed");

    let forced = http_with_body(
        api.address,
        "POST",
        "/v1/users/actions/force-sync",
        Some(&token),
        &json!({ "user_ids": [enabled, enabled.to_string().to_uppercase()] }).to_string(),
    )
    .await;
    assert_eq!(forced.status, 400, "the same user twice is refused: {}", forced.body);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_bulk_requests_are_refused_naming_the_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let too_many: Vec<String> = (0..1001).map(|_| Uuid::new_v4().to_string()).collect();
    let cases = [
        ("enable-sync", "{}".to_owned(), 400, "user_ids"),
        ("enable-sync", "not json".to_owned(), 400, "body"),
        ("enable-sync", json!({ "user_ids": [] }).to_string(), 400, "user_ids"),
        (
            "enable-sync",
            json!({ "user_ids": [user, "nope"] }).to_string(),
            400,
            "user_ids[1]",
        ),
        (
            "enable-sync",
            json!({ "user_ids": too_many }).to_string(),
            400,
            "user_ids",
        ),
        (
            "enable-sync",
            json!({ "user_ids": [user], "extra": 1 }).to_string(),
            400,
            "extra",
        ),
    ];
    for (action, request, status, field) in cases {
        let response = http_with_body(
            api.address,
            "POST",
            &format!("/v1/users/actions/{action}"),
            Some(&token),
            &request,
        )
        .await;
        assert_eq!(response.status, status, "{request}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{request}");
    }
    let selection = json!({ "user_ids": [user] }).to_string();
    let unknown = http_with_body(
        api.address,
        "POST",
        "/v1/users/actions/teleport",
        Some(&token),
        &selection,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"]["code"].as_str()),
        (404, Some("unknown_action"))
    );
    let status: String = sqlx::query_scalar("SELECT sync_status FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "disabled");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn users_are_added_disabled_listed_and_deleted_unless_their_mailbox_is_initialized() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Gmail, true).await;
    users(&env.pool, other, 3, SyncStatus::Enabled, Utc::now(), false).await;
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let mut created = Vec::new();
    for (name, email) in [("Ada Buyer", "ada@acme.example"), ("Bob Seller", "bob@acme.example")] {
        let response = http_with_body(
            api.address,
            "POST",
            "/v1/users",
            Some(&lead),
            &json!({"name": name, "email": email}).to_string(),
        )
        .await;
        assert_eq!(response.status, 201, "{}", response.body);
        let user = response.json();
        assert_eq!(user["sync_status"], "disabled", "new users start disabled");
        assert_eq!(user["organization_id"], json!(org.to_string()));
        created.push(user["id"].as_str().unwrap().to_owned());
    }
    let response = http_with_body(
        api.address,
        "POST",
        "/v1/users",
        Some(&lead),
        &json!({"name": "Again", "email": "ADA@acme.example"}).to_string(),
    )
    .await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (409, json!("email"))
    );
    let response = http_with_body(
        api.address,
        "POST",
        "/v1/users",
        Some(&lead),
        &json!({"name": "X", "email": "x@other.example", "organization_id": other.to_string()}).to_string(),
    )
    .await;
    assert_eq!(
        response.status, 404,
        "another organization is out of reach: {}",
        response.body
    );

    // The organization admin lists only theirs, sorted and searched.
    let response = http(api.address, "GET", "/v1/users?sort=-name", Some(&lead)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let page = response.json();
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["name"], "Bob Seller");
    let response = http(api.address, "GET", "/v1/users?q=ada", Some(&lead)).await;
    assert_eq!(response.json()["items"][0]["email"], "ada@acme.example");
    let response = http(api.address, "GET", "/v1/users?sort=password", Some(&lead)).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, json!("sort"))
    );

    // Delete: refused while the mailbox is initialized, unless forced.
    sqlx::query("UPDATE users SET mailbox_status = 'initialized' WHERE id = $1::uuid")
        .bind(&created[0])
        .execute(&env.pool)
        .await
        .unwrap();
    let path = format!("/v1/users/{}", created[0]);
    let response = http(api.address, "DELETE", &path, Some(&lead)).await;
    assert_eq!(
        (response.status, response.json()["error"]["code"].clone()),
        (409, json!("mailbox_initialized"))
    );
    let response = http(api.address, "DELETE", &format!("{path}?force=true"), Some(&lead)).await;
    assert_eq!(response.status, 204, "{}", response.body);
    let kinds = activities(&env, created[0].parse().unwrap()).await;
    assert!(kinds.iter().any(|(kind, _)| kind == "user_added"), "{kinds:?}");
    let removed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM activities WHERE kind = 'user_removed' AND organization_id = $1")
            .bind(org)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(removed, 1);
    api.stop().await;
    env.cleanup().await;
}
