//! JSON batching: `POST /v1.0/$batch` with up to 20 requests. Requests whose
//! `dependsOn` are answered run together, each through the same dispatcher
//! as a top-level call (so each is throttled on its own: run more than the
//! mailbox's concurrency at once and the rest answer 429); a request whose
//! dependency failed answers `424`. The batch itself answers 200 with the
//! answers in shuffled order.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use super::{
    Endpoint, MAX_BATCH_REQUESTS,
    api::{self, ApiRequest, ApiResponse, Prefer},
    store::Store,
};

/// One inner request, checked.
#[derive(Debug, Clone)]
struct Inner {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn invalid(message: &str) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn parse_inner(value: &Value, earlier: &[Inner]) -> Result<Inner, ApiResponse> {
    let Some(object) = value.as_object() else {
        return Err(invalid("Invalid batch payload format."));
    };
    let id = match object.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => return Err(invalid("Each request of a batch needs a non-empty string id.")),
    };
    if earlier.iter().any(|inner| inner.id == id) {
        return Err(invalid(&format!(
            "Request id '{id}' is used more than once in the batch."
        )));
    }
    let method = match object
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PATCH") => Method::PATCH,
        Some("PUT") => Method::PUT,
        Some("DELETE") => Method::DELETE,
        _ => return Err(invalid(&format!("Request id '{id}' has an invalid method."))),
    };
    let url = match object.get("url").and_then(Value::as_str) {
        Some(url) if !url.contains("://") => format!("/{}", url.trim_start_matches('/')),
        _ => {
            return Err(invalid(&format!(
                "Request id '{id}' needs a url relative to the API version."
            )));
        }
    };
    let mut headers = Vec::new();
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let Some(value) = value.as_str() else {
                    return Err(invalid(&format!(
                        "Request id '{id}' has a header that is not a string."
                    )));
                };
                headers.push((name.clone(), value.to_owned()));
            }
        }
        Some(_) => {
            return Err(invalid(&format!(
                "Request id '{id}' has headers that are not an object."
            )));
        }
    }
    let body = object.get("body").filter(|body| !body.is_null()).cloned();
    let has_content_type = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !has_content_type {
        return Err(invalid(&format!(
            "Write request id : {id} does not contain Content-Type header or body."
        )));
    }
    let mut depends_on = Vec::new();
    if let Some(dependencies) = object.get("dependsOn") {
        let Some(dependencies) = dependencies.as_array() else {
            return Err(invalid(&format!(
                "Request id '{id}' has a dependsOn that is not a list."
            )));
        };
        for dependency in dependencies {
            match dependency.as_str() {
                Some(dependency) if earlier.iter().any(|inner| inner.id == dependency) => {
                    depends_on.push(dependency.to_owned());
                }
                _ => {
                    return Err(invalid(&format!(
                        "Request id '{id}' depends on a request that is not earlier in the batch."
                    )));
                }
            }
        }
    }
    Ok(Inner {
        id,
        method,
        url,
        headers,
        body,
        depends_on,
    })
}

fn parse_batch(body: &[u8]) -> Result<Vec<Inner>, ApiResponse> {
    let payload: Value = serde_json::from_slice(body).map_err(|_| invalid("Invalid batch payload format."))?;
    let Some(requests) = payload.get("requests").and_then(Value::as_array) else {
        return Err(invalid("Invalid batch payload format."));
    };
    if requests.is_empty() {
        return Err(invalid("A batch needs at least one request."));
    }
    if requests.len() > MAX_BATCH_REQUESTS {
        return Err(invalid(&format!(
            "The number of requests in the batch exceeds the limit of {MAX_BATCH_REQUESTS}."
        )));
    }
    let mut parsed: Vec<Inner> = Vec::with_capacity(requests.len());
    for request in requests {
        let inner = parse_inner(request, &parsed)?;
        parsed.push(inner);
    }
    Ok(parsed)
}

/// `retry-after` as `Retry-After`, the way inner answers spell headers.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn inner_answer(id: &str, response: ApiResponse) -> Value {
    let mut headers = Map::new();
    if response.body.is_some() {
        headers.insert("Content-Type".to_owned(), json!("application/json"));
    }
    for (name, value) in response.headers {
        headers.insert(header_case(name), json!(value));
    }
    let mut answer = json!({"id": id, "status": response.status.as_u16(), "headers": headers});
    if let Some(body) = response.body {
        answer["body"] = body;
    }
    answer
}

/// Answers `POST /v1.0/$batch`.
pub(crate) async fn batch(store: Arc<Store>, token: Option<String>, base: String, body: &[u8]) -> ApiResponse {
    let caller = store.with(|state| {
        let caller = state.authenticate(token.as_deref(), Instant::now());
        state.count(caller.as_ref().ok().map(String::as_str), Endpoint::Batch);
        caller
    });
    let caller = match caller {
        Ok(caller) => caller,
        Err(refusal) => return api::unauthenticated(refusal),
    };
    // Only a fault that refuses the batch's token applies to the batch
    // itself (the others meet its requests, each at its own endpoint).
    let refused = store.with(|state| {
        let roll = state.random.next_f64();
        let mailbox = state.mailboxes.get_mut(&caller)?;
        let fault = mailbox.faults.take(Endpoint::Batch, || roll)?;
        mailbox.counters.faults += 1;
        state.expire_sessions(&caller);
        Some(fault)
    });
    if let Some(fault) = refused {
        return api::fault_answer(fault, None);
    }
    let requests = match parse_batch(body) {
        Ok(requests) => requests,
        Err(refused) => return refused,
    };

    let mut answered: HashMap<String, ApiResponse> = HashMap::new();
    let mut pending = requests.clone();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<Inner>, Vec<Inner>) = pending.into_iter().partition(|inner| {
            inner
                .depends_on
                .iter()
                .all(|dependency| answered.contains_key(dependency))
        });
        let mut running = JoinSet::new();
        for inner in ready {
            let dependency_failed = inner
                .depends_on
                .iter()
                .any(|dependency| answered.get(dependency).is_some_and(ApiResponse::is_failure));
            if dependency_failed {
                answered.insert(
                    inner.id.clone(),
                    ApiResponse::error(StatusCode::FAILED_DEPENDENCY, "FailedDependency", "Failed dependency."),
                );
                continue;
            }
            let request = ApiRequest {
                method: inner.method.clone(),
                target: inner.url.clone(),
                prefer: Prefer::parse(
                    inner
                        .headers
                        .iter()
                        .filter(|(name, _)| name.eq_ignore_ascii_case("prefer"))
                        .map(|(_, value)| value.as_str()),
                ),
                body: inner.body.clone(),
                base: base.clone(),
                token: token.clone(),
            };
            let store = store.clone();
            running.spawn(async move { (inner.id, api::execute(store, request).await) });
        }
        while let Some(joined) = running.join_next().await {
            if let Ok((id, response)) = joined {
                answered.insert(id, response);
            }
        }
        pending = waiting;
    }

    let mut responses: Vec<Value> = requests
        .iter()
        .map(|inner| {
            let response = answered.remove(&inner.id).unwrap_or_else(|| {
                ApiResponse::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The request was not answered.",
                )
            });
            inner_answer(&inner.id, response)
        })
        .collect();
    store.with(|state| {
        for index in (1..responses.len()).rev() {
            let other = (state.random.next_u64() % (index as u64 + 1)) as usize;
            responses.swap(index, other);
        }
    });
    ApiResponse::json(StatusCode::OK, json!({"responses": responses}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value) -> String {
        let response = parse_batch(body.to_string().as_bytes()).unwrap_err();
        response.body.unwrap()["error"]["message"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_batch_is_refused_as_a_whole_when_malformed() {
        let many: Vec<Value> = (0..21)
            .map(|index| json!({"id": index.to_string(), "method": "GET", "url": "/users/x/events"}))
            .collect();
        assert!(refused(json!({"requests": many})).contains("limit of 20"));
        let write = json!({"id": "1", "method": "POST", "url": "/users/x/events", "body": {}});
        assert!(refused(json!({"requests": [write]})).contains("Content-Type"));
        let later = json!({"requests": [
            {"id": "1", "method": "GET", "url": "users/x/events", "dependsOn": ["2"]},
            {"id": "2", "method": "GET", "url": "users/x/events"},
        ]});
        assert!(refused(later).contains("not earlier"));
        let twice = json!({"requests": [
            {"id": "1", "method": "GET", "url": "users/x/events"},
            {"id": "1", "method": "GET", "url": "users/x/events"},
        ]});
        assert!(refused(twice).contains("more than once"));
    }

    #[test]
    fn inner_urls_are_made_absolute_paths_and_headers_title_cased() {
        let parsed = parse_batch(
            json!({"requests": [{"id": "a", "method": "get", "url": "users/x/events?$top=1"}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed[0].url, "/users/x/events?$top=1");
        assert_eq!(parsed[0].method, Method::GET);
        assert_eq!(header_case("retry-after"), "Retry-After");
    }
}
