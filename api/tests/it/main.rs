//! The api over real HTTP, a real database and a real broker.

#![allow(clippy::unwrap_used)]

mod access;
mod actions;
mod activities;
mod admin_jobs;
mod cli;
mod concurrency;
mod configuration;
mod customization;
mod idempotency;
mod limits;
mod lists;
mod notifications;
mod ops;
mod organization_sync;
mod organizations;
mod panel;
mod plans;
mod presets;
mod pushes;
mod sessions;
mod startup;
mod statistics;
mod traces;
mod user_edits;
mod users;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use syncfleet_api::AppState;
use syncfleet_common::queue::Publisher;
use syncfleet_testkit::{TestEnv, http_get as get, wait_until};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// The local broker's management API (`scripts/services.sh` enables it).
pub const MANAGEMENT_URL: &str = "http://guest:guest@127.0.0.1:15672";

/// A request with a JSON payload and a bearer token.
pub async fn send(
    api: &Api,
    method: &str,
    path: &str,
    token: &str,
    payload: &serde_json::Value,
) -> syncfleet_testkit::HttpResponse {
    syncfleet_testkit::http_with_body(api.address, method, path, Some(token), &payload.to_string()).await
}

/// The api serving on a free port until `stop`.
pub struct Api {
    pub address: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

/// What the api's handlers reach, on this test's database and broker.
pub fn state(env: &TestEnv, pool: PgPool) -> AppState {
    // As every binary does first (the console's HTTP client needs it).
    syncfleet_common::telemetry::install_tls_provider();
    let publisher = Publisher::lazy(env.common().amqp_url, "test api", env.topology());
    AppState {
        pool,
        publisher: Arc::new(publisher),
        key_ring: Some(syncfleet_testkit::test_key_ring()),
        url_policy: syncfleet_connectors::ssrf::UrlPolicy::STRICT,
        console: Arc::new(syncfleet_api::console::Console::new(
            &env.common(),
            Some(&secrecy::SecretString::from(MANAGEMENT_URL)),
        )),
    }
}

impl Api {
    pub async fn start(env: &TestEnv, pool: PgPool, drain_delay: Duration) -> Self {
        let state = state(env, pool);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(syncfleet_api::serve(listener, state, shutdown.clone(), drain_delay));
        Self {
            address,
            shutdown,
            server,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn liveness_and_readiness_answer_while_the_database_is_reachable() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    assert_eq!(get(api.address, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get(api.address, "/readyz").await, (200, "ready".to_owned()));
    assert_eq!(get(api.address, "/nowhere").await.0, 404);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let env = TestEnv::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect(&env.database_url)
        .await
        .unwrap();
    let api = Api::start(&env, pool, Duration::ZERO).await;
    assert_eq!(get(api.address, "/readyz").await.0, 200);

    // Dropping the database ends every connection to it.
    env.cleanup().await;
    wait_until(Duration::from_secs(20), "readiness to fail", || async {
        get(api.address, "/readyz").await == (503, "database unreachable".to_owned())
    })
    .await;
    assert_eq!(
        get(api.address, "/healthz").await.0,
        200,
        "liveness does not depend on the database"
    );
    api.stop().await;
}

#[tokio::test]
async fn on_shutdown_readiness_fails_while_requests_are_still_served() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::from_secs(2)).await;
    let address = api.address;
    assert_eq!(get(address, "/readyz").await.0, 200);

    api.shutdown.cancel();
    wait_until(Duration::from_secs(5), "readiness to turn false", || async {
        get(address, "/readyz").await == (503, "draining".to_owned())
    })
    .await;
    assert_eq!(
        get(address, "/healthz").await.0,
        200,
        "still serving during the drain delay"
    );
    api.stop().await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed after the drain"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let env = TestEnv::new().await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    for _ in 0..3 {
        get(api.address, "/healthz").await;
    }
    get(api.address, "/no/such/route/42").await;
    let (status, body) = get(api.address, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"syncfleet_http_requests_total{method="GET",route="/healthz",status="200"} 3"#,
        r#"syncfleet_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        "syncfleet_http_request_duration_seconds_bucket",
    ] {
        assert!(body.contains(series), "missing {series:?} in\n{body}");
    }

    api.stop().await;
    env.cleanup().await;
}
