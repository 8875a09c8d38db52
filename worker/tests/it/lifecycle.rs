//! The worker binary: kill -9 mid-job, and SIGTERM.
//!
//! A job is held "in the middle" by locking the item mappings: the user has
//! a message from a Contact, and the session records its mapping once the
//! Task is written, so the session is open (claimed, the lease taken) and
//! waits there. The users are connected to the simulators, so the binary's
//! sessions are real syncs.

use std::{process::Child, time::Duration};

use sqlx::{Connection, PgConnection};
use syncfleet_common::queue::Route;
use syncfleet_simulators::graph::{self, GraphConfig};
use syncfleet_testkit::{
    ProviderConfigs, Providers, TestEnv, free_port, http_get, session_count, terminate, wait_until,
};

use crate::support::{force_sync, start};

const LIMIT: Duration = Duration::from_secs(60);

/// The worker binary pointed at the simulators.
fn spawn_worker(env: &TestEnv, providers: &Providers, extra: &[(&str, &str)]) -> Child {
    env.spawn_with("syncfleet-worker", providers, extra)
}

/// Gives `user` a message from a Contact and locks the item mappings, so
/// that the user's next session waits before it records the message's.
async fn hold_mid_session(env: &TestEnv, providers: &Providers, user: uuid::Uuid) -> PgConnection {
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let buyer = "buyer@customer.example";
    providers.salesforce.insert_contact(&providers.org, buyer).unwrap();
    providers
        .graph
        .add_message(
            &email,
            graph::Folder::Inbox,
            graph::MessageSeed {
                from: graph::Recipient::new(buyer),
                to: vec![graph::Recipient::new(&email)],
                cc: Vec::new(),
                subject: "Held".to_owned(),
                sent_at: chrono::Utc::now(),
                body: "Held mid-session.".to_owned(),
            },
        )
        .unwrap();
    let mut connection = PgConnection::connect(&env.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
    sqlx::query("LOCK TABLE item_mappings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

async fn unlock(mut connection: PgConnection) {
    sqlx::query("ROLLBACK").execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

async fn exit_status(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_job_abandons_the_session_and_the_job_completes_once() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let lock = hold_mid_session(&env, &providers, user).await;
    let mut first = spawn_worker(&env, &providers, &[("SYNCFLEET_USER_LEASE", "2s")]);
    force_sync(&env, user).await;
    wait_until(LIMIT, "the session to be running", || async {
        session_count(&env.pool, user, "running").await == 1
    })
    .await;

    first.kill().unwrap();
    first.wait().unwrap();
    let second = spawn_worker(&env, &providers, &[("SYNCFLEET_USER_LEASE", "2s")]);
    // The redelivered job waits for the dead worker's lease, then takes over.
    wait_until(LIMIT, "the takeover", || async {
        session_count(&env.pool, user, "abandoned").await == 1 && session_count(&env.pool, user, "running").await == 1
    })
    .await;
    unlock(lock).await;
    wait_until(LIMIT, "the job to complete", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;

    terminate(&second);
    assert!(exit_status(second, LIMIT).await.success());
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM sync_sessions WHERE user_id = $1 ORDER BY started_at")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["abandoned", "succeeded"]);
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_stops_consuming_finishes_in_flight_jobs_and_exits_zero() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let [in_flight, later] = providers.office365_users(&env.pool, 2).await[..] else {
        unreachable!()
    };
    let lock = hold_mid_session(&env, &providers, in_flight).await;
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut worker = spawn_worker(
        &env,
        &providers,
        &[
            ("SYNCFLEET_SHUTDOWN_GRACE", "30s"),
            ("SYNCFLEET_OPS_LISTEN", &ops.to_string()),
        ],
    );
    wait_until(LIMIT, "the worker to be ready", || async {
        tokio::net::TcpStream::connect(ops).await.is_ok() && http_get(ops, "/readyz").await.0 == 200
    })
    .await;
    force_sync(&env, in_flight).await;
    wait_until(LIMIT, "the session to be running", || async {
        session_count(&env.pool, in_flight, "running").await == 1
    })
    .await;

    terminate(&worker);
    // Readiness turns false at once, while the drain is still going on.
    wait_until(LIMIT, "readiness to fail", || async {
        http_get(ops, "/readyz").await == (503, "draining".to_owned())
    })
    .await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still draining its in-flight job"
    );
    // Published after SIGTERM: the draining worker must not take it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    force_sync(&env, later).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    unlock(lock).await;

    assert!(exit_status(worker, LIMIT).await.success(), "a drained worker exits 0");
    assert_eq!(session_count(&env.pool, in_flight, "succeeded").await, 1);
    let later_sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1")
        .bind(later)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(later_sessions, 0);
    assert_eq!(
        env.ready(Route::Priority).await,
        1,
        "the job published during the drain waits for the next worker"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_hands_back_a_job_still_running_after_the_grace_period() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let lock = hold_mid_session(&env, &providers, user).await;
    let worker = spawn_worker(&env, &providers, &[("SYNCFLEET_SHUTDOWN_GRACE", "1s")]);
    force_sync(&env, user).await;
    wait_until(LIMIT, "the session to be running", || async {
        session_count(&env.pool, user, "running").await == 1
    })
    .await;

    terminate(&worker);
    assert!(
        exit_status(worker, LIMIT).await.success(),
        "a worker that handed its jobs back exits 0"
    );
    assert_eq!(session_count(&env.pool, user, "abandoned").await, 1);
    assert_eq!(env.ready(Route::Priority).await, 1, "the job is back on its queue");
    let lease: Option<uuid::Uuid> = sqlx::query_scalar("SELECT running_session_id FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(lease, None, "the lease is released at once, not left to expire");

    unlock(lock).await;
    let next = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);
    wait_until(LIMIT, "the handed-back job to complete", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    next.stop().await;
    env.cleanup().await;
}

/// Drops `user`'s kept access token (the next session refreshes), holds
/// their refresh token's row, and force-syncs them: answers the held row's
/// transaction and the pid of the worker's store, which waits on it.
async fn refresh_and_hold_its_store(
    env: &TestEnv,
    user: uuid::Uuid,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, i32) {
    sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND kind = 'mailbox_access_token'")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM credentials WHERE user_id = $1 AND kind = 'mailbox_refresh_token' FOR UPDATE")
        .bind(user)
        .execute(&mut *holder)
        .await
        .unwrap();
    force_sync(env, user).await;
    let pid = syncfleet_testkit::blocked_on_lock(&env.pool, "INSERT INTO credentials", None).await;
    (holder, pid)
}

/// A worker killed between the token endpoint's answer (a rotated refresh
/// token) and its durable store: the test holds the credential row, so the
/// store waits, and the worker dies there. Answers the user, the environment
/// and the simulators, with the second worker running.
async fn kill_9_between_the_token_answer_and_its_store(
    providers: Providers,
) -> (TestEnv, Providers, uuid::Uuid, Child) {
    let env = TestEnv::new().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let lease = [("SYNCFLEET_USER_LEASE", "2s")];
    let mut first = spawn_worker(&env, &providers, &lease);
    force_sync(&env, user).await;
    wait_until(LIMIT, "the first session", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    let (holder, _) = refresh_and_hold_its_store(&env, user).await;
    first.kill().unwrap();
    first.wait().unwrap();
    holder.rollback().await.unwrap();
    let second = spawn_worker(&env, &providers, &lease);
    (env, providers, user, second)
}

/// The simulators with Graph revoking a refresh token the moment it rotates
/// it.
async fn strict_graph() -> Providers {
    Providers::with(ProviderConfigs {
        graph: GraphConfig {
            revoke_rotated_refresh_tokens: true,
            ..GraphConfig::default()
        },
        ..ProviderConfigs::default()
    })
    .await
}

/// The redelivered job waits out the dead worker's lease, then syncs with
/// the stored token; nobody is asked to reconnect.
async fn the_authorization_lives_on(env: TestEnv, providers: Providers, user: uuid::Uuid, second: Child) {
    wait_until(LIMIT, "the job to complete", || async {
        session_count(&env.pool, user, "succeeded").await == 2
    })
    .await;
    assert_eq!(session_count(&env.pool, user, "abandoned").await, 1);
    let reconnect: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE kind = 'reconnect'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(reconnect, 0);
    terminate(&second);
    assert!(exit_status(second, LIMIT).await.success());
    drop(providers);
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_while_it_stores_a_rotated_microsoft_token_loses_no_authorization() {
    // Microsoft's identity platform: a refresh answers a new refresh token
    // and the one it was given keeps working.
    let (env, providers, user, second) = kill_9_between_the_token_answer_and_its_store(Providers::start().await).await;
    the_authorization_lives_on(env, providers, user, second).await;
}

#[tokio::test]
async fn a_worker_killed_while_it_stores_a_token_a_strict_provider_rotated_loses_no_authorization() {
    // A provider that revokes a refresh token the moment it rotates it. The
    // worker died with its store waiting at the database: the statement was
    // already there, and it commits once the row is free (the store is one
    // statement, no transaction left open to abort), so the rotated token
    // is the one stored and the next session refreshes with it. What is
    // left is the time between the answer and the statement reaching the
    // database (`syncfleet_worker_token_store_seconds`).
    let (env, providers, user, second) = kill_9_between_the_token_answer_and_its_store(strict_graph().await).await;
    the_authorization_lives_on(env, providers, user, second).await;
}

/// The spool entries (`*.json`) in `dir`.
fn spooled(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|extension| extension == "json"))
            .count()
    })
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_postgresql_is_unreachable_keeps_a_strict_providers_rotated_token_in_its_spool() {
    use syncfleet_testkit::Forwarder;

    // The provider revokes a refresh token the moment it rotates it: the
    // rotated one, which the worker could not store, is the only valid one.
    let providers = strict_graph().await;
    let env = TestEnv::new().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let spool = std::env::temp_dir().join(format!("syncfleet-spool-{}", uuid::Uuid::new_v4()));
    let spool_dir = spool.to_string_lossy().into_owned();
    let database = Forwarder::to_url(&env.database_url);
    database.open().await;
    let behind = database.url(&env.database_url);
    let settings = [
        ("SYNCFLEET_USER_LEASE", "2s"),
        ("SYNCFLEET_TOKEN_SPOOL_DIR", spool_dir.as_str()),
        ("SYNCFLEET_DATABASE_URL", behind.as_str()),
    ];
    let mut first = spawn_worker(&env, &providers, &settings);
    force_sync(&env, user).await;
    wait_until(LIMIT, "the first session", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    let consumed: Vec<u8> =
        sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE user_id = $1 AND kind = 'mailbox_refresh_token'")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();

    // The next session refreshes (no kept access token); its store waits on
    // the test's row lock, then PostgreSQL becomes unreachable under it (the
    // forwarder closed, the waiting statement's backend terminated), and
    // the worker is killed -9 while it retries.
    let (holder, pid) = refresh_and_hold_its_store(&env, user).await;
    assert_eq!(spooled(&spool), 1, "the rotation is on disk before its store is tried");
    database.close();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(terminated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    holder.rollback().await.unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE user_id = $1 AND kind = 'mailbox_refresh_token'")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, consumed, "the rotated token never reached the database");

    // The worker starts again (its spool kept, PostgreSQL reachable): it
    // stores the spooled token before it takes a job, and the redelivered
    // job syncs with it.
    let second = spawn_worker(&env, &providers, &settings[..2]);
    wait_until(LIMIT, "the redelivered job to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 2
    })
    .await;
    assert_eq!(spooled(&spool), 0, "the stored entry is deleted");
    let failed_on_auth: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1 AND status = 'failed'")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(failed_on_auth, 0, "no session refreshed with the revoked token");
    the_authorization_lives_on(env, providers, user, second).await;
    let _ = std::fs::remove_dir_all(&spool);
}

/// The worker binary reaching PostgreSQL through `database`, the broker at
/// `amqp_url`, its probes on `ops_port`.
fn spawn_worker_behind(
    env: &TestEnv,
    providers: &Providers,
    database: &syncfleet_testkit::Forwarder,
    amqp_url: &str,
    ops_port: u16,
) -> Child {
    spawn_worker(
        env,
        providers,
        &[
            ("SYNCFLEET_DATABASE_URL", &database.url(&env.database_url)),
            ("SYNCFLEET_AMQP_URL", amqp_url),
            ("SYNCFLEET_OPS_LISTEN", &format!("127.0.0.1:{ops_port}")),
        ],
    )
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_postgresql_and_the_broker_waits_for_them_then_syncs() {
    use syncfleet_testkit::{Forwarder, becomes_ready, probe, stays_alive_unready, stop_gracefully};

    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let database = Forwarder::to_url(&env.database_url);
    let broker = Forwarder::to_url(&env.amqp_url);
    let ops_port = free_port();
    let mut worker = spawn_worker_behind(&env, &providers, &database, &broker.url(&env.amqp_url), ops_port);
    stays_alive_unready(&mut worker, ops_port).await;
    // PostgreSQL first: still not ready without the broker.
    database.open().await;
    stays_alive_unready(&mut worker, ops_port).await;
    broker.open().await;
    becomes_ready(ops_port).await;

    force_sync(&env, user).await;
    wait_until(LIMIT, "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    assert_eq!(probe(ops_port, "/readyz").await.unwrap().0, 200);
    stop_gracefully(worker);
    env.cleanup().await;
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_postgresql_stops_the_worker_cleanly() {
    use syncfleet_testkit::{Forwarder, stays_alive_unready, stop_gracefully};

    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let database = Forwarder::to_url(&env.database_url);
    let ops_port = free_port();
    let mut worker = spawn_worker_behind(&env, &providers, &database, &env.amqp_url, ops_port);
    stays_alive_unready(&mut worker, ops_port).await;
    stop_gracefully(worker);
    env.cleanup().await;
}
