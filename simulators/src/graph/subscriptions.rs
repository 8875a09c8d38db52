//! Change notifications: `/v1.0/subscriptions` on the messages of a mailbox's
//! Inbox or Sent Items, as Microsoft Graph serves them.
//!
//! - **Creation** (`POST /subscriptions`): `changeType` (`created`,
//!   `updated`, `deleted`, comma-separated), `notificationUrl`, `resource`
//!   (`me/mailFolders('Inbox')/messages`, `users/{id or upn}/...`, the
//!   folder by well-known name or id), `expirationDateTime` (in the future, at
//!   most 10,070 minutes ahead for Outlook messages), `clientState` (at most
//!   128 characters) and `lifecycleNotificationUrl`. Before answering `201`,
//!   the simulator validates each URL as Graph does: a `POST` with
//!   `?validationToken=...` that must answer `200` with the token as plain
//!   text within 10 seconds, or the creation is refused (`400
//!   ValidationError`).
//! - **Renewal** (`PATCH /subscriptions/{id}` with a new
//!   `expirationDateTime`), **reauthorization** (`POST
//!   /subscriptions/{id}/reauthorize`), **deletion** (`DELETE`), **reads**
//!   (`GET /subscriptions[/{id}]`). An expired subscription notifies no more
//!   and is not found.
//! - **Notifications**: a message added to, changed in or deleted from the
//!   folder is posted to `notificationUrl` as `{"value": [...]}` with the
//!   subscription's id, `clientState`, `tenantId`, the change type and the
//!   message's resource (never its content). An answer other than 2xx, or none
//!   within 3 seconds, is retried after 1, 2 and 4 seconds, then dropped.
//! - **Lifecycle notifications** (`reauthorizationRequired`,
//!   `subscriptionRemoved`, `missed`) go to `lifecycleNotificationUrl`, sent
//!   when the control API says so; `subscriptionRemoved` deletes the
//!   subscription.
//!
//! The control API shapes delivery (delay, loss, duplication, reordering) to
//! test what a receiver does when notifications are late, lost, repeated or
//! out of order. Deviation from Graph: `notificationUrl` may be plain HTTP
//! (tests listen on loopback without TLS); Graph requires HTTPS.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::http::{Method, StatusCode};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Folder,
    api::{ApiResponse, is_me},
    store::{State, Store},
};
use crate::shared::Random;

/// The longest a subscription to Outlook messages may live: 10,070 minutes.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10_070 * 60);
/// The longest `clientState` Graph takes.
const MAX_CLIENT_STATE: usize = 128;
/// How long a validation request may take.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification's endpoint may take to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The waits before each retry of a notification not accepted.
const RETRIES: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];
/// The tenant every simulated mailbox belongs to, as notifications name it.
pub const TENANT_ID: &str = "4b8f1c2e-5a6d-4e7f-8091-a2b3c4d5e6f7";

/// A change a subscription asks to hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "created" => Some(ChangeType::Created),
            "updated" => Some(ChangeType::Updated),
            "deleted" => Some(ChangeType::Deleted),
            _ => None,
        }
    }
}

/// A lifecycle event Graph sends to `lifecycleNotificationUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// The subscription needs a new authorization (a reauthorize or a renewal).
    ReauthorizationRequired,
    /// Graph removed the subscription: the client creates a new one.
    SubscriptionRemoved,
    /// Notifications were lost: the client reads the delta to catch up.
    Missed,
}

impl LifecycleEvent {
    fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }
}

/// A subscription as the simulator keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    /// The id of the mailbox whose folder it watches.
    pub mailbox: String,
    pub folder: Folder,
    pub resource: String,
    pub change_types: Vec<ChangeType>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl Subscription {
    fn json(&self) -> Value {
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "00000000-0000-0000-0000-000000000000",
            "changeType": self.change_types.iter().map(|change| change.as_str()).collect::<Vec<_>>().join(","),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": self.expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "creatorId": self.mailbox,
            "includeResourceData": false,
            "latestSupportedTlsVersion": "v1_2",
        })
    }

    fn lifecycle_body(&self, event: LifecycleEvent) -> Value {
        json!({ "value": [{
            "subscriptionId": self.id,
            "subscriptionExpirationDateTime": self.expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "tenantId": TENANT_ID,
            "clientState": self.client_state,
            "lifecycleEvent": event.as_str(),
        }]})
    }
}

/// How notifications reach their endpoint, as the control API sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The shortest delay between a change and its notification.
    #[serde(default)]
    pub min_delay_ms: u64,
    /// The longest (the delay is drawn uniformly in between).
    #[serde(default)]
    pub max_delay_ms: u64,
    /// The probability that a notification is never sent.
    #[serde(default)]
    pub loss: f64,
    /// The probability that a notification is sent twice.
    #[serde(default)]
    pub duplication: f64,
    /// The probability that a notification is held back by a further
    /// `max_delay_ms`, so that later ones overtake it.
    #[serde(default)]
    pub reordering: f64,
}

impl Delivery {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        for (name, value) in [
            ("loss", self.loss),
            ("duplication", self.duplication),
            ("reordering", self.reordering),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Some(format!("{name} is a probability between 0 and 1"));
            }
        }
        (self.min_delay_ms > self.max_delay_ms).then(|| "min_delay_ms is more than max_delay_ms".to_owned())
    }

    /// The delays of the copies of one notification: none when it is lost,
    /// two when it is duplicated.
    fn draw(&self, random: &mut Random) -> Vec<Duration> {
        if random.next_f64() < self.loss {
            return Vec::new();
        }
        let copies = if random.next_f64() < self.duplication { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let spread = self.max_delay_ms - self.min_delay_ms;
                let mut delay = self.min_delay_ms + (random.next_f64() * spread as f64) as u64;
                if random.next_f64() < self.reordering {
                    delay += self.max_delay_ms.max(1);
                }
                Duration::from_millis(delay)
            })
            .collect()
    }
}

/// What happened to the notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotificationCounters {
    /// Changes that a live subscription watched.
    pub changes: u64,
    /// Notifications posted and accepted (2xx), duplicates included.
    pub delivered: u64,
    /// Notifications dropped by the configured loss.
    pub lost: u64,
    /// Extra copies sent by the configured duplication.
    pub duplicated: u64,
    /// Notifications dropped after their retries were refused or timed out.
    pub failed: u64,
    /// Lifecycle notifications posted and accepted.
    pub lifecycle_delivered: u64,
}

/// The subscriptions of every mailbox and their delivery.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    pub by_id: BTreeMap<String, Subscription>,
    pub delivery: Delivery,
    pub counters: NotificationCounters,
    /// Posts waiting to be sent once the state's lock is released.
    pub outbox: Vec<Post>,
}

/// A notification (or lifecycle notification) to post.
#[derive(Debug, Clone)]
pub(crate) struct Post {
    url: String,
    body: Value,
    delay: Duration,
    lifecycle: bool,
}

impl Subscriptions {
    /// Queues the notifications of a change to message `id` of `folder` in
    /// `mailbox` for every live subscription that watches it.
    pub(crate) fn changed(&mut self, random: &mut Random, mailbox: &str, folder: Folder, change: ChangeType, id: &str) {
        let now = Utc::now();
        let watching: Vec<Subscription> = self
            .by_id
            .values()
            .filter(|subscription| {
                subscription.mailbox == mailbox
                    && subscription.folder == folder
                    && subscription.expires_at > now
                    && subscription.change_types.contains(&change)
            })
            .cloned()
            .collect();
        for subscription in watching {
            self.counters.changes += 1;
            let resource = format!("Users/{mailbox}/Messages/{id}");
            let body = json!({ "value": [{
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": subscription.expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "changeType": change.as_str(),
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": resource,
                    "@odata.etag": format!("W/\"{}\"", uuid::Uuid::new_v4().simple()),
                    "id": id,
                },
                "clientState": subscription.client_state,
                "tenantId": TENANT_ID,
            }]});
            let delays = self.delivery.draw(random);
            match delays.len() {
                0 => self.counters.lost += 1,
                2 => self.counters.duplicated += 1,
                _ => {}
            }
            for delay in delays {
                self.outbox.push(Post {
                    url: subscription.notification_url.clone(),
                    body: body.clone(),
                    delay,
                    lifecycle: false,
                });
            }
        }
    }

    /// Queues a lifecycle notification of subscription `id`; answers whether
    /// the subscription exists, and whether it has a lifecycle URL.
    pub(crate) fn lifecycle(&mut self, id: &str, event: LifecycleEvent) -> Result<(), LifecycleRefusal> {
        let subscription = self.by_id.get(id).ok_or(LifecycleRefusal::Unknown)?;
        let url = subscription
            .lifecycle_url
            .clone()
            .ok_or(LifecycleRefusal::NoLifecycleUrl)?;
        let body = subscription.lifecycle_body(event);
        if event == LifecycleEvent::SubscriptionRemoved {
            self.by_id.remove(id);
        }
        self.outbox.push(Post {
            url,
            body,
            delay: Duration::ZERO,
            lifecycle: true,
        });
        Ok(())
    }

    /// A live subscription by id (an expired one is dropped).
    fn live(&mut self, id: &str) -> Option<&mut Subscription> {
        let expired = self
            .by_id
            .get(id)
            .is_some_and(|subscription| subscription.expires_at <= Utc::now());
        if expired {
            self.by_id.remove(id);
        }
        self.by_id.get_mut(id)
    }
}

/// Why a lifecycle notification could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleRefusal {
    /// No subscription has this id.
    Unknown,
    /// The subscription was created without `lifecycleNotificationUrl`.
    NoLifecycleUrl,
}

/// Posts what the state queued, each after its delay, on the runtime the
/// caller runs on (outside one, nothing is sent).
pub(crate) fn send_outbox(store: &Arc<Store>) {
    let posts = store.with(|state| std::mem::take(&mut state.subscriptions.outbox));
    if posts.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for post in posts {
        let store = store.clone();
        runtime.spawn(async move {
            tokio::time::sleep(post.delay).await;
            let accepted = post_with_retries(&post).await;
            store.with(|state| {
                let counters = &mut state.subscriptions.counters;
                match (accepted, post.lifecycle) {
                    (true, true) => counters.lifecycle_delivered += 1,
                    (true, false) => counters.delivered += 1,
                    (false, _) => counters.failed += 1,
                }
            });
        });
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

async fn post_with_retries(post: &Post) -> bool {
    for wait in std::iter::once(Duration::ZERO).chain(RETRIES) {
        tokio::time::sleep(wait).await;
        let answer = client()
            .post(&post.url)
            .timeout(DELIVERY_TIMEOUT)
            .json(&post.body)
            .send()
            .await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            return true;
        }
    }
    false
}

/// Graph's validation of a notification URL: the token echoed as plain text
/// with `200` within 10 seconds.
async fn validate(url: &str) -> bool {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let Ok(mut url) = reqwest::Url::parse(url) else {
        return false;
    };
    url.query_pairs_mut().append_pair("validationToken", &token);
    let answer = client()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status() == reqwest::StatusCode::OK => answer.text().await.is_ok_and(|body| body == token),
        _ => false,
    }
}

fn bad_request(code: &str, message: &str) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_REQUEST, code, message)
}

fn not_found(id: &str) -> ApiResponse {
    ApiResponse::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The object '{id}' doesn't exist."),
    )
}

/// The mailbox and folder a `resource` names, for a caller of mailbox `caller`.
fn watched(state: &State, caller: &str, resource: &str) -> Result<Folder, ApiResponse> {
    let unsupported = || {
        bad_request(
            "InvalidRequest",
            &format!(
                "Resource '{resource}' is not supported: subscribe to mailFolders('Inbox')/messages or mailFolders('SentItems')/messages."
            ),
        )
    };
    let trimmed = resource.trim_start_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    let (user, rest) = match parts.as_slice() {
        [me, rest @ ..] if is_me(me) => (None, rest),
        [users, user, rest @ ..] if users.eq_ignore_ascii_case("users") => (Some(*user), rest),
        _ => return Err(unsupported()),
    };
    let folder = match rest {
        [folder, messages] if messages.eq_ignore_ascii_case("messages") => folder
            .strip_prefix("mailFolders('")
            .or_else(|| folder.strip_prefix("mailfolders('"))
            .and_then(|name| name.strip_suffix("')"))
            .map(str::to_owned),
        [folders, folder, messages]
            if folders.eq_ignore_ascii_case("mailFolders") && messages.eq_ignore_ascii_case("messages") =>
        {
            Some((*folder).to_owned())
        }
        _ => None,
    }
    .ok_or_else(unsupported)?;
    if let Some(user) = user
        && state.resolve(user).as_deref() != Some(caller)
    {
        return Err(ApiResponse::error(
            StatusCode::FORBIDDEN,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. Check credentials and try again.]",
        ));
    }
    let mailbox = state.mailboxes.get(caller).ok_or_else(unsupported)?;
    if folder.eq_ignore_ascii_case("inbox") || folder == mailbox.inbox_id {
        Ok(Folder::Inbox)
    } else if folder.eq_ignore_ascii_case("sentitems") || folder == mailbox.sent_items_id {
        Ok(Folder::SentItems)
    } else {
        Err(unsupported())
    }
}

fn expiration(body: &Value) -> Result<DateTime<Utc>, ApiResponse> {
    let raw = body
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("InvalidRequest", "expirationDateTime is a required property."))?;
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| {
            bad_request(
                "InvalidRequest",
                &format!("expirationDateTime '{raw}' is not a date and time."),
            )
        })?
        .with_timezone(&Utc);
    let now = Utc::now();
    if at <= now {
        return Err(bad_request(
            "InvalidRequest",
            "Subscription expiration date time must be in the future.",
        ));
    }
    if at > now + chrono::Duration::from_std(MAX_LIFETIME).unwrap_or_default() {
        return Err(bad_request(
            "InvalidRequest",
            "Subscription expiration can only be 10070 minutes in the future.",
        ));
    }
    Ok(at)
}

fn url_of(body: &Value, name: &str) -> Result<Option<String>, ApiResponse> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(url)) if url.starts_with("https://") || url.starts_with("http://") => Ok(Some(url.clone())),
        Some(_) => Err(bad_request(
            "InvalidRequest",
            &format!("{name} must be an absolute HTTPS URL."),
        )),
    }
}

/// The subscription a creation asks for, checked, before its URLs are validated.
fn creation(state: &State, caller: &str, body: Option<&Value>) -> Result<Subscription, ApiResponse> {
    let body = body.ok_or_else(|| bad_request("InvalidRequest", "The request body is missing."))?;
    let change_types = body
        .get("changeType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("InvalidRequest", "changeType is a required property."))?;
    let change_types: Vec<ChangeType> = change_types
        .split(',')
        .map(|change| {
            ChangeType::parse(change).ok_or_else(|| {
                bad_request(
                    "InvalidRequest",
                    &format!("'{change}' is not a valid change type: use created, updated or deleted."),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let notification_url = url_of(body, "notificationUrl")?
        .ok_or_else(|| bad_request("InvalidRequest", "notificationUrl is a required property."))?;
    let lifecycle_url = url_of(body, "lifecycleNotificationUrl")?;
    let resource = body
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("InvalidRequest", "resource is a required property."))?
        .to_owned();
    let folder = watched(state, caller, &resource)?;
    let client_state = match body.get("clientState") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) if secret.chars().count() <= MAX_CLIENT_STATE => Some(secret.clone()),
        Some(_) => {
            return Err(bad_request(
                "InvalidRequest",
                "clientState must be a string of at most 128 characters.",
            ));
        }
    };
    Ok(Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        mailbox: caller.to_owned(),
        folder,
        resource,
        change_types,
        notification_url,
        lifecycle_url,
        client_state,
        expires_at: expiration(body)?,
    })
}

/// Answers a request under `/subscriptions` from mailbox `caller` (the
/// request already authenticated and counted).
pub(crate) async fn handle(
    store: &Arc<Store>,
    caller: &str,
    method: &Method,
    id: Option<&str>,
    action: Option<&str>,
    body: Option<&Value>,
) -> ApiResponse {
    match (method.clone(), id, action) {
        (Method::POST, None, None) => create(store, caller, body).await,
        (Method::GET, None, None) => store.with(|state| {
            let now = Utc::now();
            let mine: Vec<Value> = state
                .subscriptions
                .by_id
                .values()
                .filter(|subscription| subscription.mailbox == caller && subscription.expires_at > now)
                .map(Subscription::json)
                .collect();
            ApiResponse::json(
                StatusCode::OK,
                json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": mine }),
            )
        }),
        (method, Some(id), action) => store.with(|state| {
            let Some(subscription) = state
                .subscriptions
                .live(id)
                .filter(|subscription| subscription.mailbox == caller)
            else {
                return not_found(id);
            };
            match (method, action) {
                (Method::GET, None) => ApiResponse::json(StatusCode::OK, subscription.json()),
                (Method::PATCH, None) => match body.map(expiration) {
                    Some(Ok(at)) => {
                        subscription.expires_at = at;
                        ApiResponse::json(StatusCode::OK, subscription.json())
                    }
                    Some(Err(refused)) => refused,
                    None => bad_request("InvalidRequest", "The request body is missing."),
                },
                (Method::POST, Some(action)) if action.eq_ignore_ascii_case("reauthorize") => {
                    ApiResponse::empty(StatusCode::NO_CONTENT)
                }
                (Method::DELETE, None) => {
                    state.subscriptions.by_id.remove(id);
                    ApiResponse::empty(StatusCode::NO_CONTENT)
                }
                _ => ApiResponse::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "BadRequest",
                    "The method is not allowed on a subscription.",
                ),
            }
        }),
        _ => ApiResponse::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequest",
            "The method is not allowed on subscriptions.",
        ),
    }
}

async fn create(store: &Arc<Store>, caller: &str, body: Option<&Value>) -> ApiResponse {
    let subscription = match store.with(|state| creation(state, caller, body)) {
        Ok(subscription) => subscription,
        Err(refused) => return refused,
    };
    for url in std::iter::once(&subscription.notification_url).chain(subscription.lifecycle_url.as_ref()) {
        if !validate(url).await {
            return bad_request(
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            );
        }
    }
    let answer = subscription.json();
    store.with(|state| state.subscriptions.by_id.insert(subscription.id.clone(), subscription));
    ApiResponse::json(StatusCode::CREATED, answer)
}

/// A subscription as the control API lists it (never its `clientState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    /// The id of the mailbox it watches.
    pub mailbox: String,
    pub resource: String,
    pub change_types: Vec<ChangeType>,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub has_client_state: bool,
    pub expires_at: DateTime<Utc>,
}

impl From<&Subscription> for SubscriptionInfo {
    fn from(subscription: &Subscription) -> Self {
        Self {
            id: subscription.id.clone(),
            mailbox: subscription.mailbox.clone(),
            resource: subscription.resource.clone(),
            change_types: subscription.change_types.clone(),
            notification_url: subscription.notification_url.clone(),
            lifecycle_notification_url: subscription.lifecycle_url.clone(),
            has_client_state: subscription.client_state.is_some(),
            expires_at: subscription.expires_at,
        }
    }
}
