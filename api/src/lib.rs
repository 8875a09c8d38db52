//! The HTTP API: the operations endpoints (`/healthz`, `/readyz`,
//! `/metrics`), bearer-token authentication, force sync and admin jobs.

pub mod auth;
pub mod config;
pub mod console;
mod error;
mod extract;
pub mod idempotency;
mod live;
mod metrics;
mod openapi;
mod panel;
mod routes;
mod store;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use syncfleet_common::{
    ops::{self, Health},
    queue::Publisher,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

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
    /// What the operator console reads outside PostgreSQL (the broker's
    /// queues, the limiter's cooldowns).
    pub console: Arc<console::Console>,
}

/// The whole router, with request metrics registered in `registry`.
pub fn router(state: AppState, health: Arc<Health>, mut registry: Registry) -> Router {
    let metrics = HttpMetrics::register(&mut registry);
    let (v1, document) = OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::users::router())
        .merge(routes::actions::router())
        .merge(routes::jobs::router())
        .merge(routes::organizations::router())
        .merge(routes::configuration::router())
        .merge(routes::customization::router())
        .merge(routes::plans::router())
        .merge(routes::presets::router())
        .merge(routes::sessions::router())
        .merge(routes::activities::router())
        .merge(routes::statistics::router())
        .merge(routes::pushes::router())
        .merge(routes::notifications::router())
        .merge(routes::ops::router())
        .split_for_parts();
    let document = Arc::new(openapi::finish(document));
    let v1 = v1
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .layer(axum::Extension(live::Hub::new(state.pool.clone(), health.clone())))
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(middleware::from_fn(check_input))
        .with_state(state.clone());
    // The admin panel calls `v1` in process; its form posts are not JSON,
    // so it sits beside `check_input`, not under it.
    let panel = panel::router(v1.clone(), state.clone());
    ops::router(state.pool, health, Arc::new(registry))
        .merge(v1)
        .merge(panel)
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// The largest request body any route reads.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Checks what every route takes, so no handler can forget it: a body, when
/// there is one, is a JSON object; no text holds the NUL character, which no
/// field takes and PostgreSQL cannot store (in the query string as `%00`, in
/// the body as a raw 0 byte or the JSON escape `\u0000`).
async fn check_input(request: Request, next: Next) -> Result<Response, error::ApiError> {
    if let Some(query) = request.uri().query()
        && query.to_ascii_lowercase().contains("%00")
    {
        return Err(error::ApiError::invalid(
            "query",
            "the query string holds a NUL character",
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| error::ApiError::too_large(format!("the body is larger than {MAX_BODY} bytes")))?;
    if bytes.contains(&0) || bytes.windows(6).any(|window| window.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(error::ApiError::invalid("body", "the body holds a NUL character"));
    }
    // Every body this API takes is a JSON object: serde would otherwise read
    // a struct from an array of its fields in order.
    if let Some(first) = bytes.iter().find(|byte| !byte.is_ascii_whitespace())
        && *first != b'{'
    {
        return Err(error::ApiError::invalid("body", "the body must be a JSON object"));
    }
    run_retrying(parts, bytes, next).await
}

/// How many times a request meeting a serialization failure or a deadlock
/// runs in all.
const ATTEMPTS: usize = 5;

/// Runs the request, and runs it again (up to [`ATTEMPTS`] in all) while it
/// answers [`ApiError::concurrent_update`]: a serialization failure or a
/// deadlock rolled its transaction back, so nothing of it happened and
/// running it again is safe. Handlers stay free of retry loops.
async fn run_retrying(
    parts: axum::http::request::Parts,
    bytes: axum::body::Bytes,
    next: Next,
) -> Result<Response, error::ApiError> {
    let mut attempt = 1;
    loop {
        let response = next
            .clone()
            .run(Request::from_parts(parts.clone(), Body::from(bytes.clone())))
            .await;
        let conflicted = response
            .extensions()
            .get::<error::ErrorCode>()
            .is_some_and(|code| code.0 == error::CONCURRENT_UPDATE);
        if !conflicted || attempt == ATTEMPTS {
            return Ok(response);
        }
        attempt += 1;
    }
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
    serve_with_health(listener, state, Health::new(false), shutdown, drain_delay).await
}

/// [`serve`] with the readiness the caller keeps: a process still waiting
/// for PostgreSQL at start serves with [`Health::starting`], so `/healthz`
/// answers and `/readyz` fails until it calls [`Health::set_started`].
pub async fn serve_with_health(
    listener: TcpListener,
    state: AppState,
    health: Arc<Health>,
    shutdown: CancellationToken,
    drain_delay: Duration,
) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{http::StatusCode, routing::post};
    use tower::ServiceExt;

    use super::*;

    /// A router whose one route fails with `concurrent_update` `failures`
    /// times, then answers 201 with the body it was sent.
    fn flaky(failures: usize, calls: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route(
                "/",
                post(move |body: String| async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < failures {
                        return Err(error::ApiError::concurrent_update());
                    }
                    Ok((StatusCode::CREATED, body))
                }),
            )
            .layer(middleware::from_fn(check_input))
    }

    async fn call(router: Router) -> (StatusCode, String) {
        let request = Request::post("/").body(Body::from(r#"{"a": 1}"#)).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_request_meeting_a_deadlock_runs_again_with_its_body_until_it_gets_through() {
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = call(flaky(ATTEMPTS - 1, calls.clone())).await;
        assert_eq!(answer, (StatusCode::CREATED, r#"{"a": 1}"#.to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);

        let calls = Arc::new(AtomicUsize::new(0));
        let (status, body) = call(flaky(ATTEMPTS, calls.clone())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains(error::CONCURRENT_UPDATE), "{body}");
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS, "no more than {ATTEMPTS} runs");
    }
}
