//! The operations endpoints every service serves: `/healthz` (the process is
//! alive), `/readyz` (its dependencies answer and it is not draining) and
//! `/metrics` (Prometheus text format).
//!
//! Readiness turns false the moment shutdown starts, before the drain ends,
//! so the platform stops routing to a pod that is going away. A service that
//! is still waiting for its dependencies at start answers `/healthz` (it is
//! alive) while `/readyz` fails.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Setting;

pub const OPS_LISTEN: Setting = Setting {
    name: "SYNCFLEET_OPS_LISTEN",
    default: "0.0.0.0:9090",
    doc: "Address of the scheduler's and the worker's /healthz, /readyz and /metrics.",
};

/// How long readiness waits for PostgreSQL's answer before it fails.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness depends on, shared between a service and its endpoints.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    started: AtomicBool,
    needs_broker: bool,
    broker_connected: AtomicBool,
}

impl Health {
    /// A service that needs PostgreSQL, and RabbitMQ when `needs_broker`.
    pub fn new(needs_broker: bool) -> Arc<Self> {
        let health = Self::starting(needs_broker);
        health.set_started();
        health
    }

    /// Like [`Health::new`], for a service still waiting for its
    /// dependencies: readiness fails until [`Health::set_started`].
    pub fn starting(needs_broker: bool) -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            started: AtomicBool::new(false),
            needs_broker,
            broker_connected: AtomicBool::new(false),
        })
    }

    /// The service has reached its dependencies and started its work.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Shutdown has begun: readiness fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the service is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The service's broker connection went up or down.
    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    health: Arc<Health>,
    registry: Arc<Registry>,
}

/// The router of the operations endpoints; the api merges it into its own.
pub fn router(pool: PgPool, health: Arc<Health>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(OpsState { pool, health, registry })
}

async fn ready(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.health.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !state.health.started.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "waiting for dependencies");
    }
    if state.health.needs_broker && !state.health.broker_connected.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable");
    }
    let probe = sqlx::query_scalar!("SELECT 1").fetch_one(&state.pool);
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "metrics could not be encoded".to_owned(),
        ),
    }
}

/// Serves the operations endpoints of a service on `address`; readiness
/// fails as soon as `shutdown` fires. Returns the token that stops the
/// endpoints: cancel it at the very end of the service's shutdown, after the
/// drain, so probes are answered throughout.
pub async fn start(
    address: SocketAddr,
    pool: PgPool,
    health: Arc<Health>,
    registry: Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<CancellationToken> {
    let stop = CancellationToken::new();
    serve(address, router(pool, health.clone(), Arc::new(registry)), stop.clone())
        .await
        .map_err(|error| anyhow::anyhow!("binding {address}: {error}"))?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        health.set_draining();
    });
    Ok(stop)
}

/// Binds `address` and serves `router` until `stop` is cancelled.
pub async fn serve(address: SocketAddr, router: Router, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "The operations endpoint stopped.");
        }
    });
    tracing::info!(address = %bound, "Serving /healthz, /readyz and /metrics.");
    Ok(bound)
}

/// A histogram family's constructor: exponential buckets from 5 ms to about
/// 5.5 minutes, for durations and lags in seconds.
pub fn seconds_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 17,
    ))
}
