//! The control API under `/_control/gmail`: what the handle offers a test
//! in-process, over HTTP for a simulator run as a binary (see
//! `simulators/docs/gmail.md`).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde::Deserialize;
use serde_json::json;

use super::{Endpoint, Fault, GmailSimulator, MessageSeed, SeedError};
use crate::shared::control::{
    FaultSpec, LatencyMilliseconds, RateSpec, calls_json, probability_problem, problem, set_latency,
};

pub(crate) fn router(simulator: GmailSimulator) -> Router {
    Router::new()
        .route("/_control/gmail/mailboxes", post(create_mailbox))
        .route(
            "/_control/gmail/mailboxes/{email}/refresh-tokens",
            post(issue_refresh_token),
        )
        // Google's refresh tokens hold slashes (`1//0...`): the token goes in the body.
        .route("/_control/gmail/refresh-tokens/revoke", post(revoke_refresh_token))
        .route(
            "/_control/gmail/mailboxes/{email}/expire-access-tokens",
            post(expire_access_tokens),
        )
        .route(
            "/_control/gmail/mailboxes/{email}/messages",
            post(add_message).get(message_ids),
        )
        .route(
            "/_control/gmail/mailboxes/{email}/messages/{id}",
            delete(delete_message),
        )
        .route(
            "/_control/gmail/mailboxes/{email}/messages/{id}/labels",
            post(add_label).get(message_labels),
        )
        .route("/_control/gmail/mailboxes/{email}/labels", get(labels))
        .route("/_control/gmail/mailboxes/{email}/addin", get(addin).put(set_addin))
        .route("/_control/gmail/mailboxes/{email}/history", get(history))
        .route("/_control/gmail/mailboxes/{email}/expire-history", post(expire_history))
        .route("/_control/gmail/mailboxes/{email}/counters", get(counters))
        .route("/_control/gmail/mailboxes/{email}/units", put(set_units))
        .route(
            "/_control/gmail/mailboxes/{email}/faults",
            post(inject_fault).delete(clear_faults),
        )
        .route("/_control/gmail/mailboxes/{email}/fault-rates", put(set_fault_rate))
        .route(
            "/_control/gmail/latency",
            set_latency::<_, LatencyMilliseconds>(GmailSimulator::set_latency),
        )
        .with_state(simulator)
}

/// The handle's answer as a control answer: 404 for what does not exist.
fn answer<T>(result: Result<T, SeedError>, ok: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(value) => ok(value),
        Err(error) => problem(StatusCode::NOT_FOUND, error.to_string()),
    }
}

fn no_content(_: ()) -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct NewMailbox {
    email: String,
}

async fn create_mailbox(State(simulator): State<GmailSimulator>, Json(spec): Json<NewMailbox>) -> Response {
    if !spec.email.contains('@') {
        return problem(StatusCode::BAD_REQUEST, "email must be an address".to_owned());
    }
    let refresh_token = simulator.create_mailbox(&spec.email);
    (
        StatusCode::CREATED,
        Json(json!({"email": spec.email, "refresh_token": refresh_token})),
    )
        .into_response()
}

async fn issue_refresh_token(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    if !simulator.has_mailbox(&email) {
        return problem(StatusCode::NOT_FOUND, SeedError::UnknownMailbox(email).to_string());
    }
    (
        StatusCode::CREATED,
        Json(json!({"refresh_token": simulator.create_mailbox(&email)})),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct Revocation {
    refresh_token: String,
}

async fn revoke_refresh_token(
    State(simulator): State<GmailSimulator>,
    Json(revocation): Json<Revocation>,
) -> StatusCode {
    simulator.revoke_refresh_token(&revocation.refresh_token);
    StatusCode::NO_CONTENT
}

async fn expire_access_tokens(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    if !simulator.has_mailbox(&email) {
        return problem(StatusCode::NOT_FOUND, SeedError::UnknownMailbox(email).to_string());
    }
    simulator.expire_access_tokens(&email);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_message(
    State(simulator): State<GmailSimulator>,
    Path(email): Path<String>,
    Json(seed): Json<MessageSeed>,
) -> Response {
    answer(simulator.add_message(&email, seed), |id| {
        (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
    })
}

async fn message_ids(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.message_ids(&email), |ids| {
        Json(json!({"ids": ids})).into_response()
    })
}

async fn delete_message(
    State(simulator): State<GmailSimulator>,
    Path((email, id)): Path<(String, String)>,
) -> Response {
    answer(simulator.delete_message(&email, &id), no_content)
}

#[derive(Debug, Deserialize)]
struct LabelSpec {
    label_id: String,
}

async fn add_label(
    State(simulator): State<GmailSimulator>,
    Path((email, id)): Path<(String, String)>,
    Json(spec): Json<LabelSpec>,
) -> Response {
    answer(simulator.add_label_to_message(&email, &id, &spec.label_id), no_content)
}

async fn message_labels(
    State(simulator): State<GmailSimulator>,
    Path((email, id)): Path<(String, String)>,
) -> Response {
    answer(simulator.message_labels(&email, &id), |labels| {
        Json(json!({"label_ids": labels})).into_response()
    })
}

async fn labels(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.labels(&email), |labels| {
        Json(json!({"labels": labels})).into_response()
    })
}

async fn addin(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.addin(&email), |addin| {
        Json(json!({"installed": addin.is_some(), "addin_id": addin})).into_response()
    })
}

#[derive(Debug, Deserialize)]
struct AddinSpec {
    addin_id: Option<String>,
}

async fn set_addin(
    State(simulator): State<GmailSimulator>,
    Path(email): Path<String>,
    Json(spec): Json<AddinSpec>,
) -> Response {
    answer(simulator.set_addin(&email, spec.addin_id), no_content)
}

async fn history(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.history_id(&email), |id| {
        Json(json!({"history_id": id.to_string()})).into_response()
    })
}

async fn expire_history(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.expire_history(&email), no_content)
}

async fn counters(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    let units = simulator.units_in_last_minute(&email);
    answer(simulator.counters(&email), |counters| {
        let calls = calls_json(&counters.calls, Endpoint::as_str);
        Json(json!({
            "calls": calls,
            "units_used": counters.units_used,
            "units_in_last_minute": units.unwrap_or_default(),
            "throttled": counters.throttled,
            "faults": counters.faults,
        }))
        .into_response()
    })
}

#[derive(Debug, Deserialize)]
struct Units {
    used: u64,
}

async fn set_units(
    State(simulator): State<GmailSimulator>,
    Path(email): Path<String>,
    Json(units): Json<Units>,
) -> Response {
    answer(simulator.set_units_in_last_minute(&email, units.used), no_content)
}

async fn inject_fault(
    State(simulator): State<GmailSimulator>,
    Path(email): Path<String>,
    Json(spec): Json<FaultSpec<Fault, Endpoint>>,
) -> Response {
    answer(simulator.arm(&email, spec.fault, spec.endpoint, spec.times), no_content)
}

async fn set_fault_rate(
    State(simulator): State<GmailSimulator>,
    Path(email): Path<String>,
    Json(spec): Json<RateSpec<Fault>>,
) -> Response {
    if let Some(problem) = probability_problem(spec.probability) {
        return problem;
    }
    answer(
        simulator.set_fault_rate(&email, spec.fault, spec.probability),
        no_content,
    )
}

async fn clear_faults(State(simulator): State<GmailSimulator>, Path(email): Path<String>) -> Response {
    answer(simulator.clear_faults(&email), no_content)
}
