//! The control API under `/_control/salesforce`: what the handle offers a test
//! in-process, over HTTP for a simulator run as a binary (see
//! `simulators/README.md`).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, patch, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{BulkOrg, CreatedOrg, Endpoint, Fault, OrgId, SalesforceSimulator, SeedError};
use crate::{
    BulkError,
    shared::{
        bulk,
        control::{FaultSpec, LatencyMilliseconds, calls_json, problem, set_latency, with_json_body},
    },
};

pub(crate) fn router(simulator: SalesforceSimulator) -> Router {
    Router::new()
        .route("/_control/salesforce/orgs", post(create_org))
        .route("/_control/salesforce/orgs/bulk", bulk::route(create_orgs))
        .route(
            "/_control/salesforce/orgs/{org}/refresh-tokens",
            post(issue_refresh_token),
        )
        .route("/_control/salesforce/orgs/{org}/users", post(create_user).get(users))
        .route(
            "/_control/salesforce/orgs/{org}/users/{user}/refresh-tokens",
            post(issue_refresh_token_for),
        )
        .route(
            "/_control/salesforce/refresh-tokens/{token}",
            delete(revoke_refresh_token),
        )
        .route("/_control/salesforce/orgs/{org}/expire-sessions", post(expire_sessions))
        .route(
            "/_control/salesforce/orgs/{org}/refresh-token-rotation",
            get(rotation).put(set_rotation),
        )
        .route(
            "/_control/salesforce/orgs/{org}/records/{object}",
            post(insert_record).get(records),
        )
        .route(
            "/_control/salesforce/orgs/{org}/records/{object}/{id}",
            patch(update_record),
        )
        .route("/_control/salesforce/orgs/{org}/counters", get(counters))
        .route("/_control/salesforce/orgs/{org}/api-usage", put(set_api_usage))
        .route(
            "/_control/salesforce/orgs/{org}/faults",
            post(inject_fault).delete(clear_faults),
        )
        .route(
            "/_control/salesforce/latency",
            set_latency::<_, LatencyMilliseconds>(SalesforceSimulator::set_latency),
        )
        .with_state(simulator)
}

/// Runs `act` on `org` if the simulator has it; else answers 404.
fn with_org(simulator: &SalesforceSimulator, org: &str, act: impl FnOnce(OrgId) -> Response) -> Response {
    let org = OrgId(org.to_owned());
    if simulator.api_usage(&org).is_some() {
        act(org)
    } else {
        problem(StatusCode::NOT_FOUND, format!("unknown org {org}"))
    }
}

#[derive(Debug, Default, Deserialize)]
struct NewOrg {
    daily_api_max: Option<u64>,
}

async fn create_org(State(simulator): State<SalesforceSimulator>, body: Option<Json<NewOrg>>) -> Response {
    let Json(spec) = body.unwrap_or_default();
    let org = match spec.daily_api_max {
        Some(max) => simulator.create_org_with_allocation(max),
        None => simulator.create_org(),
    };
    let refresh_token = simulator.issue_refresh_token(&org);
    let user = simulator.default_user(&org);
    (
        StatusCode::CREATED,
        Json(json!({"org_id": org.0, "user_id": user, "refresh_token": refresh_token})),
    )
        .into_response()
}

/// `{"orgs": [{"records": {SObject: [fields, ...]}, "refresh_tokens", "access_tokens"}]}`.
#[derive(Debug, Deserialize)]
struct OrgBatch {
    orgs: Vec<BulkOrg>,
}

/// `{"orgs": [{"org_id", "owner_id", "refresh_tokens", "access_tokens"?}]}`, in the batch's order.
#[derive(Debug, Serialize)]
struct OrgsCreated {
    orgs: Vec<CreatedOrg>,
}

fn create_orgs(simulator: &SalesforceSimulator, batch: OrgBatch, _base: &str) -> Result<OrgsCreated, BulkError> {
    let orgs = simulator.create_orgs(&batch.orgs)?;
    Ok(OrgsCreated { orgs })
}

/// A seed's error as an answer: 404 for what does not exist, else 400.
fn seed_problem(error: &SeedError) -> Response {
    let status = match error {
        SeedError::UnknownOrg(_)
        | SeedError::UnknownType(_)
        | SeedError::UnknownUser(_)
        | SeedError::UnknownRecord(_) => StatusCode::NOT_FOUND,
        SeedError::Refused(_) => StatusCode::BAD_REQUEST,
    };
    problem(status, error.to_string())
}

async fn create_user(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    let org = OrgId(org);
    let created = simulator
        .create_user(&org)
        .and_then(|user| Ok((simulator.issue_refresh_token_for(&org, &user)?, user)));
    match created {
        Ok((refresh_token, user)) => (
            StatusCode::CREATED,
            Json(json!({"user_id": user, "refresh_token": refresh_token})),
        )
            .into_response(),
        Err(error) => seed_problem(&error),
    }
}

async fn users(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    with_org(&simulator, &org, |org| Json(simulator.users(&org)).into_response())
}

async fn issue_refresh_token_for(
    State(simulator): State<SalesforceSimulator>,
    Path((org, user)): Path<(String, String)>,
) -> Response {
    match simulator.issue_refresh_token_for(&OrgId(org), &user) {
        Ok(refresh_token) => (StatusCode::CREATED, Json(json!({"refresh_token": refresh_token}))).into_response(),
        Err(error) => seed_problem(&error),
    }
}

async fn issue_refresh_token(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    with_org(&simulator, &org, |org| {
        (
            StatusCode::CREATED,
            Json(json!({"refresh_token": simulator.issue_refresh_token(&org)})),
        )
            .into_response()
    })
}

async fn revoke_refresh_token(State(simulator): State<SalesforceSimulator>, Path(token): Path<String>) -> StatusCode {
    simulator.revoke_refresh_token(&token);
    StatusCode::NO_CONTENT
}

async fn expire_sessions(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    with_org(&simulator, &org, |org| {
        simulator.expire_sessions(&org);
        StatusCode::NO_CONTENT.into_response()
    })
}

/// `{"rotate_refresh_tokens": bool}`: the org's refresh token rotation.
#[derive(Debug, Deserialize, Serialize)]
struct Rotation {
    rotate_refresh_tokens: bool,
}

async fn rotation(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    match simulator.rotates_refresh_tokens(&OrgId(org.clone())) {
        Some(rotate_refresh_tokens) => Json(Rotation { rotate_refresh_tokens }).into_response(),
        None => seed_problem(&SeedError::UnknownOrg(OrgId(org))),
    }
}

async fn set_rotation(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>, body: Bytes) -> Response {
    with_json_body(&body, |rotation: Rotation| {
        match simulator.set_refresh_token_rotation(&OrgId(org), rotation.rotate_refresh_tokens) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => seed_problem(&error),
        }
    })
}

async fn insert_record(
    State(simulator): State<SalesforceSimulator>,
    Path((org, object)): Path<(String, String)>,
    Json(fields): Json<Value>,
) -> Response {
    match simulator.insert_record(&OrgId(org), &object, fields) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        Err(error) => seed_problem(&error),
    }
}

async fn update_record(
    State(simulator): State<SalesforceSimulator>,
    Path((org, object, id)): Path<(String, String, String)>,
    Json(fields): Json<Value>,
) -> Response {
    match simulator.update_record(&OrgId(org), &object, &id, fields) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => seed_problem(&error),
    }
}

async fn records(
    State(simulator): State<SalesforceSimulator>,
    Path((org, object)): Path<(String, String)>,
) -> Response {
    with_org(&simulator, &org, |org| {
        Json(simulator.records(&org, &object)).into_response()
    })
}

async fn counters(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    with_org(&simulator, &org, |org| counters_of(&simulator, &org))
}

fn counters_of(simulator: &SalesforceSimulator, org: &OrgId) -> Response {
    let counters = simulator.counters(org);
    let calls = calls_json(&counters.calls, Endpoint::as_str);
    let usage = simulator.api_usage(org);
    Json(json!({
        "calls": calls,
        "throttled": counters.throttled,
        "faults": counters.faults,
        "api_usage": usage.map(|usage| json!({"used": usage.used, "max": usage.max})),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct Usage {
    used: u64,
}

async fn set_api_usage(
    State(simulator): State<SalesforceSimulator>,
    Path(org): Path<String>,
    Json(usage): Json<Usage>,
) -> Response {
    with_org(&simulator, &org, |org| {
        simulator.set_api_usage(&org, usage.used);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn inject_fault(
    State(simulator): State<SalesforceSimulator>,
    Path(org): Path<String>,
    Json(spec): Json<FaultSpec<Fault, Endpoint>>,
) -> Response {
    with_org(&simulator, &org, |org| {
        simulator.arm(&org, spec.fault, spec.endpoint, spec.times);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn clear_faults(State(simulator): State<SalesforceSimulator>, Path(org): Path<String>) -> Response {
    with_org(&simulator, &org, |org| {
        simulator.clear_faults(&org);
        StatusCode::NO_CONTENT.into_response()
    })
}
