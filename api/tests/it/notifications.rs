//! An add-in user's notifications: the live stream (Server-Sent Events fed
//! by LISTEN/NOTIFY) delivers a push's notification, `Last-Event-ID`
//! replays what was missed, the list pages newest first, marking read.

use std::{net::SocketAddr, time::Duration};

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

use crate::{
    Api,
    pushes::{Worker, completed, pusher},
    send,
};

const LIMIT: Duration = Duration::from_secs(30);

/// A Server-Sent Events client on a raw connection.
struct EventStream {
    stream: TcpStream,
    buffer: String,
}

impl EventStream {
    /// Opens the stream; answers the status and the head.
    async fn open(address: SocketAddr, token: &str, last_event_id: Option<Uuid>) -> (u16, String, Self) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let last = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /v1/me/notifications/stream HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n{last}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Self {
            stream,
            buffer: String::new(),
        };
        while !events.buffer.contains("\r\n\r\n") {
            events.read().await;
        }
        let (head, rest) = events.buffer.split_once("\r\n\r\n").unwrap();
        let (head, rest) = (head.to_owned(), rest.to_owned());
        events.buffer = rest;
        let status = head[9..12].parse().unwrap();
        (status, head, events)
    }

    async fn read(&mut self) -> usize {
        let mut chunk = [0_u8; 8192];
        let read = tokio::time::timeout(LIMIT, self.stream.read(&mut chunk))
            .await
            .expect("no event in time")
            .unwrap();
        self.buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
        read
    }

    /// The next `notification` event: its id and data.
    async fn next(&mut self) -> (Uuid, Value) {
        loop {
            if let Some(start) = self.buffer.find("event: notification\n") {
                let before = &self.buffer[..start];
                let id_line = before.rfind("id: ").expect("an id before the event");
                let id: Uuid = before[id_line + 4..].lines().next().unwrap().trim().parse().unwrap();
                let after = &self.buffer[start..];
                if let Some(data) = after.find("data: ")
                    && let Some(end) = after[data..].find('\n')
                {
                    let value: Value = serde_json::from_str(&after[data + 6..data + end]).unwrap();
                    self.buffer = after[data + end..].to_owned();
                    return (id, value);
                }
            }
            assert!(self.read().await > 0, "the stream ended: {}", self.buffer);
        }
    }

    /// Reads until the server closes the stream.
    async fn ended(&mut self) {
        while self.read().await > 0 {}
    }
}

async fn insert_notification(env: &TestEnv, user: Uuid, title: &str, seconds_ago: i64) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, title, body, created_at) \
         VALUES ($1, $2, 'test', $3, 'Body', now() - $4 * interval '1 second')",
    )
    .bind(id)
    .bind(user)
    .bind(title)
    .bind(seconds_ago as f64)
    .execute(&env.pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn a_recipient_receives_the_push_notification_over_the_live_stream() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (_, pusher_token) = pusher(&env, &api, org).await;
    let [recipient, other] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), false).await[..] else {
        unreachable!()
    };
    let token = create_token(&env.pool, "user", None, Some(recipient), "recipient@example.test")
        .await
        .unwrap();
    let (status, head, mut events) = EventStream::open(api.address, &token, None).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/event-stream"),
        "{head}"
    );
    let worker = Worker::start(&env);

    let response = send(
        &api,
        "POST",
        "/v1/pushes",
        &pusher_token,
        &json!({"user_ids": [recipient, other]}),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    let push = response.json()["id"].as_str().unwrap().to_owned();
    let (id, notification) = events.next().await;
    assert_eq!(notification["id"], json!(id));
    assert_eq!(notification["kind"], "customization_pushed");
    assert_eq!(notification["payload"]["push_id"], json!(push));
    assert!(
        notification["body"].as_str().unwrap().contains("Restart Outlook"),
        "{notification}"
    );
    assert_eq!(notification["read_at"], Value::Null);
    completed(&api, &pusher_token, &push).await;

    // The list has it, unread; marking it read is recorded once.
    let list = http(api.address, "GET", "/v1/me/notifications?unread=true", Some(&token))
        .await
        .json();
    assert_eq!(
        (list["items"][0]["id"].clone(), list["unread"].clone()),
        (json!(id), json!(1))
    );
    let path = format!("/v1/me/notifications/{id}/read");
    for _ in 0..2 {
        let read = http(api.address, "POST", &path, Some(&token)).await;
        assert_eq!(read.status, 200, "{}", read.body);
        assert!(read.json()["read_at"].is_string());
    }
    let list = http(api.address, "GET", "/v1/me/notifications?unread=true", Some(&token))
        .await
        .json();
    assert_eq!((list["items"].clone(), list["unread"].clone()), (json!([]), json!(0)));
    let read: i64 =
        sqlx::query_scalar("SELECT count(*) FROM activities WHERE user_id = $1 AND kind = 'notifications_read'")
            .bind(recipient)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(read, 1);
    // Someone else's notification is not there.
    let theirs: Uuid = sqlx::query_scalar("SELECT id FROM notifications WHERE user_id = $1")
        .bind(other)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let response = http(
        api.address,
        "POST",
        &format!("/v1/me/notifications/{theirs}/read"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);

    // Draining ends the stream, so the api stops with a client connected.
    worker.stop().await;
    let stopping = tokio::spawn(api.stop());
    events.ended().await;
    stopping.await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_stream_reopened_with_last_event_id_first_replays_what_was_missed() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let token = create_token(&env.pool, "user", None, Some(user), "user@example.test")
        .await
        .unwrap();
    let seen = insert_notification(&env, user, "seen", 30).await;
    let missed_first = insert_notification(&env, user, "missed 1", 20).await;
    let missed_second = insert_notification(&env, user, "missed 2", 10).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let (status, head, mut events) = EventStream::open(api.address, &token, Some(seen)).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(events.next().await.0, missed_first);
    assert_eq!(events.next().await.0, missed_second);

    // Then live: a notification announced as the worker does.
    let live = Uuid::new_v4();
    sqlx::query(
        "WITH note AS (INSERT INTO notifications (id, user_id, kind, title, body) VALUES ($1, $2, 'test', 'live', 'Body') \
                       RETURNING id, user_id, kind, title, body, payload, created_at, read_at) \
         SELECT pg_notify('syncfleet_notifications', row_to_json(note)::text) FROM note",
    )
    .bind(live)
    .bind(user)
    .execute(&env.pool)
    .await
    .unwrap();
    let (id, data) = events.next().await;
    assert_eq!((id, data["title"].clone()), (live, json!("live")));

    // Without Last-Event-ID a stream starts with what comes next. A
    // notification announced by its ids alone is read from the database.
    let (_, _, mut fresh) = EventStream::open(api.address, &token, None).await;
    let next = insert_notification(&env, user, "next", 0).await;
    sqlx::query("SELECT pg_notify('syncfleet_notifications', json_build_object('id', $1, 'user_id', $2)::text)")
        .bind(next)
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    assert_eq!(fresh.next().await.0, next);
    assert_eq!(events.next().await.0, next);
    drop((events, fresh));
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn notifications_page_newest_first_and_only_add_in_users_have_them() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let token = create_token(&env.pool, "user", None, Some(user), "user@example.test")
        .await
        .unwrap();
    let admin = create_token(&env.pool, "admin", None, None, "root@fleet.example")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for age in (0..5).rev() {
        ids.push(insert_notification(&env, user, &format!("n{age}"), age * 10).await);
    }
    ids.reverse();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let first = http(api.address, "GET", "/v1/me/notifications?page_size=2", Some(&token))
        .await
        .json();
    let page_ids = |page: &Value| -> Vec<Uuid> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(page_ids(&first), ids[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = http(
        api.address,
        "GET",
        &format!("/v1/me/notifications?page_size=2&cursor={cursor}"),
        Some(&token),
    )
    .await
    .json();
    assert_eq!(page_ids(&second), ids[2..4]);
    let marked = http(api.address, "POST", "/v1/me/notifications/read-all", Some(&token)).await;
    assert_eq!(marked.json()["marked"], 5);
    let again = http(api.address, "POST", "/v1/me/notifications/read-all", Some(&token)).await;
    assert_eq!(again.json()["marked"], 0);

    for (path, field) in [
        ("/v1/me/notifications?page_size=0", "page_size"),
        ("/v1/me/notifications?cursor=nope", "cursor"),
        (&format!("/v1/me/notifications?cursor={}", Uuid::new_v4()), "cursor"),
        ("/v1/me/notifications?colour=red", "colour"),
    ] {
        let response = http(api.address, "GET", path, Some(&token)).await;
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{path}");
    }
    for (method, path) in [
        ("GET", "/v1/me/notifications"),
        ("GET", "/v1/me/notifications/stream"),
        ("POST", "/v1/me/notifications/read-all"),
    ] {
        let response = http(api.address, method, path, Some(&admin)).await;
        assert_eq!(response.status, 403, "{path}: {}", response.body);
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_notification_missed_while_the_listener_was_away_is_read_back_when_it_listens_again() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let token = create_token(&env.pool, "user", None, Some(user), "user@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (_, _, mut events) = EventStream::open(api.address, &token, None).await;
    let listener = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_optional(&env.pool)
        .await
        .unwrap()
    };
    syncfleet_testkit::wait_until(LIMIT, "the api to listen", || async { listener().await.is_some() }).await;

    // Created without an announcement, as if while nobody listened; then
    // the listener's connection is cut.
    let missed = insert_notification(&env, user, "missed", 0).await;
    let pid = listener().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&env.pool)
        .await
        .unwrap();
    assert_eq!(events.next().await.0, missed);
    assert_ne!(listener().await, Some(pid), "a new connection listens");
    drop(events);
    api.stop().await;
    env.cleanup().await;
}
