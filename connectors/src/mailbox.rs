//! What every mailbox connector (Graph, EWS, Gmail) offers the sync, in one
//! provider-neutral shape: pages of message changes behind an opaque cursor,
//! events and contacts written from the CRM, the product's customization of the
//! mailbox (category and folders) and the sidebar add-in.
//!
//! A cursor is the connector's own business: a page link, a delta token, a
//! sync state or a history id, possibly with more packed in. The sync stores
//! [`Continuation::Complete`] as the stream's token for the next session and may
//! store [`Continuation::More`] to continue in a follow-up job; both are given
//! back as they were.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::error::ConnectorError;

/// A stream of message changes the sync follows, with its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailFolder {
    /// Mail received (Graph and EWS Inbox).
    Inbox,
    /// Mail sent (Graph and EWS Sent Items).
    SentItems,
    /// The whole mailbox as one stream (Gmail's history is mailbox-wide).
    AllMail,
}

impl MailFolder {
    /// The stream's name, part of the key its cursor is stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            MailFolder::Inbox => "inbox",
            MailFolder::SentItems => "sent",
            MailFolder::AllMail => "all",
        }
    }
}

/// An email address with its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// The SMTP address as the provider gave it.
    pub address: String,
    /// The display name, when there is one.
    pub name: Option<String>,
}

/// A message as the sync needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailMessage {
    /// The provider's id, stable across moves between folders (Graph immutable
    /// id, EWS item id, Gmail message id).
    pub id: String,
    /// The RFC 5322 `Message-ID`, when the provider gave it.
    pub internet_message_id: Option<String>,
    /// Whether the mailbox's owner sent it (Sent Items, Gmail's SENT label).
    pub sent_by_owner: bool,
    /// The subject, empty when there is none.
    pub subject: String,
    /// The sender.
    pub from: Option<EmailAddress>,
    /// The `To` recipients.
    pub to: Vec<EmailAddress>,
    /// The `Cc` recipients.
    pub cc: Vec<EmailAddress>,
    /// When it was sent (or received, when the provider gives only that).
    pub sent_at: DateTime<Utc>,
    /// The start of the body as plain text, bounded by the connector.
    pub body_preview: String,
}

/// One change in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// A message appeared or changed. The same message may come more than
    /// once in a round: the sync merges idempotently.
    Upsert(MailMessage),
    /// A message was deleted or left the stream.
    Removed {
        /// Its id.
        id: String,
    },
}

/// Where a stream stands after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// More pages follow: ask again with this cursor.
    More(String),
    /// The stream is caught up: this cursor asks for what changes from now on.
    Complete(String),
}

/// One page of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    /// The changes, in the provider's order.
    pub changes: Vec<MessageChange>,
    /// How to go on.
    pub continuation: Continuation,
}

/// A calendar event written from the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    /// The CRM record it comes from (`00U...`), kept on the mailbox item so it
    /// can be recognised.
    pub crm_id: String,
    /// The subject.
    pub subject: String,
    /// The description, as plain text.
    pub body: String,
    /// The location, empty when none.
    pub location: String,
    /// The start.
    pub start: DateTime<Utc>,
    /// The end.
    pub end: DateTime<Utc>,
}

/// A contact written from the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactDraft {
    /// The CRM record it comes from (`003...`).
    pub crm_id: String,
    /// The email address.
    pub email: String,
    /// The first name, empty when none.
    pub first_name: String,
    /// The last name.
    pub last_name: String,
    /// The company, empty when none.
    pub company: String,
    /// The phone number, empty when none.
    pub phone: String,
}

/// An item to write into the mailbox, with the mailbox item written for the
/// same CRM record before, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert<T> {
    /// The mailbox item's id from an earlier write.
    pub existing: Option<String>,
    /// What to write.
    pub item: T,
}

/// Whether the sidebar add-in is installed in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddinStatus {
    /// Installed and enabled.
    Installed,
    /// Not installed (or removed).
    NotInstalled,
}

/// What every mailbox connector offers. Every call counts one or more calls to
/// the provider (see [`Mailbox::calls`]); no error text holds a secret.
pub trait Mailbox: Send + Sync {
    /// The message streams the sync follows, each with its own cursor.
    fn folders(&self) -> &'static [MailFolder];

    /// The light connectivity call (S2): refreshes the token or logs on, then
    /// reads the inbox folder.
    fn check(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// One page of changes of `folder`. Without a cursor it starts a full sync
    /// of the messages from `since` on (the initial baseline, or a resync after
    /// [`ConnectorError::SyncStateExpired`]); with one it goes on from there.
    fn message_changes(
        &self,
        folder: MailFolder,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<MessagePage, ConnectorError>> + Send;

    /// The first page of changes of each `(folder, cursor)`, each as
    /// [`Mailbox::message_changes`] answers it. A provider that can carry
    /// them in one request does (Graph's `$batch`); the others make one call
    /// each. The outer error fails them all; an inner one is that folder's.
    fn first_pages(
        &self,
        streams: &[(MailFolder, Option<&str>)],
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Result<MessagePage, ConnectorError>>, ConnectorError>> + Send {
        async move {
            let mut pages = Vec::with_capacity(streams.len());
            for (folder, cursor) in streams {
                pages.push(self.message_changes(*folder, *cursor, since).await);
            }
            Ok(pages)
        }
    }

    /// Whether the provider takes events and contacts from the CRM (Gmail's
    /// API does not: calendars and contacts are other Google APIs).
    fn writes_crm_items(&self) -> bool {
        true
    }

    /// Creates each event, or updates the mailbox item it names when the CRM
    /// record was written before (and creates it again when that item was
    /// deleted meanwhile). The outer error fails the whole call (authorization,
    /// throttling of the mailbox); the inner results answer each item in input
    /// order with the mailbox item's id.
    fn upsert_events(
        &self,
        events: &[Upsert<EventDraft>],
    ) -> impl Future<Output = Result<Vec<Result<String, ConnectorError>>, ConnectorError>> + Send;

    /// Creates or updates each contact, as [`Mailbox::upsert_events`] does.
    fn upsert_contacts(
        &self,
        contacts: &[Upsert<ContactDraft>],
    ) -> impl Future<Output = Result<Vec<Result<String, ConnectorError>>, ConnectorError>> + Send;

    /// Creates the product's category and folders (idempotent: what exists is
    /// left as it is).
    fn initialize(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// Removes the product's category and folders (reset mailbox); idempotent.
    fn reset(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// Installs the sidebar add-in; idempotent.
    fn install_addin(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// Removes the sidebar add-in; idempotent.
    fn remove_addin(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// Reads whether the sidebar add-in is installed.
    fn addin_status(&self) -> impl Future<Output = Result<AddinStatus, ConnectorError>> + Send;

    /// Calls made to the provider so far by this client (token refreshes
    /// included), for the session's count per provider.
    fn calls(&self) -> u32;
}

/// The name of the product's category and the prefix of its folders in a
/// mailbox.
pub const PRODUCT_CATEGORY: &str = "Syncfleet";

/// The id of the sidebar add-in's manifest.
pub const ADDIN_ID: &str = "6d3c1e9a-5b1f-4c3e-9a7e-3f1d2c4b5a69";
