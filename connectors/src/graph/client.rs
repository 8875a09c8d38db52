//! The Graph client of one mailbox: its calls (bearer token from the OAuth
//! session, one refresh and retry on a 401, `Prefer: IdType="ImmutableId"`)
//! and the [`Mailbox`] trait over them.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use chrono::{DateTime, Utc};
use reqwest::{
    Method, StatusCode, Url,
    header::{ACCEPT, HeaderMap},
};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, instrument};

use super::{
    batch::Write,
    delta,
    errors::{self, Scope},
    items,
};
use crate::{
    error::{ConnectorError, Provider},
    gate::{CallGate, Gated},
    http::{HttpClient, transport_error},
    mailbox::{AddinStatus, ContactDraft, EventDraft, MailFolder, Mailbox, MessagePage, Upsert},
    oauth::OAuthSession,
};

pub(crate) const GRAPH: Provider = Provider::Graph;

/// Asks for ids that survive a move between folders.
pub(super) const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

/// How the client talks to Graph.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// The Graph host: `https://graph.microsoft.com`, or a simulator's
    /// `http://127.0.0.1:port`. Delta links are followed only on it.
    pub base_url: Url,
    /// Messages per delta page asked with `Prefer: odata.maxpagesize`.
    pub page_size: u32,
    /// The most characters of a message's `bodyPreview` kept.
    pub body_preview_chars: usize,
}

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://graph.microsoft.com").expect("a constant, valid URL"),
            page_size: 50,
            body_preview_chars: 255,
        }
    }
}

/// An answer of any status, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A Graph client for one mailbox. The session's refresh token and access
/// token never reach an error, a log or this type's Debug output.
pub struct GraphClient {
    http: HttpClient,
    pub(crate) options: GraphOptions,
    mailbox: String,
    /// The mailbox as a path segment (percent-encoded).
    mailbox_segment: String,
    session: OAuthSession,
    calls: AtomicU32,
    gate: Gated,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GraphClient")
            // The origin only: a URL's user info or query is no business of a log.
            .field("base_url", &self.options.base_url.origin().ascii_serialization())
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

/// `segment` percent-encoded as one URL path segment.
fn path_segment(segment: &str) -> String {
    let mut url = Url::parse("http://localhost/").expect("a constant, valid URL");
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push(segment);
    }
    url.path().trim_start_matches('/').to_owned()
}

impl GraphClient {
    /// A client for `mailbox` (the user's id or UPN, used as
    /// `/v1.0/users/{mailbox}/...`), calling with `session`'s tokens. Nothing
    /// is called yet; every call checks its URL against the HTTP client's
    /// SSRF policy.
    pub fn new(http: HttpClient, options: GraphOptions, mailbox: String, session: OAuthSession) -> Self {
        Self {
            mailbox_segment: path_segment(&mailbox),
            gate: Gated::open(GRAPH, mailbox.to_lowercase()),
            http,
            options,
            mailbox,
            session,
            calls: AtomicU32::new(0),
        }
    }

    /// Every call passes `gate`, under the mailbox's limits.
    pub fn with_gate(mut self, gate: Arc<dyn CallGate>) -> Self {
        self.gate = Gated::through(gate, GRAPH, self.mailbox.to_lowercase());
        self
    }

    /// The mailbox this client works on.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// `{base}/v1.0/users/{mailbox}/{segments...}`.
    pub(crate) fn users_url(&self, segments: &[&str]) -> Result<Url, ConnectorError> {
        delta::users_url(&self.options.base_url, &self.mailbox, segments)
    }

    /// `{base}/v1.0/{segments...}`.
    pub(crate) fn api_url(&self, segments: &[&str]) -> Result<Url, ConnectorError> {
        let mut url = self.options.base_url.clone();
        url.set_query(None);
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ConnectorError::permanent(GRAPH, "the Graph base URL cannot take a path"))?;
            path.pop_if_empty().push("v1.0").extend(segments);
        }
        Ok(url)
    }

    /// Where the changes of `folder` are read: the stored cursor's link, or
    /// a first delta of the messages since `since`.
    pub(crate) fn delta_url(
        &self,
        folder: MailFolder,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Url, ConnectorError> {
        match cursor {
            Some(cursor) => delta::cursor_url(&self.options.base_url, cursor),
            None => delta::first_url(&self.options.base_url, &self.mailbox, folder, since),
        }
    }

    /// `/users/{mailbox}/{rest}`, the URL of an inner batch request.
    pub(crate) fn relative_users_path(&self, rest: &str) -> String {
        format!("/users/{}/{rest}", self.mailbox_segment)
    }

    /// Sends one call and reads its answer, whatever its status. A `401`
    /// drops the access token, refreshes once and sends again.
    pub(crate) async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        prefer: &[String],
    ) -> Result<Answer, ConnectorError> {
        self.http
            .check_url(&url)
            .map_err(|refused| ConnectorError::permanent(GRAPH, format!("Graph URL: {refused}")))?;
        let mut token = self.session.access_token().await?;
        let mut refreshed = false;
        loop {
            let mut request = self
                .http
                .inner()
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json")
                .header("Prefer", IMMUTABLE_IDS);
            for preference in prefer {
                request = request.header("Prefer", preference.as_str());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let permit = self.gate.admit(1).await?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(|error| transport_error(GRAPH, error))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|error| transport_error(GRAPH, error))?
                .to_vec();
            drop(permit);
            if matches!(status.as_u16(), 429 | 503) {
                self.gate.share_retry_after(&headers).await;
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                debug!("Graph refused the access token; refreshing once.");
                token = self.session.refresh_after_rejection(&token).await?;
                continue;
            }
            return Ok(Answer { status, headers, body });
        }
    }

    /// Sends one call; an error answer is classified as a call's.
    pub(crate) async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Answer, ConnectorError> {
        self.call_with(method, url, body).await
    }

    /// [`call`](Self::call) with any serializable body: a `$batch` is
    /// serialized from borrowed parts, not copied into a `Value` first.
    pub(crate) async fn call_with<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Answer, ConnectorError> {
        let answer = self.send(method, url, body, &[]).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(errors::from_response(
                answer.status,
                &answer.headers,
                &answer.body,
                Scope::Call,
            ))
        }
    }

    /// Sends one call; `tolerated` statuses answer `None` (already there,
    /// already gone), other error answers are classified.
    pub(crate) async fn call_tolerating(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        tolerated: &[StatusCode],
    ) -> Result<Option<Answer>, ConnectorError> {
        let answer = self.send(method, url, body, &[]).await?;
        if answer.status.is_success() {
            Ok(Some(answer))
        } else if tolerated.contains(&answer.status) {
            Ok(None)
        } else {
            Err(errors::from_response(
                answer.status,
                &answer.headers,
                &answer.body,
                Scope::Call,
            ))
        }
    }
}

fn writes<T>(items: &[Upsert<T>], body: impl Fn(&T) -> Value) -> Vec<Write> {
    items
        .iter()
        .map(|upsert| Write {
            existing: upsert.existing.clone(),
            body: body(&upsert.item),
        })
        .collect()
}

impl Mailbox for GraphClient {
    fn folders(&self) -> &'static [MailFolder] {
        &[MailFolder::Inbox, MailFolder::SentItems]
    }

    #[instrument(skip_all)]
    async fn check(&self) -> Result<(), ConnectorError> {
        self.session.access_token().await?;
        let mut url = self.users_url(&["mailFolders", "inbox"])?;
        url.set_query(Some("$select=id"));
        self.call(Method::GET, url, None).await?;
        Ok(())
    }

    #[instrument(skip_all, fields(folder = folder.as_str(), resumed = cursor.is_some()))]
    async fn message_changes(
        &self,
        folder: MailFolder,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<MessagePage, ConnectorError> {
        let url = self.delta_url(folder, cursor, since)?;
        let page_size = [format!("odata.maxpagesize={}", self.options.page_size.max(1))];
        let answer = self.send(Method::GET, url, None::<&Value>, &page_size).await?;
        if !answer.status.is_success() {
            return Err(errors::from_response(
                answer.status,
                &answer.headers,
                &answer.body,
                Scope::Call,
            ));
        }
        delta::parse_page(&answer.body, folder, self.options.body_preview_chars)
    }

    #[instrument(skip_all, fields(folders = streams.len()))]
    async fn first_pages(
        &self,
        streams: &[(MailFolder, Option<&str>)],
        since: DateTime<Utc>,
    ) -> Result<Vec<Result<MessagePage, ConnectorError>>, ConnectorError> {
        match streams {
            [(folder, cursor)] => Ok(vec![self.message_changes(*folder, *cursor, since).await]),
            _ => self.message_changes_batched(streams, since).await,
        }
    }

    #[instrument(skip_all, fields(events = events.len()))]
    async fn upsert_events(
        &self,
        events: &[Upsert<EventDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        self.upsert_batched("events", writes(events, items::event_body)).await
    }

    #[instrument(skip_all, fields(contacts = contacts.len()))]
    async fn upsert_contacts(
        &self,
        contacts: &[Upsert<ContactDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        self.upsert_batched("contacts", writes(contacts, items::contact_body))
            .await
    }

    #[instrument(skip_all)]
    async fn initialize(&self) -> Result<(), ConnectorError> {
        self.create_category().await?;
        self.create_folder().await
    }

    #[instrument(skip_all)]
    async fn reset(&self) -> Result<(), ConnectorError> {
        self.delete_category().await?;
        self.delete_folders().await
    }

    #[instrument(skip_all)]
    async fn install_addin(&self) -> Result<(), ConnectorError> {
        self.put_addin().await
    }

    #[instrument(skip_all)]
    async fn remove_addin(&self) -> Result<(), ConnectorError> {
        self.delete_addin().await
    }

    #[instrument(skip_all)]
    async fn addin_status(&self) -> Result<AddinStatus, ConnectorError> {
        self.read_addin().await
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed) + self.session.refreshes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_is_one_encoded_path_segment() {
        assert_eq!(path_segment("adele@contoso.example"), "adele@contoso.example");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
