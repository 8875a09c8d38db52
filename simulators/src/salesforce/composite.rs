//! The Composite resource: `POST /services/data/vXX.X/composite` with
//! `{"allOrNone", "compositeRequest": [{"method", "url", "referenceId",
//! "body"?}]}`. At most 25 subrequests, of which at most 5 queries or sObject
//! Collections calls (more: `400 LIMIT_EXCEEDED`, nothing run). Each
//! subrequest is answered by the same code as its direct route
//! ([`routes::answer`]), meets the faults armed for its own endpoint and is
//! counted under it, but the composite counts once toward the daily
//! allocation. With `allOrNone`, the first failed subrequest rolls back what
//! the ones before it wrote: it keeps its own error, every other answers
//! `400 PROCESSING_HALTED`, and the ones after it are not run; each sObject
//! Collections subrequest is then all-or-none too. Without it, every
//! subrequest runs and answers for itself. References between subrequests
//! (`@{ref.id}`) are not simulated: the connector sends independent ones.

use std::{collections::HashSet, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::{
    Endpoint,
    routes::{self, Call, Refused, Resource},
    store::Store,
};

/// The most subrequests one composite takes.
pub const MAX_SUBREQUESTS: usize = 25;

/// The most query and sObject Collections subrequests one composite takes.
pub const MAX_QUERY_SUBREQUESTS: usize = 5;

const HALTED: &str = "The transaction was rolled back since another operation in the same transaction failed.";

/// One subrequest, checked.
#[derive(Debug)]
struct Subrequest {
    reference_id: String,
    method: Method,
    /// The API version and resource its URL names, if the simulator has it.
    target: Option<(String, Resource)>,
    body: Option<Value>,
}

/// Why a whole composite is refused before any subrequest runs.
#[derive(Debug)]
enum Refusal {
    /// `400 JSON_PARSER_ERROR` naming the field at fault.
    Malformed(String),
    /// Over one of its limits: a composite answer of one `LIMIT_EXCEEDED`
    /// entry, with `400`.
    LimitExceeded(&'static str),
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::Malformed(message.into())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Malformed(message) => {
                Refused::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message).into_response()
            }
            Refusal::LimitExceeded(message) => {
                let entry = json!({
                    "body": [{"errorCode": "LIMIT_EXCEEDED", "message": message}],
                    "httpHeaders": {},
                    "httpStatusCode": 400,
                    "referenceId": null,
                });
                (StatusCode::BAD_REQUEST, Json(json!({"compositeResponse": [entry]}))).into_response()
            }
        }
    }
}

/// The version and resource a subrequest URL names (`/services/data/vXX.X/...`).
fn target(url: &str) -> Option<(String, Resource)> {
    let uri: Uri = url.parse().ok()?;
    let rest = uri.path().strip_prefix("/services/data/")?;
    let (version, rest) = rest.split_once('/')?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let resource = match parts.as_slice() {
        ["limits"] => Resource::Limits,
        ["query"] => {
            let Query(mut params) = Query::<std::collections::HashMap<String, String>>::try_from_uri(&uri).ok()?;
            Resource::Query(params.remove("q"))
        }
        ["query", locator] => Resource::QueryMore((*locator).to_owned()),
        ["composite", "sobjects"] => Resource::CreateCollection,
        ["composite", "sobjects", sobject, field] => Resource::UpsertCollection {
            sobject: (*sobject).to_owned(),
            field: (*field).to_owned(),
        },
        _ => return None,
    };
    Some((version.to_owned(), resource))
}

/// The method each resource answers.
fn allowed(resource: &Resource) -> Method {
    match resource {
        Resource::Limits | Resource::Query(_) | Resource::QueryMore(_) => Method::GET,
        Resource::CreateCollection => Method::POST,
        Resource::UpsertCollection { .. } => Method::PATCH,
    }
}

fn parse_subrequest(index: usize, value: &Value, seen: &mut HashSet<String>) -> Result<Subrequest, Refusal> {
    let at = |field: &str| format!("compositeRequest[{index}].{field}");
    let Some(object) = value.as_object() else {
        return Err(malformed(format!("compositeRequest[{index}]: must be an object")));
    };
    let reference_id = match object.get("referenceId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => id.to_owned(),
        Some(_) => {
            return Err(malformed(format!(
                "{}: only letters, digits and underscores",
                at("referenceId")
            )));
        }
        None => return Err(malformed(format!("{}: required", at("referenceId")))),
    };
    if !seen.insert(reference_id.clone()) {
        return Err(malformed(format!(
            "{}: Duplicate referenceId '{reference_id}'",
            at("referenceId")
        )));
    }
    let method = match object.get("method").and_then(Value::as_str) {
        Some(name @ ("GET" | "POST" | "PATCH" | "PUT" | "DELETE" | "HEAD")) => {
            Method::from_bytes(name.as_bytes()).map_err(|_| malformed(format!("{}: unknown method", at("method"))))?
        }
        Some(other) => return Err(malformed(format!("{}: unknown method '{other}'", at("method")))),
        None => return Err(malformed(format!("{}: required", at("method")))),
    };
    let url = match object.get("url").and_then(Value::as_str) {
        Some(url) if url.starts_with("/services/data/") => url,
        Some(_) => return Err(malformed(format!("{}: must start with /services/data/", at("url")))),
        None => return Err(malformed(format!("{}: required", at("url")))),
    };
    Ok(Subrequest {
        reference_id,
        method,
        target: target(url),
        body: object.get("body").filter(|body| !body.is_null()).cloned(),
    })
}

/// The subrequests of a composite body, or the refusal of the whole.
fn parse(body: &[u8]) -> Result<(bool, Vec<Subrequest>), Refusal> {
    let payload: Value =
        serde_json::from_slice(body).map_err(|error| malformed(format!("the body is not JSON: {error}")))?;
    let all_or_none = match payload.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(malformed("allOrNone: must be a boolean")),
    };
    let Some(requests) = payload.get("compositeRequest").and_then(Value::as_array) else {
        return Err(malformed("compositeRequest: required, a list of subrequests"));
    };
    if requests.is_empty() {
        return Err(malformed("compositeRequest: at least one subrequest"));
    }
    if requests.len() > MAX_SUBREQUESTS {
        return Err(Refusal::LimitExceeded(
            "The request can\u{2019}t contain more than 25 operations.",
        ));
    }
    let mut seen = HashSet::new();
    let subrequests = requests
        .iter()
        .enumerate()
        .map(|(index, value)| parse_subrequest(index, value, &mut seen))
        .collect::<Result<Vec<_>, _>>()?;
    let queries = subrequests
        .iter()
        .filter(|subrequest| {
            subrequest.target.as_ref().is_some_and(|(_, resource)| {
                matches!(resource.endpoint(), Endpoint::Query | Endpoint::QueryMore)
                    || matches!(resource, Resource::CreateCollection | Resource::UpsertCollection { .. })
            })
        })
        .count();
    if queries > MAX_QUERY_SUBREQUESTS {
        return Err(Refusal::LimitExceeded(
            "The request can\u{2019}t contain more than 5 query or sObject Collections operations.",
        ));
    }
    Ok((all_or_none, subrequests))
}

/// Runs one subrequest of the admitted composite `call`.
fn run(store: &Store, call: &Call, subrequest: &Subrequest, all_or_none: bool) -> Response {
    let Some((version, resource)) = subrequest
        .target
        .as_ref()
        .filter(|(version, _)| routes::valid_version(version))
    else {
        return Refused::not_found().into_response();
    };
    let method = allowed(resource);
    if subrequest.method != method {
        return Refused::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{}' not allowed. Allowed are {method}", subrequest.method),
        )
        .into_response();
    }
    let endpoint = resource.endpoint();
    let fault = store.with(|state| {
        state.count(Some(&call.org), endpoint);
        match state.orgs.get_mut(&call.org) {
            Some(org) => routes::draw_fault(org, endpoint),
            None => Ok(None),
        }
    });
    let fault = match fault {
        Ok(fault) => fault,
        Err(refused) => return refused.into_response(),
    };
    let mut body = subrequest.body.clone().unwrap_or(Value::Null);
    // The composite's allOrNone overrides each collection's own.
    if all_or_none && let Value::Object(fields) = &mut body {
        fields.insert("allOrNone".to_owned(), Value::Bool(true));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let subcall = Call {
        version: version.clone(),
        fault,
        ..call.clone()
    };
    routes::answer(store, &subcall, resource, &bytes)
}

/// Whether a subrequest's answer is a failure that halts an all-or-none
/// composite: an error status, or a collection with a failed record.
fn failed(status: StatusCode, body: &Value) -> bool {
    !status.is_success()
        || body.as_array().is_some_and(|items| {
            items
                .iter()
                .any(|item| item.get("success") == Some(&Value::Bool(false)))
        })
}

fn entry(reference_id: &str, status: StatusCode, body: Value) -> Value {
    json!({
        "body": body,
        "httpHeaders": Map::new(),
        "httpStatusCode": status.as_u16(),
        "referenceId": reference_id,
    })
}

/// `POST /services/data/{version}/composite`.
pub(super) async fn composite(
    State(store): State<Arc<Store>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match routes::admit(&store, &headers, &version, Endpoint::Composite).await {
        Ok(call) => call,
        Err(refused) => return refused.into_response(),
    };
    let (all_or_none, subrequests) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(refusal) => return routes::with_usage(refusal.into_response(), call.usage),
    };
    // What an all-or-none composite restores when a subrequest fails.
    let before = all_or_none
        .then(|| store.with(|state| state.orgs.get(&call.org).map(|org| org.objects.clone())))
        .flatten();
    let mut answers: Vec<(StatusCode, Value)> = Vec::with_capacity(subrequests.len());
    let mut failure = None;
    for (index, subrequest) in subrequests.iter().enumerate() {
        if failure.is_some() {
            break;
        }
        let response = run(&store, &call, subrequest, all_or_none);
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if all_or_none && failed(status, &body) {
            failure = Some(index);
        }
        answers.push((status, body));
    }
    if let Some(failed_at) = failure {
        if let Some(objects) = before {
            store.with(|state| {
                if let Some(org) = state.orgs.get_mut(&call.org) {
                    org.objects = objects;
                }
            });
        }
        let halted = || {
            (
                StatusCode::BAD_REQUEST,
                json!([{"errorCode": "PROCESSING_HALTED", "message": HALTED}]),
            )
        };
        answers.resize_with(subrequests.len(), halted);
        for (index, answer) in answers.iter_mut().enumerate() {
            if index != failed_at {
                *answer = halted();
            }
        }
    }
    let entries: Vec<Value> = subrequests
        .iter()
        .zip(answers)
        .map(|(subrequest, (status, body))| entry(&subrequest.reference_id, status, body))
        .collect();
    routes::with_usage(Json(json!({"compositeResponse": entries})).into_response(), call.usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subrequest_urls_name_the_resources_the_direct_routes_serve() {
        assert_eq!(
            target("/services/data/v62.0/query?q=SELECT+Id+FROM+Contact"),
            Some((
                "v62.0".to_owned(),
                Resource::Query(Some("SELECT Id FROM Contact".to_owned()))
            ))
        );
        assert_eq!(
            target("/services/data/v62.0/query/01g000000000001-2000"),
            Some((
                "v62.0".to_owned(),
                Resource::QueryMore("01g000000000001-2000".to_owned())
            ))
        );
        assert_eq!(
            target("/services/data/v62.0/composite/sobjects/Task/Key__c"),
            Some((
                "v62.0".to_owned(),
                Resource::UpsertCollection {
                    sobject: "Task".to_owned(),
                    field: "Key__c".to_owned()
                }
            ))
        );
        assert_eq!(target("/services/data/v62.0/sobjects/Account"), None);
        assert_eq!(
            target("/services/data/v62.0/limits"),
            Some(("v62.0".to_owned(), Resource::Limits))
        );
    }

    #[test]
    fn a_malformed_composite_is_refused_naming_the_field() {
        let refused = |body: Value| match parse(body.to_string().as_bytes()) {
            Err(Refusal::Malformed(message)) => message,
            other => panic!("{other:?}"),
        };
        let query =
            |reference: &str| json!({"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": reference});
        assert!(
            refused(json!({"compositeRequest": [{"method": "GET", "url": "/services/data/v62.0/limits"}]}))
                .contains("compositeRequest[0].referenceId: required")
        );
        assert!(
            refused(json!({"compositeRequest": [query("a"), query("a")]})).contains("compositeRequest[1].referenceId")
        );
        assert!(refused(json!({"compositeRequest": [query("a-b")]})).contains("referenceId"));
        assert!(refused(json!({"allOrNone": "yes", "compositeRequest": [query("a")]})).contains("allOrNone"));
        assert!(refused(json!({"compositeRequest": []})).contains("compositeRequest"));
        assert!(
            refused(json!({"compositeRequest": [{"method": "GET", "url": "https://x/", "referenceId": "a"}]}))
                .contains("compositeRequest[0].url")
        );
    }
}
