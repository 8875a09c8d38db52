//! The control API under `/_control/smtp`: what the handle offers a test
//! in-process, over HTTP for a simulator run as a binary (see
//! `simulators/docs/smtp.md`).

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FaultStage, ReceivedMail, SmtpSimulator};
use crate::shared::control::{LatencyMilliseconds, one, problem, set_latency};

pub(super) fn router(simulator: SmtpSimulator) -> Router {
    Router::new()
        .route("/_control/smtp/messages", get(messages).delete(clear))
        .route(
            "/_control/smtp/faults",
            axum::routing::post(fail_next).delete(clear_faults),
        )
        .route("/_control/smtp/fault-rate", put(set_fault_rate))
        .route("/_control/smtp/down", put(set_down))
        .route(
            "/_control/smtp/latency",
            set_latency::<_, LatencyMilliseconds>(SmtpSimulator::set_latency),
        )
        .route("/_control/smtp/counters", get(counters))
        .with_state(simulator)
}

/// A message as the control API shows it.
fn to_json(mail: &ReceivedMail) -> Value {
    json!({
        "from": mail.from,
        "recipients": mail.recipients,
        "subject": mail.subject,
        "message_id": mail.message_id,
        "authenticated_as": mail.authenticated_as,
        "received_at": mail.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "size": mail.data.len(),
        "data": mail.text(),
    })
}

async fn messages(State(simulator): State<SmtpSimulator>) -> Json<Value> {
    Json(Value::Array(simulator.messages().iter().map(to_json).collect()))
}

async fn clear(State(simulator): State<SmtpSimulator>) -> StatusCode {
    simulator.clear();
    StatusCode::NO_CONTENT
}

fn mail_from() -> FaultStage {
    FaultStage::MailFrom
}

#[derive(Debug, Deserialize)]
struct FaultSpec {
    code: u16,
    #[serde(default = "mail_from")]
    stage: FaultStage,
    #[serde(default = "one")]
    times: u32,
}

async fn fail_next(State(simulator): State<SmtpSimulator>, Json(spec): Json<FaultSpec>) -> Response {
    match simulator.fail_next_at(spec.stage, spec.times, spec.code) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => problem(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn clear_faults(State(simulator): State<SmtpSimulator>) -> StatusCode {
    simulator.clear_faults();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct RateSpec {
    code: u16,
    #[serde(default = "mail_from")]
    stage: FaultStage,
    probability: f64,
}

async fn set_fault_rate(State(simulator): State<SmtpSimulator>, Json(spec): Json<RateSpec>) -> Response {
    match simulator.set_fault_rate(spec.stage, spec.code, spec.probability) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => problem(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Down {
    down: bool,
}

async fn set_down(State(simulator): State<SmtpSimulator>, Json(spec): Json<Down>) -> StatusCode {
    simulator.set_down(spec.down);
    StatusCode::NO_CONTENT
}

async fn counters(State(simulator): State<SmtpSimulator>) -> Json<Value> {
    Json(json!(simulator.counters()))
}
