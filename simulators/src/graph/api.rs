//! The Graph API as one dispatcher that top-level calls and the inner
//! requests of a `$batch` share: the target parsed into a route, then the
//! gate (access token, mailbox binding, throttling, armed fault, latency),
//! then the handler. Every answer is Graph's shape: JSON, errors as
//! `{"error":{"code","message","innerError"}}`.

use std::{sync::Arc, time::Instant};

use axum::{
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{
    Category, Endpoint, Fault, MailFolder,
    delta::{self, DeltaRequest},
    items::{self, Items, Kind},
    limits::{Throttle, retry_after_seconds},
    store::{Mailbox, State, Store, TokenRefusal},
    subscriptions,
};
use crate::shared::latency;

/// What a request prefers (`Prefer` headers, comma-separated or repeated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Prefer {
    pub max_page_size: Option<usize>,
    pub immutable_ids: bool,
}

impl Prefer {
    pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut prefer = Prefer::default();
        for preference in values.into_iter().flat_map(|value| value.split(',')) {
            let Some((name, value)) = preference.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.eq_ignore_ascii_case("odata.maxpagesize") {
                prefer.max_page_size = value.parse().ok().filter(|size| *size > 0);
            } else if name.eq_ignore_ascii_case("IdType") {
                prefer.immutable_ids = value.eq_ignore_ascii_case("ImmutableId");
            }
        }
        prefer
    }
}

/// A request to the API, top-level or inner.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    pub method: Method,
    /// The path after `/v1.0` with its query, e.g. `/users/x/events?$select=id`.
    pub target: String,
    pub prefer: Prefer,
    pub body: Option<Value>,
    /// `http://{host}`, the base of the links the answer gives.
    pub base: String,
    pub token: Option<String>,
}

/// An answer, top-level or inner.
#[derive(Debug, Clone)]
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl ApiResponse {
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub(crate) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self::json(status, graph_error(code, message))
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn is_failure(&self) -> bool {
        self.status.is_client_error() || self.status.is_server_error()
    }
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// Graph's error body.
pub(crate) fn graph_error(code: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "request-id": uuid::Uuid::new_v4().to_string(),
                "client-request-id": uuid::Uuid::new_v4().to_string(),
            },
        }
    })
}

/// The answer to a missing, unknown or expired access token.
pub(crate) fn unauthenticated(refusal: TokenRefusal) -> ApiResponse {
    let message = match refusal {
        TokenRefusal::Missing => "Access token is empty.",
        TokenRefusal::Unknown => "Access token validation failure. Invalid audience.",
        TokenRefusal::Expired => "Lifetime validation failed, the token is expired.",
    };
    ApiResponse::error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message).with_header(
        "www-authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"",
    )
}

/// A request target split into decoded path segments and query pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
}

impl Target {
    pub(crate) fn parse(raw: &str) -> Self {
        let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
        let segments = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| percent_decode(segment, false))
            .collect();
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name, true), percent_decode(value, true))
            })
            .collect();
        Self { segments, query }
    }

    /// A query option, its name compared case-insensitively.
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Decodes `%XX` escapes (and `+` as a space in a query); invalid escapes
/// are kept as they are.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(if plus_is_space && byte == b'+' { b' ' } else { byte });
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Encodes a path segment (a UPN keeps its `@`).
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@!$'()*+,;=:".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The user segment of `/me/...`: the signed-in user, the access token's
/// mailbox (delegated access, as the Office 365 connection has).
pub(crate) const ME: &str = "me";

/// Whether `user` is the signed-in user (`/me`).
pub(crate) fn is_me(user: &str) -> bool {
    user == ME
}

/// What a request under `/users/{user}` (or `/me`) addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    MessagesDelta(String),
    MailFolders,
    MailFolder(String),
    Events,
    Event(String),
    Contacts,
    Contact(String),
    MasterCategories,
    MasterCategory(String),
    Addin,
}

impl Route {
    /// The user segment and the route, or the first segment not understood.
    fn parse(segments: &[String]) -> Result<(String, Route), String> {
        let is = |segment: &String, name: &str| segment.eq_ignore_ascii_case(name);
        let (user, rest) = match segments {
            [me, rest @ ..] if is(me, ME) => (me, rest),
            [users, user, rest @ ..] if is(users, "users") => (user, rest),
            [first, ..] => return Err(first.clone()),
            [] => return Err(String::new()),
        };
        let route = match rest {
            [folders, folder, messages, delta]
                if is(folders, "mailFolders") && is(messages, "messages") && is(delta, "delta") =>
            {
                Route::MessagesDelta(folder.clone())
            }
            [folders] if is(folders, "mailFolders") => Route::MailFolders,
            [folders, folder] if is(folders, "mailFolders") => Route::MailFolder(folder.clone()),
            [events] if is(events, "events") => Route::Events,
            [events, id] if is(events, "events") => Route::Event(id.clone()),
            [contacts] if is(contacts, "contacts") => Route::Contacts,
            [contacts, id] if is(contacts, "contacts") => Route::Contact(id.clone()),
            [outlook, categories] if is(outlook, "outlook") && is(categories, "masterCategories") => {
                Route::MasterCategories
            }
            [outlook, categories, id] if is(outlook, "outlook") && is(categories, "masterCategories") => {
                Route::MasterCategory(id.clone())
            }
            [addin] if is(addin, "syncfleetAddin") => Route::Addin,
            [] => return Err(user.clone()),
            [first, ..] => return Err(first.clone()),
        };
        let user = if is(user, ME) { ME.to_owned() } else { user.clone() };
        Ok((user, route))
    }

    fn endpoint(&self) -> Endpoint {
        match self {
            Route::MessagesDelta(_) => Endpoint::MessagesDelta,
            Route::MailFolders | Route::MailFolder(_) => Endpoint::MailFolders,
            Route::Events | Route::Event(_) => Endpoint::Events,
            Route::Contacts | Route::Contact(_) => Endpoint::Contacts,
            Route::MasterCategories | Route::MasterCategory(_) => Endpoint::MasterCategories,
            Route::Addin => Endpoint::Addin,
        }
    }
}

/// Frees the mailbox's concurrency slot when the request is done (or dropped).
struct Slot {
    store: Arc<Store>,
    mailbox: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.store.with(|state| {
            if let Some(mailbox) = state.mailboxes.get_mut(&self.mailbox) {
                mailbox.limits.release();
            }
        });
    }
}

/// Answers one request: route, gate, latency (holding the mailbox's slot),
/// handler.
pub(crate) async fn execute(store: Arc<Store>, request: ApiRequest) -> ApiResponse {
    let target = Target::parse(&request.target);
    if let [first, rest @ ..] = target.segments.as_slice()
        && first.eq_ignore_ascii_case("subscriptions")
        && rest.len() <= 2
    {
        return subscriptions_call(store, &request, rest).await;
    }
    let (user, route) = match Route::parse(&target.segments) {
        Ok(parsed) => parsed,
        Err(segment) => {
            return ApiResponse::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Resource not found for the segment '{segment}'."),
            );
        }
    };
    let location = match &route {
        Route::MessagesDelta(folder) => Some(delta::restart_url(&request.base, &user, folder)),
        _ => None,
    };
    let (mailbox, _slot) = match admit(
        &store,
        request.token.as_deref(),
        &user,
        route.endpoint(),
        location.as_deref(),
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    store.with(|state| handle(state, &store, &mailbox, &user, &route, &request, &target))
}

/// Gates a call (see [`gate`]), then waits its latency holding the mailbox's
/// slot: the mailbox id and the slot, freed when dropped.
async fn admit(
    store: &Arc<Store>,
    token: Option<&str>,
    user: &str,
    endpoint: Endpoint,
    delta_location: Option<&str>,
) -> Result<(String, Slot), ApiResponse> {
    let (mailbox, latency) = store.with(|state| gate(state, store, token, user, endpoint, delta_location))?;
    let slot = Slot {
        store: store.clone(),
        mailbox: mailbox.clone(),
    };
    latency::wait(latency).await;
    Ok((mailbox, slot))
}

/// A call under `/subscriptions`: gated as the caller's own mailbox.
async fn subscriptions_call(store: Arc<Store>, request: &ApiRequest, rest: &[String]) -> ApiResponse {
    let (mailbox, _slot) = match admit(&store, request.token.as_deref(), ME, Endpoint::Subscriptions, None).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    subscriptions::handle(
        &store,
        &mailbox,
        &request.method,
        rest.first().map(String::as_str),
        rest.get(1).map(String::as_str),
        request.body.as_ref(),
    )
    .await
}

/// Authenticates, binds the token to the mailbox addressed, counts the
/// call, applies the limits and any armed fault. On success the mailbox id
/// and the latency to wait, with a concurrency slot taken.
fn gate(
    state: &mut State,
    store: &Store,
    token: Option<&str>,
    user: &str,
    endpoint: Endpoint,
    delta_location: Option<&str>,
) -> Result<(String, std::time::Duration), ApiResponse> {
    let now = Instant::now();
    let caller = match state.authenticate(token, now) {
        Ok(caller) => caller,
        Err(refusal) => {
            state.count(None, endpoint);
            return Err(unauthenticated(refusal));
        }
    };
    let addressed = if is_me(user) {
        Some(caller.clone())
    } else {
        state.resolve(user)
    };
    let Some(addressed) = addressed else {
        state.count(Some(&caller), endpoint);
        return Err(ApiResponse::error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        ));
    };
    if addressed != caller {
        state.count(Some(&caller), endpoint);
        return Err(access_denied());
    }
    let roll = state.random.next_f64();
    let latency = state.latency.draw(&mut state.random);
    let Some(mailbox) = state.mailboxes.get_mut(&addressed) else {
        return Err(access_denied());
    };
    mailbox.count(endpoint);
    if let Err(throttle) = mailbox.limits.admit(&store.config, now) {
        mailbox.counters.throttled += 1;
        return Err(throttled(throttle));
    }
    let Some(fault) = mailbox.faults.take(endpoint, || roll) else {
        return Ok((addressed, latency));
    };
    mailbox.counters.faults += 1;
    mailbox.limits.release();
    if fault == Fault::Unauthorized {
        state.expire_sessions(&addressed);
    }
    Err(fault_answer(fault, delta_location))
}

fn access_denied() -> ApiResponse {
    ApiResponse::error(
        StatusCode::FORBIDDEN,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

fn throttled(throttle: Throttle) -> ApiResponse {
    let (code, message, retry_after) = match throttle {
        Throttle::Concurrency { retry_after } => (
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            retry_after,
        ),
        Throttle::Rate { retry_after } => (
            "ApplicationThrottled",
            "Application is over its MailboxRequestRate limit.",
            retry_after,
        ),
    };
    ApiResponse::error(StatusCode::TOO_MANY_REQUESTS, code, message)
        .with_header("retry-after", retry_after_seconds(retry_after).to_string())
}

pub(crate) fn fault_answer(fault: Fault, delta_location: Option<&str>) -> ApiResponse {
    match fault {
        Fault::Throttled { retry_after } => {
            let answer = ApiResponse::error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. Please retry after the time given in Retry-After.",
            );
            match retry_after {
                Some(delay) => answer.with_header("retry-after", retry_after_seconds(delay).to_string()),
                None => answer,
            }
        }
        Fault::ServerError => ApiResponse::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please try again later.",
        ),
        Fault::GatewayTimeout => ApiResponse::error(
            StatusCode::GATEWAY_TIMEOUT,
            "UnknownError",
            "The request timed out before the service answered.",
        ),
        Fault::Unauthorized => unauthenticated(TokenRefusal::Expired),
        Fault::AccessDenied => access_denied(),
        Fault::SyncStateNotFound => delta::gone(delta_location),
    }
}

fn method_not_allowed(method: &Method) -> ApiResponse {
    ApiResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequest",
        &format!("The HTTP method '{method}' is not allowed on this resource."),
    )
}

fn item_not_found() -> ApiResponse {
    ApiResponse::error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Keeps the properties `$select` names (and `id` and the OData
/// annotations); everything without `$select`.
pub(crate) fn select(object: Value, select: Option<&str>) -> Value {
    let (Value::Object(object), Some(select)) = (object.clone(), select) else {
        return object;
    };
    let wanted: Vec<&str> = select.split(',').map(str::trim).collect();
    let kept: Map<String, Value> = object
        .into_iter()
        .filter(|(name, _)| {
            name == "id" || name.starts_with("@odata") || wanted.iter().any(|want| want.eq_ignore_ascii_case(name))
        })
        .collect();
    Value::Object(kept)
}

fn handle(
    state: &mut State,
    store: &Store,
    mailbox_id: &str,
    user: &str,
    route: &Route,
    request: &ApiRequest,
    target: &Target,
) -> ApiResponse {
    let method = &request.method;
    if let Route::MessagesDelta(folder) = route {
        if *method != Method::GET {
            return method_not_allowed(method);
        }
        return delta::messages_delta(
            state,
            &store.config,
            DeltaRequest {
                mailbox: mailbox_id,
                user,
                folder,
                target,
                prefer: request.prefer,
                base: &request.base,
            },
        );
    }
    let Some(mailbox) = state.mailboxes.get_mut(mailbox_id) else {
        return access_denied();
    };
    let body = request.body.as_ref();
    let selected = target.option("$select");
    match (route, method.clone()) {
        (Route::MailFolders, Method::GET) => list_folders(mailbox, target),
        (Route::MailFolders, Method::POST) => create_folder(mailbox, body),
        (Route::MailFolder(folder), Method::GET) => match folder_json(mailbox, folder) {
            Some(folder) => ApiResponse::json(StatusCode::OK, select(folder, selected)),
            None => item_not_found(),
        },
        (Route::MailFolder(folder), Method::DELETE) => delete_folder(mailbox, folder),
        (Route::Events, method) => collection(&mut mailbox.events, Kind::Event, &method, body),
        (Route::Event(id), method) => item(&mut mailbox.events, Kind::Event, id, &method, body, selected),
        (Route::Contacts, method) => collection(&mut mailbox.contacts, Kind::Contact, &method, body),
        (Route::Contact(id), method) => item(&mut mailbox.contacts, Kind::Contact, id, &method, body, selected),
        (Route::MasterCategories, Method::GET) => {
            let categories: Vec<Value> = mailbox.categories.iter().map(category_json).collect();
            ApiResponse::json(StatusCode::OK, json!({"value": categories}))
        }
        (Route::MasterCategories, Method::POST) => create_category(mailbox, body),
        (Route::MasterCategory(id), Method::GET) => match mailbox.categories.iter().find(|category| &category.id == id)
        {
            Some(category) => ApiResponse::json(StatusCode::OK, category_json(category)),
            None => item_not_found(),
        },
        (Route::MasterCategory(id), Method::DELETE) => {
            let before = mailbox.categories.len();
            mailbox.categories.retain(|category| &category.id != id);
            if mailbox.categories.len() == before {
                item_not_found()
            } else {
                ApiResponse::empty(StatusCode::NO_CONTENT)
            }
        }
        (Route::Addin, method) => addin(mailbox, &method, body),
        (_, method) => method_not_allowed(&method),
    }
}

fn folder_json(mailbox: &Mailbox, name_or_id: &str) -> Option<Value> {
    if let Some(folder) = mailbox.well_known(name_or_id) {
        let total = mailbox
            .messages
            .values()
            .filter(|message| message.folder == folder)
            .count();
        return Some(json!({
            "id": mailbox.folder_id(folder),
            "displayName": folder.display_name(),
            "childFolderCount": 0,
            "totalItemCount": total,
            "unreadItemCount": 0,
            "isHidden": false,
        }));
    }
    mailbox
        .folders
        .iter()
        .find(|folder| folder.id == name_or_id)
        .map(custom_folder_json)
}

fn custom_folder_json(folder: &MailFolder) -> Value {
    json!({
        "id": folder.id,
        "displayName": folder.display_name,
        "childFolderCount": 0,
        "totalItemCount": 0,
        "unreadItemCount": 0,
        "isHidden": false,
    })
}

/// `displayName eq 'X'`, the one filter the simulator takes on folders.
fn display_name_filter(filter: &str) -> Option<String> {
    let rest = filter.trim().strip_prefix("displayName")?.trim_start();
    let quoted = rest.strip_prefix("eq")?.trim();
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn list_folders(mailbox: &Mailbox, target: &Target) -> ApiResponse {
    let mut folders: Vec<Value> = [super::Folder::Inbox, super::Folder::SentItems]
        .into_iter()
        .filter_map(|folder| folder_json(mailbox, folder.well_known_name()))
        .collect();
    folders.extend(mailbox.folders.iter().map(custom_folder_json));
    if let Some(filter) = target.option("$filter") {
        let Some(name) = display_name_filter(filter) else {
            return ApiResponse::error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQueryFilter",
                "The query filter contains one or more invalid nodes.",
            );
        };
        folders.retain(|folder| {
            folder["displayName"]
                .as_str()
                .is_some_and(|display_name| display_name.eq_ignore_ascii_case(&name))
        });
    }
    let selected = target.option("$select");
    let folders: Vec<Value> = folders.into_iter().map(|folder| select(folder, selected)).collect();
    ApiResponse::json(StatusCode::OK, json!({"value": folders}))
}

fn display_name_of(body: Option<&Value>, allowed: &[&str], type_name: &str) -> Result<String, ApiResponse> {
    let Some(Value::Object(object)) = body else {
        return Err(ApiResponse::error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    };
    if let Some(unknown) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiResponse::error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidProperty",
            &format!("Could not find a property named '{unknown}' on type '{type_name}'."),
        ));
    }
    match object.get("displayName").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => Ok(name.to_owned()),
        _ => Err(ApiResponse::error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The displayName property is required.",
        )),
    }
}

fn create_folder(mailbox: &mut Mailbox, body: Option<&Value>) -> ApiResponse {
    let name = match display_name_of(
        body,
        &["displayName", "isHidden"],
        "Microsoft.OutlookServices.MailFolder",
    ) {
        Ok(name) => name,
        Err(refused) => return refused,
    };
    let taken = [super::Folder::Inbox, super::Folder::SentItems]
        .iter()
        .any(|folder| folder.display_name().eq_ignore_ascii_case(&name))
        || mailbox
            .folders
            .iter()
            .any(|folder| folder.display_name.eq_ignore_ascii_case(&name));
    if taken {
        return ApiResponse::error(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let folder = MailFolder {
        id: format!("AAMkAD{}AAA=", uuid::Uuid::new_v4().simple()),
        display_name: name,
    };
    let answer = custom_folder_json(&folder);
    mailbox.folders.push(folder);
    ApiResponse::json(StatusCode::CREATED, answer)
}

fn delete_folder(mailbox: &mut Mailbox, name_or_id: &str) -> ApiResponse {
    if mailbox.well_known(name_or_id).is_some() {
        return ApiResponse::error(
            StatusCode::BAD_REQUEST,
            "ErrorDeleteDistinguishedFolder",
            "Distinguished folders cannot be deleted.",
        );
    }
    let before = mailbox.folders.len();
    mailbox.folders.retain(|folder| folder.id != name_or_id);
    if mailbox.folders.len() == before {
        item_not_found()
    } else {
        ApiResponse::empty(StatusCode::NO_CONTENT)
    }
}

fn refused_item(invalid: items::Invalid) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_REQUEST, invalid.code, &invalid.message)
}

fn collection(items: &mut Items, kind: Kind, method: &Method, body: Option<&Value>) -> ApiResponse {
    match *method {
        Method::GET => ApiResponse::json(StatusCode::OK, json!({"value": items.listed()})),
        Method::POST => match items::check(kind, body, true) {
            Ok(properties) => ApiResponse::json(StatusCode::CREATED, items.create(properties)),
            Err(invalid) => refused_item(invalid),
        },
        _ => method_not_allowed(method),
    }
}

fn item(
    items: &mut Items,
    kind: Kind,
    id: &str,
    method: &Method,
    body: Option<&Value>,
    selected: Option<&str>,
) -> ApiResponse {
    match *method {
        Method::GET => match items.get(id) {
            Some(item) => ApiResponse::json(StatusCode::OK, select(item, selected)),
            None => item_not_found(),
        },
        Method::PATCH => {
            if items.get(id).is_none() {
                return item_not_found();
            }
            match items::check(kind, body, false) {
                Ok(properties) => match items.update(id, properties) {
                    Some(item) => ApiResponse::json(StatusCode::OK, item),
                    None => item_not_found(),
                },
                Err(invalid) => refused_item(invalid),
            }
        }
        Method::DELETE => match items.remove(id) {
            Some(()) => ApiResponse::empty(StatusCode::NO_CONTENT),
            None => item_not_found(),
        },
        _ => method_not_allowed(method),
    }
}

fn category_json(category: &Category) -> Value {
    json!({"id": category.id, "displayName": category.display_name, "color": category.color})
}

fn valid_color(color: &str) -> bool {
    color == "none"
        || color
            .strip_prefix("preset")
            .and_then(|number| number.parse::<u8>().ok())
            .is_some_and(|number| number <= 24)
}

fn create_category(mailbox: &mut Mailbox, body: Option<&Value>) -> ApiResponse {
    let name = match display_name_of(
        body,
        &["displayName", "color"],
        "Microsoft.OutlookServices.OutlookCategory",
    ) {
        Ok(name) => name,
        Err(refused) => return refused,
    };
    let color = body
        .and_then(|body| body.get("color"))
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_owned();
    if !valid_color(&color) {
        return ApiResponse::error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidProperty",
            &format!("The color '{color}' is not a category color."),
        );
    }
    if mailbox
        .categories
        .iter()
        .any(|category| category.display_name.eq_ignore_ascii_case(&name))
    {
        return ApiResponse::error(
            StatusCode::CONFLICT,
            "ErrorAlreadyExists",
            "A category with the specified name already exists.",
        );
    }
    let category = Category {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: name,
        color,
    };
    let answer = category_json(&category);
    mailbox.categories.push(category);
    ApiResponse::json(StatusCode::CREATED, answer)
}

fn addin_json(mailbox: &Mailbox) -> Value {
    match &mailbox.addin {
        Some(manifest_id) => json!({"manifestId": manifest_id, "status": "installed"}),
        None => json!({"manifestId": null, "status": "notInstalled"}),
    }
}

/// The simulator's stand-in for the add-in's deployment to one mailbox.
fn addin(mailbox: &mut Mailbox, method: &Method, body: Option<&Value>) -> ApiResponse {
    match *method {
        Method::GET => ApiResponse::json(StatusCode::OK, addin_json(mailbox)),
        Method::POST => {
            let Some(manifest_id) = body
                .and_then(|body| body.get("manifestId"))
                .and_then(Value::as_str)
                .filter(|id| uuid::Uuid::parse_str(id).is_ok())
            else {
                return ApiResponse::error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "manifestId must be the add-in manifest's GUID.",
                );
            };
            let status = if mailbox.addin.as_deref() == Some(manifest_id) {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            mailbox.addin = Some(manifest_id.to_owned());
            ApiResponse::json(status, addin_json(mailbox))
        }
        Method::DELETE => match mailbox.addin.take() {
            Some(_) => ApiResponse::empty(StatusCode::NO_CONTENT),
            None => item_not_found(),
        },
        _ => method_not_allowed(method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_are_read_from_repeated_or_comma_separated_headers() {
        let prefer = Prefer::parse(["odata.maxpagesize=50", "IdType=\"ImmutableId\""]);
        assert_eq!(
            prefer,
            Prefer {
                max_page_size: Some(50),
                immutable_ids: true
            }
        );
        let prefer = Prefer::parse(["IdType=\"ImmutableId\", odata.maxpagesize=7"]);
        assert_eq!(prefer.max_page_size, Some(7));
        assert!(prefer.immutable_ids);
        assert_eq!(Prefer::parse(["odata.maxpagesize=0"]), Prefer::default());
    }

    #[test]
    fn a_target_is_decoded_and_routed() {
        let target = Target::parse(
            "/users/adele%40contoso.example/mailFolders/Inbox/messages/delta?%24select=id,subject&%24filter=receivedDateTime+ge+2024-01-01T00:00:00Z",
        );
        assert_eq!(target.segments[1], "adele@contoso.example");
        assert_eq!(target.option("$select"), Some("id,subject"));
        assert_eq!(
            target.option("$FILTER"),
            Some("receivedDateTime ge 2024-01-01T00:00:00Z")
        );
        let (user, route) = Route::parse(&target.segments).unwrap();
        assert_eq!(user, "adele@contoso.example");
        assert_eq!(route, Route::MessagesDelta("Inbox".to_owned()));
        assert_eq!(
            Route::parse(&Target::parse("/users/x/outlook/masterCategories/abc").segments),
            Ok(("x".to_owned(), Route::MasterCategory("abc".to_owned())))
        );
        assert_eq!(
            Route::parse(&Target::parse("/users/x/drive").segments),
            Err("drive".to_owned())
        );
        assert_eq!(
            Route::parse(&Target::parse("/me/events").segments),
            Ok((ME.to_owned(), Route::Events))
        );
        assert_eq!(
            Route::parse(&Target::parse("/Me/mailFolders/inbox/messages/delta").segments),
            Ok((ME.to_owned(), Route::MessagesDelta("inbox".to_owned())))
        );
        assert_eq!(
            Route::parse(&Target::parse("/groups/x/events").segments),
            Err("groups".to_owned())
        );
    }

    #[test]
    fn a_folder_filter_takes_a_quoted_display_name() {
        assert_eq!(
            display_name_filter("displayName eq 'Syncfleet'"),
            Some("Syncfleet".to_owned())
        );
        assert_eq!(
            display_name_filter("displayName eq 'O''Neil'"),
            Some("O'Neil".to_owned())
        );
        assert_eq!(display_name_filter("startswith(displayName,'S')"), None);
    }
}
