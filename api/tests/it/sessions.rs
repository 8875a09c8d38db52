//! A user's sessions and issues, one session with its issues, and its log as
//! a zip (from a real worker's session).

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    Api,
    lists::{SortKey, assert_ordered, walk},
};

/// An HTTP answer with its body as bytes (a zip, a CSV sent in chunks).
pub struct Download {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Download {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A GET whose body is kept as bytes, chunked transfer decoded.
pub async fn download(address: std::net::SocketAddr, path: &str, token: &str) -> Download {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let mut raw = &response[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value == "chunked");
    let mut body = Vec::new();
    if chunked {
        loop {
            let end = raw.windows(2).position(|window| window == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
            raw = &raw[end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&raw[..size]);
            raw = &raw[size + 2..];
        }
    } else {
        body = raw.to_vec();
    }
    Download { status, headers, body }
}

/// A session running for a user since `started_at`: it holds the user's
/// lease, and its row is written when it ends.
pub async fn running_session(env: &TestEnv, user: Uuid, organization: Uuid, started_at: DateTime<Utc>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "UPDATE user_runs SET running_session_id = $2, lease_expires_at = now() + interval '1 minute', \
             running_started_at = $3, running_job_id = gen_random_uuid(), running_attempt = 1, \
             running_trigger = 'cadence', running_scheduled_at = $3, running_worker_id = 'test-worker', \
             running_organization_id = $4 \
         WHERE user_id = $1",
    )
    .bind(user)
    .bind(id)
    .bind(started_at)
    .bind(organization)
    .execute(&env.pool)
    .await
    .unwrap();
    id
}

/// A finished session of a user, with `issues` issues.
pub async fn session(
    env: &TestEnv,
    user: Uuid,
    organization: Uuid,
    started_at: DateTime<Utc>,
    status: &str,
    issues: usize,
) -> Uuid {
    let id = Uuid::now_v7();
    let running = status == "running";
    let ended_at = (!running).then(|| started_at + chrono::Duration::seconds(2));
    let failed = status == "failed";
    sqlx::query(
        "INSERT INTO sync_sessions (id, user_id, organization_id, job_id, trigger, scope, status, scheduled_at, \
             started_at, ended_at, worker_id, items_to_crm, items_to_mailbox, issue_count, calls, error_category, \
             error_source, error_message) \
         VALUES ($1, $2, $3, $4, 'cadence', 'incremental', $5, $6, $6, $7, 'test-worker', $8, 1, $8, \
             '{\"graph\": 3, \"salesforce\": 2}', $9, $10, $11)",
    )
    .bind(id)
    .bind(user)
    .bind(organization)
    .bind(Uuid::new_v4())
    .bind(status)
    .bind(started_at)
    .bind(ended_at)
    .bind(i32::try_from(issues).unwrap())
    .bind(failed.then_some("auth"))
    .bind(failed.then_some("mailbox"))
    .bind(failed.then_some("The refresh token was revoked."))
    .execute(&env.pool)
    .await
    .unwrap();
    // A session's issues are written when it ends: they tie on created_at.
    sqlx::query(
        "INSERT INTO sync_issues (id, session_id, user_id, created_at, source, category, item_ref, message) \
         SELECT gen_random_uuid(), $1, $2, $3, (ARRAY['mailbox', 'crm'])[n % 2 + 1], \
                (ARRAY['validation', 'duplicate', 'transient'])[n % 3 + 1], 'item-' || n, 'Item ' || n || ' failed.' \
         FROM generate_series(1, $4) AS n",
    )
    .bind(id)
    .bind(user)
    .bind(ended_at.unwrap_or(started_at))
    .bind(i32::try_from(issues).unwrap())
    .execute(&env.pool)
    .await
    .unwrap();
    id
}

/// Makes a session the user's last, as the worker does when it ends.
pub async fn make_last(env: &TestEnv, user: Uuid, session: Uuid) {
    sqlx::query(
        "UPDATE user_runs u SET last_session_id = s.id, last_session_at = COALESCE(s.ended_at, s.started_at), \
             last_session_status = s.status \
         FROM sync_sessions s WHERE u.user_id = $1 AND s.id = $2",
    )
    .bind(user)
    .bind(session)
    .execute(&env.pool)
    .await
    .unwrap();
}

fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    // Whole seconds: JSON and the database agree on the value.
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - minutes * 60, 0).unwrap()
}

#[tokio::test]
async fn a_users_sessions_are_paged_newest_first_with_ties_and_filtered() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let other = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let mut all = HashSet::new();
    for index in 0..11 {
        // Three start times: most sessions tie on started_at.
        let status = ["succeeded", "failed", "succeeded_with_issues"][index % 3];
        let started = minutes_ago(10 * (index as i64 % 3) + 5);
        all.insert(session(&env, user, org, started, status, index % 4).await.to_string());
    }
    session(&env, other, org, minutes_ago(1), "succeeded", 0).await;
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let path = format!("/v1/users/{user}/sessions");

    let (newest_first, total) = walk(&api, &admin, &path, 4).await;
    assert_eq!(total, 11);
    assert_eq!(
        newest_first
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect::<HashSet<_>>(),
        all
    );
    assert_ordered(&newest_first, |s| s["started_at"].clone(), "id", true, "default order");
    let first = &newest_first[0];
    assert_eq!(first["user_id"], user.to_string());
    assert_eq!(first["calls"]["graph"], 3);
    for (sort, sort_key) in [
        ("started_at", (|s: &Value| s["started_at"].clone()) as SortKey),
        ("issue_count", |s| s["issue_count"].clone()),
        ("status", |s| s["status"].clone()),
    ] {
        for (order, descending) in [("asc", false), ("desc", true)] {
            let url = format!("{path}?sort={sort}&order={order}");
            let (items, total) = walk(&api, &admin, &url, 3).await;
            assert_eq!((total, items.len()), (11, 11), "{url}");
            assert_ordered(&items, sort_key, "id", descending, &url);
        }
    }

    let (failed, total) = walk(&api, &admin, &format!("{path}?status=failed"), 2).await;
    assert_eq!((total, failed.len()), (4, 4));
    assert!(
        failed
            .iter()
            .all(|s| s["status"] == "failed" && s["error_category"] == "auth")
    );
    let since = minutes_ago(20).to_rfc3339();
    let until = minutes_ago(10).to_rfc3339();
    let (recent, _) = walk(
        &api,
        &admin,
        &format!(
            "{path}?since={}&until={}",
            since.replace('+', "%2B"),
            until.replace('+', "%2B")
        ),
        50,
    )
    .await;
    assert_eq!(recent.len(), 4, "started 15 minutes ago only: {recent:?}");

    for (query, field) in [
        ("status=asleep", "status"),
        ("trigger=whim", "trigger"),
        ("since=yesterday", "since"),
        ("since=99999-01-01T00:00:00Z", "since"),
        ("until=-0001-01-01T00:00:00Z", "until"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("sort=worker_id", "sort"),
        ("order=newest", "order"),
        ("page_size=501", "page_size"),
        ("cursor=AAAA", "cursor"),
        ("colour=red", "colour"),
    ] {
        let response = http(api.address, "GET", &format!("{path}?{query}"), Some(&admin)).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{query}");
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_session_reads_with_its_issues_and_the_last_sessions_issues_are_listed_by_default() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [user, colleague] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let admin = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    // No session yet: no issues.
    let response = http(api.address, "GET", &format!("/v1/users/{user}/issues"), Some(&admin)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (response.json()["total"].clone(), response.json()["session_id"].clone()),
        (0.into(), Value::Null)
    );

    let older = session(&env, user, org, minutes_ago(40), "succeeded_with_issues", 2).await;
    let last = session(&env, user, org, minutes_ago(10), "failed", 7).await;
    make_last(&env, user, last).await;
    let theirs = session(&env, colleague, org, minutes_ago(10), "failed", 1).await;
    // An issue recorded outside a session (a dead-lettered job).
    sqlx::query(
        "INSERT INTO sync_issues (id, session_id, user_id, source, category, message) \
         VALUES (gen_random_uuid(), NULL, $1, 'engine', 'internal', 'Job was dead-lettered.')",
    )
    .bind(user)
    .execute(&env.pool)
    .await
    .unwrap();

    let response = http(api.address, "GET", &format!("/v1/sessions/{last}"), Some(&admin)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let detail = response.json();
    assert_eq!(detail["session"]["id"], last.to_string());
    assert_eq!(detail["session"]["status"], "failed");
    assert_eq!(detail["session"]["error_source"], "mailbox");
    assert_eq!(detail["issues"].as_array().unwrap().len(), 7);
    assert_eq!(detail["more_issues"], false);

    let issues = format!("/v1/users/{user}/issues");
    let (of_last, total) = walk(&api, &admin, &issues, 3).await;
    assert_eq!((total, of_last.len()), (7, 7));
    assert!(of_last.iter().all(|issue| issue["session_id"] == last.to_string()));
    assert_ordered(&of_last, |issue| issue["created_at"].clone(), "id", true, "issues");
    let (ascending, _) = walk(&api, &admin, &format!("{issues}?sort=category&order=asc"), 2).await;
    assert_ordered(
        &ascending,
        |issue| issue["category"].clone(),
        "id",
        false,
        "by category",
    );
    let (of_older, _) = walk(&api, &admin, &format!("{issues}?session_id={older}"), 5).await;
    assert_eq!(of_older.len(), 2);
    let (every, _) = walk(&api, &admin, &format!("{issues}?session_id=all"), 4).await;
    assert_eq!(every.len(), 10, "both sessions' and the dead letter's");
    let (crm, _) = walk(&api, &admin, &format!("{issues}?session_id=all&source=crm"), 4).await;
    assert!(!crm.is_empty() && crm.iter().all(|issue| issue["source"] == "crm"));

    for (query, status, field) in [
        (format!("session_id={theirs}"), 404, "session_id"),
        (format!("session_id={}", Uuid::new_v4()), 404, "session_id"),
        ("session_id=latest".to_owned(), 400, "session_id"),
        ("category=bad".to_owned(), 400, "category"),
        ("source=both".to_owned(), 400, "source"),
        ("sort=message".to_owned(), 400, "sort"),
    ] {
        let response = http(api.address, "GET", &format!("{issues}?{query}"), Some(&admin)).await;
        assert_eq!(response.status, status, "{query}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{query}");
    }
    for path in ["/v1/sessions/not-a-session", "/v1/sessions/42/log.zip"] {
        let response = http(api.address, "GET", path, Some(&admin)).await;
        assert_eq!(
            (response.status, response.json()["error"]["field"].clone()),
            (400, "id".into())
        );
    }
    let missing = http(
        api.address,
        "GET",
        &format!("/v1/sessions/{}", Uuid::now_v7()),
        Some(&admin),
    )
    .await;
    assert_eq!(missing.status, 404);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sessions_are_out_of_reach_of_other_organizations_and_of_other_users() {
    let env = TestEnv::new().await;
    let own = organization(&env.pool, AccessType::Office365, true).await;
    let other = organization(&env.pool, AccessType::Office365, true).await;
    let [me, colleague] = users(&env.pool, own, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let stranger = users(&env.pool, other, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let mine = session(&env, me, own, minutes_ago(3), "succeeded", 1).await;
    let colleagues = session(&env, colleague, own, minutes_ago(3), "succeeded", 1).await;
    let strangers = session(&env, stranger, other, minutes_ago(3), "succeeded", 1).await;
    for (user, session) in [(me, mine), (colleague, colleagues), (stranger, strangers)] {
        make_last(&env, user, session).await;
    }
    let lead = create_token(&env.pool, "org_admin", Some(own), None, "").await.unwrap();
    let user_token = create_token(&env.pool, "user", None, Some(me), "").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let paths = |user: Uuid, session: Uuid| {
        [
            format!("/v1/users/{user}/sessions"),
            format!("/v1/users/{user}/issues"),
            format!("/v1/sessions/{session}"),
            format!("/v1/sessions/{session}/log.zip"),
        ]
    };
    for path in paths(stranger, strangers) {
        let response = http(api.address, "GET", &path, Some(&lead)).await;
        assert_eq!(response.status, 404, "org admin, {path}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "not_found");
    }
    for path in paths(colleague, colleagues) {
        // These sessions were inserted without a log.
        let expected = if path.ends_with(".zip") { 404 } else { 200 };
        assert_eq!(
            http(api.address, "GET", &path, Some(&lead)).await.status,
            expected,
            "{path}"
        );
        let response = http(api.address, "GET", &path, Some(&user_token)).await;
        assert_eq!(response.status, 404, "user, {path}: {}", response.body);
    }
    for path in &paths(me, mine)[..3] {
        let response = http(api.address, "GET", path, Some(&user_token)).await;
        assert_eq!(response.status, 200, "user, {path}: {}", response.body);
    }
    let (own_sessions, _) = walk(&api, &user_token, &format!("/v1/users/{me}/sessions"), 5).await;
    assert_eq!(own_sessions.len(), 1);
    assert_eq!(own_sessions[0]["id"], mine.to_string());
    api.stop().await;
    env.cleanup().await;
}

/// Writes `body` to `path` and reads it with Python's zipfile, which checks
/// the structure and every CRC: answers the names, a line, then the first
/// file's content.
fn unzip(path: &std::path::Path, body: &[u8]) -> String {
    std::fs::write(path, body).unwrap();
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             archive = zipfile.ZipFile(sys.argv[1])\n\
             assert archive.testzip() is None\n\
             print(','.join(archive.namelist()))\n\
             sys.stdout.write(archive.read(archive.namelist()[0]).decode())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_session_log_downloads_as_a_zip_holding_the_workers_log() {
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

    let response = http(
        api.address,
        "POST",
        &format!("/v1/users/{user}/actions/force-sync?wait=30"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let session_id: Uuid = response.json()["job"]["result"]["session_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    shutdown.cancel();
    worker.await.unwrap().unwrap();

    let zip = download(api.address, &format!("/v1/sessions/{session_id}/log.zip"), &token).await;
    assert_eq!(zip.status, 200, "{}", String::from_utf8_lossy(&zip.body));
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    assert_eq!(
        zip.header("content-disposition"),
        Some(format!("attachment; filename=\"session-{session_id}.zip\"").as_str())
    );
    let directory = tempfile_dir(&env);
    let path = directory.join("log.zip");
    let output = unzip(&path, &zip.body);
    let (names, content) = output.split_once('\n').unwrap();
    assert_eq!(names, format!("session-{session_id}.jsonl"));

    // The settings check changed nothing: the worker kept no log for it,
    // and the zip holds the one-line summary the session row makes.
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT log_gzip FROM sync_session_logs WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, None);
    let lines: Vec<syncfleet_common::session_log::LogEntry> = content
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{content}");
    assert_eq!(lines[0].step, "session");
    assert!(lines[0].message.contains("succeeded"), "{content}");
    assert!(lines[0].message.contains("nothing to do"), "{content}");

    // A session with a stored log: the zip holds it, line for line.
    let mut log = syncfleet_common::session_log::SessionLog::new();
    log.push("mail_to_crm:inbox", "info", "1 page(s): 2 logged.");
    log.push("crm_to_mailbox", "warn", "An event was refused.");
    let busy = session(&env, user, org, minutes_ago(2), "succeeded_with_issues", 1).await;
    sqlx::query(
        "INSERT INTO sync_session_logs (session_id, user_id, started_at, log_gzip) \
         SELECT id, user_id, started_at, $2 FROM sync_sessions WHERE id = $1",
    )
    .bind(busy)
    .bind(log.to_gzip())
    .execute(&env.pool)
    .await
    .unwrap();
    let zip = download(api.address, &format!("/v1/sessions/{busy}/log.zip"), &token).await;
    assert_eq!(zip.status, 200, "{}", String::from_utf8_lossy(&zip.body));
    let output = unzip(&path, &zip.body);
    let (_, content) = output.split_once('\n').unwrap();
    let lines: Vec<syncfleet_common::session_log::LogEntry> = content
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, log.entries(), "the zip holds the stored log, line for line");
    std::fs::remove_dir_all(directory).unwrap();

    // A running session (on its user's run row until it ends) is listed and
    // found by id, and has no log yet.
    let running = running_session(&env, user, org, minutes_ago(1)).await;
    let response = http(api.address, "GET", &format!("/v1/sessions/{running}"), Some(&token)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let found: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(found["session"]["status"], "running");
    assert_eq!(found["session"]["ended_at"], serde_json::Value::Null);
    assert_eq!(found["session"]["user_id"], user.to_string());
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{user}/sessions?status=running"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let listed: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [running.to_string().as_str()]);
    let response = http(
        api.address,
        "GET",
        &format!("/v1/sessions/{running}/log.zip"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);
    api.stop().await;
    env.cleanup().await;
}

fn tempfile_dir(env: &TestEnv) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("syncfleet-{}", env.database));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}
