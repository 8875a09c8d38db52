//! The span of every request (tower-http's `TraceLayer`): named by its
//! method and route template, never the concrete path, so it carries no ids
//! or query values. A caller's W3C `traceparent` is continued, so the api's
//! spans, and the jobs it enqueues, join the caller's trace.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    body::Body,
    extract::MatchedPath,
    http::{Request, Response},
};
use syncfleet_common::telemetry;
use tracing::{Span, field};

/// The W3C trace context headers, as `telemetry::continue_trace` reads them.
const TRACE_CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The request's span, continuing the trace its headers carry (if any).
pub fn request_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = field::Empty,
        trace_id = field::Empty,
    );
    let carrier: BTreeMap<String, String> = TRACE_CONTEXT_HEADERS
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    telemetry::continue_trace(&span, &carrier);
    span
}

/// Records the answer's status on the request's span; a server error marks
/// the span as failed (its cause is logged where it happened).
pub fn record_answer<B>(response: &Response<B>, _latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
