//! Keyset pagination of the lists: every row exactly once and in order, with
//! ties and NULLs, both ways; bad paging and filters name their field; the
//! organization's user sub-list.

use std::{cmp::Ordering, collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use uuid::Uuid;

use crate::Api;

/// Walks a list page by page; returns every item and the total every page
/// reported (they must agree).
pub async fn walk(api: &Api, token: &str, path: &str, page_size: usize) -> (Vec<Value>, i64) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    for _ in 0..1000 {
        let mut url = format!("{path}{separator}page_size={page_size}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = http(api.address, "GET", &url, Some(token)).await;
        assert_eq!(response.status, 200, "{url}: {}", response.body);
        let page = response.json();
        let page_items = page["items"].as_array().unwrap();
        assert!(page_items.len() <= page_size, "{url}: too many items");
        let page_total = page["total"].as_i64().unwrap();
        assert_eq!(*total.get_or_insert(page_total), page_total, "{url}: the total moved");
        items.extend(page_items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page_items.len(), page_size, "{url}: a page before the last is full");
                cursor = Some(next.to_owned());
            }
            None => return (items, page_total),
        }
    }
    panic!("{path}: the walk does not end");
}

/// Reads an item's sort value.
pub type SortKey = fn(&Value) -> Value;

/// A sort value as the tests compare them: NULL above every value.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Key {
    Text(String),
    Time(DateTime<Utc>),
    Bool(bool),
    Int(i64),
    Null,
}

pub fn key(value: &Value) -> Key {
    match value {
        Value::Null => Key::Null,
        Value::Bool(value) => Key::Bool(*value),
        Value::Number(number) => Key::Int(number.as_i64().unwrap()),
        Value::String(text) => match text.parse::<DateTime<Utc>>() {
            Ok(time) => Key::Time(time),
            Err(_) => Key::Text(text.clone()),
        },
        other => panic!("not a sort value: {other}"),
    }
}

/// Asserts that `items` are strictly ordered by (`sort_key`, id) in the
/// direction asked, and each appears once.
pub fn assert_ordered(items: &[Value], sort_key: impl Fn(&Value) -> Value, id: &str, descending: bool, what: &str) {
    let mut seen = HashSet::new();
    for item in items {
        assert!(
            seen.insert(item[id].as_str().unwrap().to_owned()),
            "{what}: {} twice",
            item[id]
        );
    }
    for pair in items.windows(2) {
        let (a, b) = (key(&sort_key(&pair[0])), key(&sort_key(&pair[1])));
        let ordering = match a.partial_cmp(&b) {
            Some(Ordering::Equal) => pair[0][id].as_str().unwrap().cmp(pair[1][id].as_str().unwrap()),
            Some(ordering) => ordering,
            None => panic!("{what}: {a:?} and {b:?} do not compare"),
        };
        let expected = if descending { Ordering::Greater } else { Ordering::Less };
        assert_eq!(ordering, expected, "{what}: {a:?} then {b:?}");
    }
}

fn ids(items: &[Value], field: &str) -> HashSet<String> {
    items
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_user_list_walks_every_row_exactly_once_in_both_orders_with_ties_and_nulls() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let all: HashSet<String> = users(&env.pool, org, 23, SyncStatus::Enabled, Utc::now(), false)
        .await
        .iter()
        .map(Uuid::to_string)
        .collect();
    // Few distinct values, so most rows tie; a third without a last session,
    // half without a notification address.
    sqlx::query(
        "WITH edited AS ( \
         UPDATE users u SET name = 'Name ' || (r.n % 4), \
             created_at = timestamptz '2026-01-01 00:00:00+00' + (r.n % 3) * interval '1 hour', \
             notification_email = CASE WHEN r.n % 2 = 0 THEN 'n' || (r.n % 5) || '@x.test' END, \
             sync_status = (ARRAY['enabled', 'disabled', 'paused'])[r.n % 3 + 1] \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users WHERE organization_id = $1) r \
         WHERE u.id = r.id RETURNING u.id \
         ) \
         UPDATE user_runs u SET \
             last_session_id = CASE WHEN r.n % 3 <> 0 THEN gen_random_uuid() END, \
             last_session_status = CASE WHEN r.n % 3 <> 0 THEN 'succeeded' END, \
             last_session_at = CASE WHEN r.n % 3 <> 0 \
                 THEN timestamptz '2026-02-01 00:00:00+00' + (r.n % 2) * interval '1 minute' END \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users WHERE organization_id = $1) r \
         WHERE u.user_id = r.id AND EXISTS (SELECT 1 FROM edited)",
    )
    .bind(org)
    .execute(&env.pool)
    .await
    .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let sorts: [(&str, SortKey); 5] = [
        ("name", |user| user["name"].clone()),
        ("created_at", |user| user["created_at"].clone()),
        ("notification_email", |user| user["notification_email"].clone()),
        ("last_session_at", |user| user["last_session"]["at"].clone()),
        ("effective_sync_status", |user| user["effective_sync_status"].clone()),
    ];
    for (sort, sort_key) in sorts {
        for (order, descending) in [("asc", false), ("desc", true)] {
            for page_size in [1, 4, 7] {
                let path = format!("/v1/users?organization_id={org}&sort={sort}&order={order}");
                let (items, total) = walk(&api, &admin, &path, page_size).await;
                let what = format!("{path} by {page_size}");
                assert_eq!(total, 23, "{what}");
                assert_eq!(ids(&items, "id"), all, "{what}: every user once");
                assert_ordered(&items, sort_key, "id", descending, &what);
            }
        }
    }
    // `-column` is shorthand for descending.
    let (shorthand, _) = walk(&api, &admin, &format!("/v1/users?organization_id={org}&sort=-name"), 5).await;
    let (explicit, _) = walk(
        &api,
        &admin,
        &format!("/v1/users?organization_id={org}&sort=name&order=desc"),
        5,
    )
    .await;
    assert_eq!(shorthand, explicit);

    // Filters hold on every page.
    let (paused, total) = walk(
        &api,
        &admin,
        &format!("/v1/users?organization_id={org}&sync_status=paused"),
        2,
    )
    .await;
    assert_eq!(total, paused.len() as i64);
    assert!(paused.iter().all(|user| user["sync_status"] == "paused"));
    assert!(!paused.is_empty());
    let (named, _) = walk(&api, &admin, &format!("/v1/users?organization_id={org}&q=name%202"), 2).await;
    assert!(named.iter().all(|user| user["name"] == "Name 2"), "{named:?}");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_organization_list_walks_every_row_exactly_once_and_filters() {
    let env = TestEnv::new().await;
    let mut all = HashSet::from(["00000000-0000-0000-0000-000000000001".to_owned()]);
    for index in 0..9 {
        let access = if index % 3 == 0 {
            AccessType::Gmail
        } else {
            AccessType::Office365
        };
        let id = organization(&env.pool, access, index % 2 == 0).await;
        sqlx::query("UPDATE organizations SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(format!("Org {}", index % 3))
            .execute(&env.pool)
            .await
            .unwrap();
        all.insert(id.to_string());
    }
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let sorts: [(&str, SortKey); 4] = [
        ("name", |org| org["name"].clone()),
        ("sync_enabled", |org| org["sync_enabled"].clone()),
        ("access_type", |org| org["access_type"].clone()),
        ("created_at", |org| org["created_at"].clone()),
    ];
    for (sort, sort_key) in sorts {
        for (order, descending) in [("asc", false), ("desc", true)] {
            let path = format!("/v1/organizations?sort={sort}&order={order}");
            let (items, total) = walk(&api, &admin, &path, 3).await;
            assert_eq!((total, ids(&items, "id")), (10, all.clone()), "{path}");
            assert_ordered(&items, sort_key, "id", descending, &path);
        }
    }
    let (disabled, total) = walk(&api, &admin, "/v1/organizations?sync_enabled=false", 2).await;
    assert_eq!((total, disabled.len()), (4, 4));
    assert!(disabled.iter().all(|org| org["sync_enabled"] == false));
    let (gmail, total) = walk(&api, &admin, "/v1/organizations?access_type=gmail&q=org%200", 2).await;
    assert_eq!((total, gmail.len()), (3, 3), "{gmail:?}");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_paging_sorting_and_filters_are_refused_naming_the_field() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    users(&env.pool, org, 3, SyncStatus::Enabled, Utc::now(), false).await;
    organization(&env.pool, AccessType::Gmail, true).await;
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let cursor_of = |response: syncfleet_testkit::HttpResponse| {
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()["next_cursor"].as_str().unwrap().to_owned()
    };
    let users_cursor = cursor_of(http(api.address, "GET", "/v1/users?page_size=1", Some(&admin)).await);
    let organizations_cursor = cursor_of(http(api.address, "GET", "/v1/organizations?page_size=1", Some(&admin)).await);
    // One character changed in the middle of the token.
    let mut tampered: Vec<char> = users_cursor.chars().collect();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();

    let cases = [
        ("/v1/users?sort=password".to_owned(), "sort"),
        ("/v1/users?sort=-password".to_owned(), "sort"),
        ("/v1/users?order=sideways".to_owned(), "order"),
        ("/v1/users?sort=-name&order=asc".to_owned(), "order"),
        ("/v1/users?page_size=0".to_owned(), "page_size"),
        ("/v1/users?page_size=501".to_owned(), "page_size"),
        ("/v1/users?page_size=-3".to_owned(), "page_size"),
        ("/v1/users?page_size=lots".to_owned(), "page_size"),
        ("/v1/users?page_size=99999999999999999999999".to_owned(), "page_size"),
        ("/v1/users?cursor=not-a-cursor".to_owned(), "cursor"),
        ("/v1/users?cursor=%F0%9F%92%A9".to_owned(), "cursor"),
        (format!("/v1/users?page_size=1&cursor={tampered}"), "cursor"),
        (format!("/v1/users?page_size=1&cursor={organizations_cursor}"), "cursor"),
        (format!("/v1/users?sort=email&cursor={users_cursor}"), "cursor"),
        (format!("/v1/users?order=desc&cursor={users_cursor}"), "cursor"),
        (format!("/v1/users?q=user&cursor={users_cursor}"), "cursor"),
        (format!("/v1/organizations?cursor={users_cursor}"), "cursor"),
        ("/v1/users?sync_status=asleep".to_owned(), "sync_status"),
        (
            "/v1/users?effective_sync_status=asleep".to_owned(),
            "effective_sync_status",
        ),
        ("/v1/users?mailbox_status=full".to_owned(), "mailbox_status"),
        ("/v1/users?organization_id=acme".to_owned(), "organization_id"),
        ("/v1/users?plan_id=gold".to_owned(), "plan_id"),
        ("/v1/users?limit=5&offset=10".to_owned(), "limit"),
        ("/v1/users?sort=name&sort=email".to_owned(), "sort"),
        ("/v1/organizations?sync_enabled=yes".to_owned(), "sync_enabled"),
        ("/v1/organizations?access_type=lotus_notes".to_owned(), "access_type"),
        ("/v1/organizations?sort=users".to_owned(), "sort"),
        ("/v1/organizations?page_size=1000".to_owned(), "page_size"),
        (
            format!("/v1/organizations/{org}/users?organization_id={org}"),
            "organization_id",
        ),
        (format!("/v1/organizations/{org}/users?sort=password"), "sort"),
        ("/v1/organizations/acme/users".to_owned(), "id"),
    ];
    for (path, field) in cases {
        let response = http(api.address, "GET", &path, Some(&admin)).await;
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        let error = response.json();
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["field"].as_str()),
            (Some("invalid"), Some(field)),
            "{path}: {error}"
        );
    }
    // The cursor goes on with the sort and filters it was made for.
    let next = http(
        api.address,
        "GET",
        &format!("/v1/users?page_size=1&cursor={users_cursor}"),
        Some(&admin),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.body);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_organizations_user_list_holds_its_users_only_and_other_organizations_are_out_of_reach() {
    let env = TestEnv::new().await;
    let own = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, false).await;
    let own_users = users(&env.pool, own, 3, SyncStatus::Enabled, Utc::now(), false).await;
    users(&env.pool, own, 1, SyncStatus::Disabled, Utc::now(), false).await;
    users(&env.pool, other, 2, SyncStatus::Enabled, Utc::now(), false).await;
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let lead = create_token(&env.pool, "org_admin", Some(own), None, "").await.unwrap();
    let me = create_token(&env.pool, "user", None, Some(own_users[0]), "")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let own_path = format!("/v1/organizations/{own}/users");
    let other_path = format!("/v1/organizations/{other}/users");
    for token in [&admin, &lead] {
        let (items, total) = walk(&api, token, &own_path, 2).await;
        assert_eq!((total, items.len()), (4, 4));
        assert!(items.iter().all(|user| user["organization_id"] == own.to_string()));
    }
    let (enabled, _) = walk(&api, &lead, &format!("{own_path}?sync_status=enabled"), 2).await;
    assert_eq!(enabled.len(), 3);
    let (suspended, _) = walk(
        &api,
        &admin,
        &format!("{other_path}?effective_sync_status=organization_disabled"),
        5,
    )
    .await;
    assert_eq!(suspended.len(), 2, "the other organization is disabled");

    // Another organization is out of an organization admin's reach, and a
    // user token lists only themself.
    for path in [
        other_path.clone(),
        format!("/v1/organizations/{}/users", Uuid::new_v4()),
    ] {
        let response = http(api.address, "GET", &path, Some(&lead)).await;
        assert_eq!(
            (response.status, response.json()["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (mine, total) = walk(&api, &me, &own_path, 5).await;
    assert_eq!(total, 1);
    assert_eq!(mine[0]["id"], own_users[0].to_string());
    let (listed, total) = walk(&api, &me, "/v1/users", 5).await;
    assert_eq!(
        (total, listed[0]["id"].clone()),
        (1, Value::from(own_users[0].to_string()))
    );
    assert_eq!(http(api.address, "GET", &other_path, Some(&me)).await.status, 404);
    api.stop().await;
    env.cleanup().await;
}
