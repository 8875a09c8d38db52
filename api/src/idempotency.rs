//! Idempotency keys (issue 17): a `POST` that creates something or queues
//! work accepts an `Idempotency-Key` header. A retry with the same key and
//! the same request (method, path, query, body) within 24 hours answers the
//! first answer and does nothing again; the same key with another request
//! answers 422. Keys are scoped to the caller (their bearer token's id).
//!
//! Not a cache: the key's row is inserted by the handler **in the
//! transaction of its effect** ([`Idempotency::claim`], before any publish
//! to the broker), so it commits exactly when the effect does. A request
//! whose answer was lost (a 5xx, a dropped connection, the database gone
//! right after the commit) is recognised on retry by its row, and a twin
//! sent concurrently waits on the row's unique index until the first
//! commits (then it answers the first's answer) or rolls back (then it
//! runs). Every keyed handler also stores its answer in the same
//! transaction ([`Idempotency::answer`]), so a lost answer is still answered
//! on retry; this middleware then stores the answer actually sent, once it
//! is sent (a job action's answer after `?wait=`).
//!
//! A request that changed nothing (refused with a 4xx, or a 503 before the
//! commit) leaves no row: its retry runs again.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Principal,
    error::{ApiError, ErrorCode},
    store::{
        StoreResult,
        idempotency::{self as keys, KeyRow, Stored},
    },
};

/// The header's name, as errors name it.
pub const HEADER_NAME: &str = "Idempotency-Key";
/// The header a replayed answer carries.
pub const REPLAYED_HEADER: &str = "idempotency-replayed";
/// The longest key.
const MAX_KEY: usize = 255;
/// The largest answer kept for a replay; a larger one is not kept (its
/// retry is still recognised and never runs twice).
const MAX_ANSWER: usize = 512 * 1024;
/// How long a request waits for the answer of a twin that took effect.
const WAIT_FOR_TWIN: Duration = Duration::from_secs(10);
/// How often expired keys are deleted (at most), and how many at once.
const CLEANUP_SECONDS: i64 = 60;
const CLEANUP_BATCH: i64 = 1000;

/// The route templates whose handlers claim the key in their transaction.
/// A key sent to another `POST` (marking notifications read, which changes
/// nothing twice) is ignored.
pub const KEYED_ROUTES: [&str; 8] = [
    "/v1/pushes",
    "/v1/users/{id}/customization/import",
    "/v1/users/{id}/customization/retrieve",
    "/v1/users",
    "/v1/organizations",
    "/v1/plans",
    "/v1/users/{id}/actions/{action}",
    "/v1/users/actions/{action}",
];

/// One request's key: who sent it, the key, and what the request was.
#[derive(Debug, Clone)]
struct Key {
    scope: Vec<u8>,
    key: String,
    item: String,
    fingerprint: Vec<u8>,
}

/// What a handler is given: the request's key, when it has one. Every
/// method does nothing without a key.
#[derive(Debug, Clone, Default)]
pub struct Idempotency(Option<Key>);

impl Key {
    fn row(&self) -> KeyRow<'_> {
        KeyRow {
            scope: &self.scope,
            key: &self.key,
            item: &self.item,
            fingerprint: &self.fingerprint,
        }
    }
}

impl Idempotency {
    /// The key of one part of a bulk request (one user's own transaction).
    pub fn item(&self, item: Uuid) -> Self {
        Self(self.0.as_ref().map(|key| Key {
            item: item.to_string(),
            ..key.clone()
        }))
    }

    /// Whether the request has a key.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Inserts the key's row in `tx`, the transaction of the request's
    /// effect: call it first, before any publish. When a live row exists
    /// (after waiting for the transaction that holds it), answers the 409
    /// `idempotency_key_taken` the middleware turns into the first answer.
    pub async fn claim(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), ApiError> {
        let Some(key) = &self.0 else { return Ok(()) };
        if keys::claim(tx, key.row()).await? {
            Ok(())
        } else {
            Err(ApiError::conflict(
                TAKEN,
                "a request with this Idempotency-Key already took effect",
            ))
        }
    }

    /// Stores the answer in `tx`, before its commit, so that a retry finds
    /// it even when the answer is lost on its way.
    pub async fn answer<T: Serialize>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        status: StatusCode,
        body: &T,
    ) -> Result<(), ApiError> {
        let Some(key) = &self.0 else { return Ok(()) };
        let body = serde_json::to_vec(body).unwrap_or_default();
        store(&mut **tx, key, status, &body).await?;
        Ok(())
    }

    /// For a bulk part whose claim was taken: the answer stored for it (a
    /// JSON value), `Ok(None)` when none was kept. 422 when the key was
    /// used with another request.
    pub async fn stored_item(&self, pool: &PgPool) -> Result<Option<serde_json::Value>, ApiError> {
        let Some(key) = &self.0 else { return Ok(None) };
        let Some(stored) = wait_for_answer(pool, key).await? else {
            return Ok(None);
        };
        if stored.fingerprint != key.fingerprint {
            return Err(ApiError::key_reused());
        }
        Ok(stored.answer.and_then(|answer| serde_json::from_slice(&answer).ok()))
    }

    /// Whether this is the error [`claim`](Self::claim) answers for a key
    /// already taken.
    pub fn is_taken(error: &ApiError) -> bool {
        error.code() == TAKEN
    }
}

/// The code of a claim that found its key taken (never answered as is).
const TAKEN: &str = "idempotency_key_taken";

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Key>().cloned()))
    }
}

async fn store<'e>(executor: impl sqlx::PgExecutor<'e>, key: &Key, status: StatusCode, body: &[u8]) -> StoreResult<()> {
    let answer = (body.len() <= MAX_ANSWER).then_some(body);
    keys::store_answer(executor, key.row(), status.as_u16() as i16, answer).await
}

async fn load(pool: &PgPool, key: &Key) -> StoreResult<Option<Stored>> {
    keys::find_live(pool, key.row()).await
}

/// The key's row once it holds an answer, or as it is after
/// [`WAIT_FOR_TWIN`] (a twin that took effect still answering, or whose
/// answer was lost).
async fn wait_for_answer(pool: &PgPool, key: &Key) -> Result<Option<Stored>, ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_TWIN;
    loop {
        let stored = load(pool, key).await?;
        let settled = match &stored {
            None => true,
            Some(stored) => stored.status.is_some() || stored.fingerprint != key.fingerprint,
        };
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(stored);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Validates the header: 1 to 255 printable ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY || !bytes.iter().all(|byte| (b' '..=b'~').contains(byte)) {
        return Err(ApiError::invalid(
            HEADER_NAME,
            format!("{HEADER_NAME} must be 1 to {MAX_KEY} printable ASCII characters"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The answer for a key whose row exists: the stored answer, 422 for
/// another request, 409 while the first has not answered.
fn replay(key: &Key, stored: Stored) -> Response {
    if stored.fingerprint != key.fingerprint {
        return ApiError::key_reused().into_response();
    }
    match (stored.status, stored.answer) {
        (Some(status), Some(answer)) => {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            let mut response = (status, answer).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            response
        }
        (Some(_), None) => ApiError::key_in_progress(
            "a request with this Idempotency-Key took effect; its answer was too large to keep: \
             read the resource to see its state",
        )
        .into_response(),
        (None, _) => ApiError::key_in_progress(
            "a request with this Idempotency-Key took effect and has not answered yet (or its answer \
             was lost): it will not run again; retry later or read the resource to see its state",
        )
        .into_response(),
    }
}

/// The middleware of the keyed routes: answers a known key's answer at
/// once, else runs the request with its [`Idempotency`] and stores the
/// answer it gives.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match keyed(&state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn keyed(state: &AppState, request: Request, next: Next) -> Result<Response, Response> {
    let keyed_route = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| KEYED_ROUTES.contains(&path.as_str()));
    let header = request.headers().get(HEADER_NAME);
    let (Some(header), true, true) = (header, keyed_route, request.method() == Method::POST) else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(header).map_err(IntoResponse::into_response)?;
    let (mut parts, body) = request.into_parts();
    // The caller first (a revoked token gets no answer, kept or not); the
    // handler takes the same principal from the extensions.
    let principal = Principal::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let scope = principal.token_id.as_bytes().to_vec();
    parts.extensions.insert(principal);
    // `check_input` has read the body already: this takes it back whole.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::invalid("body", "the body could not be read").into_response())?;
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str());
    hash.update(b"\n");
    hash.update(parts.uri.path_and_query().map_or("", |path| path.as_str()));
    hash.update(b"\n");
    hash.update(&body);
    let key = Key {
        scope,
        key,
        item: String::new(),
        fingerprint: hash.finalize().to_vec(),
    };
    clean_up_now_and_then(&state.pool);

    if let Some(stored) = load(&state.pool, &key)
        .await
        .map_err(|error| ApiError::from(error).into_response())?
    {
        let stored = match stored.status {
            Some(_) => stored,
            None => wait_for_answer(&state.pool, &key).await?.unwrap_or(stored),
        };
        return Ok(replay(&key, stored));
    }
    parts.extensions.insert(key.clone());
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;

    if response.extensions().get::<ErrorCode>() == Some(&ErrorCode(TAKEN)) {
        // A twin committed first: its answer, once it has one.
        let stored = wait_for_answer(&state.pool, &key).await?;
        return Ok(match stored {
            Some(stored) => replay(&key, stored),
            None => ApiError::key_in_progress("a request with this Idempotency-Key is in progress; retry later")
                .into_response(),
        });
    }
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Err(error) = store(&state.pool, &key, parts.status, &body).await {
        // The effect committed with its key: a retry is still recognised.
        warn!(%error, "Could not store the answer of an idempotent request.");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Self {
        error.into_response()
    }
}

/// Deletes a batch of expired keys, at most once a minute per process, in
/// the background.
fn clean_up_now_and_then(pool: &PgPool) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Utc::now().timestamp();
    let last = LAST.load(Ordering::Relaxed);
    if now - last < CLEANUP_SECONDS
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let pool = pool.clone();
    tokio::spawn(async move {
        match delete_expired(&pool).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "Expired idempotency keys deleted."),
            Err(error) => warn!(%error, "Could not delete expired idempotency keys."),
        }
    });
}

/// Deletes up to a batch of expired keys; answers how many.
pub async fn delete_expired(pool: &PgPool) -> StoreResult<u64> {
    keys::delete_expired(pool, CLEANUP_BATCH).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_255_printable_ascii_characters() {
        assert!(parse_key(&HeaderValue::from_static("a")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("order 42 / retry-safe")).is_ok());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(255)).unwrap()).is_ok());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(256)).unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_bytes(b"tab\there").unwrap()).is_err());
    }
}
