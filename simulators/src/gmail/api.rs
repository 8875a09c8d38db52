//! The Gmail API itself, shared by the direct routes and the batch endpoint's
//! parts: resolving a method and path to an operation, the access token, the
//! gate every call passes (delegation, armed fault, quota units per user and
//! per project), each operation, and Gmail's answer shapes.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::{
    Endpoint, GmailConfig,
    faults::Fault,
    quota::UnitWindow,
    store::{Change, HistoryRecord, Mailbox, Message, SYSTEM_LABELS, State, Store},
};
use crate::shared::Random;

/// An answer of one call, before it becomes an HTTP response or a batch part.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Option<Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(body),
            retry_after: None,
        }
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            retry_after: None,
        }
    }

    /// Google's error body: `{"error":{"code","message","errors":[{"message","domain","reason"}],"status"}}`.
    pub(crate) fn error(status: StatusCode, domain: &str, reason: &str, message: &str) -> Self {
        let rpc_status = match status.as_u16() {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        Self {
            status,
            body: Some(json!({
                "error": {
                    "code": status.as_u16(),
                    "message": message,
                    "errors": [{"message": message, "domain": domain, "reason": reason}],
                    "status": rpc_status,
                }
            })),
            retry_after: None,
        }
    }

    fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn bad_request(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "global", "invalidArgument", message)
    }

    pub(crate) fn not_found() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "global",
            "notFound",
            "Requested entity was not found.",
        )
    }

    pub(crate) fn unauthenticated() -> Self {
        Self::error(
            StatusCode::UNAUTHORIZED,
            "global",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
    }

    pub(crate) fn too_many_concurrent() -> Self {
        Self::error(
            StatusCode::TOO_MANY_REQUESTS,
            "global",
            "rateLimitExceeded",
            "Too many concurrent requests for user",
        )
        .with_retry_after(1)
    }
}

/// What a call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Profile,
    ListMessages,
    GetMessage(String),
    ListHistory,
    ListLabels,
    CreateLabel,
    DeleteLabel(String),
    GetAddin,
    PutAddin,
    DeleteAddin,
}

impl Op {
    pub(crate) fn endpoint(&self) -> Endpoint {
        match self {
            Op::Profile => Endpoint::Profile,
            Op::ListMessages => Endpoint::MessagesList,
            Op::GetMessage(_) => Endpoint::MessagesGet,
            Op::ListHistory => Endpoint::HistoryList,
            Op::ListLabels => Endpoint::LabelsList,
            Op::CreateLabel => Endpoint::LabelsCreate,
            Op::DeleteLabel(_) => Endpoint::LabelsDelete,
            Op::GetAddin => Endpoint::AddinGet,
            Op::PutAddin => Endpoint::AddinPut,
            Op::DeleteAddin => Endpoint::AddinDelete,
        }
    }
}

/// An operation on a user's mailbox (`me` or an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub user: String,
    pub op: Op,
}

/// The operation `method path` names, as Gmail's URL map does; a path it
/// does not know answers 404, a method it does not take 405.
pub(crate) fn resolve(method: &Method, path: &str) -> Result<Target, Answer> {
    let Some(rest) = path.strip_prefix("/gmail/v1/users/") else {
        return Err(Answer::not_found());
    };
    let segments: Vec<String> = rest.split('/').map(|segment| percent_decode(segment, false)).collect();
    let (user, tail) = match segments.split_first() {
        Some((user, tail)) if !user.is_empty() => (user.clone(), tail),
        _ => return Err(Answer::not_found()),
    };
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let op = match (method.as_str(), tail.as_slice()) {
        ("GET", ["profile"]) => Op::Profile,
        ("GET", ["messages"]) => Op::ListMessages,
        ("GET", ["messages", id]) if !id.is_empty() => Op::GetMessage((*id).to_owned()),
        ("GET", ["history"]) => Op::ListHistory,
        ("GET", ["labels"]) => Op::ListLabels,
        ("POST", ["labels"]) => Op::CreateLabel,
        ("DELETE", ["labels", id]) if !id.is_empty() => Op::DeleteLabel((*id).to_owned()),
        ("GET", ["syncfleetAddin"]) => Op::GetAddin,
        ("PUT", ["syncfleetAddin"]) => Op::PutAddin,
        ("DELETE", ["syncfleetAddin"]) => Op::DeleteAddin,
        (_, ["profile" | "messages" | "history" | "labels" | "syncfleetAddin"]) | (_, ["messages" | "labels", _]) => {
            return Err(Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "global",
                "methodNotAllowed",
                "Method not allowed",
            ));
        }
        _ => return Err(Answer::not_found()),
    };
    Ok(Target { user, op })
}

/// Decodes `%XX` escapes (and `+` as a space in a query).
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        decoded.push(byte);
                        index += 3;
                        continue;
                    }
                    None => decoded.push(b'%'),
                }
            }
            b'+' if plus_is_space => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A query string's parameters, repeated ones kept in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(name, true), percent_decode(value, true))
                })
                .collect(),
        )
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Whose call it is: the mailbox (address in lower case) and the OAuth client.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub email: String,
    pub client_id: String,
}

/// The caller an `Authorization: Bearer` header names, if its token is valid.
pub(crate) fn authenticate(state: &mut State, authorization: Option<&str>) -> Option<Caller> {
    let token = authorization?.strip_prefix("Bearer ")?.trim();
    let access = state.access_tokens.get(token)?;
    if Instant::now() >= access.expires {
        state.access_tokens.remove(token);
        return None;
    }
    let caller = Caller {
        email: access.email.clone(),
        client_id: access.client_id.clone(),
    };
    state.mailbox(&caller.email).is_some().then_some(caller)
}

/// Runs one call of `caller` through the gate and the operation.
pub(crate) fn execute(store: &Store, caller: &Caller, target: &Target, params: &Params, body: &[u8]) -> Answer {
    let config = &store.config;
    store.with(|state| {
        let State {
            mailboxes,
            projects,
            random,
            ..
        } = state;
        let Some(mailbox) = mailboxes.get_mut(&caller.email) else {
            return Answer::unauthenticated();
        };
        let endpoint = target.op.endpoint();
        mailbox.counters.count(endpoint);
        if target.user != "me" && !target.user.eq_ignore_ascii_case(&mailbox.email) {
            return Answer::error(
                StatusCode::FORBIDDEN,
                "global",
                "forbidden",
                &format!("Delegation denied for {}", mailbox.email),
            );
        }
        if let Some(fault) = mailbox.faults.take(endpoint, || random.next_f64()) {
            mailbox.counters.faults += 1;
            if fault == Fault::RateLimit {
                mailbox.counters.throttled += 1;
            }
            return fault_answer(fault);
        }
        let now = Instant::now();
        let cost = config.unit_costs.of(endpoint);
        if cost > 0 {
            if let Err(wait) = mailbox.quota.check(cost, config.per_user_units_per_minute, now) {
                mailbox.counters.throttled += 1;
                return rate_limited("userRateLimitExceeded", "User-rate limit exceeded.", wait.as_secs());
            }
            let project = projects
                .entry(caller.client_id.clone())
                .or_insert_with(|| UnitWindow::new(now));
            if let Err(wait) = project.check(cost, config.per_project_units_per_minute, now) {
                mailbox.counters.throttled += 1;
                return rate_limited("rateLimitExceeded", "Rate Limit Exceeded", wait.as_secs());
            }
            project.charge(cost, now);
            mailbox.quota.charge(cost, now);
            mailbox.counters.units_used += cost;
        }
        run(config, mailbox, random, &target.op, params, body)
    })
}

fn rate_limited(reason: &str, message: &str, wait_seconds: u64) -> Answer {
    let until = Utc::now() + chrono::Duration::seconds(i64::try_from(wait_seconds).unwrap_or(60));
    let message = format!("{message}  Retry after {}", until.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
    Answer::error(StatusCode::FORBIDDEN, "usageLimits", reason, &message).with_retry_after(wait_seconds)
}

fn fault_answer(fault: Fault) -> Answer {
    match fault {
        Fault::RateLimit => Answer::error(
            StatusCode::FORBIDDEN,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        ),
        Fault::DailyLimit => Answer::error(
            StatusCode::FORBIDDEN,
            "usageLimits",
            "dailyLimitExceeded",
            "Daily Limit Exceeded",
        ),
        Fault::ServerError => Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "global",
            "backendError",
            "Backend Error",
        ),
        Fault::Unauthorized => Answer::unauthenticated(),
        Fault::StaleHistory => Answer::not_found(),
    }
}

fn run(
    config: &GmailConfig,
    mailbox: &mut Mailbox,
    random: &mut Random,
    op: &Op,
    params: &Params,
    body: &[u8],
) -> Answer {
    let result = match op {
        Op::Profile => Ok(profile(mailbox)),
        Op::ListMessages => list_messages(config, mailbox, params),
        Op::GetMessage(id) => get_message(mailbox, id, params),
        Op::ListHistory => list_history(config, mailbox, params),
        Op::ListLabels => Ok(list_labels(mailbox)),
        Op::CreateLabel => create_label(mailbox, body),
        Op::DeleteLabel(id) => delete_label(mailbox, random, id),
        Op::GetAddin => Ok(addin(mailbox)),
        Op::PutAddin => put_addin(mailbox, body),
        Op::DeleteAddin => {
            mailbox.addin = None;
            Ok(Answer::no_content())
        }
    };
    result.unwrap_or_else(|answer| answer)
}

fn profile(mailbox: &Mailbox) -> Answer {
    Answer::ok(json!({
        "emailAddress": mailbox.email,
        "messagesTotal": mailbox.messages.len(),
        "threadsTotal": mailbox.messages.len(),
        "historyId": mailbox.history_id.to_string(),
    }))
}

/// `maxResults`, capped at the largest page Gmail gives.
fn max_results(config: &GmailConfig, params: &Params) -> Result<usize, Answer> {
    let Some(raw) = params.first("maxResults") else {
        return Ok(config.page_size.max(1) as usize);
    };
    match raw.parse::<u32>() {
        Ok(value) if value > 0 => Ok(value.min(config.max_page_size.max(1)) as usize),
        _ => Err(Answer::bad_request(&format!("Invalid value for maxResults: {raw}"))),
    }
}

fn encode_token(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

fn decode_token(token: &str) -> Result<String, Answer> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Answer::bad_request("Invalid pageToken"))
}

/// A `messages.list` search, the subset of Gmail's query language simulated:
/// `after:`, `before:` (epoch seconds or `YYYY/MM/DD`, UTC), `in:` and `label:`.
#[derive(Debug, Default)]
struct Search {
    after: Option<i64>,
    before: Option<i64>,
    labels: Vec<String>,
}

fn search_time(value: &str) -> Option<i64> {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        return value.parse().ok();
    }
    let date = NaiveDate::parse_from_str(value, "%Y/%m/%d")
        .or_else(|_| NaiveDate::parse_from_str(value, "%Y-%m-%d"))
        .ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

fn parse_search(q: &str) -> Result<Search, Answer> {
    let mut search = Search::default();
    for term in q.split_whitespace() {
        let invalid = || {
            Answer::bad_request(&format!(
                "Invalid query term {term:?}: the simulator understands after:, before:, in: and label: only"
            ))
        };
        let (operator, value) = term.split_once(':').ok_or_else(invalid)?;
        match operator.to_ascii_lowercase().as_str() {
            "after" => search.after = Some(search_time(value).ok_or_else(invalid)?),
            "before" => search.before = Some(search_time(value).ok_or_else(invalid)?),
            "in" | "label" if value.eq_ignore_ascii_case("anywhere") => {}
            "in" | "label" => search.labels.push(value.to_ascii_uppercase()),
            _ => return Err(invalid()),
        }
    }
    Ok(search)
}

fn has_label(message: &Message, label: &str) -> bool {
    message.label_ids.iter().any(|id| id.eq_ignore_ascii_case(label))
}

/// The messages in list order: newest internal date first.
fn in_list_order(mailbox: &Mailbox) -> Vec<&Message> {
    let mut messages: Vec<&Message> = mailbox.messages.values().collect();
    messages.sort_by(|a, b| b.internal_date.cmp(&a.internal_date).then_with(|| b.id.cmp(&a.id)));
    messages
}

/// The ids `messages.list` gives without a query, newest first.
pub(crate) fn listed_ids(mailbox: &Mailbox) -> Vec<String> {
    in_list_order(mailbox)
        .into_iter()
        .map(|message| message.id.clone())
        .collect()
}

fn list_messages(config: &GmailConfig, mailbox: &Mailbox, params: &Params) -> Result<Answer, Answer> {
    let max = max_results(config, params)?;
    let search = parse_search(params.first("q").unwrap_or_default())?;
    let label_ids: Vec<&str> = params.all("labelIds").collect();
    let spam_and_trash = params.first("includeSpamTrash") == Some("true");
    // A page token is the position (internal date, id) of the last message
    // given, so messages added or deleted between pages shift nothing.
    let after_position = match params.first("pageToken") {
        Some(token) => {
            let text = decode_token(token)?;
            let (millis, id) = text
                .strip_prefix("m:")
                .and_then(|rest| rest.split_once(':'))
                .ok_or_else(|| Answer::bad_request("Invalid pageToken"))?;
            let millis: i64 = millis.parse().map_err(|_| Answer::bad_request("Invalid pageToken"))?;
            Some((millis, id.to_owned()))
        }
        None => None,
    };
    let matching: Vec<&Message> = in_list_order(mailbox)
        .into_iter()
        .filter(|message| {
            let seconds = message.internal_date.timestamp();
            search.after.is_none_or(|after| seconds >= after)
                && search.before.is_none_or(|before| seconds < before)
                && search.labels.iter().all(|label| has_label(message, label))
                && label_ids.iter().all(|label| has_label(message, label))
                && (spam_and_trash || !(has_label(message, "SPAM") || has_label(message, "TRASH")))
        })
        .collect();
    let total = matching.len();
    let remaining: Vec<&Message> = match &after_position {
        Some((millis, id)) => matching
            .into_iter()
            .filter(|message| {
                let position = (message.internal_date.timestamp_millis(), message.id.as_str());
                position < (*millis, id.as_str())
            })
            .collect(),
        None => matching,
    };
    let page: Vec<&Message> = remaining.iter().take(max).copied().collect();
    let mut answer = Map::new();
    if !page.is_empty() {
        let listed: Vec<Value> = page
            .iter()
            .map(|message| json!({"id": message.id, "threadId": message.thread_id}))
            .collect();
        answer.insert("messages".to_owned(), Value::Array(listed));
    }
    if remaining.len() > max
        && let Some(last) = page.last()
    {
        let token = encode_token(&format!("m:{}:{}", last.internal_date.timestamp_millis(), last.id));
        answer.insert("nextPageToken".to_owned(), Value::String(token));
    }
    answer.insert("resultSizeEstimate".to_owned(), json!(total));
    Ok(Answer::ok(Value::Object(answer)))
}

fn header_json(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn get_message(mailbox: &Mailbox, id: &str, params: &Params) -> Result<Answer, Answer> {
    let format = params.first("format").unwrap_or("full").to_ascii_lowercase();
    if !matches!(format.as_str(), "minimal" | "metadata" | "full" | "raw") {
        return Err(Answer::bad_request(&format!("Invalid value at 'format': {format}")));
    }
    let message = mailbox.messages.get(id).ok_or_else(Answer::not_found)?;
    let mut answer = json!({
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": message.label_ids,
        "snippet": message.snippet,
        "historyId": message.history_id.to_string(),
        "internalDate": message.internal_date.timestamp_millis().to_string(),
        "sizeEstimate": message.size_estimate,
    });
    match format.as_str() {
        "metadata" => {
            // Repeated parameters, each possibly a comma-separated list.
            let wanted: Vec<String> = params
                .all("metadataHeaders")
                .flat_map(|value| value.split(','))
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect();
            let headers: Vec<Value> = message
                .headers
                .iter()
                .filter(|(name, _)| wanted.is_empty() || wanted.contains(&name.to_ascii_lowercase()))
                .map(|(name, value)| header_json(name, value))
                .collect();
            answer["payload"] = json!({"mimeType": "text/plain", "headers": headers});
        }
        "full" => {
            let headers: Vec<Value> = message
                .headers
                .iter()
                .map(|(name, value)| header_json(name, value))
                .collect();
            answer["payload"] = json!({
                "partId": "",
                "mimeType": "text/plain",
                "filename": "",
                "headers": headers,
                "body": {"size": message.snippet.len(), "data": URL_SAFE_NO_PAD.encode(&message.snippet)},
            });
        }
        "raw" => {
            let mut raw = String::new();
            for (name, value) in &message.headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            raw.push_str(&message.snippet);
            answer["raw"] = Value::String(URL_SAFE_NO_PAD.encode(raw));
        }
        _ => {}
    }
    Ok(Answer::ok(answer))
}

const HISTORY_TYPES: &[&str] = &["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"];

fn history_json(record: &HistoryRecord) -> Value {
    let message = json!({
        "id": record.message_id,
        "threadId": record.thread_id,
        "labelIds": record.label_ids,
    });
    let mut json = json!({
        "id": record.id.to_string(),
        "messages": [{"id": record.message_id, "threadId": record.thread_id}],
    });
    match &record.change {
        Change::MessageAdded => json["messagesAdded"] = json!([{"message": message}]),
        Change::MessageDeleted => json["messagesDeleted"] = json!([{"message": message}]),
        Change::LabelsAdded(labels) => json["labelsAdded"] = json!([{"message": message, "labelIds": labels}]),
        Change::LabelsRemoved(labels) => json["labelsRemoved"] = json!([{"message": message, "labelIds": labels}]),
    }
    json
}

fn list_history(config: &GmailConfig, mailbox: &mut Mailbox, params: &Params) -> Result<Answer, Answer> {
    let max = max_results(config, params)?;
    let start: u64 = match params.first("startHistoryId") {
        Some(raw) => raw
            .parse()
            .map_err(|_| Answer::bad_request(&format!("Invalid startHistoryId: {raw}")))?,
        None => return Err(Answer::bad_request("Missing required parameter: startHistoryId")),
    };
    let types: Vec<&str> = params.all("historyTypes").collect();
    if let Some(unknown) = types.iter().find(|kind| !HISTORY_TYPES.contains(kind)) {
        return Err(Answer::bad_request(&format!(
            "Invalid value at 'history_types': {unknown}"
        )));
    }
    let label = params.first("labelId");
    mailbox.prune_history(config.history_retention, Instant::now());
    if start < mailbox.pruned_through {
        return Err(Answer::not_found());
    }
    let after = match params.first("pageToken") {
        Some(token) => decode_token(token)?
            .strip_prefix("h:")
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| Answer::bad_request("Invalid pageToken"))?
            .max(start),
        None => start,
    };
    let mut records = mailbox.history.iter().filter(|record| {
        record.id > after
            && (types.is_empty() || types.contains(&record.change.history_type()))
            && label.is_none_or(|label| record.label_ids.iter().any(|id| id == label))
    });
    let page: Vec<&HistoryRecord> = records.by_ref().take(max).collect();
    let more = records.next().is_some();
    let mut answer = Map::new();
    if !page.is_empty() {
        answer.insert(
            "history".to_owned(),
            Value::Array(page.iter().map(|record| history_json(record)).collect()),
        );
    }
    if more && let Some(last) = page.last() {
        answer.insert(
            "nextPageToken".to_owned(),
            Value::String(encode_token(&format!("h:{}", last.id))),
        );
    }
    answer.insert("historyId".to_owned(), Value::String(mailbox.history_id.to_string()));
    Ok(Answer::ok(Value::Object(answer)))
}

fn list_labels(mailbox: &Mailbox) -> Answer {
    let system = SYSTEM_LABELS
        .iter()
        .map(|id| json!({"id": id, "name": id, "type": "system"}));
    let user = mailbox.labels.iter().map(|label| {
        json!({
            "id": label.id,
            "name": label.name,
            "type": "user",
            "messageListVisibility": "show",
            "labelListVisibility": "labelShow",
        })
    });
    Answer::ok(json!({"labels": system.chain(user).collect::<Vec<Value>>()}))
}

fn create_label(mailbox: &mut Mailbox, body: &[u8]) -> Result<Answer, Answer> {
    let request: Value =
        serde_json::from_slice(body).map_err(|_| Answer::bad_request("Invalid JSON payload received."))?;
    let name = request
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Answer::bad_request("Invalid label name"))?;
    let label = mailbox.create_label(name).ok_or_else(|| {
        Answer::error(
            StatusCode::CONFLICT,
            "global",
            "duplicate",
            "Label name exists or conflicts",
        )
    })?;
    Ok(Answer::ok(json!({
        "id": label.id,
        "name": label.name,
        "type": "user",
        "messageListVisibility": request.get("messageListVisibility").cloned().unwrap_or(json!("show")),
        "labelListVisibility": request.get("labelListVisibility").cloned().unwrap_or(json!("labelShow")),
    })))
}

fn delete_label(mailbox: &mut Mailbox, random: &mut Random, id: &str) -> Result<Answer, Answer> {
    if SYSTEM_LABELS.contains(&id) {
        return Err(Answer::bad_request("Invalid delete request"));
    }
    if mailbox.delete_label(random, id) {
        Ok(Answer::no_content())
    } else {
        Err(Answer::not_found())
    }
}

fn addin(mailbox: &Mailbox) -> Answer {
    Answer::ok(json!({"installed": mailbox.addin.is_some(), "addinId": mailbox.addin}))
}

fn put_addin(mailbox: &mut Mailbox, body: &[u8]) -> Result<Answer, Answer> {
    let request: Value =
        serde_json::from_slice(body).map_err(|_| Answer::bad_request("Invalid JSON payload received."))?;
    let id = request
        .get("addinId")
        .and_then(Value::as_str)
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| Answer::bad_request("addinId is required"))?;
    mailbox.addin = Some(id.to_owned());
    Ok(addin(mailbox))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_operations_and_unknown_ones_answer_404() {
        let target = resolve(&Method::GET, "/gmail/v1/users/me/messages/18c0ffee").unwrap();
        assert_eq!(target.user, "me");
        assert_eq!(target.op, Op::GetMessage("18c0ffee".to_owned()));
        let target = resolve(&Method::GET, "/gmail/v1/users/ann%40example.test/profile").unwrap();
        assert_eq!(target.user, "ann@example.test");
        assert_eq!(
            resolve(&Method::GET, "/gmail/v1/users/me/threads").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            resolve(&Method::POST, "/gmail/v1/users/me/history").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn queries_keep_repeated_parameters_and_decode_escapes() {
        let params = Params::parse("q=after%3A1700000000+in:inbox&metadataHeaders=From&metadataHeaders=To");
        assert_eq!(params.first("q"), Some("after:1700000000 in:inbox"));
        assert_eq!(params.all("metadataHeaders").collect::<Vec<_>>(), ["From", "To"]);
        let search = parse_search("after:1700000000 in:inbox").unwrap();
        assert_eq!(search.after, Some(1_700_000_000));
        assert_eq!(search.labels, ["INBOX"]);
        assert_eq!(parse_search("after:2024/01/02").unwrap().after, Some(1_704_153_600));
        assert!(parse_search("from:ann").is_err());
        assert_eq!(percent_decode("100%", false), "100%");
    }
}
