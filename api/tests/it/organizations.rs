//! Organizations: create, list, read, edit, delete, with their rules.

use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    secrets::{self, CredentialKind, Owner},
};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, test_key_ring, users};
use uuid::Uuid;

use crate::Api;

async fn post(api: &Api, token: &str, organization: Value) -> syncfleet_testkit::HttpResponse {
    http_with_body(
        api.address,
        "POST",
        "/v1/organizations",
        Some(token),
        &organization.to_string(),
    )
    .await
}

#[tokio::test]
async fn organizations_are_created_listed_and_read_with_their_rules() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "root@ops.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let response = post(
        &api,
        &admin,
        json!({"name": "Acme", "external_id": "acme", "access_type": "office365"}),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let acme = response.json();
    assert_eq!(
        (acme["name"].clone(), acme["sync_enabled"].clone()),
        (json!("Acme"), json!(true))
    );

    let impersonation = json!({
        "name": "Globex",
        "external_id": "globex",
        "access_type": "exchange_impersonation",
        "ews_url": "https://mail.globex.example/EWS/Exchange.asmx",
        "impersonation_account": "svc-sync@globex.example",
        "impersonation_password": "service-secret-1",
    });
    let response = post(&api, &admin, impersonation).await;
    assert_eq!(response.status, 201, "{}", response.body);
    assert!(!response.body.contains("service-secret-1"));
    let globex = response.json();
    assert_eq!(globex["impersonation_password_set"], true);
    let id: Uuid = globex["id"].as_str().unwrap().parse().unwrap();
    let sealed = secrets::load(
        &env.pool,
        &test_key_ring(),
        Owner::Organization(id),
        CredentialKind::ImpersonationPassword,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sealed.expose_secret(), "service-secret-1");

    // Bad inputs name their field; nothing is created.
    let cases = [
        (
            json!({"name": "X", "external_id": "acme", "access_type": "gmail"}),
            409,
            "external_id",
        ),
        (
            json!({"name": "X", "external_id": "x1", "access_type": "lotus_notes"}),
            400,
            "access_type",
        ),
        (
            json!({"name": " ", "external_id": "x2", "access_type": "gmail"}),
            400,
            "name",
        ),
        (
            json!({"name": "X", "external_id": "x3", "access_type": "exchange_impersonation",
                "impersonation_account": "svc", "impersonation_password": "p"}),
            400,
            "ews_url",
        ),
        (
            json!({"name": "X", "external_id": "x4", "access_type": "exchange_impersonation",
                "ews_url": "https://10.1.2.3/EWS/Exchange.asmx", "impersonation_account": "svc",
                "impersonation_password": "p"}),
            400,
            "ews_url",
        ),
        (
            json!({"name": "X", "external_id": "x5", "access_type": "office365", "ews_url": "https://mail.example/EWS"}),
            400,
            "ews_url",
        ),
        (
            json!({"name": "X", "external_id": "x6", "access_type": "gmail", "colour": "red"}),
            400,
            "colour",
        ),
        (
            json!({"name": "X", "external_id": "x7", "access_type": 12345}),
            400,
            "access_type",
        ),
        (
            json!({"name": "X", "external_id": "x8", "access_type": "gmail", "sync_enabled": "yes"}),
            400,
            "sync_enabled",
        ),
    ];
    for (organization, status, field) in cases {
        let response = post(&api, &admin, organization.clone()).await;
        assert_eq!(response.status, status, "{organization}: {}", response.body);
        assert_eq!(
            response.json()["error"]["field"],
            field,
            "{organization}: {}",
            response.body
        );
    }

    // The list: the default organization, Acme and Globex.
    let response = http(
        api.address,
        "GET",
        "/v1/organizations?sort=name&order=desc&page_size=2",
        Some(&admin),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let page = response.json();
    assert_eq!(page["total"], 3);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names[0] > names[1], "descending: {names:?}");
    let next = page["next_cursor"].as_str().unwrap();
    let response = http(
        api.address,
        "GET",
        &format!("/v1/organizations?sort=name&order=desc&page_size=2&cursor={next}"),
        Some(&admin),
    )
    .await;
    let last = response.json();
    assert_eq!(
        (last["items"].as_array().unwrap().len(), last["next_cursor"].clone()),
        (1, Value::Null)
    );
    assert!(
        last["items"][0]["name"].as_str().unwrap() < names[1],
        "the walk goes on descending"
    );
    let response = http(api.address, "GET", "/v1/organizations?q=glob", Some(&admin)).await;
    assert_eq!(response.json()["items"][0]["external_id"], "globex");
    let response = http(
        api.address,
        "GET",
        "/v1/organizations?access_type=exchange_impersonation",
        Some(&admin),
    )
    .await;
    assert_eq!(response.json()["total"], 1);
    let response = http(api.address, "GET", "/v1/organizations?sort=password", Some(&admin)).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, json!("sort"))
    );

    // An organization admin sees only theirs.
    let acme_id: Uuid = acme["id"].as_str().unwrap().parse().unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(acme_id), None, "lead@acme.test")
        .await
        .unwrap();
    let response = http(api.address, "GET", "/v1/organizations", Some(&lead)).await;
    assert_eq!(response.json()["total"], 1);
    let response = http(api.address, "GET", &format!("/v1/organizations/{id}"), Some(&lead)).await;
    assert_eq!(response.status, 404);
    let response = post(
        &api,
        &lead,
        json!({"name": "Y", "external_id": "y", "access_type": "gmail"}),
    )
    .await;
    assert_eq!(response.status, 403);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn editing_keeps_the_external_id_and_records_the_switch_and_deleting_respects_mailboxes() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "root@ops.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let path = format!("/v1/organizations/{org}");

    let response = http_with_body(
        api.address,
        "PATCH",
        &path,
        Some(&admin),
        &json!({"external_id": "other"}).to_string(),
    )
    .await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, json!("external_id"))
    );
    let response = http_with_body(
        api.address,
        "PATCH",
        &path,
        Some(&admin),
        &json!({"sync_enabled": false, "name": "Renamed"}).to_string(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (response.json()["sync_enabled"].clone(), response.json()["name"].clone()),
        (json!(false), json!("Renamed"))
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM activities WHERE organization_id = $1 ORDER BY occurred_at")
            .bind(org)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(kinds.contains(&"organization_sync_disabled".to_owned()), "{kinds:?}");

    // A user with an initialized mailbox blocks the deletion.
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    sqlx::query("UPDATE users SET mailbox_status = 'initialized' WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let response = http(api.address, "DELETE", &path, Some(&admin)).await;
    assert_eq!(
        (response.status, response.json()["error"]["code"].clone()),
        (409, json!("mailboxes_initialized"))
    );
    sqlx::query("UPDATE users SET mailbox_status = 'not_initialized' WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let response = http(api.address, "DELETE", &path, Some(&admin)).await;
    assert_eq!(response.status, 204, "{}", response.body);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "its users go with it");

    let default = "00000000-0000-0000-0000-000000000001";
    let response = http(
        api.address,
        "DELETE",
        &format!("/v1/organizations/{default}"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (response.status, response.json()["error"]["code"].clone()),
        (409, json!("default_organization"))
    );
    api.stop().await;
    env.cleanup().await;
}
