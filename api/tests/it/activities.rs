//! The activity of users and organizations, as JSON and as CSV.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use uuid::Uuid;

use crate::{Api, sessions::download};

/// Records an activity `seconds_ago` seconds ago (whole milliseconds, as the
/// CSV shows them).
async fn activity(
    env: &TestEnv,
    organization: Uuid,
    user: Option<Uuid>,
    kind: &str,
    seconds_ago: i64,
    actor: &str,
    details: &str,
) -> DateTime<Utc> {
    let millis = Utc::now().timestamp_millis() - seconds_ago * 1000;
    let at = DateTime::from_timestamp_millis(millis).unwrap();
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, occurred_at, actor, kind, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(organization)
    .bind(user)
    .bind(at)
    .bind(actor)
    .bind(kind)
    .bind(details)
    .execute(&env.pool)
    .await
    .unwrap();
    at
}

fn occurred(items: &Value) -> Vec<DateTime<Utc>> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["occurred_at"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn activities_come_newest_first_and_rows_bounds_them() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    for index in 0..65 {
        let kind = if index % 5 == 0 {
            "sync_enabled"
        } else {
            "sync_disabled"
        };
        activity(
            &env,
            org,
            Some(user),
            kind,
            index * 10,
            "admin@example.test",
            "switched",
        )
        .await;
    }
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}/activities");
    let get = |query: &str| {
        let url = format!("{path}{query}");
        let admin = admin.clone();
        let address = api.address;
        async move {
            let response = http(address, "GET", &url, Some(&admin)).await;
            assert_eq!(response.status, 200, "{url}: {}", response.body);
            response.json()
        }
    };

    let default = get("").await;
    let times = occurred(&default);
    assert_eq!((times.len(), default["more"].clone()), (60, Value::Bool(true)));
    assert!(times.windows(2).all(|pair| pair[0] > pair[1]), "newest first");
    assert_eq!(default["items"][0]["actor"], "admin@example.test");
    assert_eq!(default["items"][0]["user_id"], user.to_string());
    let all = get("?rows=0").await;
    assert_eq!((occurred(&all).len(), all["more"].clone()), (65, Value::Bool(false)));
    assert_eq!(occurred(&get("?rows=2000").await).len(), 65);
    assert_eq!(occurred(&get("?rows=1").await), times[..1]);
    let enabled = get("?rows=0&kind=sync_enabled").await;
    assert_eq!(occurred(&enabled).len(), 13);
    assert!(
        enabled["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["kind"] == "sync_enabled")
    );
    // Between 100 and 200 seconds ago (the upper bound excluded).
    let since = times[20].to_rfc3339_opts(SecondsFormat::Millis, true);
    let until = times[10].to_rfc3339_opts(SecondsFormat::Millis, true);
    let window = get(&format!("?rows=0&since={since}&until={until}")).await;
    assert_eq!(occurred(&window), times[11..=20]);

    for (query, field) in [
        ("rows=2001", "rows"),
        ("rows=-1", "rows"),
        ("rows=many", "rows"),
        ("kind=login", "kind"),
        ("since=last-week", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("page_size=5", "page_size"),
    ] {
        for suffix in ["", ".csv"] {
            let url = format!("{path}{suffix}?{query}");
            let response = http(api.address, "GET", &url, Some(&admin)).await;
            assert_eq!(response.status, 400, "{url}: {}", response.body);
            assert_eq!(response.json()["error"]["field"], field, "{url}");
        }
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_organizations_activity_includes_its_users_and_no_other_organizations() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let stranger = users(&env.pool, other, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    activity(
        &env,
        org,
        None,
        "organization_created",
        30,
        "root",
        "organization created",
    )
    .await;
    activity(&env, org, Some(user), "user_added", 20, "root", "user added").await;
    activity(&env, other, Some(stranger), "user_added", 10, "root", "someone else").await;
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let response = http(
        api.address,
        "GET",
        &format!("/v1/organizations/{org}/activities"),
        Some(&admin),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let kinds: Vec<(String, Value)> = response.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["kind"].as_str().unwrap().to_owned(), item["user_id"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("user_added".to_owned(), Value::from(user.to_string())),
            ("organization_created".to_owned(), Value::Null),
        ]
    );
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{user}/activities"),
        Some(&admin),
    )
    .await;
    assert_eq!(response.json()["items"].as_array().unwrap().len(), 1);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_csv_export_quotes_fields_and_neutralizes_formulas() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let risky = [
        ("=evil@example.test", "=HYPERLINK(\"http://x.example\",\"click\")"),
        ("root", "Acme, Inc. \"moved\""),
        ("root", "two\nlines"),
        ("+1", "-2 items"),
        ("root", "@SUM(A1:A9)"),
        ("root", "plain"),
    ];
    let mut times = Vec::new();
    for (index, (actor, details)) in risky.iter().enumerate() {
        let seconds_ago = 100 - index as i64;
        times.push(activity(&env, org, Some(user), "sync_enabled", seconds_ago, actor, details).await);
    }
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let csv = download(api.address, &format!("/v1/users/{user}/activities.csv?rows=0"), &admin).await;
    assert_eq!(csv.status, 200, "{}", String::from_utf8_lossy(&csv.body));
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        csv.header("content-disposition"),
        Some(format!("attachment; filename=\"user-{user}-activities.csv\"").as_str())
    );
    let text = String::from_utf8(csv.body).unwrap();
    let at = |index: usize| times[index].to_rfc3339_opts(SecondsFormat::Millis, true);
    let expected = format!(
        "occurred_at,actor,kind,details,log,user_id\r\n\
         {},root,sync_enabled,plain,,{user}\r\n\
         {},root,sync_enabled,\"'@SUM(A1:A9)\",,{user}\r\n\
         {},\"'+1\",sync_enabled,\"'-2 items\",,{user}\r\n\
         {},root,sync_enabled,\"two\nlines\",,{user}\r\n\
         {},root,sync_enabled,\"Acme, Inc. \"\"moved\"\"\",,{user}\r\n\
         {},\"'=evil@example.test\",sync_enabled,\"'=HYPERLINK(\"\"http://x.example\"\",\"\"click\"\")\",,{user}\r\n",
        at(5),
        at(4),
        at(3),
        at(2),
        at(1),
        at(0),
    );
    assert_eq!(text, expected);
    // An independent reader (Python's csv) sees the same cells.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys\n\
             print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let rows: Vec<Vec<String>> = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0], ["occurred_at", "actor", "kind", "details", "log", "user_id"]);
    assert_eq!(rows[4][3], "two\nlines");
    assert_eq!(rows[5][3], "Acme, Inc. \"moved\"");
    assert_eq!(rows[6][1], "'=evil@example.test");

    let bounded = download(api.address, &format!("/v1/users/{user}/activities.csv?rows=2"), &admin).await;
    assert_eq!(
        String::from_utf8(bounded.body).unwrap().matches("\r\n").count(),
        3,
        "a header and two rows"
    );
    let organization_csv = download(api.address, &format!("/v1/organizations/{org}/activities.csv"), &admin).await;
    assert_eq!(organization_csv.status, 200);
    assert_eq!(
        organization_csv.header("content-disposition"),
        Some(format!("attachment; filename=\"organization-{org}-activities.csv\"").as_str())
    );
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn activities_of_another_organization_are_out_of_reach() {
    let env = TestEnv::new().await;
    let own = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, true).await;
    let [me, colleague] = users(&env.pool, own, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let stranger = users(&env.pool, other, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    activity(&env, other, Some(stranger), "user_added", 5, "root", "hidden").await;
    let lead = create_token(&env.pool, "org_admin", Some(own), None, "").await.unwrap();
    let user_token = create_token(&env.pool, "user", None, Some(me), "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    for path in [
        format!("/v1/organizations/{other}/activities"),
        format!("/v1/organizations/{other}/activities.csv"),
        format!("/v1/users/{stranger}/activities"),
        format!("/v1/users/{stranger}/activities.csv"),
        format!("/v1/organizations/{}/activities", Uuid::new_v4()),
    ] {
        let response = http(api.address, "GET", &path, Some(&lead)).await;
        assert_eq!(response.status, 404, "{path}: {}", response.body);
        assert!(!response.body.contains("hidden"));
        assert_eq!(
            http(api.address, "GET", &path, Some(&user_token)).await.status,
            404,
            "{path}"
        );
    }
    for path in [
        format!("/v1/organizations/{own}/activities"),
        format!("/v1/users/{colleague}/activities.csv"),
    ] {
        assert_eq!(http(api.address, "GET", &path, Some(&lead)).await.status, 200, "{path}");
    }
    // A user reads their own activity, not their colleagues' nor the
    // organization's.
    let own_activity = format!("/v1/users/{me}/activities");
    assert_eq!(
        http(api.address, "GET", &own_activity, Some(&user_token)).await.status,
        200
    );
    let colleagues = format!("/v1/users/{colleague}/activities");
    assert_eq!(
        http(api.address, "GET", &colleagues, Some(&user_token)).await.status,
        404
    );
    let organization_wide = http(
        api.address,
        "GET",
        &format!("/v1/organizations/{own}/activities"),
        Some(&user_token),
    )
    .await;
    assert_eq!(organization_wide.status, 403);
    api.stop().await;
    env.cleanup().await;
}
