//! Idempotency keys and outage answers (issue 17), through the real api, a
//! real database and a real broker: a retry with the same key runs once and
//! answers the first answer, in sequence and concurrently; another body
//! answers 422; keys are per caller and expire. A database cut by a TCP
//! forwarder between the api and PostgreSQL, and a stopped private broker,
//! answer 503 with `Retry-After`; a commit whose answer is lost says the
//! outcome is unknown, and the retry with the same key is recognised.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    queue::Route,
};
use syncfleet_testkit::{PrivateBroker, TestEnv, organization, server_url, users};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Api, pushes::pusher};

/// An answer as these tests look at it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    replayed: bool,
    retry_after: Option<String>,
    body: Value,
}

/// A POST with a bearer token and, when given, an `Idempotency-Key`.
async fn post(address: SocketAddr, path: &str, token: &str, key: Option<&str>, body: &Value) -> Answer {
    syncfleet_connectors::http::install_tls_provider();
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (replayed, retry_after) = (header("idempotency-replayed").is_some(), header("retry-after"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    Answer {
        status,
        replayed,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    }
}

async fn count(env: &TestEnv, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(&env.pool).await.unwrap()
}

/// `count` users whose sync is enabled, in a new Office 365 organization.
async fn enabled_users(env: &TestEnv, count: usize) -> Vec<Uuid> {
    let org = organization(&env.pool, AccessType::Office365, true).await;
    users(&env.pool, org, count, SyncStatus::Enabled, Utc::now(), false).await
}

/// A new organization with a pusher (their user token, a saved
/// customization) and `colleagues` to push to; answers the organization and
/// the token.
async fn pushing(env: &TestEnv, api: &Api, colleagues: usize) -> (Uuid, String) {
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let (_, token) = pusher(env, api, org).await;
    users(&env.pool, org, colleagues, SyncStatus::Enabled, Utc::now(), false).await;
    (org, token)
}

/// `POST /v1/plans` of a plan named as its code.
async fn create_plan(api: &Api, token: &str, key: Option<&str>, code: &str) -> Answer {
    post(
        api.address,
        "/v1/plans",
        token,
        key,
        &json!({"code": code, "name": code}),
    )
    .await
}

async fn admin(env: &TestEnv, label: &str) -> String {
    create_token(&env.pool, "admin", None, None, label).await.unwrap()
}

#[tokio::test]
async fn a_push_retried_with_its_key_runs_once_and_answers_the_first_answer() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (org, token) = pushing(&env, &api, 2).await;

    let body = json!({"all": true});
    let first = post(api.address, "/v1/pushes", &token, Some("push-1"), &body).await;
    assert_eq!(first.status, 202, "{first:?}");
    assert!(!first.replayed);
    let second = post(api.address, "/v1/pushes", &token, Some("push-1"), &body).await;
    assert!(second.replayed, "{second:?}");
    assert_eq!((second.status, &second.body), (first.status, &first.body));
    assert_eq!(
        count(&env, "SELECT count(*) FROM pushes WHERE organization_id = $1", org).await,
        1
    );
    assert_eq!(env.ready(Route::Push).await, 1, "one job queued");

    // Without a key nothing is recognised: a second push.
    let other = post(api.address, "/v1/pushes", &token, None, &body).await;
    assert_eq!(other.status, 202);
    assert_ne!(other.body["id"], first.body["id"]);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn eight_concurrent_force_syncs_with_one_key_queue_one_job_and_answer_alike() {
    let env = TestEnv::new().await;
    let user = enabled_users(&env, 1).await[0];
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let token = admin(&env, "admin").await;

    let path = format!("/v1/users/{user}/actions/force-sync");
    let empty = json!({});
    let answers =
        futures_util::future::join_all((0..8).map(|_| post(api.address, &path, &token, Some("sync-now"), &empty)))
            .await;
    let first = answers
        .iter()
        .find(|answer| !answer.replayed && answer.status == 202)
        .unwrap_or_else(|| panic!("no request ran: {answers:?}"));
    for answer in &answers {
        assert!(
            (answer.status, &answer.body) == (first.status, &first.body)
                || (answer.status == 409 && answer.body["error"]["code"] == "idempotency_key_in_progress"),
            "{answer:?} is neither the first answer {first:?} nor 409 in progress"
        );
    }
    assert_eq!(
        answers
            .iter()
            .filter(|answer| !answer.replayed && answer.status == 202)
            .count(),
        1,
        "exactly one request ran: {answers:?}"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM admin_jobs WHERE user_id = $1", user).await,
        1
    );
    assert_eq!(env.ready(Route::Priority).await, 1, "one job published");

    // In sequence, later: the same answer, no second job (a force sync
    // without the key would be refused inside the minute instead).
    let again = post(api.address, &path, &token, Some("sync-now"), &json!({})).await;
    assert!(again.replayed);
    assert_eq!(again.body, first.body);
    assert_eq!(env.ready(Route::Priority).await, 1);

    api.stop().await;
    env.cleanup().await;
}

/// The `POST`s that neither create anything nor queue work, or whose second
/// call is answered from the state the first left (a dead job's replay
/// publishes one job, under an id derived from the dead job's): doing them
/// twice changes nothing more than doing them once.
const UNKEYED_POSTS: [&str; 6] = [
    "/v1/me/notifications/{id}/read",
    "/v1/me/notifications/read-all",
    "/v1/organizations/{id}/sync/enable",
    "/v1/organizations/{id}/sync/disable",
    "/v1/ops/dead-jobs/{id}/replay",
    "/v1/ops/dead-jobs/actions/{action}",
];

#[tokio::test]
async fn the_document_offers_the_key_on_every_post_that_creates_or_queues_and_a_503_everywhere() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let token = admin(&env, "admin").await;
    let document = syncfleet_testkit::http(api.address, "GET", "/openapi.json", Some(&token))
        .await
        .json();

    let mut keyed = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let outage = &operation["responses"]["503"];
            assert!(
                outage["headers"]["Retry-After"].is_object(),
                "{method} {path}: {outage}"
            );
            let takes_key = operation["parameters"].as_array().is_some_and(|parameters| {
                parameters
                    .iter()
                    .any(|parameter| parameter["name"] == "Idempotency-Key" && parameter["in"] == "header")
            });
            let expected = method == "post" && !UNKEYED_POSTS.contains(&path.as_str());
            assert_eq!(takes_key, expected, "{method} {path}");
            keyed += usize::from(takes_key);
        }
    }
    assert_eq!(keyed, 8, "the keyed routes of README's list");

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_answers_422_naming_the_header_and_a_bad_key_400() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let token = admin(&env, "admin").await;

    let created = create_plan(&api, &token, Some("plan"), "gold").await;
    assert_eq!(created.status, 201, "{created:?}");
    let reused = create_plan(&api, &token, Some("plan"), "silver").await;
    assert_eq!(reused.status, 422, "{reused:?}");
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(reused.body["error"]["field"], "Idempotency-Key");
    // Another route with the same key is another request too.
    let elsewhere = post(
        api.address,
        "/v1/organizations",
        &token,
        Some("plan"),
        &json!({"name": "Acme", "external_id": "acme", "access_type": "office365"}),
    )
    .await;
    assert_eq!(elsewhere.status, 422, "{elsewhere:?}");
    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM plans")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(plans, 1);

    for bad in ["k".repeat(256), "clé".to_owned()] {
        let answer = create_plan(&api, &token, Some(&bad), "x").await;
        assert_eq!(answer.status, 400, "{bad:?}: {answer:?}");
        assert_eq!(answer.body["error"]["field"], "Idempotency-Key");
    }

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn keys_belong_to_their_caller_and_expire_after_a_day() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let (_, token) = pushing(&env, &api, 1).await;
    let (one, two) = (admin(&env, "one").await, admin(&env, "two").await);

    // The same key from two callers: two independent requests.
    let first = create_plan(&api, &one, Some("same"), "a").await;
    let second = create_plan(&api, &two, Some("same"), "b").await;
    assert_eq!((first.status, second.status), (201, 201), "{first:?} {second:?}");
    assert!(!second.replayed);
    // A revoked token gets no answer, not even a kept one.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE label = 'one'")
        .execute(&env.pool)
        .await
        .unwrap();
    let revoked = create_plan(&api, &one, Some("same"), "a").await;
    assert_eq!(revoked.status, 401, "{revoked:?}");

    // Expired (as after 24 hours): the same request runs again.
    let body = json!({"all": true});
    let push = post(api.address, "/v1/pushes", &token, Some("daily"), &body).await;
    assert_eq!(push.status, 202, "{push:?}");
    sqlx::query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
        .execute(&env.pool)
        .await
        .unwrap();
    let later = post(api.address, "/v1/pushes", &token, Some("daily"), &body).await;
    assert_eq!(later.status, 202, "{later:?}");
    assert!(!later.replayed);
    assert_ne!(later.body["id"], push.body["id"]);
    let again = post(api.address, "/v1/pushes", &token, Some("daily"), &body).await;
    assert!(again.replayed);
    assert_eq!(again.body["id"], later.body["id"]);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_bulk_action_retried_with_its_key_acts_once_per_user_even_when_its_answer_was_lost() {
    let env = TestEnv::new().await;
    let chosen = enabled_users(&env, 3).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let token = admin(&env, "admin").await;

    let body = json!({"user_ids": chosen});
    let path = "/v1/users/actions/disable-sync";
    let first = post(api.address, path, &token, Some("bulk"), &body).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["changed"] == true)
    );
    let second = post(api.address, path, &token, Some("bulk"), &body).await;
    assert!(second.replayed);
    assert_eq!(second.body, first.body);

    // The whole answer lost (only the users' parts kept): the retry answers
    // each user's first result and acts on none again.
    sqlx::query("DELETE FROM idempotency_keys WHERE item = ''")
        .execute(&env.pool)
        .await
        .unwrap();
    let third = post(api.address, path, &token, Some("bulk"), &body).await;
    assert_eq!((third.status, &third.body), (200, &first.body), "{third:?}");
    let activities: i64 = sqlx::query_scalar("SELECT count(*) FROM activities WHERE kind = 'sync_disabled'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(activities, 3);

    api.stop().await;
    env.cleanup().await;
}

/// What the forwarder does with the connections between the api and
/// PostgreSQL.
const PASS: u8 = 0;
/// Accepted connections are closed at once and open ones are cut.
const REFUSE: u8 = 1;
/// The next `COMMIT` reaches PostgreSQL, which commits; its answer is
/// dropped and the connection closed (the forwarder then passes again).
const CUT_AFTER_COMMIT: u8 = 2;

#[tokio::test]
async fn the_clean_up_deletes_expired_keys_only() {
    let env = TestEnv::new().await;
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, expires_at) VALUES \
         ('\\x01', 'old', '\\x00', now() - interval '1 second'), ('\\x01', 'live', '\\x00', DEFAULT)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(syncfleet_api::idempotency::delete_expired(&env.pool).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, ["live"]);
    env.cleanup().await;
}

/// The `host:port` of the PostgreSQL the tests use.
fn postgres_address() -> String {
    server_url()
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// A TCP forwarder between the api's pool and PostgreSQL that a test can
/// cut, without touching the PostgreSQL the other tests share.
struct Forwarder {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Forwarder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = postgres_address();
        let forwarder = Self {
            address: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(PASS)),
            cut: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (mode, cut, stop) = (forwarder.mode.clone(), forwarder.cut.clone(), forwarder.stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                if mode.load(Ordering::SeqCst) == REFUSE {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let token = cut.lock().unwrap().clone();
                tokio::spawn(pipe(client, server, mode.clone(), token));
            }
        });
        forwarder
    }

    /// The database URL through the forwarder.
    fn url(&self, env: &TestEnv) -> String {
        let upstream = postgres_address();
        assert!(env.database_url.contains(&upstream), "{}", env.database_url);
        env.database_url.replace(&upstream, &self.address.to_string())
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == REFUSE {
            let mut cut = self.cut.lock().unwrap();
            cut.cancel();
            *cut = CancellationToken::new();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}

async fn pipe(mut client: TcpStream, mut server: TcpStream, mode: Arc<AtomicU8>, cut: CancellationToken) {
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            _ = cut.cancelled() => return,
            read = client.read(&mut up) => {
                let Ok(read @ 1..) = read else { return };
                let chunk = &up[..read];
                let commit = chunk.windows(6).any(|window| window == b"COMMIT")
                    && mode.compare_exchange(CUT_AFTER_COMMIT, PASS, Ordering::SeqCst, Ordering::SeqCst).is_ok();
                if server.write_all(chunk).await.is_err() {
                    return;
                }
                if commit {
                    // The server commits and answers; the answer is dropped
                    // and the client sees its connection close.
                    let _ = server.read(&mut down).await;
                    return;
                }
            }
            read = server.read(&mut down) => {
                let Ok(read @ 1..) = read else { return };
                if client.write_all(&down[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An api whose pool reaches PostgreSQL through `forwarder`, giving up on a
/// connection after 2 seconds.
async fn api_through(env: &TestEnv, forwarder: &Forwarder) -> Api {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect(&forwarder.url(env))
        .await
        .unwrap();
    Api::start(env, pool, Duration::ZERO).await
}

fn assert_outage(answer: &Answer, code: &str) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], code, "{answer:?}");
    assert!(
        answer
            .retry_after
            .as_deref()
            .is_some_and(|seconds| seconds.parse::<u64>().is_ok()),
        "{answer:?}"
    );
}

/// The only id `sql` finds for `id`.
async fn only_id(env: &TestEnv, sql: &str, id: Uuid) -> Uuid {
    sqlx::query_scalar(sql).bind(id).fetch_one(&env.pool).await.unwrap()
}

/// Sends a keyed request whose COMMIT reaches PostgreSQL but whose answer
/// is lost (503 `outcome_unknown`, saying a retry with the key is safe),
/// then its retry, which must answer the kept first answer (202); answers
/// the retry's answer.
async fn lost_then_retried(api: &Api, forwarder: &Forwarder, path: &str, token: &str, body: &Value) -> Answer {
    forwarder.set(CUT_AFTER_COMMIT);
    let lost = post(api.address, path, token, Some("lost"), body).await;
    assert_outage(&lost, "outcome_unknown");
    let message = lost.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Idempotency-Key"), "{lost:?}");
    let retried = post(api.address, path, token, Some("lost"), body).await;
    assert_eq!(retried.status, 202, "{retried:?}");
    assert!(retried.replayed, "the retry answers the committed request: {retried:?}");
    retried
}

#[tokio::test]
async fn a_database_outage_answers_503_with_retry_after_and_recovers() {
    let env = TestEnv::new().await;
    let forwarder = Forwarder::start().await;
    let api = api_through(&env, &forwarder).await;
    let token = admin(&env, "admin").await;
    assert_eq!(create_plan(&api, &token, None, "before").await.status, 201);

    forwarder.set(REFUSE);
    let down = create_plan(&api, &token, Some("p"), "during").await;
    assert_outage(&down, "unavailable");
    let read = syncfleet_testkit::http(api.address, "GET", "/v1/plans", Some(&token)).await;
    assert_eq!(read.status, 503, "{read:?}");
    assert!(read.header("retry-after").is_some());

    forwarder.set(PASS);
    // Nothing was kept of the failed request: its retry runs.
    let retried = create_plan(&api, &token, Some("p"), "during").await;
    assert_eq!(retried.status, 201, "{retried:?}");
    assert!(!retried.replayed);

    api.stop().await;
    drop(forwarder);
    env.cleanup().await;
}

#[tokio::test]
async fn the_panel_answers_503_with_retry_after_during_a_database_outage_and_keeps_the_admin_signed_in() {
    let env = TestEnv::new().await;
    let forwarder = Forwarder::start().await;
    let api = api_through(&env, &forwarder).await;
    let token = admin(&env, "admin").await;
    syncfleet_connectors::http::install_tls_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("http://{}{path}", api.address);
    let login = client
        .post(url("/panel/login"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = || client.get(url("/panel/organizations")).header("cookie", &cookie).send();

    forwarder.set(REFUSE);
    let down = page().await.unwrap();
    assert_eq!(down.status(), 503, "not a redirect to the sign-in page");
    assert!(down.headers().contains_key("retry-after"));
    forwarder.set(PASS);
    assert_eq!(page().await.unwrap().status(), 200, "still signed in");

    api.stop().await;
    drop(forwarder);
    env.cleanup().await;
}

#[tokio::test]
async fn a_push_whose_commit_lost_its_answer_says_so_and_its_retry_is_recognised() {
    let env = TestEnv::new().await;
    let forwarder = Forwarder::start().await;
    let api = api_through(&env, &forwarder).await;
    let (org, token) = pushing(&env, &api, 2).await;

    let retried = lost_then_retried(&api, &forwarder, "/v1/pushes", &token, &json!({"all": true})).await;
    let id = only_id(&env, "SELECT id FROM pushes WHERE organization_id = $1", org).await;
    assert_eq!(retried.body["id"], id.to_string());
    assert_eq!(
        count(&env, "SELECT count(*) FROM pushes WHERE organization_id = $1", org).await,
        1
    );
    assert_eq!(env.ready(Route::Push).await, 1, "one job, never two");

    api.stop().await;
    drop(forwarder);
    env.cleanup().await;
}

#[tokio::test]
async fn a_force_sync_whose_commit_lost_its_answer_is_answered_on_retry_with_its_job() {
    let env = TestEnv::new().await;
    let user = enabled_users(&env, 1).await[0];
    let forwarder = Forwarder::start().await;
    let api = api_through(&env, &forwarder).await;
    let token = admin(&env, "admin").await;

    let path = format!("/v1/users/{user}/actions/force-sync");
    let retried = lost_then_retried(&api, &forwarder, &path, &token, &json!({})).await;
    let job = only_id(&env, "SELECT id FROM admin_jobs WHERE user_id = $1", user).await;
    assert_eq!(retried.body["job"]["id"], job.to_string());
    assert_eq!(retried.body["job"]["status"], "queued");
    assert_eq!(env.ready(Route::Priority).await, 1, "one job, never two");

    api.stop().await;
    drop(forwarder);
    env.cleanup().await;
}

#[tokio::test]
async fn a_broker_outage_answers_503_with_retry_after_and_changes_nothing() {
    let broker = PrivateBroker::start().await;
    let env = TestEnv::with_broker(&broker.url()).await;
    let user = enabled_users(&env, 1).await[0];
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let token = admin(&env, "admin").await;

    drop(broker);
    let path = format!("/v1/users/{user}/actions/force-sync");
    let answer = post(api.address, &path, &token, Some("sync"), &json!({})).await;
    assert_outage(&answer, "unavailable");
    assert_eq!(
        count(&env, "SELECT count(*) FROM admin_jobs WHERE user_id = $1", user).await,
        0
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM users WHERE id = $1 AND force_sync_requested_at IS NOT NULL",
            user
        )
        .await,
        0
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "a request that changed nothing keeps no key");

    api.stop().await;
    // The broker is gone: cleanup bounds its steps and drops the database.
    env.cleanup().await;
}
