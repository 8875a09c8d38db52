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
mod spans;
mod store;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
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
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer, trace::TraceLayer};
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
        .layer(middleware::from_fn(check_input));
    let v1 = bounded(v1, REQUEST_TIMEOUT).with_state(state.clone());
    // The admin panel calls `v1` in process; its form posts are not JSON,
    // so it sits beside `check_input`, not under it.
    let panel = panel::router(v1.clone(), state.clone());
    // The probes and `/metrics` get no span: a span every few seconds per
    // probe would bury the requests in the traces.
    let traced = v1.merge(panel).layer(
        TraceLayer::new_for_http()
            .make_span_with(spans::request_span)
            .on_request(())
            .on_response(spans::record_answer)
            .on_eos(())
            .on_failure(()),
    );
    ops::router(state.pool, health, Arc::new(registry))
        .merge(traced)
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// The largest request body any route reads.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// How long a request may run until its answer starts: longer than the
/// longest wait a route offers (force sync's `?wait=`, 60 seconds). A
/// streamed answer (the notification stream, a CSV export) is not cut: the
/// timeout ends when the answer's head is sent, whatever its body does next.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Bounds every request of `router`: its body to [`MAX_BODY`] (413) and its
/// time until the answer starts to `timeout` (503), both answered in the one
/// error shape.
fn bounded<S>(router: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(middleware::map_response(move |response: Response| async move {
            in_the_error_shape(response, timeout)
        }))
}

/// tower-http's own answers in the API's error shape: the body limit's 413
/// (a `Content-Length` over the limit, refused before the body is read) and
/// the timeout's empty 503. Every answer of the API's own carries its
/// [`error::ErrorCode`], so those two are the ones without it.
fn in_the_error_shape(response: Response, timeout: Duration) -> Response {
    if response.extensions().get::<error::ErrorCode>().is_some() {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large().into_response(),
        StatusCode::SERVICE_UNAVAILABLE => error::ApiError::timed_out(timeout).into_response(),
        _ => response,
    }
}

/// A body over [`MAX_BODY`], refused.
fn too_large() -> error::ApiError {
    error::ApiError::too_large(format!("the body is larger than {MAX_BODY} bytes"))
}

/// Checks what every route takes, so no handler can forget it: a body, when
/// there is one, is a JSON object; no text holds the NUL character, which no
/// field takes and PostgreSQL cannot store (in the query string as `%00`, in
/// the body as a raw 0 byte or the JSON escape `\u0000`). The body's size is
/// bounded by [`bounded`]'s limit, which ends the read past [`MAX_BODY`].
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
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|_| too_large())?;
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

    /// A route answering with the body it was sent, under the input checks
    /// and [`bounded`] by `timeout`.
    fn echo(timeout: Duration) -> Router {
        bounded(
            Router::new()
                .route("/", post(|body: String| async move { body }))
                .layer(middleware::from_fn(check_input)),
            timeout,
        )
    }

    async fn answer(router: Router, request: Request) -> (StatusCode, Option<String>, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, retry_after, String::from_utf8(body.to_vec()).unwrap())
    }

    /// A JSON object of exactly `size` bytes.
    fn object_of(size: usize) -> String {
        format!(r#"{{"a": "{}"}}"#, "x".repeat(size - 9))
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413_in_the_error_shape_whether_or_not_its_length_is_sent() {
        let refused = (
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!(
                r#"{{"error":{{"code":"too_large","message":"the body is larger than {MAX_BODY} bytes","field":"body"}}}}"#
            ),
        );
        let over = object_of(MAX_BODY + 1);
        let declared = Request::post("/")
            .header(axum::http::header::CONTENT_LENGTH, over.len())
            .body(Body::from(over.clone()))
            .unwrap();
        assert_eq!(answer(echo(REQUEST_TIMEOUT), declared).await, refused);

        // Sent in chunks, without a length: refused once the limit is passed.
        let chunks = over
            .into_bytes()
            .chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>();
        let streamed = Request::post("/")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        assert_eq!(answer(echo(REQUEST_TIMEOUT), streamed).await, refused);

        let within = object_of(MAX_BODY);
        let request = Request::post("/").body(Body::from(within.clone())).unwrap();
        assert_eq!(
            answer(echo(REQUEST_TIMEOUT), request).await,
            (StatusCode::OK, None, within)
        );
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_answers_503_timeout_in_the_error_shape() {
        let timeout = Duration::from_millis(100);
        let slow = bounded(
            Router::new().route(
                "/",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            ),
            timeout,
        );
        let (status, retry_after, body) = answer(slow, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5"))
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "timeout", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("Idempotency-Key")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_streamed_answer_outlives_the_request_timeout() {
        let timeout = Duration::from_millis(100);
        // As the notification stream and the CSV export do: the head at
        // once, then the body for as long as it lasts.
        let stream = bounded(
            Router::new().route(
                "/",
                get(|| async {
                    let events = futures_util::stream::unfold(0, |sent| async move {
                        if sent == 3 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        Some((Ok::<_, std::io::Error>(format!("event {sent}\n")), sent + 1))
                    });
                    Body::from_stream(events)
                }),
            ),
            timeout,
        );
        let answer = answer(stream, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(answer, (StatusCode::OK, None, "event 0\nevent 1\nevent 2\n".to_owned()));
    }
}
