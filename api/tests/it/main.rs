//! The api over real HTTP and a real database.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use syncfleet_testkit::{TestEnv, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn liveness_and_readiness_answer_while_the_database_is_reachable() {
    let env = TestEnv::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(syncfleet_api::serve(listener, env.pool.clone(), shutdown.clone()));

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
    let server = tokio::spawn(syncfleet_api::serve(listener, pool.clone(), shutdown.clone()));
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
