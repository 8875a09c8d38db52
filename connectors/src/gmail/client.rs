//! The Gmail client: one user's OAuth session, the calls the sync needs
//! (each refreshed once on a 401), the batch of `messages.get` calls, the
//! count of calls and quota units, and the [`Mailbox`] implementation.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use reqwest::{
    Method, StatusCode, Url,
    header::{ACCEPT, CONTENT_TYPE, HeaderMap},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tracing::{debug, instrument};

use super::{batch, errors, messages::GmailMessage, messages::METADATA_HEADERS};
use crate::{
    error::{ConnectorError, ErrorKind, Provider},
    gate::{CallGate, Gated},
    http::{HttpClient, transport_error},
    mailbox::{
        ADDIN_ID, AddinStatus, ContactDraft, EventDraft, MailFolder, Mailbox, MessagePage, PRODUCT_CATEGORY, Upsert,
    },
    oauth::OAuthSession,
};

const GMAIL: Provider = Provider::Gmail;

/// The most calls one batch takes.
pub const MAX_BATCH: usize = 100;

/// The most results one `messages.list` or `history.list` page gives.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Quota units each Gmail method costs (Gmail's published costs by default;
/// configurable, as the rate limiter reads them too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCosts {
    /// `users.getProfile`.
    pub get_profile: u64,
    /// `users.messages.list`.
    pub messages_list: u64,
    /// `users.messages.get` (each part of a batch).
    pub messages_get: u64,
    /// `users.history.list`.
    pub history_list: u64,
    /// `users.labels.list`.
    pub labels_list: u64,
    /// `users.labels.create`.
    pub labels_create: u64,
    /// `users.labels.delete`.
    pub labels_delete: u64,
}

impl Default for QuotaCosts {
    fn default() -> Self {
        Self {
            get_profile: 1,
            messages_list: 5,
            messages_get: 5,
            history_list: 2,
            labels_list: 1,
            labels_create: 5,
            labels_delete: 5,
        }
    }
}

/// How the client talks to Gmail.
#[derive(Debug, Clone)]
pub struct GmailOptions {
    /// The API host: `https://gmail.googleapis.com`, or a simulator's.
    pub base_url: Url,
    /// `maxResults` of `messages.list` and `history.list` (1 to 500).
    pub page_size: u32,
    /// `messages.get` calls per batch (1 to 100; Google recommends 50).
    pub batch_size: usize,
    /// What each method costs, for [`GmailClient::quota_units_used`].
    pub costs: QuotaCosts,
}

impl Default for GmailOptions {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://gmail.googleapis.com").expect("a constant, valid URL"),
            page_size: 100,
            batch_size: 50,
            costs: QuotaCosts::default(),
        }
    }
}

/// A request body.
enum Payload {
    None,
    Json(Value),
    Batch(String),
}

/// An answer, with the access token the call was made with.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub token: SecretString,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    history_id: String,
}

#[derive(Deserialize)]
struct LabelList {
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    id: String,
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddinState {
    #[serde(default)]
    installed: bool,
    #[serde(default)]
    addin_id: Option<String>,
}

/// A Gmail client for one user's mailbox (`users/me` of the session's token).
pub struct GmailClient {
    http: HttpClient,
    options: GmailOptions,
    session: OAuthSession,
    /// The session's refreshes before this client existed (clones share them).
    refreshes_before: u32,
    calls: AtomicU32,
    units: AtomicU64,
    gate: Gated,
}

impl std::fmt::Debug for GmailClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GmailClient")
            .field("base_url", &self.options.base_url.as_str())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Whether an answer with `status` spent quota units: Gmail charges what it
/// runs, not what it refuses or fails.
fn charged(status: StatusCode) -> bool {
    !matches!(status.as_u16(), 401 | 403 | 429 | 500..=599)
}

/// `text` as one percent-encoded path segment.
pub(crate) fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl GmailClient {
    /// A client for the user of `session` (whose provider is Gmail). The page
    /// and batch sizes are brought within Gmail's limits; nothing is called yet.
    pub fn new(http: HttpClient, mut options: GmailOptions, session: OAuthSession) -> Self {
        options.page_size = options.page_size.clamp(1, MAX_PAGE_SIZE);
        options.batch_size = options.batch_size.clamp(1, MAX_BATCH);
        let refreshes_before = session.refreshes();
        Self {
            http,
            options,
            session,
            refreshes_before,
            calls: AtomicU32::new(0),
            units: AtomicU64::new(0),
            gate: Gated::open(GMAIL, "me"),
        }
    }

    /// Every call passes `gate`, spending its quota units from the limits of
    /// `mailbox` (the user's address: Gmail's API names it `me`).
    pub fn with_gate(mut self, gate: Arc<dyn CallGate>, mailbox: &str) -> Self {
        self.gate = Gated::through(gate, GMAIL, mailbox.to_lowercase());
        self
    }

    /// The options in force (sizes within Gmail's limits).
    pub fn options(&self) -> &GmailOptions {
        &self.options
    }

    /// Quota units the calls of this client cost so far, by the configured
    /// costs (a batch costs its parts). Calls Gmail refused (401, 403, 429)
    /// or failed (5xx) are not counted: they spend no units.
    pub fn quota_units_used(&self) -> u64 {
        self.units.load(Ordering::Relaxed)
    }

    pub(crate) fn costs(&self) -> QuotaCosts {
        self.options.costs
    }

    pub(crate) fn page_size(&self) -> u32 {
        self.options.page_size
    }

    /// The URL of `path` (and `query`) on the API host, checked against the
    /// SSRF policy.
    pub(crate) fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ConnectorError> {
        let mut url = self
            .options
            .base_url
            .join(path)
            .map_err(|error| ConnectorError::permanent(GMAIL, format!("bad API URL: {error}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.http
            .check_url(&url)
            .map_err(|refused| ConnectorError::permanent(GMAIL, format!("API URL: {refused}")))?;
        Ok(url)
    }

    /// Makes one call, counting it, and its `units` unless Gmail refused it;
    /// a 401 drops the access token, refreshes once and repeats the call once.
    async fn send(&self, method: Method, url: Url, units: u64, payload: Payload) -> Result<Reply, ConnectorError> {
        let mut token = self.session.access_token().await?;
        let mut refreshed = false;
        loop {
            let mut request = self
                .http
                .inner()
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json");
            request = match &payload {
                Payload::None => request,
                Payload::Json(body) => request.json(body),
                Payload::Batch(body) => request.header(CONTENT_TYPE, batch::content_type()).body(body.clone()),
            };
            let permit = self.gate.admit(u32::try_from(units).unwrap_or(u32::MAX)).await?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(|error| transport_error(GMAIL, error))?;
            let status = response.status();
            if charged(status) {
                self.units.fetch_add(units, Ordering::Relaxed);
            }
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|error| transport_error(GMAIL, error))?
                .to_vec();
            drop(permit);
            if matches!(status.as_u16(), 403 | 429) {
                self.gate.share_retry_after(&headers).await;
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                debug!("Gmail refused the access token; refreshing once.");
                refreshed = true;
                token = self.session.refresh_after_rejection(&token).await?;
                continue;
            }
            return Ok(Reply {
                status,
                headers,
                body,
                token,
            });
        }
    }

    /// A call whose error answers are all errors.
    async fn call_json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        url: Url,
        units: u64,
        payload: Payload,
    ) -> Result<T, ConnectorError> {
        let reply = self.send(method, url, units, payload).await?;
        if !reply.status.is_success() {
            return Err(errors::from_response(reply.status, &reply.headers, &reply.body));
        }
        serde_json::from_slice(&reply.body).map_err(|error| errors::unexpected(what, &error))
    }

    /// `GET history` (and the like), answered as it came: the caller decides
    /// what a 404 means.
    pub(crate) async fn get(&self, url: Url, units: u64) -> Result<Reply, ConnectorError> {
        self.send(Method::GET, url, units, Payload::None).await
    }

    /// `users.getProfile`: the mailbox's current history id.
    pub(crate) async fn current_history_id(&self) -> Result<u64, ConnectorError> {
        let url = self.url("/gmail/v1/users/me/profile", &[])?;
        let profile: Profile = self
            .call_json("profile", Method::GET, url, self.costs().get_profile, Payload::None)
            .await?;
        profile
            .history_id
            .parse()
            .map_err(|_| ConnectorError::permanent(GMAIL, "the profile's historyId is not a number"))
    }

    /// The path and query of `messages.get` with `format=metadata`, as a batch part names it.
    fn metadata_target(&self, id: &str) -> Result<String, ConnectorError> {
        let mut query = vec![("format", "metadata")];
        query.extend(METADATA_HEADERS.iter().map(|header| ("metadataHeaders", *header)));
        let url = self.url(&format!("/gmail/v1/users/me/messages/{}", path_segment(id)), &query)?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// The metadata of each message of `ids`, by id, through the batch
    /// endpoint (`batch_size` calls a batch). A message deleted since it was
    /// listed (404) is left out. Parts refused for a rate limit or a 401 are
    /// asked again once (after a refresh, for a 401); refused again, the rate
    /// limit is the error. Any other refused part fails the whole fetch.
    pub(crate) async fn fetch_metadata(&self, ids: &[String]) -> Result<HashMap<String, GmailMessage>, ConnectorError> {
        let mut found = HashMap::with_capacity(ids.len());
        let url = self.url("/batch/gmail/v1", &[])?;
        for chunk in ids.chunks(self.options.batch_size) {
            let mut pending: Vec<&String> = chunk.iter().collect();
            let mut second_try = false;
            loop {
                let targets = pending
                    .iter()
                    .map(|id| self.metadata_target(id))
                    .collect::<Result<Vec<_>, _>>()?;
                // The envelope costs nothing; each part its own call.
                let reply = self
                    .send(
                        Method::POST,
                        url.clone(),
                        0,
                        Payload::Batch(batch::request_body(&targets)),
                    )
                    .await?;
                if !reply.status.is_success() {
                    return Err(errors::from_response(reply.status, &reply.headers, &reply.body));
                }
                let content_type = reply
                    .headers
                    .get(CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                let body = std::str::from_utf8(&reply.body)
                    .map_err(|_| ConnectorError::permanent(GMAIL, "the batch answer is not UTF-8"))?;
                let parts = batch::parse_response(content_type, body, pending.len())?;
                let ran = parts.iter().filter(|part| charged(part.status)).count() as u64;
                self.units.fetch_add(self.costs().messages_get * ran, Ordering::Relaxed);
                let mut again = Vec::new();
                let mut rejected = false;
                for part in parts {
                    let id = pending[part.index];
                    match part.status {
                        StatusCode::OK => {
                            let message: GmailMessage = serde_json::from_str(&part.body)
                                .map_err(|error| errors::unexpected("messages.get", &error))?;
                            found.insert(id.clone(), message);
                        }
                        // Deleted between the listing and now.
                        StatusCode::NOT_FOUND => {}
                        status => {
                            let error = errors::classify(status, part.retry_after, part.body.as_bytes());
                            let unauthorized = status == StatusCode::UNAUTHORIZED;
                            let worth_again = unauthorized || error.kind() == ErrorKind::Throttled;
                            if second_try || !worth_again {
                                return Err(error);
                            }
                            rejected |= unauthorized;
                            again.push(id);
                        }
                    }
                }
                if again.is_empty() {
                    break;
                }
                debug!(
                    parts = again.len(),
                    "Gmail refused batch parts; asking them again once."
                );
                if rejected {
                    self.session.refresh_after_rejection(&reply.token).await?;
                }
                second_try = true;
                pending = again;
            }
        }
        Ok(found)
    }

    async fn labels(&self) -> Result<Vec<Label>, ConnectorError> {
        let url = self.url("/gmail/v1/users/me/labels", &[])?;
        let list: LabelList = self
            .call_json("labels.list", Method::GET, url, self.costs().labels_list, Payload::None)
            .await?;
        Ok(list.labels)
    }

    /// The product's label, if the mailbox has it (names compare
    /// case-insensitively, as Gmail's do).
    async fn product_label(&self) -> Result<Option<Label>, ConnectorError> {
        Ok(self
            .labels()
            .await?
            .into_iter()
            .find(|label| label.name.eq_ignore_ascii_case(PRODUCT_CATEGORY) && label.kind.as_deref() != Some("system")))
    }

    fn addin_url(&self) -> Result<Url, ConnectorError> {
        self.url("/gmail/v1/users/me/syncfleetAddin", &[])
    }
}

impl Mailbox for GmailClient {
    fn folders(&self) -> &'static [MailFolder] {
        &[MailFolder::AllMail]
    }

    #[instrument(skip_all)]
    async fn check(&self) -> Result<(), ConnectorError> {
        self.session.access_token().await?;
        self.current_history_id().await.map(|_| ())
    }

    #[instrument(skip_all, fields(folder = folder.as_str(), resumed = cursor.is_some()))]
    async fn message_changes(
        &self,
        folder: MailFolder,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<MessagePage, ConnectorError> {
        if folder != MailFolder::AllMail {
            return Err(ConnectorError::permanent(
                GMAIL,
                format!(
                    "Gmail has one mailbox-wide stream ({}), not {}",
                    MailFolder::AllMail.as_str(),
                    folder.as_str()
                ),
            ));
        }
        self.changes(cursor, since).await
    }

    fn writes_crm_items(&self) -> bool {
        false
    }

    async fn upsert_events(
        &self,
        _events: &[Upsert<EventDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        Err(ConnectorError::permanent(
            GMAIL,
            "writing events is not supported by the Gmail API",
        ))
    }

    async fn upsert_contacts(
        &self,
        _contacts: &[Upsert<ContactDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        Err(ConnectorError::permanent(
            GMAIL,
            "writing contacts is not supported by the Gmail API",
        ))
    }

    /// Creates the product's label unless the mailbox has it; a concurrent
    /// creation (409) counts as done.
    #[instrument(skip_all)]
    async fn initialize(&self) -> Result<(), ConnectorError> {
        if self.product_label().await?.is_some() {
            return Ok(());
        }
        let url = self.url("/gmail/v1/users/me/labels", &[])?;
        let body = json!({
            "name": PRODUCT_CATEGORY,
            "labelListVisibility": "labelShow",
            "messageListVisibility": "show",
        });
        let reply = self
            .send(Method::POST, url, self.costs().labels_create, Payload::Json(body))
            .await?;
        if reply.status.is_success() || reply.status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(errors::from_response(reply.status, &reply.headers, &reply.body))
    }

    /// Deletes the product's label; a label already gone (404) counts as done.
    #[instrument(skip_all)]
    async fn reset(&self) -> Result<(), ConnectorError> {
        let Some(label) = self.product_label().await? else {
            return Ok(());
        };
        let url = self.url(&format!("/gmail/v1/users/me/labels/{}", path_segment(&label.id)), &[])?;
        let reply = self
            .send(Method::DELETE, url, self.costs().labels_delete, Payload::None)
            .await?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(errors::from_response(reply.status, &reply.headers, &reply.body))
    }

    /// Marks the add-in installed in the mailbox. Gmail add-ins are installed
    /// by the Workspace admin; this is the simulated stand-in's route.
    #[instrument(skip_all)]
    async fn install_addin(&self) -> Result<(), ConnectorError> {
        let url = self.addin_url()?;
        let _: AddinState = self
            .call_json(
                "add-in",
                Method::PUT,
                url,
                0,
                Payload::Json(json!({"addinId": ADDIN_ID})),
            )
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn remove_addin(&self) -> Result<(), ConnectorError> {
        let reply = self.send(Method::DELETE, self.addin_url()?, 0, Payload::None).await?;
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(errors::from_response(reply.status, &reply.headers, &reply.body))
    }

    #[instrument(skip_all)]
    async fn addin_status(&self) -> Result<AddinStatus, ConnectorError> {
        let state: AddinState = self
            .call_json("add-in", Method::GET, self.addin_url()?, 0, Payload::None)
            .await?;
        Ok(if state.installed && state.addin_id.as_deref() == Some(ADDIN_ID) {
            AddinStatus::Installed
        } else {
            AddinStatus::NotInstalled
        })
    }

    /// Calls made (a batch is one) plus the session's refreshes since this
    /// client was made.
    fn calls(&self) -> u32 {
        let refreshes = self.session.refreshes().saturating_sub(self.refreshes_before);
        self.calls.load(Ordering::Relaxed).saturating_add(refreshes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_failed_calls_spend_no_units() {
        for code in [200, 204, 400, 404, 409] {
            assert!(charged(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [401, 403, 429, 500, 503] {
            assert!(!charged(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("18c0ffee"), "18c0ffee");
        assert_eq!(path_segment("a/b c?d"), "a%2Fb%20c%3Fd");
    }
}
