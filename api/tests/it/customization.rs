//! Customizations: a user's document (saved, read, versioned), the
//! organization's default, and resetting users to it.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, users};
use uuid::Uuid;

use crate::{Api, send};

async fn kinds(pool: &PgPool, organization: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM activities WHERE organization_id = $1 ORDER BY occurred_at, id")
        .bind(organization)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_saves_their_customization_the_version_grows_and_colleagues_may_read_it() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [me, colleague] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let own = create_token(&env.pool, "user", None, Some(me), "me@acme.example")
        .await
        .unwrap();
    let theirs = create_token(&env.pool, "user", None, Some(colleague), "them@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{me}/customization");

    let before = http(api.address, "GET", &path, Some(&own)).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let view = before.json();
    assert_eq!(
        (
            view["version"].clone(),
            view["document"].clone(),
            view["saved_at"].clone()
        ),
        (json!(0), json!({}), Value::Null)
    );

    let first = send(
        &api,
        "PUT",
        &path,
        &own,
        &json!({"document": {"theme": "dark", "fields": ["Phone"]}}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        (first.json()["version"].clone(), first.json()["source"].clone()),
        (json!(1), json!("saved"))
    );
    let second = send(
        &api,
        "PUT",
        &path,
        &own,
        &json!({"document": {"theme": "light"}, "source": "imported"}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let view = second.json();
    assert_eq!(
        (view["version"].clone(), view["source"].clone()),
        (json!(2), json!("imported"))
    );

    // A colleague retrieves it (M15), but cannot overwrite it.
    let read = http(api.address, "GET", &path, Some(&theirs)).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["document"], json!({"theme": "light"}));
    let refused = send(&api, "PUT", &path, &theirs, &json!({"document": {}})).await;
    assert_eq!(refused.status, 404, "{}", refused.body);

    assert_eq!(
        kinds(&env.pool, org).await,
        ["customization_saved", "customization_saved"]
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bad_document_is_refused_naming_the_field_and_nothing_is_saved() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let mut deep = json!({});
    for _ in 0..20 {
        deep = json!({ "level": deep });
    }
    let cases = [
        (json!({"document": [1, 2]}), "document"),
        (json!({"document": "text"}), "document"),
        (json!({"document": deep}), "document"),
        (json!({"document": {"blob": "x".repeat(256 * 1024)}}), "document"),
        (json!({"document": {}, "source": "pushed"}), "source"),
        (json!({"document": {}, "owner": "me"}), "owner"),
        (json!({}), "document"),
    ];
    for path in [
        format!("/v1/users/{user}/customization"),
        format!("/v1/organizations/{org}/default-customization"),
    ] {
        for (payload, field) in &cases {
            if path.contains("default") && *field == "source" {
                continue;
            }
            let response = send(&api, "PUT", &path, &lead, payload).await;
            assert_eq!(
                response.status,
                400,
                "{path} {}: {}",
                &payload.to_string()[..60.min(payload.to_string().len())],
                response.body
            );
            assert_eq!(response.json()["error"]["field"], *field, "{path}: {}", response.body);
        }
    }
    let saved: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customizations) + (SELECT count(*) FROM organization_default_customizations)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(saved, 0);
    assert!(kinds(&env.pool, org).await.is_empty());
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_organization_default_is_set_by_its_admins_and_reset_copies_it() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign_org = organization(&env.pool, AccessType::Office365, true).await;
    let [first, second] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let lead = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let stranger = create_token(&env.pool, "org_admin", Some(foreign_org), None, "x@other.example")
        .await
        .unwrap();
    let own = create_token(&env.pool, "user", None, Some(first), "first@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let default_path = format!("/v1/organizations/{org}/default-customization");
    let reset = |user: Uuid| format!("/v1/users/{user}/actions/reset-customization");

    // No default yet: a reset is refused with a clear code, nothing changes.
    let response = http(api.address, "POST", &reset(first), Some(&lead)).await;
    assert_eq!(response.status, 409, "{}", response.body);
    assert_eq!(response.json()["error"]["code"], "no_default_customization");
    let response = http(api.address, "GET", &default_path, Some(&lead)).await;
    assert_eq!((response.status, response.json()["version"].clone()), (200, json!(0)));

    // Only the organization's admins set it; a foreign one does not see it.
    let document = json!({"theme": "corporate", "fields": ["Account", "Phone"]});
    let response = send(&api, "PUT", &default_path, &own, &json!({"document": document})).await;
    assert_eq!(response.status, 403, "{}", response.body);
    for method in ["GET", "PUT"] {
        let response = send(&api, method, &default_path, &stranger, &json!({"document": document})).await;
        assert_eq!(response.status, 404, "{method}: {}", response.body);
    }
    let response = send(&api, "PUT", &default_path, &lead, &json!({"document": document})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let view = response.json();
    assert_eq!(
        (view["version"].clone(), view["updated_by"].clone()),
        (json!(1), json!("lead@acme.example"))
    );
    let read = http(api.address, "GET", &default_path, Some(&own)).await;
    assert_eq!(read.json()["document"], document, "the organization's users read it");

    // A user never saved: their customization reads as the default.
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{second}/customization"),
        Some(&lead),
    )
    .await;
    assert_eq!(
        (response.json()["version"].clone(), response.json()["document"].clone()),
        (json!(0), document.clone())
    );

    // The user resets their own; a second reset changes nothing.
    send(
        &api,
        "PUT",
        &format!("/v1/users/{first}/customization"),
        &own,
        &json!({"document": {"theme": "mine"}}),
    )
    .await;
    let response = http(api.address, "POST", &reset(first), Some(&own)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["changed"], true);
    let (version, source, stored): (i64, String, Value) =
        sqlx::query_as("SELECT version, source, document FROM customizations WHERE user_id = $1")
            .bind(first)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((version, source.as_str(), stored), (2, "default", document.clone()));
    let again = http(api.address, "POST", &reset(first), Some(&own)).await;
    assert_eq!(again.json()["changed"], false);

    // An admin resets a group of users at once (M16).
    let response = send(
        &api,
        "POST",
        "/v1/users/actions/reset-customization",
        &lead,
        &json!({"user_ids": [first, second]}),
    )
    .await;
    let results = response.json();
    assert_eq!(
        (results[0]["changed"].clone(), results[1]["changed"].clone()),
        (json!(false), json!(true)),
        "{results}"
    );
    assert_eq!(
        kinds(&env.pool, org).await,
        [
            "default_customization_updated",
            "customization_saved",
            "customization_reset",
            "customization_reset",
        ]
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_exported_file_imports_back_and_a_colleagues_customization_is_retrieved_once() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let foreign_org = organization(&env.pool, AccessType::Office365, true).await;
    let [me, colleague] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let stranger = users(&env.pool, foreign_org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let own = create_token(&env.pool, "user", None, Some(me), "me@acme.example")
        .await
        .unwrap();
    let theirs = create_token(&env.pool, "user", None, Some(colleague), "them@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let document = json!({
        "schema_version": 1,
        "objects": {"Contact": {"visible": true, "fields": ["Name", "Phone"]}, "Region__c": {"order": 2}},
        "behavior": {"auto_open": false, "max_results": 25},
        "theme": "dark"
    });
    send(
        &api,
        "PUT",
        &format!("/v1/users/{colleague}/customization"),
        &theirs,
        &json!({"document": document}),
    )
    .await;

    // Export: a file to download, named after the user and the version.
    let export = http(
        api.address,
        "GET",
        &format!("/v1/users/{colleague}/customization.json"),
        Some(&own),
    )
    .await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert_eq!(
        export.header("content-disposition"),
        Some(format!("attachment; filename=\"customization-{colleague}-v1.json\"").as_str())
    );
    let file = export.json();
    assert_eq!(
        (
            &file["format"],
            &file["format_version"],
            &file["version"],
            &file["document"]
        ),
        (&json!("syncfleet.customization"), &json!(1), &json!(1), &document)
    );

    // Import it as my own.
    let import = format!("/v1/users/{me}/customization/import");
    let response = http_with_body(api.address, "POST", &import, Some(&own), &export.body).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (
            response.json()["version"].clone(),
            response.json()["source"].clone(),
            response.json()["document"].clone()
        ),
        (json!(1), json!("imported"), document.clone())
    );

    // Retrieve: a one-off copy; the colleague's later saves do not follow.
    let retrieve = format!("/v1/users/{me}/customization/retrieve");
    let response = send(&api, "POST", &retrieve, &own, &json!({"from_user_id": colleague})).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (response.json()["version"].clone(), response.json()["source"].clone()),
        (json!(2), json!("retrieved"))
    );
    send(
        &api,
        "PUT",
        &format!("/v1/users/{colleague}/customization"),
        &theirs,
        &json!({"document": {"theme": "light"}}),
    )
    .await;
    let mine = http(api.address, "GET", &format!("/v1/users/{me}/customization"), Some(&own))
        .await
        .json();
    assert_eq!(mine["document"], document);

    // Another organization's user is not there; nor is one who never saved.
    let response = send(&api, "POST", &retrieve, &own, &json!({"from_user_id": stranger})).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (404, json!("from_user_id"))
    );
    let response = send(&api, "POST", &retrieve, &own, &json!({"from_user_id": me})).await;
    assert_eq!(response.status, 400, "{}", response.body);
    let stranger_token = create_token(&env.pool, "user", None, Some(stranger), "x@other.example")
        .await
        .unwrap();
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{me}/customization.json"),
        Some(&stranger_token),
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);

    assert_eq!(
        kinds(&env.pool, org).await,
        [
            "customization_saved",
            "customization_saved",
            "customization_retrieved",
            "customization_saved"
        ]
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bad_import_answers_what_is_wrong_and_changes_nothing() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let own = create_token(&env.pool, "user", None, Some(user), "me@acme.example")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    send(
        &api,
        "PUT",
        &format!("/v1/users/{user}/customization"),
        &own,
        &json!({"document": {"theme": "kept"}}),
    )
    .await;
    let file = |document: Value| {
        json!({"format": "syncfleet.customization", "format_version": 1, "document": document}).to_string()
    };
    let huge = file(json!({"notes": "x".repeat(300 * 1024)}));
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("{\"format\": \"syncfleet.customization\",".to_owned(), 400, "body", "not JSON"),
        ("not json at all".to_owned(), 400, "body", "JSON object"),
        (json!({"theme": "dark"}).to_string(), 400, "theme", "unknown field"),
        (json!({"format": "other", "format_version": 1, "document": {}}).to_string(), 400, "format", "not a customization file"),
        (json!({"format": "syncfleet.customization", "format_version": 2, "document": {}}).to_string(), 400, "format_version", "format_version must be 1"),
        (json!({"format": "syncfleet.customization", "format_version": 1}).to_string(), 400, "document", "no document"),
        (json!({"format": "syncfleet.customization", "format_version": 1, "exported_at": "yesterday", "document": {}}).to_string(), 400, "exported_at", "RFC 3339"),
        (file(json!(["a"])), 400, "document", "JSON object"),
        (file(json!({"objects": ["Contact"]})), 400, "document.objects", "must be an object"),
        (file(json!({"objects": {"Contact": {"visible": "yes"}}})), 400, "document.objects.Contact.visible", "true or false"),
        (file(json!({"objects": {"Contact": {"fields": ["Name", 7]}}})), 400, "document.objects.Contact.fields[1]", "field API name"),
        (file(json!({"objects": {"not an object name": {}}})), 400, "document.objects.not an object name", "API name"),
        (file(json!({"behavior": {"colors": ["red"]}})), 400, "document.behavior.colors", "a number or a text"),
        (file(json!({"schema_version": 3})), 400, "document.schema_version", "must be 1"),
        (huge, 413, "body", "at most"),
    ];
    let path = format!("/v1/users/{user}/customization/import");
    for (raw, status, field, message) in &cases {
        let response = http_with_body(api.address, "POST", &path, Some(&own), raw).await;
        let shown = &raw[..raw.len().min(80)];
        assert_eq!(response.status, *status, "{shown}: {}", response.body);
        let error = &response.json()["error"];
        assert_eq!(error["field"], *field, "{shown}: {}", response.body);
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{shown}: {}",
            response.body
        );
    }
    let (version, stored): (i64, Value) =
        sqlx::query_as("SELECT version, document FROM customizations WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((version, stored), (1, json!({"theme": "kept"})), "nothing changed");
    assert_eq!(kinds(&env.pool, org).await, ["customization_saved"]);
    api.stop().await;
    env.cleanup().await;
}
