//! The HTTP API. This build serves the operations endpoints (`/healthz`,
//! `/readyz`, `/metrics`) with request metrics; the admin and add-in routes
//! are added on top of the same router.

pub mod config;
mod metrics;

use std::{sync::Arc, time::Duration};

use axum::{Router, middleware};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use syncfleet_common::ops::{self, Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
use metrics::HttpMetrics;

/// The whole router, with request metrics registered in `registry`.
pub fn router(pool: PgPool, health: Arc<Health>, mut registry: Registry) -> Router {
    let metrics = HttpMetrics::register(&mut registry);
    ops::router(pool, health, Arc::new(registry)).layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// Serves on `listener` until `shutdown` is cancelled. From that moment
/// readiness fails; requests are still served for `drain_delay` (so load
/// balancers stop sending new ones), then in-flight requests finish and the
/// server stops.
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    shutdown: CancellationToken,
    drain_delay: Duration,
) -> std::io::Result<()> {
    let health = Health::new(false);
    let app = router(pool, health.clone(), Registry::default());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            health.set_draining();
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "Draining: readiness is now false."
            );
            tokio::time::sleep(drain_delay).await;
        })
        .await
}
