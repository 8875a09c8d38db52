//! The HTTP API. This build serves liveness and readiness; the admin and
//! add-in routes are added on top of the same router.

pub mod config;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    draining: Arc<AtomicBool>,
}

/// The router: `/healthz` answers while the process runs; `/readyz` answers
/// 200 while PostgreSQL is reachable and the server is not draining.
pub fn router(pool: PgPool, draining: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(AppState { pool, draining })
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Serves on `listener` until `shutdown` is cancelled; readiness fails from
/// that moment while in-flight requests finish.
pub async fn serve(listener: TcpListener, pool: PgPool, shutdown: CancellationToken) -> std::io::Result<()> {
    let draining = Arc::new(AtomicBool::new(false));
    let app = router(pool, draining.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            draining.store(true, Ordering::Relaxed);
        })
        .await
}
