//! The control API under `/_control/ews`: what the handle offers a test
//! in-process, over HTTP for a simulator run as a binary (see
//! `simulators/docs/ews.md`).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EwsSimulator, Fault, MessageFolder, MessageSeed, Operation, SetupError};
use crate::shared::control::{LatencyMs, RateSpec, calls_json, one, problem, set_latency};

pub(crate) fn router(simulator: EwsSimulator) -> Router {
    Router::new()
        .route("/_control/ews/accounts", post(create_account))
        .route("/_control/ews/service-accounts", post(create_service_account))
        .route(
            "/_control/ews/accounts/{account}/impersonation-role",
            put(set_impersonation_role),
        )
        .route("/_control/ews/accounts/{account}/counters", get(counters))
        .route("/_control/ews/unattributed-counters", get(unattributed_counters))
        .route("/_control/ews/mailboxes", post(create_mailbox))
        .route("/_control/ews/mailboxes/{smtp}/messages", post(add_message))
        .route("/_control/ews/mailboxes/{smtp}/messages/{id}", put(update_message))
        .route("/_control/ews/mailboxes/{smtp}/messages/{id}/read", put(set_read))
        .route("/_control/ews/mailboxes/{smtp}/items/{id}", delete(delete_item))
        .route("/_control/ews/mailboxes/{smtp}/events", get(events))
        .route("/_control/ews/mailboxes/{smtp}/contacts", get(contacts))
        .route("/_control/ews/mailboxes/{smtp}/folders", get(folders))
        .route("/_control/ews/mailboxes/{smtp}/categories", get(categories))
        .route("/_control/ews/mailboxes/{smtp}/apps", get(apps))
        .route(
            "/_control/ews/mailboxes/{smtp}/invalidate-sync-states",
            post(invalidate_sync_states),
        )
        .route("/_control/ews/faults/{target}", post(inject_fault).delete(clear_faults))
        .route("/_control/ews/fault-rates/{target}", put(set_fault_rate))
        .route(
            "/_control/ews/latency",
            set_latency::<_, LatencyMs>(EwsSimulator::set_latency),
        )
        .with_state(simulator)
}

fn setup_problem(error: &SetupError) -> Response {
    let status = match error {
        SetupError::Exists(_) => StatusCode::CONFLICT,
        _ => StatusCode::NOT_FOUND,
    };
    problem(status, error.to_string())
}

fn done(result: Result<(), SetupError>, status: StatusCode) -> Response {
    match result {
        Ok(()) => status.into_response(),
        Err(error) => setup_problem(&error),
    }
}

#[derive(Debug, Deserialize)]
struct NewAccount {
    account: String,
    password: String,
}

async fn create_account(State(simulator): State<EwsSimulator>, Json(spec): Json<NewAccount>) -> Response {
    done(
        simulator.create_account(&spec.account, &spec.password),
        StatusCode::CREATED,
    )
}

#[derive(Debug, Deserialize)]
struct NewServiceAccount {
    name: String,
    password: String,
    #[serde(default)]
    impersonation_role: bool,
}

async fn create_service_account(
    State(simulator): State<EwsSimulator>,
    Json(spec): Json<NewServiceAccount>,
) -> Response {
    done(
        simulator.create_service_account(&spec.name, &spec.password, spec.impersonation_role),
        StatusCode::CREATED,
    )
}

#[derive(Debug, Deserialize)]
struct Role {
    granted: bool,
}

async fn set_impersonation_role(
    State(simulator): State<EwsSimulator>,
    Path(account): Path<String>,
    Json(role): Json<Role>,
) -> Response {
    done(
        simulator.set_impersonation_role(&account, role.granted),
        StatusCode::NO_CONTENT,
    )
}

fn counters_json(counters: &super::Counters) -> Value {
    let calls = calls_json(&counters.calls, Operation::as_str);
    json!({"calls": calls, "throttled": counters.throttled, "faults": counters.faults})
}

async fn counters(State(simulator): State<EwsSimulator>, Path(account): Path<String>) -> Json<Value> {
    Json(counters_json(&simulator.counters(&account)))
}

async fn unattributed_counters(State(simulator): State<EwsSimulator>) -> Json<Value> {
    Json(counters_json(&simulator.unattributed_counters()))
}

#[derive(Debug, Deserialize)]
struct NewMailbox {
    smtp: String,
    owner: String,
}

async fn create_mailbox(State(simulator): State<EwsSimulator>, Json(spec): Json<NewMailbox>) -> Response {
    done(simulator.create_mailbox(&spec.smtp, &spec.owner), StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
struct NewMessage {
    folder: MessageFolder,
    #[serde(flatten)]
    seed: MessageSeed,
}

async fn add_message(
    State(simulator): State<EwsSimulator>,
    Path(smtp): Path<String>,
    Json(spec): Json<NewMessage>,
) -> Response {
    match simulator.add_message(&smtp, spec.folder, spec.seed) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        Err(error) => setup_problem(&error),
    }
}

async fn update_message(
    State(simulator): State<EwsSimulator>,
    Path((smtp, id)): Path<(String, String)>,
    Json(seed): Json<MessageSeed>,
) -> Response {
    done(simulator.update_message(&smtp, &id, seed), StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct Read {
    read: bool,
}

async fn set_read(
    State(simulator): State<EwsSimulator>,
    Path((smtp, id)): Path<(String, String)>,
    Json(read): Json<Read>,
) -> Response {
    done(simulator.set_read(&smtp, &id, read.read), StatusCode::NO_CONTENT)
}

async fn delete_item(State(simulator): State<EwsSimulator>, Path((smtp, id)): Path<(String, String)>) -> Response {
    done(simulator.delete_item(&smtp, &id), StatusCode::NO_CONTENT)
}

async fn events(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> Response {
    Json(simulator.events(&smtp)).into_response()
}

async fn contacts(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> Response {
    Json(simulator.contacts(&smtp)).into_response()
}

async fn folders(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> Response {
    Json(simulator.folders(&smtp)).into_response()
}

async fn categories(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> Response {
    Json(simulator.categories(&smtp)).into_response()
}

async fn apps(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> Response {
    Json(simulator.apps(&smtp)).into_response()
}

async fn invalidate_sync_states(State(simulator): State<EwsSimulator>, Path(smtp): Path<String>) -> StatusCode {
    simulator.invalidate_sync_states(&smtp);
    StatusCode::NO_CONTENT
}

/// EWS arms faults by account or mailbox, not by operation.
#[derive(Debug, Deserialize)]
struct FaultSpec {
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

async fn inject_fault(
    State(simulator): State<EwsSimulator>,
    Path(target): Path<String>,
    Json(spec): Json<FaultSpec>,
) -> StatusCode {
    simulator.inject_fault(&target, spec.fault, spec.times);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(simulator): State<EwsSimulator>, Path(target): Path<String>) -> StatusCode {
    simulator.clear_faults(&target);
    StatusCode::NO_CONTENT
}

async fn set_fault_rate(
    State(simulator): State<EwsSimulator>,
    Path(target): Path<String>,
    Json(spec): Json<RateSpec<Fault>>,
) -> StatusCode {
    simulator.set_fault_rate(&target, spec.fault, spec.probability);
    StatusCode::NO_CONTENT
}
