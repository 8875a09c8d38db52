//! What the fleet's integration tests share. Every test gets its own
//! database and its own queue prefix, so tests run in parallel against the one
//! PostgreSQL and RabbitMQ of the machine; the broker-restart test gets a
//! private RabbitMQ node of its own.

#![allow(clippy::unwrap_used)]

mod broker;
mod fixtures;
mod forwarder;
mod otlp;
mod providers;

use std::{future::Future, path::PathBuf, time::Duration};

use sqlx::{Connection, PgConnection, PgPool};
use syncfleet_common::{
    config::{CommonConfig, Source},
    db,
    queue::{self, Topology},
};
use uuid::Uuid;

pub use broker::PrivateBroker;
pub use fixtures::*;
pub use forwarder::Forwarder;
pub use otlp::{OtlpReceiver, SpanSeen};
pub use providers::{ProviderConfigs, Providers, TEST_ENCRYPTION_KEYS, test_key_ring};

/// The server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("SYNCFLEET_TEST_DATABASE_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// The broker tests use, unless they start their own.
pub fn amqp_url() -> String {
    std::env::var("SYNCFLEET_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// One test's world: a fresh migrated database and a queue prefix of its own.
pub struct TestEnv {
    /// The database's name.
    pub database: String,
    /// Its URL.
    pub database_url: String,
    /// The broker's URL.
    pub amqp_url: String,
    /// This test's queue prefix.
    pub prefix: String,
    /// A pool on the database.
    pub pool: PgPool,
}

impl TestEnv {
    /// Creates the database, applies the migrations and declares the topology.
    pub async fn new() -> Self {
        Self::with_broker(&amqp_url()).await
    }

    /// Like [`TestEnv::new`], against the given broker.
    pub async fn with_broker(amqp_url: &str) -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let database = format!("sf_test_{}", &suffix[..16]);
        let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let env = Self {
            database_url: format!("{}/{database}", server_url()),
            database,
            amqp_url: amqp_url.to_owned(),
            prefix: format!("t{}", &suffix[..12]),
            pool: PgPool::connect_lazy("postgres://unused").unwrap(),
        };
        let pool = db::connect(&env.common()).await.unwrap();
        db::migrate(&pool).await.unwrap();
        let env = Self { pool, ..env };
        let connection = queue::connect(&env.common().amqp_url, "test setup").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        env.topology().declare(&channel).await.unwrap();
        connection.close(200, "done".into()).await.unwrap();
        env
    }

    /// The settings a service of this test reads, plus `extra`.
    pub fn source(&self, extra: &[(&str, &str)]) -> Source {
        let mut pairs = vec![
            ("SYNCFLEET_DATABASE_URL", self.database_url.as_str()),
            ("SYNCFLEET_AMQP_URL", self.amqp_url.as_str()),
            ("SYNCFLEET_QUEUE_PREFIX", self.prefix.as_str()),
            ("SYNCFLEET_DATABASE_MAX_CONNECTIONS", "8"),
            ("SYNCFLEET_OPS_LISTEN", "127.0.0.1:0"),
            ("SYNCFLEET_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEYS),
            ("SYNCFLEET_ALLOW_LOCAL_URLS", "true"),
        ];
        pairs.extend_from_slice(extra);
        Source::from_pairs(pairs)
    }

    /// The same settings as environment variables, for a child process.
    pub fn env_vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = vec![
            ("SYNCFLEET_DATABASE_URL".to_owned(), self.database_url.clone()),
            ("SYNCFLEET_AMQP_URL".to_owned(), self.amqp_url.clone()),
            ("SYNCFLEET_QUEUE_PREFIX".to_owned(), self.prefix.clone()),
            ("SYNCFLEET_DATABASE_MAX_CONNECTIONS".to_owned(), "8".to_owned()),
            ("SYNCFLEET_LOG_FORMAT".to_owned(), "text".to_owned()),
            ("SYNCFLEET_OPS_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("SYNCFLEET_ENCRYPTION_KEYS".to_owned(), TEST_ENCRYPTION_KEYS.to_owned()),
            ("SYNCFLEET_ALLOW_LOCAL_URLS".to_owned(), "true".to_owned()),
        ];
        vars.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        vars
    }

    /// Starts one of the fleet's binaries with this test's settings plus
    /// `extra`, as a deployment would; its output is discarded.
    pub fn spawn(&self, name: &str, extra: &[(&str, &str)]) -> std::process::Child {
        std::process::Command::new(binary(name))
            .envs(self.env_vars(extra))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Like [`TestEnv::spawn`], with the settings pointing at `providers`.
    pub fn spawn_with(&self, name: &str, providers: &Providers, extra: &[(&str, &str)]) -> std::process::Child {
        let provider_env = providers.env();
        let mut settings: Vec<(&str, &str)> = provider_env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        settings.extend_from_slice(extra);
        self.spawn(name, &settings)
    }

    /// The shared part of the configuration.
    pub fn common(&self) -> CommonConfig {
        CommonConfig::from_source(&self.source(&[])).unwrap()
    }

    /// This test's topology.
    pub fn topology(&self) -> Topology {
        Topology::new(self.prefix.clone(), self.common().delivery_limit)
    }

    /// A publisher on this test's topology.
    pub async fn publisher(&self) -> queue::Publisher {
        queue::Publisher::connect(self.common().amqp_url, "test publisher", self.topology())
            .await
            .unwrap()
    }

    /// Messages ready in a route's queue.
    pub async fn ready(&self, route: queue::Route) -> u32 {
        let connection = queue::connect(&self.common().amqp_url, "test probe").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let count = self.topology().ready_count(&channel, route).await.unwrap();
        connection.close(200, "done".into()).await.unwrap();
        count
    }

    /// Deletes the queues and the database. Tests call it at the end; what a
    /// failed test leaves behind is removed by `scripts/test.sh` next time.
    pub async fn cleanup(self) {
        // Each step is bounded: a broker or database that stopped answering
        // leaves garbage (test.sh sweeps it), never a hung test.
        let bounded = Duration::from_secs(10);
        let _ = tokio::time::timeout(bounded, self.pool.close()).await;
        let queues = async {
            if let Ok(connection) = queue::connect(&self.common().amqp_url, "test cleanup").await {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = self.topology().delete(&channel).await;
                }
                let _ = connection.close(200, "done".into()).await;
            }
        };
        let _ = tokio::time::timeout(bounded, queues).await;
        let database = async {
            if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", server_url())).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database))
                    .execute(&mut admin)
                    .await;
            }
        };
        let _ = tokio::time::timeout(bounded, database).await;
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to a service.
pub fn terminate(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Stops a service with SIGTERM and asserts it exits 0.
pub fn stop_gracefully(mut child: std::process::Child) {
    terminate(&child);
    assert!(child.wait().unwrap().success(), "the service did not exit 0 on SIGTERM");
}

/// The path of one of the workspace's binaries, built beside the test binary.
pub fn binary(name: &str) -> PathBuf {
    let mut directory = std::env::current_exe().unwrap();
    directory.pop();
    if directory.ends_with("deps") {
        directory.pop();
    }
    let path = directory.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests through scripts/test.sh",
        path.display()
    );
    path
}

/// An HTTP answer as tests look at it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A plain HTTP/1.1 request without a body.
pub async fn http(address: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> HttpResponse {
    http_with_body(address, method, path, token, "").await
}

/// A plain HTTP/1.1 request with a JSON body.
pub async fn http_with_body(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{authorization}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    // Binary answers (a zip) are read lossily: tests of those decode the
    // bytes themselves.
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = http(address, "GET", path, None).await;
    (response.status, response.body)
}

/// A GET of `path` on a service's port: `None` while nothing listens there.
pub async fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::net::TcpStream::connect(address).await.ok()?;
    Some(http_get(address, path).await)
}

/// Asserts, for about a second and a half, that the service `child` stays
/// alive with `/healthz` answering and `/readyz` failing (a dependency is
/// unreachable), once its probes answer at all.
pub async fn stays_alive_unready(child: &mut std::process::Child, ops_port: u16) {
    wait_until(Duration::from_secs(30), "/healthz to answer", || async {
        probe(ops_port, "/healthz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    for _ in 0..15 {
        assert!(child.try_wait().unwrap().is_none(), "the service exited");
        let (status, body) = probe(ops_port, "/readyz").await.unwrap();
        assert_eq!(status, 503, "ready while a dependency is unreachable: {body}");
        assert_eq!(probe(ops_port, "/healthz").await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the service's `/readyz` passes.
pub async fn becomes_ready(ops_port: u16) {
    wait_until(Duration::from_secs(60), "/readyz to pass", || async {
        probe(ops_port, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
}

/// The value of the series `name` (without labels) in a service's
/// `/metrics`, `None` while nothing listens or the series is absent.
pub async fn gauge(port: u16, name: &str) -> Option<i64> {
    let (_, body) = probe(port, "/metrics").await?;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A port free on the loopback now (for a service that must be reachable
/// at a known address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
