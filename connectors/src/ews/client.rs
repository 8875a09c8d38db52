//! The EWS client: one mailbox opened by Direct Logon or Impersonation, and
//! the [`Mailbox`] calls the sync makes on it.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use chrono::{DateTime, Utc};
use reqwest::{StatusCode, Url, header::CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use tracing::{debug, instrument};

use super::{
    categories,
    errors::{EWS, http_error, item_error},
    parse::{self, Element, ResponseMessage, Soap, SyncChange},
    soap,
};
use crate::{
    error::ConnectorError,
    gate::{CallGate, Gated},
    http::{HttpClient, transport_error},
    mailbox::{
        ADDIN_ID, AddinStatus, ContactDraft, Continuation, EventDraft, MailFolder, Mailbox, MessageChange, MessagePage,
        PRODUCT_CATEGORY, Upsert,
    },
};

/// The largest `MaxChangesReturned` Exchange takes.
pub const MAX_CHANGES_RETURNED: u16 = 512;

/// How the client talks to Exchange.
#[derive(Debug, Clone)]
pub struct EwsOptions {
    /// Changes per `SyncFolderItems` page (1 to 512).
    pub max_changes_returned: u16,
    /// Items per `GetItem` call.
    pub get_item_batch: usize,
    /// Items per `CreateItem` or `UpdateItem` call.
    pub write_batch: usize,
    /// The most characters of a message body kept as its preview.
    pub body_preview_chars: usize,
    /// The `RequestServerVersion` sent with every request.
    pub server_version: String,
    /// The page the sidebar add-in shows (the manifest's `SourceLocation`).
    pub addin_source_location: String,
}

impl Default for EwsOptions {
    fn default() -> Self {
        Self {
            max_changes_returned: 100,
            get_item_batch: 50,
            write_batch: 50,
            body_preview_chars: 255,
            server_version: "Exchange2013_SP1".to_owned(),
            addin_source_location: "https://addin.syncfleet.invalid/sidebar.html".to_owned(),
        }
    }
}

/// How the client logs on and which mailbox it opens.
#[derive(Debug, Clone)]
pub enum EwsLogon {
    /// The user's own account opens its own mailbox (Basic authentication).
    Direct {
        /// The logon name (UPN or `DOMAIN\user`).
        account: String,
        /// Its password.
        password: SecretString,
    },
    /// A service account with the ApplicationImpersonation role opens the
    /// user's mailbox (`ExchangeImpersonation` and `X-AnchorMailbox`).
    Impersonation {
        /// The service account's logon name.
        service_account: String,
        /// Its password.
        password: SecretString,
        /// The primary SMTP address of the mailbox to open.
        smtp_address: String,
    },
}

impl EwsLogon {
    fn account(&self) -> &str {
        match self {
            EwsLogon::Direct { account, .. } => account,
            EwsLogon::Impersonation { service_account, .. } => service_account,
        }
    }

    fn password(&self) -> &SecretString {
        match self {
            EwsLogon::Direct { password, .. } | EwsLogon::Impersonation { password, .. } => password,
        }
    }

    fn impersonated(&self) -> Option<&str> {
        match self {
            EwsLogon::Direct { .. } => None,
            EwsLogon::Impersonation { smtp_address, .. } => Some(smtp_address),
        }
    }
}

/// An EWS client for one mailbox.
pub struct EwsClient {
    http: HttpClient,
    options: EwsOptions,
    ews_url: Url,
    logon: EwsLogon,
    calls: AtomicU32,
    gate: Gated,
}

/// The account whose budget a client's calls spend: the logon account at the
/// server.
fn gate_account(ews_url: &Url, logon: &EwsLogon) -> String {
    format!(
        "{}/{}",
        ews_url.host_str().unwrap_or_default(),
        logon.account().to_lowercase()
    )
}

impl fmt::Debug for EwsClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EwsClient")
            .field("ews_url", &self.ews_url.as_str())
            .field("account", &self.logon.account())
            .field("impersonated", &self.logon.impersonated())
            .finish_non_exhaustive()
    }
}

/// The `Continuation::More` cursor of a first sync still taking only the
/// messages received from its baseline on: `baseline;{RFC 3339};{state}`.
/// EWS sync states are base64, so they never hold the separator.
const BASELINE: &str = "baseline;";

fn parse_cursor(cursor: &str) -> Result<(String, Option<DateTime<Utc>>), ConnectorError> {
    let Some(rest) = cursor.strip_prefix(BASELINE) else {
        return Ok((cursor.to_owned(), None));
    };
    let (since, state) = rest
        .split_once(';')
        .ok_or_else(|| ConnectorError::permanent(EWS, "a malformed cursor"))?;
    let since = DateTime::parse_from_rfc3339(since)
        .map_err(|_| ConnectorError::permanent(EWS, "a malformed cursor"))?
        .with_timezone(&Utc);
    Ok((state.to_owned(), Some(since)))
}

fn distinguished_folder(folder: MailFolder) -> Result<&'static str, ConnectorError> {
    match folder {
        MailFolder::Inbox => Ok("inbox"),
        MailFolder::SentItems => Ok("sentitems"),
        MailFolder::AllMail => Err(ConnectorError::permanent(
            EWS,
            "Exchange has no mailbox-wide stream; sync Inbox and Sent Items",
        )),
    }
}

fn count_mismatch(operation: &str, answered: usize, asked: usize) -> ConnectorError {
    ConnectorError::permanent(
        EWS,
        format!("{operation} answered {answered} messages for {asked} items"),
    )
}

/// A per-item answer of a write: the item's id, or its own error; `Err` for
/// an error that fails the whole call.
fn written(
    message: &ResponseMessage<'_>,
    fallback_id: Option<&str>,
) -> Result<Result<String, ConnectorError>, ConnectorError> {
    if message.success {
        let id = parse::written_item_id(message.element)
            .or_else(|| fallback_id.map(str::to_owned))
            .ok_or_else(|| ConnectorError::permanent(EWS, "a written item without an id"))?;
        return Ok(Ok(id));
    }
    item_error(message.code, message.text).map(Err)
}

fn is_not_found(code: &str) -> bool {
    matches!(code, "ErrorItemNotFound" | "ErrorFolderNotFound")
}

impl EwsClient {
    /// A client for the mailbox `logon` opens at `ews_url` (an
    /// administrator's setting, checked against the SSRF policy); nothing is
    /// called yet.
    pub fn new(http: HttpClient, options: EwsOptions, ews_url: Url, logon: EwsLogon) -> Result<Self, ConnectorError> {
        http.check_url(&ews_url)
            .map_err(|refused| ConnectorError::permanent(EWS, format!("EWS URL: {refused}")))?;
        if !(1..=MAX_CHANGES_RETURNED).contains(&options.max_changes_returned) {
            return Err(ConnectorError::permanent(
                EWS,
                "max_changes_returned must be from 1 to 512",
            ));
        }
        if options.get_item_batch == 0 || options.write_batch == 0 {
            return Err(ConnectorError::permanent(EWS, "batch sizes must be at least 1"));
        }
        let account = gate_account(&ews_url, &logon);
        Ok(Self {
            http,
            options,
            ews_url,
            logon,
            calls: AtomicU32::new(0),
            gate: Gated::open(EWS, account),
        })
    }

    /// Every call passes `gate`, under the limits of the logon account (the
    /// service account's own budget under impersonation).
    pub fn with_gate(mut self, gate: Arc<dyn CallGate>) -> Self {
        self.gate = Gated::through(gate, EWS, gate_account(&self.ews_url, &self.logon));
        self
    }

    /// Sends one SOAP request through the gate; a throttled answer with a
    /// delay makes every worker wait it out.
    async fn call(&self, operation: &str, body: &str) -> Result<Element, ConnectorError> {
        let permit = self.gate.admit(1).await?;
        let result = self.exchange(operation, body).await;
        drop(permit);
        if let Err(ConnectorError::Throttled {
            retry_after: Some(delay),
            ..
        }) = &result
        {
            self.gate.throttled(*delay).await;
        }
        result
    }

    /// Sends one SOAP request and returns its response element, or the fault
    /// or HTTP error classified.
    async fn exchange(&self, operation: &str, body: &str) -> Result<Element, ConnectorError> {
        let document = soap::envelope(&self.options.server_version, self.logon.impersonated(), body);
        let mut request = self
            .http
            .inner()
            .post(self.ews_url.clone())
            .basic_auth(self.logon.account(), Some(self.logon.password().expose_secret()))
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", soap::soap_action(operation))
            .body(document);
        if let Some(smtp) = self.logon.impersonated() {
            request = request.header("X-AnchorMailbox", smtp);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|error| transport_error(EWS, error))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| transport_error(EWS, error))?;
        let text = String::from_utf8_lossy(&bytes);
        if status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR {
            match parse::soap(&text) {
                Ok(Soap::Response(element)) if status == StatusCode::OK => return Ok(element),
                Ok(Soap::Fault(error)) => {
                    debug!(operation, error = %error, "EWS answered a SOAP fault.");
                    return Err(error);
                }
                Err(error) if status == StatusCode::OK => return Err(error),
                // A 500 without a readable fault is classified by its status.
                _ => {}
            }
        }
        Err(http_error(status.as_u16()))
    }

    /// `GetItem` of messages, batched: each id's message, `None` when it is
    /// gone (deleted since the sync listed it) or is no message.
    async fn fetch_messages(
        &self,
        ids: &[String],
        sent_by_owner: bool,
    ) -> Result<HashMap<String, Option<parse::FetchedMessage>>, ConnectorError> {
        let mut fetched = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(self.options.get_item_batch) {
            let response = self.call("GetItem", &soap::get_messages(batch)).await?;
            let messages = parse::response_messages(&response)?;
            if messages.len() != batch.len() {
                return Err(count_mismatch("GetItem", messages.len(), batch.len()));
            }
            for (id, message) in batch.iter().zip(messages) {
                let item = if message.success {
                    parse::fetched_message(message.element, sent_by_owner, self.options.body_preview_chars)
                } else if is_not_found(message.code) {
                    None
                } else {
                    return Err(parse::succeeded(message)
                        .err()
                        .unwrap_or_else(|| ConnectorError::permanent(EWS, "GetItem failed without an error code")));
                };
                fetched.insert(id.clone(), item);
            }
        }
        Ok(fetched)
    }

    /// Writes `creates` (`CreateItem`) and `updates` (`UpdateItem`), both in
    /// batches, re-creating the updated items Exchange no longer has; the
    /// results come back by index.
    async fn write<T>(
        &self,
        items: &[Upsert<T>],
        create: impl Fn(&[&T]) -> String,
        update: impl Fn(&[(&str, &T)]) -> String,
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        let mut results: Vec<Option<Result<String, ConnectorError>>> = (0..items.len()).map(|_| None).collect();
        let mut to_create: Vec<usize> = Vec::new();
        let updates: Vec<usize> = (0..items.len())
            .filter(|index| items[*index].existing.is_some())
            .collect();
        for batch in updates.chunks(self.options.write_batch) {
            let changes: Vec<(&str, &T)> = batch
                .iter()
                .map(|index| {
                    (
                        items[*index].existing.as_deref().unwrap_or_default(),
                        &items[*index].item,
                    )
                })
                .collect();
            let response = self.call("UpdateItem", &update(&changes)).await?;
            let messages = parse::response_messages(&response)?;
            if messages.len() != batch.len() {
                return Err(count_mismatch("UpdateItem", messages.len(), batch.len()));
            }
            for ((index, (id, _)), message) in batch.iter().zip(&changes).zip(messages) {
                if !message.success && message.code == "ErrorItemNotFound" {
                    debug!("An item written before is gone from the mailbox; creating it again.");
                    to_create.push(*index);
                } else {
                    results[*index] = Some(written(&message, Some(id))?);
                }
            }
        }
        to_create.extend((0..items.len()).filter(|index| items[*index].existing.is_none()));
        to_create.sort_unstable();
        for batch in to_create.chunks(self.options.write_batch) {
            let drafts: Vec<&T> = batch.iter().map(|index| &items[*index].item).collect();
            let response = self.call("CreateItem", &create(&drafts)).await?;
            let messages = parse::response_messages(&response)?;
            if messages.len() != batch.len() {
                return Err(count_mismatch("CreateItem", messages.len(), batch.len()));
            }
            for (index, message) in batch.iter().zip(messages) {
                results[*index] = Some(written(&message, None)?);
            }
        }
        results
            .into_iter()
            .map(|result| result.ok_or_else(|| ConnectorError::permanent(EWS, "an item was not written")))
            .collect()
    }

    /// The master category list's XML, or `None` when the mailbox has none.
    async fn category_list(&self) -> Result<Option<String>, ConnectorError> {
        let request = soap::get_user_configuration(soap::CATEGORY_LIST, "calendar");
        let response = self.call("GetUserConfiguration", &request).await?;
        let message = parse::single_message(&response)?;
        if !message.success && message.code == "ErrorItemNotFound" {
            return Ok(None);
        }
        let element = parse::succeeded(message)?;
        let data = element
            .find(&["UserConfiguration", "XmlData"])
            .map(|data| data.text.as_str())
            .unwrap_or_default();
        let bytes =
            parse::base64(data).ok_or_else(|| ConnectorError::permanent(EWS, "the category list is not base64"))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn write_category_list(&self, operation: &str, document: &str) -> Result<(), ConnectorError> {
        let request = soap::write_user_configuration(operation, soap::CATEGORY_LIST, "calendar", document.as_bytes());
        let response = self.call(operation, &request).await?;
        parse::succeeded(parse::single_message(&response)?)?;
        Ok(())
    }
}

fn malformed_list(error: String) -> ConnectorError {
    ConnectorError::permanent(EWS, format!("the category list is not readable: {error}"))
}

impl Mailbox for EwsClient {
    fn folders(&self) -> &'static [MailFolder] {
        &[MailFolder::Inbox, MailFolder::SentItems]
    }

    #[instrument(skip_all)]
    async fn check(&self) -> Result<(), ConnectorError> {
        let response = self.call("GetFolder", &soap::get_folder("inbox")).await?;
        parse::succeeded(parse::single_message(&response)?)?;
        Ok(())
    }

    #[instrument(skip_all, fields(folder = folder.as_str(), first = cursor.is_none()))]
    async fn message_changes(
        &self,
        folder: MailFolder,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<MessagePage, ConnectorError> {
        let distinguished = distinguished_folder(folder)?;
        let (state, baseline) = match cursor {
            None => (None, Some(since)),
            Some(cursor) => {
                let (state, baseline) = parse_cursor(cursor)?;
                (Some(state), baseline)
            }
        };
        let request = soap::sync_folder_items(distinguished, state.as_deref(), self.options.max_changes_returned);
        let response = self.call("SyncFolderItems", &request).await?;
        let page = parse::sync_page(parse::succeeded(parse::single_message(&response)?)?)?;

        let mut seen = HashSet::new();
        let wanted: Vec<String> = page
            .changes
            .iter()
            .filter_map(|change| match change {
                SyncChange::Changed(id) if seen.insert(id.clone()) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let mut fetched = self.fetch_messages(&wanted, folder == MailFolder::SentItems).await?;
        let mut changes = Vec::with_capacity(page.changes.len());
        for change in page.changes {
            match change {
                SyncChange::Deleted(id) => changes.push(MessageChange::Removed { id }),
                SyncChange::Changed(id) => match fetched.remove(&id) {
                    // Listed twice in the page: taken the first time.
                    None => {}
                    Some(None) => changes.push(MessageChange::Removed { id }),
                    Some(Some(item)) => {
                        let before_baseline =
                            baseline.is_some_and(|since| item.received.unwrap_or(item.message.sent_at) < since);
                        if !before_baseline {
                            changes.push(MessageChange::Upsert(item.message));
                        }
                    }
                },
            }
        }
        let continuation = match (page.last, baseline) {
            (true, _) => Continuation::Complete(page.state),
            (false, Some(since)) => Continuation::More(format!("{BASELINE}{};{}", since.to_rfc3339(), page.state)),
            (false, None) => Continuation::More(page.state),
        };
        debug!(changes = changes.len(), "EWS sync page read.");
        Ok(MessagePage { changes, continuation })
    }

    #[instrument(skip_all, fields(events = events.len()))]
    async fn upsert_events(
        &self,
        events: &[Upsert<EventDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        self.write(events, soap::create_events, soap::update_events).await
    }

    #[instrument(skip_all, fields(contacts = contacts.len()))]
    async fn upsert_contacts(
        &self,
        contacts: &[Upsert<ContactDraft>],
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        self.write(contacts, soap::create_contacts, soap::update_contacts).await
    }

    #[instrument(skip_all)]
    async fn initialize(&self) -> Result<(), ConnectorError> {
        let request = soap::create_folder("msgfolderroot", PRODUCT_CATEGORY);
        let response = self.call("CreateFolder", &request).await?;
        let message = parse::single_message(&response)?;
        if message.success || message.code != "ErrorFolderExists" {
            parse::succeeded(message)?;
        }
        match self.category_list().await? {
            None => {
                self.write_category_list("CreateUserConfiguration", &categories::new_list(PRODUCT_CATEGORY))
                    .await
            }
            Some(list) => match categories::with_category(&list, PRODUCT_CATEGORY).map_err(malformed_list)? {
                Some(updated) => self.write_category_list("UpdateUserConfiguration", &updated).await,
                None => Ok(()),
            },
        }
    }

    #[instrument(skip_all)]
    async fn reset(&self) -> Result<(), ConnectorError> {
        let response = self
            .call("FindFolder", &soap::find_child_folders("msgfolderroot"))
            .await?;
        let root = parse::succeeded(parse::single_message(&response)?)?;
        let mut folders = Vec::new();
        if let Some(found) = root.find(&["RootFolder", "Folders"]) {
            for folder in &found.children {
                if folder.child_text("DisplayName") == Some(PRODUCT_CATEGORY)
                    && let Some(id) = folder.child("FolderId").and_then(|id| id.attribute("Id"))
                {
                    folders.push(id.to_owned());
                }
            }
        }
        if !folders.is_empty() {
            let response = self.call("DeleteFolder", &soap::delete_folders(&folders)).await?;
            for message in parse::response_messages(&response)? {
                if message.success || !is_not_found(message.code) {
                    parse::succeeded(message)?;
                }
            }
        }
        if let Some(list) = self.category_list().await?
            && let Some(updated) = categories::without_category(&list, PRODUCT_CATEGORY).map_err(malformed_list)?
        {
            self.write_category_list("UpdateUserConfiguration", &updated).await?;
        }
        Ok(())
    }

    #[instrument(skip_all)]
    async fn install_addin(&self) -> Result<(), ConnectorError> {
        let manifest = soap::addin_manifest(&self.options.addin_source_location);
        let response = self.call("InstallApp", &soap::install_app(&manifest)).await?;
        parse::succeeded(parse::top_level_message(&response))?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn remove_addin(&self) -> Result<(), ConnectorError> {
        let response = self.call("UninstallApp", &soap::uninstall_app(ADDIN_ID)).await?;
        let message = parse::top_level_message(&response);
        if message.success || !is_not_found(message.code) {
            parse::succeeded(message)?;
        }
        Ok(())
    }

    #[instrument(skip_all)]
    async fn addin_status(&self) -> Result<AddinStatus, ConnectorError> {
        let response = self.call("GetAppManifests", &soap::get_app_manifests()).await?;
        let element = parse::succeeded(parse::top_level_message(&response))?;
        let mut manifests = Vec::new();
        element.descendants("Manifest", &mut manifests);
        let installed = manifests.iter().any(|manifest| {
            parse::base64(&manifest.text)
                .and_then(|bytes| parse::parse(&String::from_utf8_lossy(&bytes)).ok())
                .and_then(|root| root.child_text("Id").map(|id| id.trim().eq_ignore_ascii_case(ADDIN_ID)))
                .unwrap_or(false)
        });
        Ok(if installed {
            AddinStatus::Installed
        } else {
            AddinStatus::NotInstalled
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_cursor_keeps_its_date_and_a_plain_one_is_the_state() {
        let since = DateTime::parse_from_rfc3339("2024-05-01T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cursor = format!("{BASELINE}{};H4sI+/abc=", since.to_rfc3339());
        assert_eq!(parse_cursor(&cursor).unwrap(), ("H4sI+/abc=".to_owned(), Some(since)));
        assert_eq!(parse_cursor("H4sI+/abc=").unwrap(), ("H4sI+/abc=".to_owned(), None));
        assert!(parse_cursor("baseline;nonsense").is_err());
    }
}
