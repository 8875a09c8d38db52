//! Editing users (`PATCH /v1/users/{id}`), moving them between organizations
//! (one at a time and in bulk) and the mailbox and CRM configuration routes.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, users};
use uuid::Uuid;

use crate::{Api, send};

/// The user's activities: (kind, actor, details).
async fn activities(pool: &PgPool, user: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT kind, actor, details FROM activities WHERE user_id = $1 ORDER BY occurred_at, id")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The user's row as text, to tell whether anything changed.
async fn row(pool: &PgPool, user: Uuid) -> String {
    sqlx::query_scalar("SELECT u::text FROM users u WHERE id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// An Exchange Impersonation organization (the fixture cannot make one: it
/// needs its EWS URL and service account).
async fn impersonation_organization(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type, ews_url, impersonation_account) \
         VALUES ($1, $2, 'Impersonated', 'exchange_impersonation', 'https://ews.example.com/EWS/Exchange.asmx', 'svc@example.com')",
    )
    .bind(id)
    .bind(format!("ext-{}", id.simple()))
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn organization_name(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn editing_a_user_changes_each_field_and_records_what_changed() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::ExchangeDirect, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}");

    let change = json!({
        "name": "  Ada Lovelace ",
        "email": "ada@acme.example",
        "notification_email": "ada.alerts@acme.example",
        "description": "Head of analytics",
        "account_logon": "ACME\\ada",
    });
    let response = send(&api, "PATCH", &path, &admin, &change).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let view = response.json();
    assert_eq!(view["name"], "Ada Lovelace");
    assert_eq!(view["email"], "ada@acme.example");
    assert_eq!(view["notification_email"], "ada.alerts@acme.example");
    assert_eq!(view["description"], "Head of analytics");
    let logon: Option<String> = sqlx::query_scalar("SELECT account_logon FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(logon.as_deref(), Some("ACME\\ada"));
    let recorded = activities(&env.pool, user).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (kind, actor, details) = &recorded[0];
    assert_eq!((kind.as_str(), actor.as_str()), ("user_updated", "root@example.test"));
    for field in ["email", "account_logon", "name", "notification_email", "description"] {
        assert!(details.contains(field), "{details}");
    }

    // The same values again change nothing and record nothing; `null` clears.
    let again = send(&api, "PATCH", &path, &admin, &change).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(activities(&env.pool, user).await.len(), 1);
    let cleared = send(
        &api,
        "PATCH",
        &path,
        &admin,
        &json!({"notification_email": null, "description": null}),
    )
    .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let view = cleared.json();
    assert_eq!(
        (view["notification_email"].clone(), view["description"].clone()),
        (Value::Null, json!(""))
    );
    assert_eq!(view["name"], "Ada Lovelace", "a field left out keeps its value");
    assert_eq!(activities(&env.pool, user).await.len(), 2);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_edits_name_their_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [user, other] = users(&env.pool, org, 2, SyncStatus::Disabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let other_email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(other)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}");
    let before = row(&env.pool, user).await;

    let cases = [
        (json!({"name": ""}), 400, "name"),
        (json!({"name": null}), 400, "name"),
        (json!({"name": "x".repeat(201)}), 400, "name"),
        (json!({"email": "nobody"}), 400, "email"),
        (json!({"email": null}), 400, "email"),
        (
            json!({"notification_email": "not an address"}),
            400,
            "notification_email",
        ),
        (json!({"description": "x".repeat(2001)}), 400, "description"),
        (json!({"organization_id": "elsewhere"}), 400, "organization_id"),
        (json!({"organization_id": null}), 400, "organization_id"),
        (json!({"plan_id": "premium"}), 400, "plan_id"),
        (json!({"plan_id": Uuid::now_v7()}), 404, "plan_id"),
        (json!({"organization_id": Uuid::now_v7()}), 404, "organization_id"),
        (json!({"account_logon": "ada"}), 400, "account_logon"),
        (json!({"external_id": "x"}), 400, "external_id"),
        (json!({"email": other_email}), 409, "email"),
        // A valid part with an invalid one: nothing is applied.
        (json!({"name": "Renamed", "email": "nobody"}), 400, "email"),
        (json!({"name": "Renamed", "plan_id": Uuid::now_v7()}), 404, "plan_id"),
    ];
    for (change, status, field) in cases {
        let response = send(&api, "PATCH", &path, &admin, &change).await;
        assert_eq!(response.status, status, "{change}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{change}: {}", response.body);
    }
    let response = http_with_body(api.address, "PATCH", &path, Some(&admin), "{not json").await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, json!("body"))
    );
    let response = send(&api, "PATCH", "/v1/users/not-a-uuid", &admin, &json!({})).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, json!("id"))
    );

    assert_eq!(row(&env.pool, user).await, before);
    assert!(activities(&env.pool, user).await.is_empty());
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn under_impersonation_a_user_may_not_change_their_own_smtp_address_but_an_admin_can() {
    let env = TestEnv::new().await;
    let org = impersonation_organization(&env.pool).await;
    let user = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}");
    let before = row(&env.pool, user).await;

    for (method, route) in [("PATCH", path.clone()), ("PUT", format!("{path}/mailbox"))] {
        let response = send(&api, method, &route, &own, &json!({"email": "ceo@acme.example"})).await;
        assert_eq!(response.status, 403, "{method} {route}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], "email");
    }
    for (field, value) in [("organization_id", json!(Uuid::now_v7())), ("plan_id", json!(null))] {
        let change = json!({ field: value });
        let response = send(&api, "PATCH", &path, &own, &change).await;
        // A plan of null is the user's own already: only a change is refused.
        if field == "plan_id" {
            assert_eq!(response.status, 200, "{}", response.body);
        } else {
            assert_eq!(
                (response.status, response.json()["error"]["field"].clone()),
                (403, json!(field))
            );
        }
    }
    assert_eq!(row(&env.pool, user).await, before);

    // The user edits what is theirs, and sending their address back is fine.
    let current: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let response = send(&api, "PATCH", &path, &own, &json!({"name": "Ada L.", "email": current})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["name"], "Ada L.");

    // Their organization's admin can change the address.
    let response = send(&api, "PATCH", &path, &lead, &json!({"email": "ada.l@acme.example"})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["email"], "ada.l@acme.example");
    let kinds: Vec<String> = activities(&env.pool, user)
        .await
        .into_iter()
        .map(|(kind, ..)| kind)
        .collect();
    assert_eq!(kinds, ["user_updated", "user_updated"]);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_organization_admin_gets_404_for_a_foreign_user_or_organization_and_nothing_changes() {
    let env = TestEnv::new().await;
    let own_org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign_org = organization(&env.pool, AccessType::Office365, true).await;
    let mine = users(&env.pool, own_org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let foreign = users(&env.pool, foreign_org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let lead = create_token(&env.pool, "org_admin", Some(own_org), None, "lead@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (mine_before, foreign_before) = (row(&env.pool, mine).await, row(&env.pool, foreign).await);

    let response = send(
        &api,
        "PATCH",
        &format!("/v1/users/{foreign}"),
        &lead,
        &json!({"name": "Taken"}),
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);
    let response = send(
        &api,
        "PATCH",
        &format!("/v1/users/{mine}"),
        &lead,
        &json!({"name": "Moved", "organization_id": foreign_org}),
    )
    .await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (404, json!("organization_id")),
        "{}",
        response.body
    );
    let response = send(
        &api,
        "POST",
        &format!("/v1/users/{mine}/actions/change-organization"),
        &lead,
        &json!({"organization_id": foreign_org}),
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);
    for route in ["mailbox", "crm"] {
        let response = send(
            &api,
            "PUT",
            &format!("/v1/users/{foreign}/{route}"),
            &lead,
            &json!({"refresh_token": "stolen"}),
        )
        .await;
        assert_eq!(response.status, 404, "{route}: {}", response.body);
    }

    assert_eq!(row(&env.pool, mine).await, mine_before);
    assert_eq!(row(&env.pool, foreign).await, foreign_before);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn change_organization_moves_the_user_with_an_activity_in_both_organizations() {
    let env = TestEnv::new().await;
    let from = organization(&env.pool, AccessType::Office365, true).await;
    let to = organization(&env.pool, AccessType::ExchangeDirect, true).await;
    let user = users(&env.pool, from, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}/actions/change-organization");

    let response = send(&api, "POST", &path, &own, &json!({"organization_id": to})).await;
    assert_eq!(response.status, 403, "a user does not move themself: {}", response.body);

    // Office 365 to Exchange Direct: the Microsoft authorization still fits.
    let response = send(&api, "POST", &path, &admin, &json!({"organization_id": to})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["user"]["organization_id"], to.to_string());
    let again = send(&api, "POST", &path, &admin, &json!({"organization_id": to})).await;
    assert_eq!(again.json()["changed"], false);

    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT organization_id, kind, details FROM activities WHERE user_id = $1 ORDER BY organization_id",
    )
    .bind(user)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let mut organizations: Vec<Uuid> = rows.iter().map(|(organization, ..)| *organization).collect();
    organizations.sort();
    let mut expected = vec![from, to];
    expected.sort();
    assert_eq!(organizations, expected, "{rows:?}");
    let (from_name, to_name) = (
        organization_name(&env.pool, from).await,
        organization_name(&env.pool, to).await,
    );
    for (_, kind, details) in &rows {
        assert_eq!(kind, "organization_changed");
        assert!(details.contains(&from_name) && details.contains(&to_name), "{details}");
    }

    // The user's own token follows them to the new organization.
    let response = http(api.address, "GET", &format!("/v1/organizations/{to}"), Some(&own)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let response = http(api.address, "GET", &format!("/v1/organizations/{from}"), Some(&own)).await;
    assert_eq!(response.status, 404, "{}", response.body);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_move_across_access_types_is_refused_while_the_stored_authorization_would_not_fit() {
    let env = TestEnv::new().await;
    let office = organization(&env.pool, AccessType::Office365, true).await;
    let gmail = organization(&env.pool, AccessType::Gmail, true).await;
    let user = users(&env.pool, office, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let before = row(&env.pool, user).await;

    let response = send(
        &api,
        "PATCH",
        &format!("/v1/users/{user}"),
        &admin,
        &json!({"organization_id": gmail}),
    )
    .await;
    assert_eq!(response.status, 409, "{}", response.body);
    let error = &response.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("access_type_mismatch"), Some("organization_id"))
    );
    assert_eq!(row(&env.pool, user).await, before);

    // Once the Microsoft authorization is deleted, the move goes through.
    let response = http(
        api.address,
        "DELETE",
        &format!("/v1/users/{user}/credentials/mailbox-refresh-token"),
        Some(&admin),
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.body);
    let response = send(
        &api,
        "PATCH",
        &format!("/v1/users/{user}"),
        &admin,
        &json!({"organization_id": gmail}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["organization_id"], gmail.to_string());

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bulk_change_of_organization_answers_one_result_per_user() {
    let env = TestEnv::new().await;
    let from = organization(&env.pool, AccessType::Office365, true).await;
    let to = organization(&env.pool, AccessType::Gmail, true).await;
    let [first, second] = users(&env.pool, from, 2, SyncStatus::Disabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let authorized = users(&env.pool, from, 1, SyncStatus::Disabled, Utc::now(), true).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(to), None, "lead@gmail-org.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let bulk = "/v1/users/actions/change-organization";

    let missing = Uuid::new_v4();
    let response = send(
        &api,
        "POST",
        bulk,
        &admin,
        &json!({"user_ids": [first, authorized, missing, second], "organization_id": to}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let results = response.json();
    let outcome = |index: usize| {
        (
            results[index]["ok"].as_bool().unwrap(),
            results[index]["error"]["code"].as_str().map(str::to_owned),
        )
    };
    assert_eq!(results.as_array().map(Vec::len), Some(4), "{results}");
    assert_eq!(outcome(0), (true, None));
    assert_eq!(outcome(1), (false, Some("access_type_mismatch".to_owned())));
    assert_eq!(outcome(2), (false, Some("not_found".to_owned())));
    assert_eq!(outcome(3), (true, None));
    assert_eq!(results[3]["user_id"], second.to_string(), "in the order given");
    let moved: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE organization_id = $1 ORDER BY id")
        .bind(to)
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(moved, expected);

    // An organization admin: a user of another organization is not found,
    // and so is another organization as the target; their own are applied.
    let response = send(
        &api,
        "POST",
        bulk,
        &lead,
        &json!({"user_ids": [first, authorized], "organization_id": to}),
    )
    .await;
    let results = response.json();
    assert_eq!(
        (results[0]["ok"].clone(), results[0]["changed"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(results[1]["error"]["code"], "not_found", "{results}");
    let response = send(
        &api,
        "POST",
        bulk,
        &lead,
        &json!({"user_ids": [first], "organization_id": from}),
    )
    .await;
    assert_eq!(response.json()[0]["error"]["code"], "not_found");
    let organization: Uuid = sqlx::query_scalar("SELECT organization_id FROM users WHERE id = $1")
        .bind(first)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(organization, to);
    let kinds: i64 = sqlx::query_scalar("SELECT count(*) FROM activities WHERE kind = 'organization_changed'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(kinds, 4, "two users moved, each recorded in both organizations");

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_mailbox_and_crm_routes_store_sealed_secrets_by_access_type_with_an_activity() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::ExchangeDirect, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let response = send(
        &api,
        "PUT",
        &format!("/v1/users/{user}/mailbox"),
        &own,
        &json!({"account_logon": "ACME\\ada", "password": "secret-value-1"}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(!response.body.contains("secret-value"), "{}", response.body);
    let view = response.json();
    assert_eq!(
        (view["account_logon"].clone(), view["mailbox_password_set"].clone()),
        (json!("ACME\\ada"), json!(true))
    );

    let response = send(
        &api,
        "PUT",
        &format!("/v1/users/{user}/crm"),
        &own,
        &json!({"instance_url": "https://acme.my.salesforce.com", "refresh_token": "secret-value-2"}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(!response.body.contains("secret-value"), "{}", response.body);
    let view = response.json();
    assert_eq!(view["salesforce_instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(view["crm_authorized"], true);

    for (route, change, field) in [
        (
            "mailbox",
            json!({"password": "secret-value-3", "refresh_token": "secret-value-4"}),
            "refresh_token",
        ),
        ("mailbox", json!({"password": ""}), "password"),
        ("mailbox", json!({"token": "secret-value-5"}), "token"),
        (
            "crm",
            json!({"instance_url": "http://acme.my.salesforce.com"}),
            "instance_url",
        ),
        ("crm", json!({"refresh_token": ["secret-value-6"]}), "refresh_token"),
    ] {
        let response = send(&api, "PUT", &format!("/v1/users/{user}/{route}"), &own, &change).await;
        assert_eq!(response.status, 400, "{route} {change}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{route} {change}");
        assert!(!response.body.contains("secret-value"), "{}", response.body);
    }
    let details: Vec<String> = activities(&env.pool, user)
        .await
        .into_iter()
        .map(|(.., details)| details)
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[0].contains("mailbox password") && details[1].contains("CRM refresh token"),
        "{details:?}"
    );
    assert!(details.iter().all(|details| !details.contains("secret-value")));

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_push_permission_is_granted_and_revoked_by_admins_and_organization_admins_only() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign = organization(&env.pool, AccessType::Office365, true).await;
    let people = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await;
    let (ada, bob) = (people[0], people[1]);
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.test")
        .await
        .unwrap();
    let foreign_lead = create_token(&env.pool, "org_admin", Some(foreign), None, "lead@other.test")
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let own = create_token(&env.pool, "user", None, Some(ada), "ada").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{ada}");

    let granted = send(&api, "PATCH", &path, &lead, &json!({"role": "org_admin"})).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(granted.json()["role"], "org_admin");
    let before = row(&env.pool, ada).await;
    for (token, target, change, status, field) in [
        (&own, ada, json!({"role": "user"}), 403, "role"),
        (&own, bob, json!({"role": "org_admin"}), 404, ""),
        (&foreign_lead, ada, json!({"role": "user"}), 404, ""),
        (&admin, ada, json!({"role": "admin"}), 400, "role"),
        (&admin, ada, json!({"role": null}), 400, "role"),
    ] {
        let response = send(&api, "PATCH", &format!("/v1/users/{target}"), token, &change).await;
        assert_eq!(response.status, status, "{change}: {}", response.body);
        if !field.is_empty() {
            assert_eq!(response.json()["error"]["field"], field, "{change}: {}", response.body);
        }
    }
    assert_eq!(row(&env.pool, ada).await, before, "a refused change changes nothing");
    let revoked = send(&api, "PATCH", &path, &admin, &json!({"role": "user"})).await;
    assert_eq!(revoked.json()["role"], "user", "{}", revoked.body);
    let again = send(&api, "PATCH", &path, &admin, &json!({"role": "user"})).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        activities(&env.pool, ada).await,
        [
            (
                "user_updated".to_owned(),
                "lead@acme.test".to_owned(),
                "changed: role (role now org_admin)".to_owned()
            ),
            (
                "user_updated".to_owned(),
                "root".to_owned(),
                "changed: role (role now user)".to_owned()
            ),
        ],
        "one activity per change, none for a role already held"
    );
    api.stop().await;
    env.cleanup().await;
}
