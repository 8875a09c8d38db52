//! Force sync and admin jobs through the api, the broker and a real worker.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    queue::Route,
};
use syncfleet_testkit::{TestEnv, http, organization, users};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Api;

async fn admin_jobs(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM admin_jobs")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

fn force_sync_path(user: Uuid, query: &str) -> String {
    format!("/v1/users/{user}/actions/force-sync{query}")
}

#[tokio::test]
async fn every_route_requires_a_valid_bearer_token() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    for token in [None, Some("sf_not-a-real-token")] {
        for (method, path) in [
            ("POST", force_sync_path(user, "")),
            ("GET", format!("/v1/jobs/{}", Uuid::now_v7())),
        ] {
            let response = http(api.address, method, &path, token).await;
            assert_eq!(response.status, 401, "{method} {path}");
            assert_eq!(response.json()["error"]["code"], "unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(admin_jobs(&env).await, 0);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_force_sync_runs_on_a_worker_and_wait_returns_its_result() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "admin@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let shutdown = CancellationToken::new();
    let config = WorkerConfig::from_source(&env.source(&[])).unwrap();
    let worker = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown.clone()));

    let response = http(api.address, "POST", &force_sync_path(user, "?wait=30"), Some(&token)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(
        (answer["action"].as_str(), answer["changed"].as_bool()),
        (Some("force-sync"), Some(true))
    );
    let job = &answer["job"];
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["action"], "force-sync");
    assert_eq!(job["requested_by"], "admin@example.test");
    assert_eq!(job["result"]["session_status"], "succeeded");
    let session_id: Uuid = job["result"]["session_id"].as_str().unwrap().parse().unwrap();
    let trigger: String = sqlx::query_scalar("SELECT trigger FROM sync_sessions WHERE id = $1")
        .bind(session_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(trigger, "force");

    let again = http(
        api.address,
        "GET",
        &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
        Some(&token),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["result"]["session_id"], job["result"]["session_id"]);

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn force_sync_twice_within_a_minute_is_refused_with_the_time_left_and_queues_nothing() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let first = http(api.address, "POST", &force_sync_path(user, ""), Some(&token)).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.json()["job"]["status"], "queued");
    let second = http(api.address, "POST", &force_sync_path(user, ""), Some(&token)).await;
    assert_eq!(second.status, 429, "{}", second.body);
    let retry_after: u64 = second.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry_after), "Retry-After: {retry_after}");
    let error = second.json();
    assert_eq!(error["error"]["code"], "too_many_requests");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most one a minute"),
        "{error}"
    );
    assert_eq!(admin_jobs(&env).await, 1);
    assert_eq!(
        env.ready(Route::Priority).await,
        1,
        "only the first force sync was queued"
    );

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_organization_admin_cannot_reach_another_organizations_users_or_jobs() {
    let env = TestEnv::new().await;
    let own_org = organization(&env.pool, AccessType::Office365, true).await;
    let other_org = organization(&env.pool, AccessType::Office365, true).await;
    let own_user = users(&env.pool, own_org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let other_user = users(&env.pool, other_org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let org_admin = create_token(&env.pool, "org_admin", Some(own_org), None, "")
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let refused = http(api.address, "POST", &force_sync_path(other_user, ""), Some(&org_admin)).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "not_found");
    let stamped: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT force_sync_requested_at FROM users WHERE id = $1")
            .bind(other_user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((stamped, admin_jobs(&env).await), (None, 0), "nothing changed");

    let own = http(api.address, "POST", &force_sync_path(own_user, ""), Some(&org_admin)).await;
    assert_eq!(own.status, 202, "{}", own.body);
    let theirs = http(api.address, "POST", &force_sync_path(other_user, ""), Some(&admin)).await;
    let their_job = theirs.json()["job"]["id"].as_str().unwrap().to_owned();
    let hidden = http(api.address, "GET", &format!("/v1/jobs/{their_job}"), Some(&org_admin)).await;
    assert_eq!(hidden.status, 404, "a job of another organization is not visible");

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_user_token_reaches_its_own_user_only() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Gmail, true).await;
    let [me, colleague] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), true).await[..] else {
        unreachable!()
    };
    let token = create_token(&env.pool, "user", None, Some(me), "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    assert_eq!(
        http(api.address, "POST", &force_sync_path(colleague, ""), Some(&token))
            .await
            .status,
        404
    );
    assert_eq!(
        http(api.address, "POST", &force_sync_path(me, ""), Some(&token))
            .await
            .status,
        202
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn force_sync_is_refused_while_synchronization_is_disabled() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let disabled_org = organization(&env.pool, AccessType::Office365, false).await;
    let disabled = users(&env.pool, org, 1, SyncStatus::DisabledAuthError, Utc::now(), true).await[0];
    let in_disabled_org = users(&env.pool, disabled_org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    for (user, expected) in [
        (disabled, "disabled auth error for this user"),
        (in_disabled_org, "user's organization"),
    ] {
        let response = http(api.address, "POST", &force_sync_path(user, ""), Some(&token)).await;
        assert_eq!(response.status, 409, "{}", response.body);
        let error = response.json();
        assert_eq!(error["error"]["code"], "sync_disabled");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(expected),
            "{error}"
        );
    }
    assert_eq!(admin_jobs(&env).await, 0);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_field() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let cases = [
        ("POST", "/v1/users/not-a-uuid/actions/force-sync".to_owned(), "id"),
        ("POST", force_sync_path(user, "?wait=999"), "wait"),
        ("POST", force_sync_path(user, "?wait=soon"), "wait"),
        ("POST", force_sync_path(user, "?force=yes"), "query"),
        ("GET", "/v1/jobs/42".to_owned(), "id"),
    ];
    for (method, path, field) in cases {
        let response = http(api.address, method, &path, Some(&token)).await;
        assert_eq!(response.status, 400, "{method} {path}: {}", response.body);
        let error = response.json();
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["field"].as_str()),
            (Some("invalid"), Some(field))
        );
    }
    assert_eq!(admin_jobs(&env).await, 0);
    api.stop().await;
    env.cleanup().await;
}
