//! Plans: added by admins, listed for those who assign them, assigned and
//! cleared one user at a time or through `PATCH /v1/users/{id}`.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, users};

use crate::Api;

#[tokio::test]
async fn plans_are_added_by_admins_and_listed_for_organization_admins() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let post = |token: &str, payload: Value| {
        let token = token.to_owned();
        let address = api.address;
        async move { http_with_body(address, "POST", "/v1/plans", Some(&token), &payload.to_string()).await }
    };

    let response = post(&admin, json!({"code": "pro", "name": "Professional"})).await;
    assert_eq!(response.status, 201, "{}", response.body);
    let plan = response.json();
    assert_eq!(
        (plan["code"].clone(), plan["name"].clone()),
        (json!("pro"), json!("Professional"))
    );

    for (payload, status, field) in [
        (json!({"code": "pro", "name": "Again"}), 409, "code"),
        (json!({"code": "Pro Plan", "name": "Spaces"}), 400, "code"),
        (json!({"code": "", "name": "Empty"}), 400, "code"),
        (json!({"code": "basic", "name": " "}), 400, "name"),
        (json!({"code": "basic"}), 400, "name"),
        (json!({"code": "basic", "name": "Basic", "price": 3}), 400, "price"),
    ] {
        let response = post(&admin, payload.clone()).await;
        assert_eq!(response.status, status, "{payload}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{payload}");
    }
    for token in [&lead, &own] {
        let response = post(token, json!({"code": "basic", "name": "Basic"})).await;
        assert_eq!(response.status, 403, "{}", response.body);
    }
    let response = http(api.address, "GET", "/v1/plans", Some(&lead)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!([plan]));
    assert_eq!(http(api.address, "GET", "/v1/plans", Some(&own)).await.status, 403);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn change_plan_assigns_and_clears_a_plan_with_an_activity() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let created = http_with_body(
        api.address,
        "POST",
        "/v1/plans",
        Some(&admin),
        &json!({"code": "enterprise", "name": "Enterprise"}).to_string(),
    )
    .await;
    let plan = created.json()["id"].as_str().unwrap().to_owned();
    let action = format!("/v1/users/{user}/actions/change-plan");
    let send = |token: &str, path: &str, method: &str, payload: Value| {
        let (token, path, method) = (token.to_owned(), path.to_owned(), method.to_owned());
        let address = api.address;
        async move { http_with_body(address, &method, &path, Some(&token), &payload.to_string()).await }
    };

    let response = send(&own, &action, "POST", json!({"plan_id": plan})).await;
    assert_eq!(response.status, 403, "{}", response.body);
    let response = send(&lead, &action, "POST", json!({"plan_id": uuid::Uuid::now_v7()})).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (404, json!("plan_id"))
    );

    let response = send(&lead, &action, "POST", json!({"plan_id": plan})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(
        (answer["changed"].clone(), answer["user"]["plan_id"].clone()),
        (json!(true), json!(plan))
    );
    let again = send(&lead, &action, "POST", json!({"plan_id": plan})).await;
    assert_eq!(again.json()["changed"], false);
    let cleared = send(&lead, &format!("/v1/users/{user}"), "PATCH", json!({"plan_id": null})).await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(cleared.json()["plan_id"], Value::Null);

    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, details FROM activities WHERE user_id = $1 ORDER BY occurred_at, id")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        [
            ("plan_assigned".to_owned(), "plan \"Enterprise\" (was none)".to_owned()),
            ("plan_assigned".to_owned(), "plan none (was \"Enterprise\")".to_owned()),
        ]
    );
    api.stop().await;
    env.cleanup().await;
}
