//! Synchronization settings presets: the organization's (what the worker
//! reads), a group's and a user's, each setting adjustable or locked, and the
//! merged settings a user ends up with.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use syncfleet_worker::sync::{DEFAULT_BASELINE_DAYS, FilterSettings};
use uuid::Uuid;

use crate::{Api, send};

async fn presets(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(p::text, '|' ORDER BY p.id), '') || \
                (SELECT coalesce(string_agg(m::text, '|' ORDER BY m.user_id), '') FROM sync_settings_group_members m) || \
                (SELECT string_agg(o.settings::text, '|' ORDER BY o.id) FROM organizations o) \
         FROM sync_settings_presets p",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_organization_preset_is_what_the_worker_reads_and_records_an_activity() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    sqlx::query("UPDATE organizations SET settings = '{\"kept\": 1, \"baseline_days\": 3}' WHERE id = $1")
        .bind(org)
        .execute(&env.pool)
        .await
        .unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/organizations/{org}/sync-settings");

    // What the organization already holds shows as its preset.
    let response = http(api.address, "GET", &path, Some(&lead)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["settings"], json!({"baseline_days": 3}));

    let preset = json!({
        "settings": {"baseline_days": 30, "skip_free_mail": false, "blocked_domains": [" @Rival.COM", "rival.com"]},
        "locked": ["skip_free_mail"],
    });
    let response = send(&api, "PUT", &path, &lead, &preset).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let view = response.json();
    assert_eq!(view["scope"], "organization");
    assert_eq!(
        view["settings"],
        json!({"skip_free_mail": false, "baseline_days": 30, "blocked_domains": ["rival.com"]})
    );
    assert_eq!(view["locked"], json!(["skip_free_mail"]));

    let stored: Value = sqlx::query_scalar("SELECT settings FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored["kept"], 1, "keys the presets do not know are left alone");
    let worker: FilterSettings = serde_json::from_value(stored).unwrap();
    assert_eq!(
        (worker.baseline_days, worker.skip_free_mail, worker.blocked_domains),
        (Some(30), false, vec!["rival.com".to_owned()])
    );
    let again = send(&api, "PUT", &path, &lead, &preset).await;
    assert_eq!(again.status, 200);
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM activities WHERE organization_id = $1")
        .bind(org)
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        kinds,
        ["sync_settings_changed"],
        "saving the same preset again changes nothing"
    );

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn unknown_settings_and_bad_values_are_refused_naming_the_setting() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let before = presets(&env.pool).await;

    let cases = [
        (json!({"settings": {"colour": "red"}}), "settings.colour"),
        (json!({"settings": {"baseline_days": 0}}), "settings.baseline_days"),
        (json!({"settings": {"baseline_days": 366}}), "settings.baseline_days"),
        (json!({"settings": {"baseline_days": "30"}}), "settings.baseline_days"),
        (json!({"settings": {"skip_free_mail": "no"}}), "settings.skip_free_mail"),
        (
            json!({"settings": {"blocked_domains": "rival.com"}}),
            "settings.blocked_domains",
        ),
        (
            json!({"settings": {"blocked_domains": ["ok.com", "not a domain"]}}),
            "settings.blocked_domains[1]",
        ),
        (
            json!({"settings": {"blocked_addresses": ["nobody"]}}),
            "settings.blocked_addresses[0]",
        ),
        (json!({"settings": [1]}), "settings"),
        (json!({"locked": ["baseline_days", "colour"]}), "locked[1]"),
        (json!({"locked": "baseline_days"}), "locked"),
        (json!({"settings": {}, "scope": "user"}), "scope"),
    ];
    for path in [
        format!("/v1/organizations/{org}/sync-settings"),
        format!("/v1/organizations/{org}/sync-settings/groups/sales"),
        format!("/v1/users/{user}/sync-settings"),
    ] {
        for (payload, field) in &cases {
            let response = send(&api, "PUT", &path, &admin, payload).await;
            assert_eq!(response.status, 400, "{path} {payload}: {}", response.body);
            assert_eq!(response.json()["error"]["field"], *field, "{path} {payload}");
        }
    }
    for name in ["%20sales", &"g".repeat(101)] {
        let response = send(
            &api,
            "PUT",
            &format!("/v1/organizations/{org}/sync-settings/groups/{name}"),
            &admin,
            &json!({}),
        )
        .await;
        assert_eq!(
            (response.status, response.json()["error"]["field"].clone()),
            (400, json!("name"))
        );
    }
    assert_eq!(presets(&env.pool).await, before);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn effective_settings_merge_organization_group_and_user_and_a_lock_wins() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [member, loner] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(member), "member@acme.example")
        .await
        .unwrap();
    let loner_token = create_token(&env.pool, "user", None, Some(loner), "loner@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let effective = |user: Uuid| format!("/v1/users/{user}/sync-settings/effective");

    // Without any preset: the worker's defaults.
    let response = http(api.address, "GET", &effective(loner), Some(&loner_token)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let settings = &response.json()["settings"];
    assert_eq!(settings["baseline_days"]["value"], json!(DEFAULT_BASELINE_DAYS));
    assert_eq!(
        (
            settings["skip_free_mail"]["value"].clone(),
            settings["skip_free_mail"]["source"].clone()
        ),
        (json!(true), json!("default"))
    );

    let response = send(
        &api,
        "PUT",
        &format!("/v1/organizations/{org}/sync-settings"),
        &lead,
        &json!({"settings": {"skip_free_mail": false, "blocked_domains": ["rival.com"]}, "locked": ["skip_free_mail"]}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let group = format!("/v1/organizations/{org}/sync-settings/groups/sales");
    let response = send(
        &api,
        "PUT",
        &group,
        &lead,
        &json!({"settings": {"skip_free_mail": true}, "user_ids": [member]}),
    )
    .await;
    assert_eq!(response.status, 409, "the organization locks it: {}", response.body);
    assert_eq!(response.json()["error"]["field"], "settings.skip_free_mail");
    let response = send(
        &api,
        "PUT",
        &group,
        &lead,
        &json!({"settings": {"baseline_days": 20}, "locked": ["baseline_days"], "user_ids": [member]}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["user_ids"], json!([member]));

    // The member adjusts what is adjustable, never what is locked.
    let mine = format!("/v1/users/{member}/sync-settings");
    for (payload, status, field) in [
        (json!({"settings": {"baseline_days": 5}}), 409, "settings.baseline_days"),
        (
            json!({"settings": {"skip_free_mail": true}}),
            409,
            "settings.skip_free_mail",
        ),
        (json!({"locked": ["blocked_domains"]}), 403, "locked"),
    ] {
        let response = send(&api, "PUT", &mine, &own, &payload).await;
        assert_eq!(response.status, status, "{payload}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field);
    }
    let response = send(
        &api,
        "PUT",
        &mine,
        &own,
        &json!({"settings": {"blocked_domains": ["partner.io"], "blocked_addresses": ["ceo@friend.example"]}}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);

    let response = http(api.address, "GET", &effective(member), Some(&own)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(answer["group_name"], "sales");
    let settings = &answer["settings"];
    assert_eq!(
        settings["baseline_days"],
        json!({"value": 20, "source": "group", "locked_by": "group", "adjustable": false})
    );
    assert_eq!(
        settings["skip_free_mail"],
        json!({"value": false, "source": "organization", "locked_by": "organization", "adjustable": false})
    );
    assert_eq!(settings["blocked_domains"]["value"], json!(["rival.com", "partner.io"]));
    assert_eq!(settings["blocked_addresses"]["source"], "user");

    // An admin locks a setting for one user: the user keeps it when saving.
    let loners = format!("/v1/users/{loner}/sync-settings");
    let response = send(
        &api,
        "PUT",
        &loners,
        &lead,
        &json!({"settings": {"baseline_days": 60}, "locked": ["baseline_days"]}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let response = send(
        &api,
        "PUT",
        &loners,
        &loner_token,
        &json!({"settings": {"baseline_days": 1}}),
    )
    .await;
    assert_eq!(
        (response.status, response.json()["error"]["code"].clone()),
        (409, json!("setting_locked"))
    );
    let response = send(
        &api,
        "PUT",
        &loners,
        &loner_token,
        &json!({"settings": {"blocked_domains": ["x.io"]}}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json()["settings"],
        json!({"baseline_days": 60, "blocked_domains": ["x.io"]})
    );
    let response = http(api.address, "DELETE", &loners, Some(&loner_token)).await;
    assert_eq!(response.status, 403, "{}", response.body);

    let kinds: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM activities WHERE organization_id = $1 AND kind = 'sync_settings_changed'",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(kinds, 5);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn group_members_are_users_of_the_organization_in_no_other_group() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign_org = organization(&env.pool, AccessType::Office365, true).await;
    let [first, second] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let foreign = users(&env.pool, foreign_org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let group = |name: &str| format!("/v1/organizations/{org}/sync-settings/groups/{name}");

    let response = send(&api, "PUT", &group("sales"), &lead, &json!({"user_ids": [first]})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let before = presets(&env.pool).await;
    for (payload, status, code, field) in [
        (json!({"user_ids": [second, foreign]}), 404, "not_found", "user_ids[1]"),
        (json!({"user_ids": [first]}), 409, "user_in_other_group", "user_ids[0]"),
        (json!({"user_ids": [second, second]}), 400, "invalid", "user_ids[1]"),
        (json!({"user_ids": ["someone"]}), 400, "invalid", "user_ids[0]"),
    ] {
        for token in [&lead, &admin] {
            let response = send(&api, "PUT", &group("support"), token, &payload).await;
            assert_eq!(response.status, status, "{payload}: {}", response.body);
            let error = &response.json()["error"];
            assert_eq!(
                (error["code"].as_str(), error["field"].as_str()),
                (Some(code), Some(field)),
                "{payload}"
            );
        }
    }
    // Another organization's admin sees none of it.
    let stranger = create_token(&env.pool, "org_admin", Some(foreign_org), None, "x@other.example")
        .await
        .unwrap();
    for method in ["GET", "PUT", "DELETE"] {
        let response = send(&api, method, &group("sales"), &stranger, &json!({})).await;
        assert_eq!(response.status, 404, "{method}: {}", response.body);
    }
    assert_eq!(presets(&env.pool).await, before);

    let listed = http(
        api.address,
        "GET",
        &format!("/v1/organizations/{org}/sync-settings/groups"),
        Some(&lead),
    )
    .await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "{}", listed.body);
    let response = http(api.address, "DELETE", &group("sales"), Some(&lead)).await;
    assert_eq!(response.status, 204, "{}", response.body);
    let response = http(api.address, "DELETE", &group("sales"), Some(&lead)).await;
    assert_eq!(response.status, 404);
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{first}/sync-settings/effective"),
        Some(&lead),
    )
    .await;
    assert_eq!(response.json()["group_name"], Value::Null);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn moving_a_user_to_another_organization_takes_them_out_of_their_group() {
    let env = TestEnv::new().await;
    let from = organization(&env.pool, AccessType::Office365, true).await;
    let to = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, from, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let response = send(
        &api,
        "PUT",
        &format!("/v1/organizations/{from}/sync-settings/groups/sales"),
        &admin,
        &json!({"settings": {"baseline_days": 9}, "user_ids": [user]}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    send(
        &api,
        "PUT",
        &format!("/v1/users/{user}/sync-settings"),
        &admin,
        &json!({"settings": {"blocked_domains": ["a.io"]}}),
    )
    .await;

    let response = send(
        &api,
        "PATCH",
        &format!("/v1/users/{user}"),
        &admin,
        &json!({"organization_id": to}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{user}/sync-settings/effective"),
        Some(&admin),
    )
    .await;
    let answer = response.json();
    assert_eq!(answer["group_name"], Value::Null);
    assert_eq!(answer["organization_id"], to.to_string());
    assert_eq!(answer["settings"]["baseline_days"]["source"], "default");
    assert_eq!(
        answer["settings"]["blocked_domains"]["value"],
        json!(["a.io"]),
        "their own preset moves with them"
    );

    api.stop().await;
    env.cleanup().await;
}
