//! The worker binary: kill -9 mid-job, and SIGTERM.
//!
//! A job is held "in the middle" by locking the credentials table: the
//! settings check reads it, so the session is open and waits there. The
//! users are connected to the simulators, so the binary's sessions are real
//! syncs.

use std::{process::Child, time::Duration};

use sqlx::{Connection, PgConnection};
use syncfleet_common::queue::Route;
use syncfleet_testkit::{Providers, TestEnv, free_port, http_get, session_count, terminate, wait_until};

use crate::support::{force_sync, start};

const LIMIT: Duration = Duration::from_secs(60);

/// The worker binary pointed at the simulators.
fn spawn_worker(env: &TestEnv, providers: &Providers, extra: &[(&str, &str)]) -> Child {
    env.spawn_with("syncfleet-worker", providers, extra)
}

async fn lock_credentials(env: &TestEnv) -> PgConnection {
    let mut connection = PgConnection::connect(&env.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
    sqlx::query("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE")
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
    let lock = lock_credentials(&env).await;
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
    let lock = lock_credentials(&env).await;
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
    let lock = lock_credentials(&env).await;
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
    let lease: Option<uuid::Uuid> = sqlx::query_scalar("SELECT running_session_id FROM users WHERE id = $1")
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
