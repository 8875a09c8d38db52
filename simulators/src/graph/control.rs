//! The control API under `/_control/graph`: what the handle offers a test
//! in-process, over HTTP for a simulator run as a binary (see
//! `simulators/docs/graph.md`).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    BulkMailbox, Connect, CreatedMailbox, Delivery, Endpoint, Fault, FolderMessage, GraphSimulator, LifecycleEvent,
    LifecycleRefusal, SeedError,
};
use crate::{
    BulkError,
    shared::{
        bulk,
        control::{
            FaultSpec, LatencyMs, RateSpec, calls_json, probability_problem, problem, set_latency, with_json_body,
        },
    },
};

pub(crate) fn router(simulator: GraphSimulator) -> Router {
    Router::new()
        .route("/_control/graph/mailboxes", post(create_mailbox))
        .route("/_control/graph/mailboxes/bulk", bulk::route(create_mailboxes))
        .route(
            "/_control/graph/mailboxes/{mailbox}/refresh-tokens",
            post(issue_refresh_token),
        )
        .route("/_control/graph/refresh-tokens/{token}", delete(revoke_refresh_token))
        .route(
            "/_control/graph/refresh-token-rotation",
            get(rotation).put(set_rotation),
        )
        .route(
            "/_control/graph/mailboxes/{mailbox}/expire-sessions",
            post(expire_sessions),
        )
        .route(
            "/_control/graph/mailboxes/{mailbox}/expire-delta-tokens",
            post(expire_delta_tokens),
        )
        .route("/_control/graph/mailboxes/{mailbox}/messages", post(add_message))
        .route(
            "/_control/graph/mailboxes/{mailbox}/messages/{id}",
            delete(delete_message).patch(update_message),
        )
        .route("/_control/graph/mailboxes/{mailbox}/events", get(events))
        .route("/_control/graph/mailboxes/{mailbox}/events/{id}", delete(delete_event))
        .route("/_control/graph/mailboxes/{mailbox}/contacts", get(contacts))
        .route(
            "/_control/graph/mailboxes/{mailbox}/contacts/{id}",
            delete(delete_contact),
        )
        .route("/_control/graph/mailboxes/{mailbox}/categories", get(categories))
        .route("/_control/graph/mailboxes/{mailbox}/folders", get(folders))
        .route("/_control/graph/mailboxes/{mailbox}/addin", get(addin).put(set_addin))
        .route("/_control/graph/mailboxes/{mailbox}/counters", get(counters))
        .route(
            "/_control/graph/mailboxes/{mailbox}/faults",
            post(inject_fault).delete(clear_faults),
        )
        .route("/_control/graph/mailboxes/{mailbox}/fault-rate", put(set_fault_rate))
        .route(
            "/_control/graph/latency",
            set_latency::<_, LatencyMs>(GraphSimulator::set_latency),
        )
        .route("/_control/graph/subscriptions", get(subscriptions))
        .route(
            "/_control/graph/subscriptions/{id}/lifecycle",
            post(send_lifecycle_event),
        )
        .route("/_control/graph/subscriptions/{id}/expire", post(expire_subscription))
        .route(
            "/_control/graph/notifications",
            get(notifications).put(set_notification_delivery),
        )
        .with_state(simulator)
}

/// `204` on success, `404` naming what is unknown otherwise.
fn done(result: Result<(), SeedError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => problem(StatusCode::NOT_FOUND, error.to_string()),
    }
}

/// Answers `found` as JSON if the mailbox exists, else 404.
fn known(simulator: &GraphSimulator, mailbox: &str, found: impl FnOnce() -> Value) -> Response {
    if simulator.mailbox_id(mailbox).is_some() {
        Json(found()).into_response()
    } else {
        problem(
            StatusCode::NOT_FOUND,
            SeedError::UnknownMailbox(mailbox.to_owned()).to_string(),
        )
    }
}

#[derive(Debug, Deserialize)]
struct NewMailbox {
    upn: String,
}

async fn create_mailbox(State(simulator): State<GraphSimulator>, Json(spec): Json<NewMailbox>) -> Response {
    if spec.upn.trim().is_empty() {
        return problem(StatusCode::BAD_REQUEST, "upn must not be empty".to_owned());
    }
    let refresh_token = simulator.create_mailbox(&spec.upn);
    let id = simulator.mailbox_id(&spec.upn);
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "upn": spec.upn, "refresh_token": refresh_token})),
    )
        .into_response()
}

/// `{"mailboxes": [{"upn", "messages": [...]}], "connected"?: {"delta_query"?}}`.
#[derive(Debug, Deserialize)]
struct MailboxBatch {
    mailboxes: Vec<BulkMailbox>,
    #[serde(default)]
    connected: Option<Connect>,
}

/// `{"mailboxes": [{"upn", "id", "refresh_token"}]}`, in the batch's order.
#[derive(Debug, Serialize)]
struct MailboxesCreated {
    mailboxes: Vec<CreatedMailbox>,
}

fn create_mailboxes(
    simulator: &GraphSimulator,
    batch: MailboxBatch,
    base: &str,
) -> Result<MailboxesCreated, BulkError> {
    let mailboxes = match &batch.connected {
        Some(connect) => simulator.create_connected_mailboxes(&batch.mailboxes, connect, base)?,
        None => simulator.create_mailboxes(&batch.mailboxes)?,
    };
    Ok(MailboxesCreated { mailboxes })
}

async fn issue_refresh_token(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    match simulator.issue_refresh_token(&mailbox) {
        Ok(token) => (StatusCode::CREATED, Json(json!({"refresh_token": token}))).into_response(),
        Err(error) => problem(StatusCode::NOT_FOUND, error.to_string()),
    }
}

async fn revoke_refresh_token(State(simulator): State<GraphSimulator>, Path(token): Path<String>) -> StatusCode {
    simulator.revoke_refresh_token(&token);
    StatusCode::NO_CONTENT
}

/// `{"revoke_rotated_refresh_tokens": bool}`: the strict mode of rotation.
#[derive(Debug, Deserialize, Serialize)]
struct Rotation {
    revoke_rotated_refresh_tokens: bool,
}

async fn rotation(State(simulator): State<GraphSimulator>) -> Json<Rotation> {
    Json(Rotation {
        revoke_rotated_refresh_tokens: simulator.revokes_rotated_refresh_tokens(),
    })
}

async fn set_rotation(State(simulator): State<GraphSimulator>, body: Bytes) -> Response {
    with_json_body(&body, |rotation: Rotation| {
        simulator.set_revoke_rotated_refresh_tokens(rotation.revoke_rotated_refresh_tokens);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn expire_sessions(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    done(simulator.expire_sessions(&mailbox))
}

async fn expire_delta_tokens(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    done(simulator.expire_delta_tokens(&mailbox))
}

async fn add_message(
    State(simulator): State<GraphSimulator>,
    Path(mailbox): Path<String>,
    Json(message): Json<FolderMessage>,
) -> Response {
    match simulator.add_message(&mailbox, message.folder, message.seed) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        Err(error) => problem(StatusCode::NOT_FOUND, error.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct MessageChange {
    subject: String,
}

async fn update_message(
    State(simulator): State<GraphSimulator>,
    Path((mailbox, id)): Path<(String, String)>,
    Json(change): Json<MessageChange>,
) -> Response {
    done(simulator.update_message(&mailbox, &id, &change.subject))
}

async fn delete_message(
    State(simulator): State<GraphSimulator>,
    Path((mailbox, id)): Path<(String, String)>,
) -> Response {
    done(simulator.delete_message(&mailbox, &id))
}

async fn events(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(&simulator, &mailbox, || Value::Array(simulator.events(&mailbox)))
}

async fn delete_event(
    State(simulator): State<GraphSimulator>,
    Path((mailbox, id)): Path<(String, String)>,
) -> Response {
    done(simulator.delete_event(&mailbox, &id))
}

async fn contacts(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(&simulator, &mailbox, || Value::Array(simulator.contacts(&mailbox)))
}

async fn delete_contact(
    State(simulator): State<GraphSimulator>,
    Path((mailbox, id)): Path<(String, String)>,
) -> Response {
    done(simulator.delete_contact(&mailbox, &id))
}

async fn categories(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(&simulator, &mailbox, || {
        simulator
            .categories(&mailbox)
            .into_iter()
            .map(|category| json!({"id": category.id, "displayName": category.display_name, "color": category.color}))
            .collect()
    })
}

async fn folders(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(&simulator, &mailbox, || {
        simulator
            .folders(&mailbox)
            .into_iter()
            .map(|folder| json!({"id": folder.id, "displayName": folder.display_name}))
            .collect()
    })
}

async fn addin(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(
        &simulator,
        &mailbox,
        || json!({"manifestId": simulator.addin(&mailbox)}),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddinState {
    manifest_id: Option<String>,
}

async fn set_addin(
    State(simulator): State<GraphSimulator>,
    Path(mailbox): Path<String>,
    Json(state): Json<AddinState>,
) -> Response {
    done(simulator.set_addin(&mailbox, state.manifest_id.as_deref()))
}

async fn counters(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    known(&simulator, &mailbox, || {
        let counters = simulator.counters(&mailbox);
        let calls = calls_json(&counters.calls, Endpoint::as_str);
        json!({"calls": calls, "throttled": counters.throttled, "faults": counters.faults})
    })
}

async fn inject_fault(
    State(simulator): State<GraphSimulator>,
    Path(mailbox): Path<String>,
    Json(spec): Json<FaultSpec<Fault, Endpoint>>,
) -> Response {
    done(simulator.arm(&mailbox, spec.fault, spec.endpoint, spec.times))
}

async fn clear_faults(State(simulator): State<GraphSimulator>, Path(mailbox): Path<String>) -> Response {
    done(simulator.clear_faults(&mailbox))
}

async fn set_fault_rate(
    State(simulator): State<GraphSimulator>,
    Path(mailbox): Path<String>,
    Json(rate): Json<RateSpec<Fault>>,
) -> Response {
    if let Some(problem) = probability_problem(rate.probability) {
        return problem;
    }
    done(simulator.set_fault_rate(&mailbox, rate.fault, rate.probability))
}

/// `{"subscriptions": [...]}`: the live ones, soonest to expire first.
async fn subscriptions(State(simulator): State<GraphSimulator>) -> Response {
    Json(json!({ "subscriptions": simulator.subscriptions() })).into_response()
}

/// `{"event": "missed" | "reauthorization_required" | "subscription_removed"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifecycle {
    event: LifecycleEvent,
}

async fn send_lifecycle_event(
    State(simulator): State<GraphSimulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    with_json_body(&body, |lifecycle: Lifecycle| {
        match simulator.send_lifecycle_event(&id, lifecycle.event) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(LifecycleRefusal::Unknown) => problem(StatusCode::NOT_FOUND, format!("unknown subscription {id}")),
            Err(LifecycleRefusal::NoLifecycleUrl) => problem(
                StatusCode::CONFLICT,
                format!("subscription {id} has no lifecycleNotificationUrl"),
            ),
        }
    })
}

async fn expire_subscription(State(simulator): State<GraphSimulator>, Path(id): Path<String>) -> Response {
    if simulator.expire_subscription(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(StatusCode::NOT_FOUND, format!("unknown subscription {id}"))
    }
}

/// `{"delivery": {...}, "counters": {...}}`.
async fn notifications(State(simulator): State<GraphSimulator>) -> Response {
    Json(json!({
        "delivery": simulator.notification_delivery(),
        "counters": simulator.notification_counters(),
    }))
    .into_response()
}

async fn set_notification_delivery(State(simulator): State<GraphSimulator>, body: Bytes) -> Response {
    with_json_body(&body, |delivery: Delivery| match delivery.problem() {
        Some(problem_text) => problem(StatusCode::BAD_REQUEST, problem_text),
        None => {
            simulator.set_notification_delivery(delivery);
            StatusCode::NO_CONTENT.into_response()
        }
    })
}
