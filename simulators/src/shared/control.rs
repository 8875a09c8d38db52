//! The plumbing the control APIs share: their JSON error answer, the bodies
//! that arm a fault, set a fault rate or set the latency, and counters by
//! endpoint as JSON.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{MethodRouter, put},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

/// `{"error": message}` with `status`.
pub(crate) fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Answers `act` on `body` read as JSON `T`, or axum's `400`/`422` in the
/// control API's own error shape (`{"error"}`), naming the field at fault.
pub(crate) fn with_json_body<T: DeserializeOwned>(body: &[u8], act: impl FnOnce(T) -> Response) -> Response {
    match Json::<T>::from_bytes(body) {
        Ok(Json(value)) => act(value),
        Err(rejection) => problem(rejection.status(), rejection.body_text()),
    }
}

/// `400` when `probability` is outside `[0, 1]`.
pub(crate) fn probability_problem(probability: f64) -> Option<Response> {
    (!(0.0..=1.0).contains(&probability))
        .then(|| problem(StatusCode::BAD_REQUEST, "probability must be within [0, 1]".to_owned()))
}

/// Calls by endpoint as a JSON object keyed by the endpoint's name.
pub(crate) fn calls_json<E: Copy>(calls: &BTreeMap<E, u64>, name: impl Fn(E) -> &'static str) -> Map<String, Value> {
    calls
        .iter()
        .map(|(endpoint, calls)| (name(*endpoint).to_owned(), json!(calls)))
        .collect()
}

pub(crate) fn one() -> u32 {
    1
}

/// The body that arms a fault: `times` (1 by default) calls, to `endpoint`
/// only when given.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "F: Deserialize<'de>, E: Deserialize<'de>"))]
pub(crate) struct FaultSpec<F, E> {
    pub fault: F,
    #[serde(default)]
    pub endpoint: Option<E>,
    #[serde(default = "one")]
    pub times: u32,
}

/// The body that sets a fault's rate.
#[derive(Debug, Deserialize)]
pub(crate) struct RateSpec<F> {
    pub fault: F,
    pub probability: f64,
}

/// A latency body: a base and a jitter in milliseconds.
pub(crate) trait LatencySpec: DeserializeOwned + Send + 'static {
    /// The base and the jitter.
    fn latency(&self) -> (Duration, Duration);
}

/// `{"base_ms": .., "jitter_ms": ..}` (Graph, EWS).
#[derive(Debug, Deserialize)]
pub(crate) struct LatencyMs {
    base_ms: u64,
    #[serde(default)]
    jitter_ms: u64,
}

impl LatencySpec for LatencyMs {
    fn latency(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.base_ms),
            Duration::from_millis(self.jitter_ms),
        )
    }
}

/// `{"milliseconds": .., "jitter_milliseconds": ..}` (Gmail, SMTP,
/// Salesforce).
#[derive(Debug, Deserialize)]
pub(crate) struct LatencyMilliseconds {
    milliseconds: u64,
    #[serde(default)]
    jitter_milliseconds: u64,
}

impl LatencySpec for LatencyMilliseconds {
    fn latency(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.milliseconds),
            Duration::from_millis(self.jitter_milliseconds),
        )
    }
}

/// `PUT` of a latency body `B`, answered `204` once `set` has the base and
/// the jitter.
pub(crate) fn set_latency<S, B>(set: fn(&S, Duration, Duration)) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    B: LatencySpec,
{
    put(move |State(simulator): State<S>, Json(spec): Json<B>| async move {
        let (base, jitter) = spec.latency();
        set(&simulator, base, jitter);
        StatusCode::NO_CONTENT
    })
}
