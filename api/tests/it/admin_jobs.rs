//! Admin actions over HTTP, run by a real worker process against the
//! simulators: reset the mailbox, enable, and the next sync re-applies the
//! customization; a check answers its finding; the activities appear.

use std::time::Duration;

use serde_json::Value;
use syncfleet_api::auth::create_token;
use syncfleet_connectors::mailbox::PRODUCT_CATEGORY;
use syncfleet_testkit::{Providers, TestEnv, http, stop_gracefully};
use uuid::Uuid;

use crate::Api;

async fn act(api: &Api, token: &str, user: Uuid, action: &str, query: &str) -> Value {
    let response = http(
        api.address,
        "POST",
        &format!("/v1/users/{user}/actions/{action}{query}"),
        Some(token),
    )
    .await;
    assert_eq!(response.status, 200, "{action}: {}", response.body);
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mailbox_then_enable_re_applies_the_customization_and_every_step_is_an_activity() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let token = create_token(&env.pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let worker = env.spawn_with("syncfleet-worker", &providers, &[]);
    let customized = || {
        providers
            .graph
            .categories(&email)
            .iter()
            .any(|category| category.display_name == PRODUCT_CATEGORY)
    };

    // The first sync initializes the mailbox.
    let first = act(&api, &token, user, "force-sync", "?wait=30").await;
    assert_eq!(first["job"]["result"]["session_status"], "succeeded", "{first}");
    assert!(customized(), "the first sync applies the product's category");

    // A check runs on a worker and answers what it found.
    let check = act(&api, &token, user, "check-mailbox", "?wait=30").await;
    assert_eq!(
        (
            check["job"]["status"].as_str(),
            check["job"]["result"]["mailbox"].as_str()
        ),
        (Some("succeeded"), Some("reachable")),
        "{check}"
    );

    // Reset: the customization leaves the mailbox and sync stops.
    let reset = act(&api, &token, user, "reset-mailbox", "?wait=30").await;
    assert_eq!(reset["job"]["status"], "succeeded", "{reset}");
    assert!(!customized(), "reset removes the category");
    let user_view = http(api.address, "GET", &format!("/v1/users/{user}"), Some(&token))
        .await
        .json();
    assert_eq!(
        (user_view["sync_status"].as_str(), user_view["mailbox_status"].as_str()),
        (Some("disabled"), Some("not_initialized")),
        "{user_view}"
    );

    // Enable, force a sync: the customization is back.
    let enabled = act(&api, &token, user, "enable-sync", "").await;
    assert_eq!(enabled["changed"], true, "{enabled}");
    sqlx::query("UPDATE users SET force_sync_requested_at = NULL WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let again = act(&api, &token, user, "force-sync", "?wait=30").await;
    assert_eq!(again["job"]["result"]["session_status"], "succeeded", "{again}");
    let scope: String = sqlx::query_scalar("SELECT scope FROM sync_sessions WHERE id = $1::text::uuid")
        .bind(again["job"]["result"]["session_id"].as_str().unwrap())
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(scope, "initial", "the mailbox is initialized afresh");
    assert!(customized(), "enabling re-applies the customization");

    let activities = http(
        api.address,
        "GET",
        &format!("/v1/users/{user}/activities?rows=0"),
        Some(&token),
    )
    .await
    .json();
    let kinds: Vec<&str> = activities["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|activity| activity["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["sync_enabled", "sync_disabled_customization_uninstalled"],
        "newest first: {activities}"
    );

    stop_gracefully(worker);
    api.stop().await;
    env.cleanup().await;
}
