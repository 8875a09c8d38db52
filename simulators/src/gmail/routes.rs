//! HTTP: the routes, the per-user concurrency limit and latency every request
//! passes, Google's token endpoint and the batch endpoint. The calls
//! themselves run in [`super::api`], the same for a direct request and a
//! batch part.

use std::{sync::Arc, time::Instant};

use axum::{
    Form, Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Endpoint,
    api::{self, Answer, Caller, Params},
    batch,
    store::{AccessToken, Store},
};
use crate::shared::latency;

pub(crate) fn router(store: Arc<Store>) -> Router {
    let api = any(api_call);
    Router::new()
        .route("/token", post(token))
        .route("/batch/gmail/v1", post(batch_call))
        .route("/gmail/v1/users/{user}/profile", api.clone())
        .route("/gmail/v1/users/{user}/messages", api.clone())
        .route("/gmail/v1/users/{user}/messages/{id}", api.clone())
        .route("/gmail/v1/users/{user}/history", api.clone())
        .route("/gmail/v1/users/{user}/labels", api.clone())
        .route("/gmail/v1/users/{user}/labels/{id}", api.clone())
        .route("/gmail/v1/users/{user}/syncfleetAddin", api)
        .with_state(store)
}

fn respond(answer: Answer) -> Response {
    let mut response = match answer.body {
        Some(body) => (answer.status, Json(body)).into_response(),
        None => answer.status.into_response(),
    };
    if let Some(seconds) = answer.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A request in flight for one user; leaving frees its place.
struct Slot {
    store: Arc<Store>,
    email: String,
}

impl Slot {
    /// Takes a place among the user's requests in flight, or answers 429
    /// (counted as a call to `endpoint`) when they are all taken.
    fn acquire(store: &Arc<Store>, caller: &Caller, endpoint: Endpoint) -> Result<Self, Answer> {
        let limit = store.config.max_concurrent_per_user;
        store.with(|state| {
            let mailbox = state.mailbox(&caller.email).ok_or_else(Answer::unauthenticated)?;
            if mailbox.in_flight >= limit {
                mailbox.counters.count(endpoint);
                mailbox.counters.throttled += 1;
                return Err(Answer::too_many_concurrent());
            }
            mailbox.in_flight += 1;
            Ok(())
        })?;
        Ok(Self {
            store: store.clone(),
            email: caller.email.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.store.with(|state| {
            if let Some(mailbox) = state.mailbox(&self.email) {
                mailbox.in_flight = mailbox.in_flight.saturating_sub(1);
            }
        });
    }
}

/// The caller of a request, or 401 (counted as unattributed).
fn caller(store: &Store, headers: &HeaderMap, endpoint: Endpoint) -> Result<Caller, Answer> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    store.with(|state| {
        let caller = api::authenticate(state, authorization);
        if caller.is_none() {
            state.unattributed.count(endpoint);
        }
        caller.ok_or_else(Answer::unauthenticated)
    })
}

async fn wait_latency(store: &Store) {
    latency::wait(store.with(|state| state.latency.draw(&mut state.random))).await;
}

/// Every Gmail API route: resolve, authenticate, take a place, wait, run.
async fn api_call(
    State(store): State<Arc<Store>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = match api::resolve(&method, uri.path()) {
        Ok(target) => target,
        Err(answer) => return respond(answer),
    };
    let endpoint = target.op.endpoint();
    let caller = match caller(&store, &headers, endpoint) {
        Ok(caller) => caller,
        Err(answer) => return respond(answer),
    };
    let slot = match Slot::acquire(&store, &caller, endpoint) {
        Ok(slot) => slot,
        Err(answer) => return respond(answer),
    };
    wait_latency(&store).await;
    let params = Params::parse(uri.query().unwrap_or_default());
    let answer = api::execute(&store, &caller, &target, &params, &body);
    drop(slot);
    respond(answer)
}

/// `POST /batch/gmail/v1`: each part runs as its own call (its own units,
/// faults and counters) with the envelope's `Authorization`; answers come
/// back in order. The envelope takes one place among the user's requests in
/// flight.
async fn batch_call(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match caller(&store, &headers, Endpoint::Batch) {
        Ok(caller) => caller,
        Err(answer) => return respond(answer),
    };
    let slot = match Slot::acquire(&store, &caller, Endpoint::Batch) {
        Ok(slot) => slot,
        Err(answer) => return respond(answer),
    };
    wait_latency(&store).await;
    store.with(|state| {
        if let Some(mailbox) = state.mailbox(&caller.email) {
            mailbox.counters.count(Endpoint::Batch);
        }
    });
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = batch::boundary(content_type) else {
        return respond(Answer::bad_request(
            "A batch request must be multipart/mixed with a boundary",
        ));
    };
    let parts = match batch::parse(&body, &boundary) {
        Ok(parts) => parts,
        Err(message) => return respond(Answer::bad_request(&message)),
    };
    let max = store.config.max_batch;
    if parts.is_empty() {
        return respond(Answer::bad_request("A batch request must have at least one part"));
    }
    if parts.len() > max {
        return respond(Answer::bad_request(&format!(
            "Too many requests in batch: {} (at most {max})",
            parts.len()
        )));
    }
    let answers: Vec<(Option<String>, Answer)> = parts
        .iter()
        .map(|part| {
            let answer = match api::resolve(&part.method, &part.path) {
                Ok(target) => api::execute(&store, &caller, &target, &Params::parse(&part.query), &part.body),
                Err(answer) => answer,
            };
            (part.content_id.clone(), answer)
        })
        .collect();
    drop(slot);
    let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let mut response = Response::new(Body::from(batch::render(&answers, &boundary)));
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// `POST /token` with `grant_type=refresh_token`, as Google's token endpoint.
async fn token(State(store): State<Arc<Store>>, Form(form): Form<TokenForm>) -> Response {
    wait_latency(&store).await;
    let lifetime = store.config.access_token_lifetime;
    let rotate = store.config.rotate_refresh_tokens;
    store.with(|state| {
        let email = form
            .refresh_token
            .as_deref()
            .and_then(|token| state.refresh_tokens.get(token))
            .cloned();
        match email.as_deref().and_then(|email| state.mailbox(email)) {
            Some(mailbox) => mailbox.counters.count(Endpoint::Token),
            None => state.unattributed.count(Endpoint::Token),
        }
        let grant_type = form.grant_type.as_deref().unwrap_or_default();
        if grant_type != "refresh_token" {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant_type}"),
            );
        }
        let Some(client_id) = form.client_id.as_deref().filter(|id| !id.is_empty()) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: client_id",
            );
        };
        if form.client_secret.as_deref().is_none_or(str::is_empty) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "client_secret is missing.");
        }
        let Some(email) = email else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Token has been expired or revoked.",
            );
        };
        let access_token = format!(
            "ya29.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        state.access_tokens.insert(
            access_token.clone(),
            AccessToken {
                email: email.clone(),
                client_id: client_id.to_owned(),
                expires: Instant::now() + lifetime,
            },
        );
        let mut answer = json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "scope": "https://www.googleapis.com/auth/gmail.modify https://www.googleapis.com/auth/gmail.labels",
            "token_type": "Bearer",
        });
        if rotate {
            if let Some(old) = &form.refresh_token {
                state.refresh_tokens.remove(old);
            }
            let rotated = format!("1//0{}", uuid::Uuid::new_v4().simple());
            state.refresh_tokens.insert(rotated.clone(), email);
            answer["refresh_token"] = json!(rotated);
        }
        Json(answer).into_response()
    })
}
