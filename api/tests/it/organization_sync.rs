//! Switching a whole organization's synchronization (M3): idempotent, an
//! activity when it changes, and no user of a disabled organization syncs.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, session_count, users, wait_until};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio_util::sync::CancellationToken;

use crate::Api;

#[tokio::test]
async fn an_organization_admin_switches_their_organization_and_the_switch_is_idempotent() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign_org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let stranger = create_token(&env.pool, "org_admin", Some(foreign_org), None, "x@other.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let switch = |what: &str| format!("/v1/organizations/{org}/sync/{what}");

    assert_eq!(
        http(api.address, "POST", &switch("disable"), Some(&own)).await.status,
        403
    );
    assert_eq!(
        http(api.address, "POST", &switch("disable"), Some(&stranger))
            .await
            .status,
        404
    );
    let response = http(api.address, "POST", &switch("disable"), Some(&lead)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(
        (
            answer["changed"].clone(),
            answer["organization"]["sync_enabled"].clone()
        ),
        (json!(true), json!(false))
    );
    let again = http(api.address, "POST", &switch("disable"), Some(&lead)).await;
    assert_eq!(again.json()["changed"], false);

    let view = http(api.address, "GET", &format!("/v1/users/{user}"), Some(&lead)).await;
    assert_eq!(view.json()["effective_sync_status"], "organization_disabled");
    let force = http(
        api.address,
        "POST",
        &format!("/v1/users/{user}/actions/force-sync"),
        Some(&lead),
    )
    .await;
    assert_eq!(
        (force.status, force.json()["error"]["code"].clone()),
        (409, json!("sync_disabled"))
    );

    let response = http(api.address, "POST", &switch("enable"), Some(&lead)).await;
    assert_eq!(response.json()["changed"], true);
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, actor FROM activities WHERE organization_id = $1 ORDER BY occurred_at, id")
            .bind(org)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let lead_did = |kind: &str| (kind.to_owned(), "lead@acme.example".to_owned());
    assert_eq!(
        kinds,
        [
            lead_did("organization_sync_disabled"),
            lead_did("organization_sync_enabled")
        ]
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_force_sync_queued_before_the_organization_was_disabled_ends_as_a_skipped_session() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let force = http(
        api.address,
        "POST",
        &format!("/v1/users/{user}/actions/force-sync"),
        Some(&admin),
    )
    .await;
    assert_eq!(force.status, 202, "{}", force.body);
    let disable = http(
        api.address,
        "POST",
        &format!("/v1/organizations/{org}/sync/disable"),
        Some(&admin),
    )
    .await;
    assert_eq!(disable.status, 200, "{}", disable.body);

    let shutdown = CancellationToken::new();
    let config = WorkerConfig::from_source(&env.source(&[])).unwrap();
    let worker = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown.clone()));
    wait_until(
        Duration::from_secs(30),
        "the queued force sync to be skipped",
        || async { session_count(&env.pool, user, "skipped").await == 1 },
    )
    .await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(session_count(&env.pool, user, "succeeded").await, 0, "nothing synced");
    assert_eq!(session_count(&env.pool, user, "running").await, 0);

    api.stop().await;
    env.cleanup().await;
}
