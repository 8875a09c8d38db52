//! An organization's statistics: the last session of each of its users.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use serde_json::Value;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use uuid::Uuid;

use crate::{
    Api,
    lists::{SortKey, assert_ordered, walk},
    sessions::{make_last, session},
};

#[tokio::test]
async fn statistics_show_each_users_last_session_paged_by_name() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, true).await;
    let members = users(&env.pool, org, 7, SyncStatus::Enabled, Utc::now(), false).await;
    users(&env.pool, other, 2, SyncStatus::Enabled, Utc::now(), false).await;
    // Names that tie.
    for (index, user) in members.iter().enumerate() {
        sqlx::query("UPDATE users SET name = $2 WHERE id = $1")
            .bind(user)
            .bind(["Ann", "Bob", "Cid"][index % 3])
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let now = Utc::now();
    // Five of the seven have synchronized; the last session is the newer one.
    let mut last = Vec::new();
    for (index, user) in members.iter().take(5).enumerate() {
        session(&env, *user, org, now - chrono::Duration::minutes(40), "succeeded", 9).await;
        let status = if index % 2 == 0 {
            "failed"
        } else {
            "succeeded_with_issues"
        };
        let newest = session(
            &env,
            *user,
            org,
            now - chrono::Duration::minutes(10 + index as i64),
            status,
            index,
        )
        .await;
        make_last(&env, *user, newest).await;
        last.push(newest);
    }
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/organizations/{org}/statistics");

    let (by_name, total) = walk(&api, &admin, &path, 2).await;
    assert_eq!(total, 7);
    let listed: HashSet<String> = by_name
        .iter()
        .map(|row| row["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, members.iter().map(Uuid::to_string).collect());
    assert_ordered(&by_name, |row| row["name"].clone(), "user_id", false, "by name");
    for row in &by_name {
        let user: Uuid = row["user_id"].as_str().unwrap().parse().unwrap();
        match members.iter().position(|member| *member == user) {
            Some(index) if index < 5 => {
                assert_eq!(row["last_session_id"], last[index].to_string());
                assert_eq!(row["issue_count"], index, "the last session's, not the older one's");
                assert_eq!(row["items_to_mailbox"], 1);
                let failed = index % 2 == 0;
                assert_eq!(
                    row["last_session_status"],
                    if failed { "failed" } else { "succeeded_with_issues" }
                );
                assert_eq!(
                    row["error_category"],
                    if failed { Value::from("auth") } else { Value::Null }
                );
            }
            _ => {
                assert_eq!(row["last_session_id"], Value::Null);
                assert_eq!(row["issue_count"], Value::Null);
            }
        }
    }
    for (sort, sort_key) in [
        (
            "last_session_at",
            (|row: &Value| row["last_session_at"].clone()) as SortKey,
        ),
        ("issue_count", |row| row["issue_count"].clone()),
    ] {
        for (order, descending) in [("asc", false), ("desc", true)] {
            let url = format!("{path}?sort={sort}&order={order}");
            let (items, _) = walk(&api, &admin, &url, 3).await;
            assert_eq!(items.len(), 7, "{url}");
            assert_ordered(&items, sort_key, "user_id", descending, &url);
        }
    }
    let (failed, total) = walk(&api, &admin, &format!("{path}?status=failed"), 5).await;
    assert_eq!((total, failed.len()), (3, 3));

    for (query, field) in [
        ("status=sleeping", "status"),
        ("sort=password", "sort"),
        ("page_size=0", "page_size"),
        ("cursor=eyJ9", "cursor"),
        ("rows=5", "rows"),
    ] {
        let response = http(api.address, "GET", &format!("{path}?{query}"), Some(&admin)).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{query}");
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn statistics_of_another_organization_are_out_of_reach() {
    let env = TestEnv::new().await;
    let own = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, true).await;
    let me = users(&env.pool, own, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    users(&env.pool, other, 1, SyncStatus::Enabled, Utc::now(), false).await;
    let lead = create_token(&env.pool, "org_admin", Some(own), None, "").await.unwrap();
    let user_token = create_token(&env.pool, "user", None, Some(me), "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let statistics = |organization: Uuid| format!("/v1/organizations/{organization}/statistics");
    assert_eq!(
        http(api.address, "GET", &statistics(own), Some(&lead)).await.status,
        200
    );
    for organization in [other, Uuid::new_v4()] {
        let response = http(api.address, "GET", &statistics(organization), Some(&lead)).await;
        assert_eq!(
            (response.status, response.json()["error"]["code"].clone()),
            (404, Value::from("not_found"))
        );
    }
    assert_eq!(
        http(api.address, "GET", &statistics(own), Some(&user_token))
            .await
            .status,
        403
    );
    assert_eq!(
        http(api.address, "GET", &statistics(other), Some(&user_token))
            .await
            .status,
        404
    );
    let response = http(api.address, "GET", "/v1/organizations/acme/statistics", Some(&lead)).await;
    assert_eq!(
        (response.status, response.json()["error"]["field"].clone()),
        (400, Value::from("id"))
    );
    api.stop().await;
    env.cleanup().await;
}
