//! The api over real HTTP and a real database.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use syncfleet_testkit::{TestEnv, wait_until};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    syncfleet_testkit::http_get(address, path).await
}

#[tokio::test]
async fn liveness_and_readiness_answer_while_the_database_is_reachable() {
    let env = TestEnv::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(syncfleet_api::serve(
        listener,
        env.pool.clone(),
        shutdown.clone(),
        Duration::ZERO,
    ));

    assert_eq!(get(address, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get(address, "/readyz").await, (200, "ready".to_owned()));
    assert_eq!(get(address, "/nowhere").await.0, 404);

    shutdown.cancel();
    server.await.unwrap().unwrap();
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(syncfleet_api::serve(
        listener,
        pool.clone(),
        shutdown.clone(),
        Duration::ZERO,
    ));
    assert_eq!(get(address, "/readyz").await.0, 200);

    // Dropping the database ends every connection to it.
    let database = env.database.clone();
    env.cleanup().await;
    wait_until(Duration::from_secs(20), "readiness to fail", || async {
        get(address, "/readyz").await == (503, "database unreachable".to_owned())
    })
    .await;
    assert_eq!(
        get(address, "/healthz").await.0,
        200,
        "liveness does not depend on the database ({database})"
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn on_shutdown_readiness_fails_while_requests_are_still_served() {
    let env = TestEnv::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(syncfleet_api::serve(
        listener,
        env.pool.clone(),
        shutdown.clone(),
        Duration::from_secs(2),
    ));
    assert_eq!(get(address, "/readyz").await.0, 200);

    shutdown.cancel();
    wait_until(Duration::from_secs(5), "readiness to turn false", || async {
        get(address, "/readyz").await == (503, "draining".to_owned())
    })
    .await;
    assert_eq!(
        get(address, "/healthz").await.0,
        200,
        "still serving during the drain delay"
    );
    server.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed after the drain"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let env = TestEnv::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(syncfleet_api::serve(
        listener,
        env.pool.clone(),
        shutdown.clone(),
        Duration::ZERO,
    ));

    for _ in 0..3 {
        get(address, "/healthz").await;
    }
    get(address, "/no/such/route/42").await;
    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"syncfleet_http_requests_total{method="GET",route="/healthz",status="200"} 3"#),
        "{body}"
    );
    assert!(
        body.contains(r#"syncfleet_http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("syncfleet_http_request_duration_seconds_bucket"),
        "{body}"
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
    env.cleanup().await;
}
