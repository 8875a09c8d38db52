//! HTTP: the routes, the gate every API call passes (session, allocation,
//! armed fault, latency) and Salesforce's answer shapes.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Endpoint, Fault, MAX_COLLECTION_RECORDS, OrgId, composite,
    limits::ApiUsage,
    soql,
    store::{self, Cursor, IncomingRecord, Org, Principal, RecordError, Store, Written, schema_of},
};
use crate::shared::latency;

const LIMIT_INFO: &str = "sforce-limit-info";

pub(crate) fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data/{version}/limits", get(limits))
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route("/services/data/{version}/composite", post(composite::composite))
        .route("/services/data/{version}/composite/sobjects", post(create_collection))
        .route(
            "/services/data/{version}/composite/sobjects/{sobject}/{field}",
            patch(upsert_collection),
        )
        .fallback(async || Refused::not_found())
        .with_state(store)
}

/// Salesforce's REST error body: a list of `{message, errorCode}`.
pub(super) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!([{"message": message, "errorCode": code}]))).into_response()
}

/// A request-level error, answered with the org's usage when it is known.
#[derive(Debug)]
pub(super) struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
    usage: Option<ApiUsage>,
}

impl Refused {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            usage: None,
        }
    }

    pub(super) fn with_usage(mut self, usage: ApiUsage) -> Self {
        self.usage = Some(usage);
        self
    }

    pub(super) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    fn invalid_session() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let response = api_error(self.status, self.code, &self.message);
        match self.usage {
            Some(usage) => with_usage(response, usage),
            None => response,
        }
    }
}

pub(super) fn with_usage(mut response: Response, usage: ApiUsage) -> Response {
    if let Ok(value) = HeaderValue::from_str(&usage.header_value()) {
        response.headers_mut().insert(LIMIT_INFO, value);
    }
    response
}

/// A call admitted by the gate (or a subrequest of an admitted composite).
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub org: OrgId,
    /// The calling user's id: the owner of the records it creates.
    pub user: String,
    pub usage: ApiUsage,
    pub version: String,
    /// A fault the handler itself answers with (per record).
    pub fault: Option<Fault>,
}

pub(super) fn valid_version(version: &str) -> bool {
    let Some(number) = version.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = number.split_once('.') else {
        return false;
    };
    !major.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && minor.len() == 1
        && minor.chars().all(|c| c.is_ascii_digit())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("OAuth "))
        .map(str::trim)
}

/// The gate of every API call: latency, version, session, daily allocation,
/// then an armed fault.
pub(super) async fn admit(
    store: &Store,
    headers: &HeaderMap,
    version: &str,
    endpoint: Endpoint,
) -> Result<Call, Refused> {
    latency::wait(store.with(|state| state.latency.draw(&mut state.random))).await;
    if !valid_version(version) {
        store.with(|state| state.count(None, endpoint));
        return Err(Refused::not_found());
    }
    let session_timeout = store.config.session_timeout;
    store.with(|state| {
        let principal = bearer(headers).and_then(|token| state.session(token, session_timeout));
        state.count(principal.as_ref().map(|principal| &principal.org), endpoint);
        let Some(Principal { org: org_id, user }) = principal else {
            return Err(Refused::invalid_session());
        };
        let Some(org) = state.orgs.get_mut(&org_id) else {
            return Err(Refused::invalid_session());
        };
        let usage = match org.allocation.try_consume(Instant::now()) {
            Ok(usage) => usage,
            Err(usage) => {
                org.counters.throttled += 1;
                let refused = Refused::new(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                );
                return Err(refused.with_usage(usage));
            }
        };
        let fault = draw_fault(org, endpoint).map_err(|refused| refused.with_usage(usage))?;
        Ok(Call {
            org: org_id,
            user,
            usage,
            version: version.to_owned(),
            fault,
        })
    })
}

/// The armed fault a call of `org` to `endpoint` meets: the answer it makes
/// in place of the call's, or the fault the handler applies per record.
pub(super) fn draw_fault(org: &mut Org, endpoint: Endpoint) -> Result<Option<Fault>, Refused> {
    let fault = org.faults.take_armed(endpoint);
    if fault.is_some() {
        org.counters.faults += 1;
    }
    let per_record = matches!(endpoint, Endpoint::CompositeCreate | Endpoint::CompositeUpsert);
    Err(match fault {
        Some(Fault::InvalidSession) => Refused::invalid_session(),
        Some(Fault::ServiceUnavailable) => Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server is temporarily unavailable.",
        ),
        Some(Fault::ConcurrentRequestLimit) => {
            org.counters.throttled += 1;
            Refused::new(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            )
        }
        Some(Fault::UnableToLockRow) if !per_record => Refused::new(
            StatusCode::BAD_REQUEST,
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record",
        ),
        fault => return Ok(fault),
    })
}

/// An API resource the simulator serves, by its path under
/// `/services/data/{version}/`: what the direct routes and a composite's
/// subrequests both answer through [`answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resource {
    /// `GET limits`.
    Limits,
    /// `GET query?q=...` (the SOQL text, if given).
    Query(Option<String>),
    /// `GET query/{locator}`.
    QueryMore(String),
    /// `POST composite/sobjects`.
    CreateCollection,
    /// `PATCH composite/sobjects/{type}/{field}`.
    UpsertCollection { sobject: String, field: String },
}

impl Resource {
    /// The endpoint its calls count under.
    pub(super) fn endpoint(&self) -> Endpoint {
        match self {
            Resource::Limits => Endpoint::Limits,
            Resource::Query(_) => Endpoint::Query,
            Resource::QueryMore(_) => Endpoint::QueryMore,
            Resource::CreateCollection => Endpoint::CompositeCreate,
            Resource::UpsertCollection { .. } => Endpoint::CompositeUpsert,
        }
    }
}

/// Answers an admitted call to `resource` with `body`, the org's usage on
/// every answer.
pub(super) fn answer(store: &Store, call: &Call, resource: &Resource, body: &[u8]) -> Response {
    match resource {
        Resource::Limits => limits_answer(call),
        Resource::Query(text) => query_answer(store, call, text.as_deref()),
        Resource::QueryMore(locator) => query_more_answer(store, call, locator),
        Resource::CreateCollection => create_collection_answer(store, call, body),
        Resource::UpsertCollection { sobject, field } => upsert_collection_answer(store, call, sobject, field, body),
    }
}

/// A direct route: the gate, then the resource's answer.
async fn serve(store: &Store, headers: &HeaderMap, version: &str, resource: Resource, body: &[u8]) -> Response {
    match admit(store, headers, version, resource.endpoint()).await {
        Ok(call) => answer(store, &call, &resource, body),
        Err(refused) => refused.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /services/oauth2/token` with `grant_type=refresh_token`.
async fn token(State(store): State<Arc<Store>>, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    latency::wait(store.with(|state| state.latency.draw(&mut state.random))).await;
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    let instance_url = format!("http://{host}");
    let rotate_by_default = store.config.rotate_refresh_tokens;
    store.with(|state| {
        let principal = form
            .refresh_token
            .as_deref()
            .and_then(|token| state.refresh_tokens.get(token))
            .cloned();
        state.count(principal.as_ref().map(|principal| &principal.org), Endpoint::Token);
        if form.grant_type.as_deref() != Some("refresh_token") {
            return oauth_error("unsupported_grant_type", "grant type not supported");
        }
        if form.client_id.as_deref().is_none_or(str::is_empty) {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        let Some(principal) = principal else {
            return oauth_error("invalid_grant", "expired access/refresh token");
        };
        let (org, user) = (principal.org.clone(), principal.user.clone());
        let access_token = state.issue_access_token(principal.clone());
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or_default();
        let mut answer = json!({
            "access_token": access_token,
            "instance_url": instance_url,
            "id": format!("{instance_url}/id/{org}/{user}"),
            "token_type": "Bearer",
            "issued_at": issued_at.to_string(),
            "signature": "c2ltdWxhdGVkIHNpZ25hdHVyZQ==",
            "scope": "api refresh_token",
        });
        let rotate = state
            .orgs
            .get(&org)
            .and_then(|org| org.rotate_refresh_tokens)
            .unwrap_or(rotate_by_default);
        if rotate {
            // Salesforce invalidates the previous token at once.
            if let Some(old) = &form.refresh_token {
                state.refresh_tokens.remove(old);
            }
            answer["refresh_token"] = Value::String(state.issue_refresh_token(principal));
        }
        Json(answer).into_response()
    })
}

/// `GET /limits`: the daily allocation as this call leaves it.
async fn limits(State(store): State<Arc<Store>>, Path(version): Path<String>, headers: HeaderMap) -> Response {
    serve(&store, &headers, &version, Resource::Limits, &[]).await
}

fn limits_answer(call: &Call) -> Response {
    let answer = json!({
        "DailyApiRequests": {
            "Max": call.usage.max,
            "Remaining": call.usage.max.saturating_sub(call.usage.used),
        },
    });
    with_usage(Json(answer).into_response(), call.usage)
}

fn query_page(store: &Store, call: &Call, cursor_id: Option<String>, records: Vec<Value>, offset: usize) -> Response {
    let page_size = store.config.page_size.max(1);
    let total = records.len();
    let end = total.min(offset + page_size);
    let page: Vec<Value> = records.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
    let done = end >= total;
    let mut answer = json!({"totalSize": total, "done": done, "records": page});
    if !done {
        let cursor_id = cursor_id.unwrap_or_else(|| store.with(|state| state.next_id("01g")));
        answer["nextRecordsUrl"] = Value::String(format!("/services/data/{}/query/{cursor_id}-{end}", call.version));
        store.with(|state| {
            state.cursors.insert(
                cursor_id,
                Cursor {
                    org: call.org.clone(),
                    records,
                },
            )
        });
    }
    with_usage(Json(answer).into_response(), call.usage)
}

/// `GET /query?q=SOQL`: the first page.
async fn query(
    State(store): State<Arc<Store>>,
    Path(version): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve(&store, &headers, &version, Resource::Query(params.remove("q")), &[]).await
}

fn query_answer(store: &Store, call: &Call, text: Option<&str>) -> Response {
    let Some(text) = text else {
        return with_usage(
            api_error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                "A query string has to be specified",
            ),
            call.usage,
        );
    };
    let parsed = match soql::parse(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            return with_usage(
                api_error(StatusCode::BAD_REQUEST, error.code, &error.message),
                call.usage,
            );
        }
    };
    let records: Vec<Value> = store.with(|state| {
        store::select(state, &call.org, &parsed)
            .into_iter()
            .map(|record| {
                let id = record.get("Id").and_then(Value::as_str).unwrap_or_default();
                let mut row = serde_json::Map::new();
                row.insert(
                    "attributes".to_owned(),
                    json!({
                        "type": parsed.object.name,
                        "url": format!("/services/data/{}/sobjects/{}/{id}", call.version, parsed.object.name),
                    }),
                );
                for name in &parsed.fields {
                    let value = store::field(record, name).cloned().unwrap_or(Value::Null);
                    row.insert(name.clone(), value);
                }
                Value::Object(row)
            })
            .collect()
    });
    query_page(store, call, None, records, 0)
}

/// `GET /query/{locator}-{offset}`: a following page.
async fn query_more(
    State(store): State<Arc<Store>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve(&store, &headers, &version, Resource::QueryMore(locator), &[]).await
}

fn query_more_answer(store: &Store, call: &Call, locator: &str) -> Response {
    let invalid = || {
        with_usage(
            api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            ),
            call.usage,
        )
    };
    let Some((cursor_id, offset)) = locator.rsplit_once('-') else {
        return invalid();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return invalid();
    };
    let cursor = store.with(|state| {
        match state.cursors.remove(cursor_id) {
            Some(cursor) if cursor.org == call.org && offset <= cursor.records.len() => Some(cursor),
            // Another org's locator is not this org's to read; keep it for its owner.
            Some(cursor) => {
                state.cursors.insert(cursor_id.to_owned(), cursor);
                None
            }
            None => None,
        }
    });
    let Some(cursor) = cursor else {
        return invalid();
    };
    query_page(store, call, Some(cursor_id.to_owned()), cursor.records, offset)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CollectionRequest {
    #[serde(default)]
    all_or_none: bool,
    records: Vec<serde_json::Map<String, Value>>,
}

/// Reads a collection body, or answers the request-level error Salesforce gives.
fn collection_request(body: &[u8]) -> Result<CollectionRequest, Refused> {
    let request: CollectionRequest = serde_json::from_slice(body)
        .map_err(|error| Refused::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", error.to_string()))?;
    if request.records.len() > MAX_COLLECTION_RECORDS {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    Ok(request)
}

/// A record's `attributes.type`.
fn record_type(record: &serde_json::Map<String, Value>) -> Option<&str> {
    record.get("attributes")?.get("type")?.as_str()
}

fn collection_answer(results: Vec<Result<Written, RecordError>>, upsert: bool) -> Value {
    let answers: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(written) if upsert => {
                json!({"id": written.id, "success": true, "errors": [], "created": written.created})
            }
            Ok(written) => json!({"id": written.id, "success": true, "errors": []}),
            Err(error) => json!({"success": false, "errors": [error.to_json()]}),
        })
        .collect();
    Value::Array(answers)
}

/// `POST /composite/sobjects`: creates up to 200 records, results in input order.
async fn create_collection(
    State(store): State<Arc<Store>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&store, &headers, &version, Resource::CreateCollection, &body).await
}

fn create_collection_answer(store: &Store, call: &Call, body: &[u8]) -> Response {
    let respond = |response: Response| with_usage(response, call.usage);
    let request = match collection_request(body) {
        Ok(request) => request,
        Err(refused) => return refused.with_usage(call.usage).into_response(),
    };
    let mut records = Vec::with_capacity(request.records.len());
    for raw in &request.records {
        let Some(schema) = record_type(raw).and_then(schema_of) else {
            return respond(api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "Each record needs a supported attributes.type",
            ));
        };
        match store::incoming(schema, raw, false) {
            Ok(record) => records.push(record),
            Err(refusal) => return respond(api_error(StatusCode::BAD_REQUEST, refusal.code, &refusal.message)),
        }
    }
    let results = store
        .with(|state| store::create_records(state, &call.org, &call.user, &records, request.all_or_none, call.fault));
    respond(Json(collection_answer(results, false)).into_response())
}

/// `PATCH /composite/sobjects/{type}/{field}`: upserts up to 200 records of
/// one type by an external id, results in input order.
async fn upsert_collection(
    State(store): State<Arc<Store>>,
    Path((version, sobject, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        &store,
        &headers,
        &version,
        Resource::UpsertCollection { sobject, field },
        &body,
    )
    .await
}

fn upsert_collection_answer(store: &Store, call: &Call, sobject: &str, field: &str, body: &[u8]) -> Response {
    let respond = |response: Response| with_usage(response, call.usage);
    let Some(schema) = schema_of(sobject) else {
        return respond(api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("The requested resource does not exist: sObject type '{sobject}'"),
        ));
    };
    let Some(external_id_field) = schema.canonical_field(field).filter(|name| name.ends_with("__c")) else {
        return respond(api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("Provided external ID field does not exist or is not accessible: {field}"),
        ));
    };
    let request = match collection_request(body) {
        Ok(request) => request,
        Err(refused) => return refused.with_usage(call.usage).into_response(),
    };
    let mut records: Vec<IncomingRecord> = Vec::with_capacity(request.records.len());
    for raw in &request.records {
        if record_type(raw).and_then(schema_of) != Some(schema) {
            return respond(api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("Each record's attributes.type must be {}", schema.name),
            ));
        }
        match store::incoming(schema, raw, false) {
            Ok(record) => records.push(record),
            Err(refusal) => return respond(api_error(StatusCode::BAD_REQUEST, refusal.code, &refusal.message)),
        }
    }
    let results = store.with(|state| {
        store::upsert_records(
            state,
            &call.org,
            &call.user,
            schema,
            &external_id_field,
            &records,
            request.all_or_none,
            call.fault,
        )
    });
    respond(Json(collection_answer(results, true)).into_response())
}
