//! The HTTP API: the operations endpoints (`/healthz`, `/readyz`,
//! `/metrics`), bearer-token authentication, force sync and admin jobs.

pub mod auth;
pub mod config;
mod error;
mod metrics;
mod routes;

use std::{sync::Arc, time::Duration};

use axum::{
    Router, middleware,
    routing::{get, post, put},
};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use syncfleet_common::{
    ops::{self, Health},
    queue::Publisher,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
use metrics::HttpMetrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Publishes jobs (reconnects on its own).
    pub publisher: Arc<Publisher>,
    /// The keys credentials are sealed with; without them the credential
    /// routes answer 503.
    pub key_ring: Option<syncfleet_common::secrets::KeyRing>,
    /// What admin-supplied URLs may be (R7).
    pub url_policy: syncfleet_connectors::ssrf::UrlPolicy,
}

/// The whole router, with request metrics registered in `registry`.
pub fn router(state: AppState, health: Arc<Health>, mut registry: Registry) -> Router {
    let metrics = HttpMetrics::register(&mut registry);
    let v1 = Router::new()
        .route(
            "/v1/users",
            get(routes::users::list_users).post(routes::users::create_user),
        )
        .route(
            "/v1/users/{id}",
            get(routes::users::get_user).delete(routes::users::delete_user),
        )
        .route("/v1/users/{id}/actions/force-sync", post(routes::actions::force_sync))
        .route("/v1/users/{id}/actions/{action}", post(routes::actions::user_action))
        .route("/v1/users/actions/{action}", post(routes::actions::bulk_action))
        .route("/v1/jobs/{id}", get(routes::jobs::get_job))
        .route(
            "/v1/organizations",
            get(routes::organizations::list).post(routes::organizations::create),
        )
        .route(
            "/v1/organizations/{id}",
            get(routes::organizations::get)
                .patch(routes::organizations::update)
                .delete(routes::organizations::delete),
        )
        .route(
            "/v1/users/{id}/email-configuration",
            get(routes::configuration::get_configuration).put(routes::configuration::put_configuration),
        )
        .route(
            "/v1/users/{id}/credentials/{kind}",
            put(routes::configuration::put_credential).delete(routes::configuration::delete_credential),
        )
        .with_state(state.clone());
    ops::router(state.pool, health, Arc::new(registry))
        .merge(v1)
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// Serves on `listener` until `shutdown` is cancelled. From that moment
/// readiness fails; requests are still served for `drain_delay` (so load
/// balancers stop sending new ones), then in-flight requests finish and the
/// server stops.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    drain_delay: Duration,
) -> std::io::Result<()> {
    let health = Health::new(false);
    let app = router(state, health.clone(), Registry::default());
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
