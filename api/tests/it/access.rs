//! The authorization matrix: every route of the OpenAPI document (so a new
//! route is covered the day it is added), every role, against the caller's
//! own organization and a foreign one.
//!
//! - Without a token every route answers 401.
//! - An organization admin or a user naming anything of another organization
//!   gets 404 (a bulk action: a per-user `not_found`), and the database is
//!   exactly as before the whole sweep.
//! - No answer to an organization admin or a user ever holds a foreign id.
//! - Reading their own things: admins and organization admins get 200; a user
//!   gets 200 or 403.

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{
        AccessType, DeadJobStatus, EffectiveSyncStatus, IssueCategory, IssueSource, Scope, SessionStatus, SyncStatus,
        Trigger, UserRole,
    },
    queue::JobKind,
};
use syncfleet_testkit::{HttpResponse, TestEnv, http, http_with_body, organization, users};
use uuid::Uuid;

use crate::Api;

/// The ids one side of the matrix names.
#[derive(Clone, Copy, Debug)]
struct Side {
    organization: Uuid,
    user: Uuid,
    session: Uuid,
    job: Uuid,
    push: Uuid,
}

/// Live streams never end: their access is tested in `notifications`, and
/// only without a token here.
const STREAMS: [&str; 1] = ["/v1/me/notifications/stream"];

impl Side {
    /// `template` with its parameters filled in from this side.
    fn path(&self, template: &str, action: &str) -> String {
        let id = if template.starts_with("/v1/organizations/{id}") {
            self.organization
        } else if template.starts_with("/v1/sessions/{id}") {
            self.session
        } else if template.starts_with("/v1/jobs/{id}") {
            self.job
        } else if template.starts_with("/v1/pushes/{id}") {
            self.push
        } else {
            self.user
        };
        template
            .replace("{id}", &id.to_string())
            .replace("{action}", action)
            .replace("{kind}", "crm_refresh_token")
            .replace("{name}", "sales")
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{user}", &self.user.to_string())
            .replace("{organization}", &self.organization.to_string())
    }
}

/// Every action name of `POST .../actions/{action}`.
const ACTIONS: [&str; 16] = [
    "enable-sync",
    "disable-sync",
    "force-sync",
    "reset-mailbox",
    "reinitialize-mailbox",
    "check-settings",
    "check-crm",
    "check-mailbox",
    "install-sidebar",
    "remove-sidebar",
    "check-sidebar",
    "reset-customization",
    "change-organization",
    "change-plan",
    "delete",
    "force-delete",
];

/// A valid body for each mutation, so that a refusal is about who asks, not
/// about what they sent. `{user}` and `{organization}` are the side's ids.
fn sample_body(method: &str, template: &str, action: &str) -> Option<&'static str> {
    Some(match (method, template) {
        ("POST", "/v1/users") => {
            r#"{"name": "New Person", "email": "new.person@matrix.test", "organization_id": "{organization}"}"#
        }
        ("POST", "/v1/organizations") => {
            r#"{"name": "Matrix Org", "external_id": "matrix-new", "access_type": "office365"}"#
        }
        ("POST", "/v1/plans") => r#"{"code": "matrix", "name": "Matrix plan"}"#,
        ("PATCH", "/v1/users/{id}") => r#"{"description": "edited"}"#,
        ("PATCH", "/v1/organizations/{id}") => r#"{"name": "Renamed"}"#,
        ("PUT", "/v1/users/{id}/email-configuration") => r#"{"account_logon": "someone"}"#,
        ("PUT", "/v1/users/{id}/credentials/{kind}") => r#"{"token": "a-refresh-token"}"#,
        ("PUT", "/v1/users/{id}/mailbox") => r#"{"refresh_token": "a-refresh-token"}"#,
        ("PUT", "/v1/users/{id}/crm") => r#"{"refresh_token": "a-refresh-token"}"#,
        ("PUT", "/v1/users/{id}/customization") => r#"{"document": {"theme": "dark"}}"#,
        ("PUT", "/v1/organizations/{id}/default-customization") => r#"{"document": {"theme": "light"}}"#,
        ("POST", "/v1/users/{id}/customization/import") => {
            r#"{"format": "syncfleet.customization", "format_version": 1, "document": {"theme": "dark"}}"#
        }
        ("POST", "/v1/users/{id}/customization/retrieve") => r#"{"from_user_id": "{user}"}"#,
        ("POST", "/v1/pushes") => r#"{"all": true, "from_user_id": "{user}"}"#,
        ("POST", "/v1/me/notifications/{id}/read") | ("POST", "/v1/me/notifications/read-all") => "",
        ("PUT", "/v1/organizations/{id}/sync-settings")
        | ("PUT", "/v1/organizations/{id}/sync-settings/groups/{name}")
        | ("PUT", "/v1/users/{id}/sync-settings") => r#"{"settings": {}, "locked": []}"#,
        ("POST", "/v1/users/{id}/actions/{action}") => match action {
            "change-organization" => r#"{"organization_id": "{organization}"}"#,
            "change-plan" => r#"{"plan_id": null}"#,
            _ => "",
        },
        ("POST", "/v1/ops/dead-jobs/actions/{action}") => r#"{"ids": ["{user}"]}"#,
        ("POST", "/v1/ops/dead-jobs/{id}/replay") => "",
        ("POST", "/v1/users/actions/{action}") => match action {
            "change-organization" => r#"{"user_ids": ["{user}"], "organization_id": "{organization}"}"#,
            "change-plan" => r#"{"user_ids": ["{user}"], "plan_id": null}"#,
            _ => r#"{"user_ids": ["{user}"]}"#,
        },
        (_, _)
            if method == "GET"
                || method == "DELETE"
                || template.ends_with("/enable")
                || template.ends_with("/disable") =>
        {
            ""
        }
        _ => return None,
    })
}

/// A digest of every table an api request can change.
async fn fingerprint(pool: &PgPool) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relname NOT IN ('_sqlx_migrations', 'leader_leases') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut digest = BTreeMap::new();
    for table in tables {
        let query = format!("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t");
        let value: String = sqlx::query_scalar(&query).fetch_one(pool).await.unwrap();
        digest.insert(table, value);
    }
    digest
}

async fn side(pool: &PgPool, access_type: AccessType) -> Side {
    let organization = organization(pool, access_type, true).await;
    let user = users(pool, organization, 2, SyncStatus::Enabled, Utc::now(), true).await[0];
    let session = Uuid::now_v7();
    let job = Uuid::now_v7();
    let push = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO pushes (id, organization_id, pusher_user_id, requested_by, customization_version, document) \
         VALUES ($1, $2, $3, 'matrix', 1, '{}')",
    )
    .bind(push)
    .bind(organization)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync_sessions (id, user_id, organization_id, job_id, trigger, status, scheduled_at, started_at, \
                                    ended_at, worker_id) \
         VALUES ($1, $2, $3, $4, 'cadence', 'succeeded', now(), now(), now(), 'matrix')",
    )
    .bind(session)
    .bind(user)
    .bind(organization)
    .bind(job)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync_issues (id, session_id, user_id, source, category, message) \
         VALUES ($1, $2, $3, 'crm', 'validation', 'refused')",
    )
    .bind(Uuid::now_v7())
    .bind(session)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    // The gzip of an empty log.
    let empty_gzip: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    sqlx::query(
        "INSERT INTO sync_session_logs (session_id, user_id, started_at, log_gzip) \
         SELECT id, user_id, started_at, $2 FROM sync_sessions WHERE id = $1",
    )
    .bind(session)
    .bind(empty_gzip)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by, status) \
         VALUES ($1, 'check-crm', $2, $3, 'matrix', 'succeeded')",
    )
    .bind(job)
    .bind(organization)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) \
         VALUES ($1, $2, $3, 'matrix', 'user_added', 'seeded')",
    )
    .bind(Uuid::now_v7())
    .bind(organization)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    Side {
        organization,
        user,
        session,
        job,
        push,
    }
}

/// Every operation of the document: (method, path template).
async fn operations(api: &Api, token: &str) -> Vec<(String, String)> {
    let response = http(api.address, "GET", "/openapi.json", Some(token)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let document: Value = serde_json::from_str(&response.body).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 15, "the document lists the routes: {operations:?}");
    operations
}

/// Each concrete request of an operation: one per action for action routes.
fn requests(method: &str, template: &str, side: &Side) -> Vec<(String, String)> {
    let actions: Vec<&str> = if template.contains("{action}") {
        ACTIONS.to_vec()
    } else {
        vec![""]
    };
    actions
        .into_iter()
        .map(|action| {
            let body = sample_body(method, template, action)
                .unwrap_or_else(|| panic!("add a sample body for {method} {template} to the matrix"));
            (side.path(template, action), side.fill(body))
        })
        .collect()
}

async fn call(api: &Api, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpResponse {
    http_with_body(api.address, method, path, token, body).await
}

#[tokio::test]
async fn every_route_every_role_own_and_foreign_organization() {
    let env = TestEnv::new().await;
    let own = side(&env.pool, AccessType::Office365).await;
    let foreign = side(&env.pool, AccessType::Office365).await;
    let admin = create_token(&env.pool, "admin", None, None, "admin@matrix.test")
        .await
        .unwrap();
    let org_admin = create_token(&env.pool, "org_admin", Some(own.organization), None, "lead@matrix.test")
        .await
        .unwrap();
    let user = create_token(&env.pool, "user", None, Some(own.user), "user@matrix.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let operations = operations(&api, &admin).await;
    let foreign_ids = [foreign.organization, foreign.user, foreign.session, foreign.job].map(|id| id.to_string());

    // 1. No token: 401 everywhere, before anything else is looked at.
    for (method, template) in &operations {
        for (path, body) in requests(method, template, &foreign) {
            let response = call(&api, method, &path, None, &body).await;
            assert_eq!(
                response.status, 401,
                "{method} {path} without a token: {}",
                response.body
            );
        }
    }

    // 2. Foreign ids: 404 for an organization admin and a user, nothing changed.
    let before = fingerprint(&env.pool).await;
    let mut refused = 0;
    for (role, token) in [("org_admin", &org_admin), ("user", &user)] {
        for (method, template) in operations
            .iter()
            .filter(|(_, template)| !STREAMS.contains(&template.as_str()))
        {
            let names_an_id = template.contains('{');
            for (path, body) in requests(method, template, &foreign) {
                let response = call(&api, method, &path, Some(token), &body).await;
                let what = format!("{role} {method} {path} {body}: {} {}", response.status, response.body);
                assert!(response.status < 500, "{what}");
                // A bulk answer names the users the caller named.
                if template != "/v1/users/actions/{action}" {
                    for id in &foreign_ids {
                        assert!(!response.body.contains(id.as_str()), "a foreign id leaked: {what}");
                    }
                }
                if template == "/v1/users/actions/{action}" {
                    let results: Value = serde_json::from_str(&response.body).unwrap();
                    let code = results[0]["error"]["code"].as_str();
                    let allowed: &[&str] = if role == "user" {
                        &["not_found", "forbidden"]
                    } else {
                        &["not_found"]
                    };
                    assert!(
                        response.status == 200 && code.is_some_and(|code| allowed.contains(&code)),
                        "{what}"
                    );
                } else if names_an_id {
                    assert_eq!(response.status, 404, "{what}");
                } else if method != "GET" && !template.starts_with("/v1/me/") {
                    // Creating in a foreign organization, or a role that may
                    // not create at all.
                    assert!(matches!(response.status, 403 | 404), "{what}");
                }
                refused += 1;
            }
        }
    }
    assert!(refused > 50, "the sweep covered {refused} requests");
    assert_eq!(
        fingerprint(&env.pool).await,
        before,
        "a refused request changed something"
    );

    // 3. Their own things, read: visible to admins and organization admins.
    for (role, token) in [("admin", &admin), ("org_admin", &org_admin), ("user", &user)] {
        for (method, template) in operations
            .iter()
            .filter(|(method, template)| method == "GET" && !STREAMS.contains(&template.as_str()))
        {
            for (path, body) in requests(method, template, &own) {
                let response = call(&api, method, &path, Some(token), &body).await;
                let what = format!("{role} {method} {path}: {} {}", response.status, response.body);
                // A sub-resource (a group preset) may not exist.
                let optional = template.contains("{name}") || template.contains("{kind}");
                // Only users have notifications.
                let personal = template.starts_with("/v1/me/");
                // The operator console is for admins; to others it does not
                // exist. A dead job the path names need not exist either.
                let console = template.starts_with("/v1/ops/");
                let optional = optional || template.starts_with("/v1/ops/dead-jobs/{id}");
                match role {
                    "org_admin" | "user" if console => assert_eq!(response.status, 404, "{what}"),
                    "user" => assert!(matches!(response.status, 200 | 403) || optional, "{what}"),
                    _ => assert!(
                        response.status == 200
                            || (optional && response.status == 404)
                            || (personal && response.status == 403),
                        "{what}"
                    ),
                }
                if role != "admin" {
                    for id in &foreign_ids {
                        assert!(!response.body.contains(id.as_str()), "a foreign id leaked: {what}");
                    }
                }
            }
        }
    }

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_nul_character_is_refused_naming_where_it_is() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let query = call(&api, "GET", "/v1/organizations?q=a%00b", Some(&admin), "").await;
    assert_eq!(query.status, 400, "{}", query.body);
    assert!(query.body.contains(r#""field":"query""#), "{}", query.body);
    let body = call(
        &api,
        "POST",
        "/v1/organizations",
        Some(&admin),
        r#"{"name": "a\u0000b", "external_id": "x", "access_type": "office365"}"#,
    )
    .await;
    assert_eq!(body.status, 400, "{}", body.body);
    assert!(body.body.contains(r#""field":"body""#), "{}", body.body);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the default organization");

    api.stop().await;
    env.cleanup().await;
}

/// The values a parameter's schema lists: its `enum` (through a `$ref` to a
/// component, or the branch of a `oneOf` or `anyOf` that is not `null`), or
/// the alternatives of a `^(a|b)$` pattern (`^-?(a|b)$` lists `-a` and `-b`
/// too).
fn listed(document: &Value, schema: &Value) -> Vec<String> {
    let schema = resolved(document, schema);
    for branch in ["oneOf", "anyOf"] {
        for option in schema[branch].as_array().into_iter().flatten() {
            let values = listed(document, option);
            if !values.is_empty() {
                return values;
            }
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().filter_map(Value::as_str).map(str::to_owned).collect();
    }
    let Some(pattern) = schema["pattern"].as_str() else {
        return Vec::new();
    };
    let (negatable, rest) = match pattern.strip_prefix("^-?(") {
        Some(rest) => (true, rest),
        None => (false, pattern.strip_prefix("^(").unwrap_or_default()),
    };
    let Some(alternatives) = rest.strip_suffix(")$") else {
        return Vec::new();
    };
    let word = |value: &str| value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !alternatives.split('|').all(word) {
        return Vec::new();
    }
    let mut values: Vec<String> = alternatives.split('|').map(str::to_owned).collect();
    if negatable {
        values.extend(values.clone().into_iter().map(|value| format!("-{value}")));
    }
    values
}

/// Every value of an enum, as text.
fn texts<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

/// Every `$ref` under `value` that names no schema of the document.
fn dangling_references(document: &Value, value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(path)) => {
                        let name = path.strip_prefix("#/components/schemas/").unwrap_or(path);
                        if document["components"]["schemas"][name].is_null() {
                            found.push(path.to_owned());
                        }
                    }
                    _ => dangling_references(document, value, found),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                dangling_references(document, item, found);
            }
        }
        _ => {}
    }
}

/// The schema `schema` points to, through `$ref`s into the components.
fn resolved<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|path| path.strip_prefix("#/components/schemas/"))
    {
        Some(name) => resolved(document, &document["components"]["schemas"][name]),
        None => schema,
    }
}

/// Every value of `answer` where `schema` lists the values allowed, that
/// the list does not hold: `(where, value)`.
fn unlisted(document: &Value, schema: &Value, answer: &Value, at: &str, found: &mut Vec<(String, Value)>) {
    let schema = resolved(document, schema);
    for branch in ["oneOf", "anyOf", "allOf"] {
        for option in schema[branch].as_array().into_iter().flatten() {
            if !answer.is_null() && resolved(document, option)["type"].as_str() != Some("null") {
                unlisted(document, option, answer, at, found);
            }
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !answer.is_null()
        && !values.contains(answer)
    {
        found.push((at.to_owned(), answer.clone()));
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), answer.as_object()) {
        for (name, value) in object {
            if let Some(property) = properties.get(name) {
                unlisted(document, property, value, &format!("{at}.{name}"), found);
            }
        }
    }
    if let Some(items) = answer.as_array() {
        for (index, item) in items.iter().enumerate() {
            unlisted(document, &schema["items"], item, &format!("{at}[{index}]"), found);
        }
    }
}

#[tokio::test]
async fn every_value_the_document_lists_is_accepted_and_every_value_answered_is_listed() {
    let env = TestEnv::new().await;
    let own = side(&env.pool, AccessType::Office365).await;
    let disabled = organization(&env.pool, AccessType::Gmail, false).await;
    users(&env.pool, disabled, 1, SyncStatus::Disabled, Utc::now(), true).await;
    let admin = create_token(&env.pool, "admin", None, None, "admin@document.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let response = http(api.address, "GET", "/openapi.json", Some(&admin)).await;
    let document: Value = serde_json::from_str(&response.body).unwrap();

    // Each of the domain's enums is a named schema listing every value it
    // has (so no value the api answers can be missing), and every reference
    // leads to a schema.
    let schemas = &document["components"]["schemas"];
    for (name, values) in [
        ("AccessType", texts(AccessType::ALL)),
        ("SyncStatus", texts(SyncStatus::ALL)),
        ("EffectiveSyncStatus", texts(EffectiveSyncStatus::ALL)),
        ("UserRole", texts(UserRole::ALL)),
        ("Trigger", texts(Trigger::ALL)),
        ("Scope", texts(Scope::ALL)),
        ("SessionStatus", texts(SessionStatus::ALL)),
        ("IssueSource", texts(IssueSource::ALL)),
        ("IssueCategory", texts(IssueCategory::ALL)),
        ("DeadJobStatus", texts(DeadJobStatus::ALL)),
        ("JobKind", texts(JobKind::ALL)),
    ] {
        assert_eq!(schemas[name]["enum"], serde_json::json!(values), "{name}");
    }
    let mut dangling = Vec::new();
    dangling_references(&document, &document, &mut dangling);
    assert!(dangling.is_empty(), "references to no schema: {dangling:?}");

    let mut checked = 0;
    for (template, item) in document["paths"].as_object().unwrap() {
        if STREAMS.contains(&template.as_str()) {
            continue;
        }
        for method in ["get", "put", "post", "patch", "delete"] {
            let Some(operation) = item.get(method) else { continue };
            let method = method.to_uppercase();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                for value in listed(&document, &parameter["schema"]) {
                    let (path, action) = match parameter["in"].as_str() {
                        Some("query") if method == "GET" => (format!("{}?{name}={value}", own.path(template, "")), ""),
                        Some("path") => (own.path(&template.replace(&format!("{{{name}}}"), &value), ""), ""),
                        _ => continue,
                    };
                    let Some(body) = sample_body(&method, template, action) else {
                        continue;
                    };
                    let answer = call(&api, &method, &path, Some(&admin), &own.fill(body)).await;
                    let field = if answer.body.starts_with('{') {
                        answer.json()["error"]["field"].clone()
                    } else {
                        Value::Null
                    };
                    assert!(
                        answer.status < 500 && field != name,
                        "{method} {path}: the documented {name} {value:?} is refused: {} {}",
                        answer.status,
                        answer.body
                    );
                    checked += 1;
                }
            }
            if method != "GET"
                || template.contains('{')
                    && !template.starts_with("/v1/users/{id}")
                    && !template.starts_with("/v1/organizations/{id}")
            {
                continue;
            }
            let path = own.path(template, "");
            let answer = call(&api, "GET", &path, Some(&admin), "").await;
            let schema = &operation["responses"]["200"]["content"]["application/json"]["schema"];
            if answer.status != 200 || schema.is_null() {
                continue;
            }
            let mut found = Vec::new();
            unlisted(&document, schema, &answer.json(), &path, &mut found);
            assert!(
                found.is_empty(),
                "answered values the document does not list: {found:?}"
            );
        }
    }
    assert!(checked >= 20, "the document lists values: {checked} checked");
    api.stop().await;
    env.cleanup().await;
}
