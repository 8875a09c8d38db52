//! The Microsoft Graph simulator: the Microsoft identity platform's refresh
//! grant (a new refresh token on every refresh, the old one still valid
//! unless the strict mode revokes it), message delta sync of Inbox and Sent
//! Items with `$skiptoken` pages and `$deltatoken` rounds, events, contacts,
//! Outlook master categories, mail folders, JSON `$batch`, change
//! notifications (`/subscriptions`, posted to the subscriber), the per-mailbox
//! throttling (4 concurrent requests, 10,000 per 10 minutes) and the errors
//! Graph answers with, as `shared/reference/providers.md` describes them. One
//! server simulates many mailboxes; an access token is bound to one.
//!
//! Graph has no API to install an Outlook add-in in one mailbox (real
//! deployments go through centralized deployment in the Microsoft 365 admin
//! center), so the simulator keeps the add-in's state per mailbox behind a
//! stand-in route of its own, `/v1.0/users/{mailbox}/syncfleetAddin`.
//!
//! A test drives it through [`GraphSimulator`]: it creates mailboxes, seeds
//! and deletes messages, arms faults, sets latency and reads items and
//! counters back; `/_control/graph/...` does the same over HTTP (see
//! `simulators/docs/graph.md`).

mod api;
mod auth;
mod batch;
mod control;
mod delta;
mod faults;
mod items;
mod limits;
mod routes;
mod store;
mod subscriptions;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use faults::Fault;
pub use subscriptions::{
    ChangeType, Delivery, LifecycleEvent, LifecycleRefusal, MAX_LIFETIME as MAX_SUBSCRIPTION_LIFETIME,
    NotificationCounters, SubscriptionInfo, TENANT_ID,
};

use crate::{BulkError, Server, shared::Latency};
use store::{State, Store};

/// How the simulated Graph behaves. The limits are configurable because
/// Microsoft's documents changed over time.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Messages per delta page when the request states no
    /// `Prefer: odata.maxpagesize` (Graph: 10).
    pub page_size: usize,
    /// The largest page a `Prefer: odata.maxpagesize` obtains.
    pub max_page_size: usize,
    /// Requests one mailbox may have in flight at once (Outlook's
    /// `MailboxConcurrency`: 4).
    pub mailbox_concurrency: usize,
    /// The `Retry-After` of an answer refused for concurrency.
    pub concurrency_retry_after: Duration,
    /// Requests one mailbox may receive per [`GraphConfig::window`] (10,000).
    pub requests_per_window: usize,
    /// The sliding window [`GraphConfig::requests_per_window`] counts over
    /// (10 minutes).
    pub window: Duration,
    /// How long delta and skip tokens stay valid after they were issued.
    pub delta_token_lifetime: Duration,
    /// How long an access token lives (`expires_in`).
    pub access_token_lifetime: Duration,
    /// Whether a refresh answers a new refresh token (Microsoft always does).
    pub rotate_refresh_tokens: bool,
    /// The strict mode: whether a refresh that answers a new refresh token
    /// also revokes the one it was given. Microsoft does not (its documents
    /// say the old token stays valid until it expires), so this is off unless
    /// a test wants every superseded token refused;
    /// [`GraphSimulator::set_revoke_rotated_refresh_tokens`] changes it at
    /// run time.
    pub revoke_rotated_refresh_tokens: bool,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            page_size: 10,
            max_page_size: 1000,
            mailbox_concurrency: 4,
            concurrency_retry_after: Duration::from_secs(1),
            requests_per_window: 10_000,
            window: Duration::from_secs(10 * 60),
            delta_token_lifetime: Duration::from_secs(7 * 24 * 60 * 60),
            access_token_lifetime: Duration::from_secs(60 * 60),
            rotate_refresh_tokens: true,
            revoke_rotated_refresh_tokens: false,
        }
    }
}

/// The most requests one `$batch` takes.
pub const MAX_BATCH_REQUESTS: usize = 20;

/// The endpoints the simulator counts calls to. Inner requests of a `$batch`
/// count under their own endpoint, the batch itself under [`Endpoint::Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// `POST /v1.0/$batch`.
    Batch,
    /// `GET /v1.0/users/{m}/mailFolders/{folder}/messages/delta`.
    MessagesDelta,
    /// `/v1.0/users/{m}/mailFolders[/{id}]`.
    MailFolders,
    /// `/v1.0/users/{m}/events[/{id}]`.
    Events,
    /// `/v1.0/users/{m}/contacts[/{id}]`.
    Contacts,
    /// `/v1.0/users/{m}/outlook/masterCategories[/{id}]`.
    MasterCategories,
    /// `/v1.0/users/{m}/syncfleetAddin` (the simulator's stand-in).
    Addin,
    /// `/v1.0/subscriptions[/{id}]`.
    Subscriptions,
}

impl Endpoint {
    /// The endpoint's name in the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Batch => "batch",
            Endpoint::MessagesDelta => "messages_delta",
            Endpoint::MailFolders => "mail_folders",
            Endpoint::Events => "events",
            Endpoint::Contacts => "contacts",
            Endpoint::MasterCategories => "master_categories",
            Endpoint::Addin => "addin",
            Endpoint::Subscriptions => "subscriptions",
        }
    }
}

/// What a mailbox (or the simulator, for calls no mailbox could be told
/// from) saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls received, by endpoint (inner requests of a batch included).
    pub calls: BTreeMap<Endpoint, u64>,
    /// Calls answered `429` by the mailbox's limits (concurrency or window).
    pub throttled: u64,
    /// Calls answered by an armed fault.
    pub faults: u64,
}

impl Counters {
    /// Calls received by `endpoint`.
    pub fn calls_to(&self, endpoint: Endpoint) -> u64 {
        self.calls.get(&endpoint).copied().unwrap_or_default()
    }

    /// Calls received in all.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// A message folder the simulator keeps messages in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    /// The well-known folder `inbox`.
    Inbox,
    /// The well-known folder `sentitems`.
    SentItems,
}

impl Folder {
    /// The well-known name Graph's paths use.
    pub fn well_known_name(self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::SentItems => "sentitems",
        }
    }

    /// The folder's display name.
    pub fn display_name(self) -> &'static str {
        match self {
            Folder::Inbox => "Inbox",
            Folder::SentItems => "Sent Items",
        }
    }
}

/// A sender or recipient of a seeded message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Recipient {
    /// The SMTP address.
    pub address: String,
    /// The display name; Graph repeats the address when there is none.
    #[serde(default)]
    pub name: Option<String>,
}

impl Recipient {
    /// A recipient with only an address.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            name: None,
        }
    }

    /// A recipient with a display name.
    pub fn named(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            name: Some(name.into()),
        }
    }
}

/// A message put in a mailbox as if it had been received or sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageSeed {
    /// The sender.
    pub from: Recipient,
    /// The `To` recipients.
    #[serde(default)]
    pub to: Vec<Recipient>,
    /// The `Cc` recipients.
    #[serde(default)]
    pub cc: Vec<Recipient>,
    /// The subject.
    #[serde(default)]
    pub subject: String,
    /// When it was sent; it is received at the same instant.
    pub sent_at: DateTime<Utc>,
    /// The body, as plain text (`bodyPreview` is its first 255 characters).
    #[serde(default)]
    pub body: String,
}

/// A message and the folder it goes in: what the control API's add-message
/// route takes, and each message of a mailbox created in bulk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "FolderMessageFields")]
pub struct FolderMessage {
    /// The folder it goes in.
    pub folder: Folder,
    /// The message.
    pub seed: MessageSeed,
}

/// [`FolderMessage`] as JSON: the folder beside the message's fields. Not
/// `#[serde(flatten)]`, which would hide the field at fault in an error
/// (`mailboxes[3].messages[1].sent_at: ...`) behind the message.
#[derive(Deserialize)]
struct FolderMessageFields {
    folder: Folder,
    from: Recipient,
    #[serde(default)]
    to: Vec<Recipient>,
    #[serde(default)]
    cc: Vec<Recipient>,
    #[serde(default)]
    subject: String,
    sent_at: DateTime<Utc>,
    #[serde(default)]
    body: String,
}

impl From<FolderMessageFields> for FolderMessage {
    fn from(fields: FolderMessageFields) -> Self {
        Self {
            folder: fields.folder,
            seed: MessageSeed {
                from: fields.from,
                to: fields.to,
                cc: fields.cc,
                subject: fields.subject,
                sent_at: fields.sent_at,
                body: fields.body,
            },
        }
    }
}

/// The most mailboxes one [`GraphSimulator::create_mailboxes`] creates.
pub const MAX_BULK_MAILBOXES: usize = 10_000;

/// A mailbox to create in bulk, with its messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BulkMailbox {
    /// Its UPN, which no mailbox may have yet.
    pub upn: String,
    /// Its messages, put in as [`GraphSimulator::add_message`] would, in order.
    #[serde(default)]
    pub messages: Vec<FolderMessage>,
}

/// A mailbox created in bulk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedMailbox {
    /// Its UPN, as given.
    pub upn: String,
    /// Its id.
    pub id: String,
    /// A refresh token of it.
    pub refresh_token: String,
    /// What its client already holds, when the batch was created connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<ConnectedMailbox>,
}

/// How a batch of mailboxes is created as already connected: each as if its
/// client had refreshed once and run a first delta round of Inbox and Sent
/// Items to the end, so the client's next calls are a steady state's (the
/// access token still valid, nothing new behind the delta links).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// The query of the client's first delta request of each folder
    /// (`$select=...&$filter=receivedDateTime ge ...`), whose options its
    /// delta tokens carry as a real first round's do; none: no delta links.
    #[serde(default)]
    pub delta_query: Option<String>,
}

/// What the client of a mailbox created connected holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectedMailbox {
    /// An access token of the mailbox, as a refresh answers it.
    pub access_token: String,
    /// Seconds it lives from its creation (the refresh answer's `expires_in`).
    pub expires_in: u64,
    /// The delta link of each folder by its well-known name (`inbox`,
    /// `sentitems`) under `users/{upn}`, when a delta query was given.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub delta_links: BTreeMap<&'static str, String>,
}

/// An Outlook master category of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// Its id.
    pub id: String,
    /// Its name, unique in the mailbox (case-insensitively).
    pub display_name: String,
    /// Its color (`preset0`..`preset24` or `none`).
    pub color: String,
}

/// A mail folder created in a mailbox (not a well-known one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFolder {
    /// Its id.
    pub id: String,
    /// Its name, unique among the top-level folders (case-insensitively).
    pub display_name: String,
}

/// Why the simulator's state could not be changed directly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// No mailbox has this UPN or id.
    #[error("unknown mailbox {0}")]
    UnknownMailbox(String),
    /// The mailbox has no such item.
    #[error("unknown item {0}")]
    UnknownItem(String),
}

/// A handle on one simulated Graph: serve it, then shape and observe its
/// state. Clones share the state.
#[derive(Debug, Clone)]
pub struct GraphSimulator {
    store: Arc<Store>,
}

/// What [`GraphSimulator::start_local`] starts.
pub struct LocalGraph {
    /// The simulator, for faults, counters and more mailboxes.
    pub simulator: GraphSimulator,
    /// Where it listens.
    pub server: Server,
    /// The UPN of the mailbox created for the test.
    pub mailbox: String,
    /// A refresh token of that mailbox.
    pub refresh_token: String,
}

/// The UPN of the mailbox [`GraphSimulator::start_local`] creates.
pub const LOCAL_MAILBOX: &str = "adele.vance@contoso.example";

impl GraphSimulator {
    crate::shared::http_handle!(GraphConfig, "mailboxes");

    /// A simulator on a free loopback port with one mailbox
    /// ([`LOCAL_MAILBOX`]) and a refresh token for it, what a test starts
    /// with; it stops when `shutdown` is cancelled.
    pub async fn start_local(config: GraphConfig, shutdown: CancellationToken) -> io::Result<LocalGraph> {
        let simulator = Self::new(config);
        let server = simulator.serve(crate::LOOPBACK, shutdown).await?;
        let refresh_token = simulator.create_mailbox(LOCAL_MAILBOX);
        Ok(LocalGraph {
            simulator,
            server,
            mailbox: LOCAL_MAILBOX.to_owned(),
            refresh_token,
        })
    }

    /// Creates the mailbox of `upn` (if it does not exist) and returns a new
    /// refresh token for it, as the user's consent would.
    pub fn create_mailbox(&self, upn: &str) -> String {
        self.store.with(|state| {
            let id = state.ensure_mailbox(upn);
            state.issue_refresh_token(&id)
        })
    }

    /// Creates every mailbox of `mailboxes` with its messages and a refresh
    /// token, and answers them in order; or, if one UPN is empty, taken or
    /// given twice, or there are more than [`MAX_BULK_MAILBOXES`], creates
    /// none and says which (`mailboxes[3].upn: already exists`). The store's
    /// lock is taken once, the mailboxes being built before.
    pub fn create_mailboxes(&self, mailboxes: &[BulkMailbox]) -> Result<Vec<CreatedMailbox>, BulkError> {
        self.create_mailboxes_as(mailboxes, None)
    }

    /// [`Self::create_mailboxes`], each mailbox connected as `connect`
    /// says (see [`Connect`]); `base` is the simulator's base URL as the
    /// client reaches it (`http://host:port`), which the delta links start
    /// with. A delta query Graph would refuse refuses the batch
    /// (`connected.delta_query: ...`).
    pub fn create_connected_mailboxes(
        &self,
        mailboxes: &[BulkMailbox],
        connect: &Connect,
        base: &str,
    ) -> Result<Vec<CreatedMailbox>, BulkError> {
        self.create_mailboxes_as(mailboxes, Some((connect, base)))
    }

    fn create_mailboxes_as(
        &self,
        mailboxes: &[BulkMailbox],
        connect: Option<(&Connect, &str)>,
    ) -> Result<Vec<CreatedMailbox>, BulkError> {
        BulkError::check_count("mailboxes", mailboxes.len(), MAX_BULK_MAILBOXES)?;
        let delta_options = connect
            .and_then(|(connect, _)| connect.delta_query.as_deref())
            .map(|query| {
                delta::first_request_options(query)
                    .map_err(|reason| BulkError::invalid("connected.delta_query", reason))
            })
            .transpose()?;
        let mut first_at = HashMap::with_capacity(mailboxes.len());
        for (index, mailbox) in mailboxes.iter().enumerate() {
            let at = || format!("mailboxes[{index}].upn");
            if mailbox.upn.trim().is_empty() {
                return Err(BulkError::invalid(at(), "must not be empty"));
            }
            if let Some(first) = first_at.insert(mailbox.upn.to_lowercase(), index) {
                return Err(BulkError::invalid(at(), format!("also given at mailboxes[{first}]")));
            }
        }
        let built: Vec<store::Mailbox> = mailboxes
            .iter()
            .map(|spec| {
                let mut mailbox = store::Mailbox::new();
                for message in &spec.messages {
                    mailbox.add_message(message.folder, message.seed.clone());
                }
                mailbox
            })
            .collect();
        self.store.with(|state| {
            if let Some(index) = mailboxes.iter().position(|spec| state.resolve(&spec.upn).is_some()) {
                return Err(BulkError::invalid(format!("mailboxes[{index}].upn"), "already exists"));
            }
            Ok(mailboxes
                .iter()
                .zip(built)
                .map(|(spec, mailbox)| {
                    let id = state.insert_mailbox(&spec.upn, mailbox);
                    let refresh_token = state.issue_refresh_token(&id);
                    let connected = connect.map(|(_, base)| {
                        let lifetime = self.store.config.access_token_lifetime;
                        let delta_links = delta_options
                            .iter()
                            .flat_map(|options| {
                                [Folder::Inbox, Folder::SentItems].map(|folder| (folder, options.clone()))
                            })
                            .filter_map(|(folder, options)| {
                                let link = delta::delta_link_after_first_round(
                                    state,
                                    &self.store.config,
                                    &id,
                                    &spec.upn,
                                    folder,
                                    options,
                                    base,
                                )?;
                                Some((folder.well_known_name(), link))
                            })
                            .collect();
                        ConnectedMailbox {
                            access_token: state.issue_access_token(&id, lifetime),
                            expires_in: lifetime.as_secs().max(1),
                            delta_links,
                        }
                    });
                    CreatedMailbox {
                        upn: spec.upn.clone(),
                        id,
                        refresh_token,
                        connected,
                    }
                })
                .collect())
        })
    }

    /// The mailbox's id (the other way than its UPN to name it in a path).
    pub fn mailbox_id(&self, mailbox: &str) -> Option<String> {
        self.store.with(|state| state.resolve(mailbox))
    }

    /// Issues another refresh token for the mailbox.
    pub fn issue_refresh_token(&self, mailbox: &str) -> Result<String, SeedError> {
        self.store.with(|state| {
            let id = state.resolve_or_error(mailbox)?;
            Ok(state.issue_refresh_token(&id))
        })
    }

    /// Revokes a refresh token: refreshing with it answers `invalid_grant`
    /// (AADSTS50173).
    pub fn revoke_refresh_token(&self, token: &str) {
        self.store.with(|state| state.revoke_refresh_token(token));
    }

    /// Switches the strict mode of refresh token rotation on or off: with it,
    /// a refresh revokes the refresh token it was given (`invalid_grant`
    /// AADSTS50173 from then on); without it (Microsoft's behaviour) the old
    /// token stays valid. Overrides [`GraphConfig::revoke_rotated_refresh_tokens`].
    pub fn set_revoke_rotated_refresh_tokens(&self, revoke: bool) {
        self.store
            .with(|state| state.revoke_rotated_refresh_tokens = Some(revoke));
    }

    /// Whether a refresh revokes the refresh token it was given now.
    pub fn revokes_rotated_refresh_tokens(&self) -> bool {
        self.store
            .with(|state| state.revokes_rotated_refresh_tokens(&self.store.config))
    }

    /// Ends every access token of the mailbox: they answer `401
    /// InvalidAuthenticationToken`.
    pub fn expire_sessions(&self, mailbox: &str) -> Result<(), SeedError> {
        self.store.with(|state| {
            let id = state.resolve_or_error(mailbox)?;
            state.expire_sessions(&id);
            Ok(())
        })
    }

    /// Invalidates every delta and skip token of the mailbox issued so far:
    /// they answer `410 Gone` (`syncStateNotFound`).
    pub fn expire_delta_tokens(&self, mailbox: &str) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| mailbox.delta_generation += 1)
    }

    /// Puts a message in `folder` as if received (or sent) now, and returns
    /// its immutable id.
    pub fn add_message(&self, mailbox: &str, folder: Folder, seed: MessageSeed) -> Result<String, SeedError> {
        let id = self.with_mailbox(mailbox, |mailbox| mailbox.add_message(folder, seed))?;
        self.notify(mailbox, &id, ChangeType::Created);
        Ok(id)
    }

    /// Changes a message's subject, which makes it a change for delta.
    pub fn update_message(&self, mailbox: &str, id: &str, subject: &str) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| {
            let seq = mailbox.next_seq();
            let message = mailbox
                .messages
                .get_mut(id)
                .ok_or_else(|| SeedError::UnknownItem(id.to_owned()))?;
            message.subject = subject.to_owned();
            message.changed = seq;
            Ok(())
        })??;
        self.notify(mailbox, id, ChangeType::Updated);
        Ok(())
    }

    /// Deletes a message: delta answers it as `@removed` from then on.
    pub fn delete_message(&self, mailbox: &str, id: &str) -> Result<(), SeedError> {
        let folder = self.with_mailbox(mailbox, |mailbox| {
            mailbox.messages.get(id).map(|message| message.folder)
        })?;
        self.with_mailbox(mailbox, |mailbox| mailbox.remove_message(id))??;
        if let Some(folder) = folder {
            self.notify_in(mailbox, folder, id, ChangeType::Deleted);
        }
        Ok(())
    }

    /// Notifies the subscriptions watching message `id`'s folder of a change.
    fn notify(&self, mailbox: &str, id: &str, change: ChangeType) {
        let folder = self
            .with_mailbox(mailbox, |mailbox| {
                mailbox.messages.get(id).map(|message| message.folder)
            })
            .ok()
            .flatten();
        if let Some(folder) = folder {
            self.notify_in(mailbox, folder, id, change);
        }
    }

    fn notify_in(&self, mailbox: &str, folder: Folder, id: &str, change: ChangeType) {
        self.store.with(|state| {
            if let Some(mailbox) = state.resolve(mailbox) {
                let State {
                    subscriptions, random, ..
                } = state;
                subscriptions.changed(random, &mailbox, folder, change, id);
            }
        });
        subscriptions::send_outbox(&self.store);
    }

    /// How notifications are delivered from now on (see [`Delivery::problem`]
    /// for what is refused over HTTP).
    pub fn set_notification_delivery(&self, delivery: Delivery) {
        self.store.with(|state| state.subscriptions.delivery = delivery);
    }

    /// How notifications are delivered now.
    pub fn notification_delivery(&self) -> Delivery {
        self.store.with(|state| state.subscriptions.delivery)
    }

    /// What happened to the notifications so far.
    pub fn notification_counters(&self) -> NotificationCounters {
        self.store.with(|state| state.subscriptions.counters)
    }

    /// The subscriptions that have not expired, soonest to expire first.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let now = Utc::now();
        let mut live: Vec<SubscriptionInfo> = self.store.with(|state| {
            state
                .subscriptions
                .by_id
                .values()
                .filter(|subscription| subscription.expires_at > now)
                .map(SubscriptionInfo::from)
                .collect()
        });
        live.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.id.cmp(&b.id)));
        live
    }

    /// Sends a lifecycle notification of subscription `id`, as Graph would
    /// (`subscriptionRemoved` also removes it).
    pub fn send_lifecycle_event(&self, id: &str, event: LifecycleEvent) -> Result<(), LifecycleRefusal> {
        self.store.with(|state| state.subscriptions.lifecycle(id, event))?;
        subscriptions::send_outbox(&self.store);
        Ok(())
    }

    /// Makes subscription `id` expire now; `false` if there is none.
    pub fn expire_subscription(&self, id: &str) -> bool {
        self.store.with(|state| match state.subscriptions.by_id.get_mut(id) {
            Some(subscription) => {
                subscription.expires_at = Utc::now();
                true
            }
            None => false,
        })
    }

    /// The mailbox's events as Graph answers them, extended properties
    /// included, in creation order.
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |mailbox| mailbox.events.all())
            .unwrap_or_default()
    }

    /// The mailbox's contacts as Graph answers them, extended properties
    /// included, in creation order.
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |mailbox| mailbox.contacts.all())
            .unwrap_or_default()
    }

    /// Deletes an event, as the user would in Outlook.
    pub fn delete_event(&self, mailbox: &str, id: &str) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| {
            mailbox
                .events
                .remove(id)
                .ok_or_else(|| SeedError::UnknownItem(id.to_owned()))
        })?
    }

    /// Deletes a contact, as the user would in Outlook.
    pub fn delete_contact(&self, mailbox: &str, id: &str) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| {
            mailbox
                .contacts
                .remove(id)
                .ok_or_else(|| SeedError::UnknownItem(id.to_owned()))
        })?
    }

    /// The mailbox's master categories.
    pub fn categories(&self, mailbox: &str) -> Vec<Category> {
        self.with_mailbox(mailbox, |mailbox| mailbox.categories.clone())
            .unwrap_or_default()
    }

    /// The mail folders created in the mailbox (the well-known ones left out).
    pub fn folders(&self, mailbox: &str) -> Vec<MailFolder> {
        self.with_mailbox(mailbox, |mailbox| mailbox.folders.clone())
            .unwrap_or_default()
    }

    /// The manifest id of the add-in installed in the mailbox, if any.
    pub fn addin(&self, mailbox: &str) -> Option<String> {
        self.with_mailbox(mailbox, |mailbox| mailbox.addin.clone())
            .ok()
            .flatten()
    }

    /// Installs (`Some(manifest id)`) or removes (`None`) the add-in, as an
    /// administrator's centralized deployment would.
    pub fn set_addin(&self, mailbox: &str, manifest_id: Option<&str>) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| mailbox.addin = manifest_id.map(str::to_owned))
    }

    /// The next `times` calls of the mailbox that `fault` applies to answer
    /// with it.
    pub fn inject_fault(&self, mailbox: &str, fault: Fault, times: u32) -> Result<(), SeedError> {
        self.arm(mailbox, fault, None, times)
    }

    /// The next `times` calls of the mailbox to `endpoint` answer with `fault`.
    pub fn inject_fault_on(
        &self,
        mailbox: &str,
        endpoint: Endpoint,
        fault: Fault,
        times: u32,
    ) -> Result<(), SeedError> {
        self.arm(mailbox, fault, Some(endpoint), times)
    }

    fn arm(&self, mailbox: &str, fault: Fault, endpoint: Option<Endpoint>, times: u32) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| mailbox.faults.arm(fault, endpoint, times))
    }

    /// Each call of the mailbox that `fault` applies to answers with it with
    /// `probability` (0 disarms it), after any one-shot fault.
    pub fn set_fault_rate(&self, mailbox: &str, fault: Fault, probability: f64) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| mailbox.faults.set_rate(fault, probability))
    }

    /// Disarms every fault of the mailbox, rates included.
    pub fn clear_faults(&self, mailbox: &str) -> Result<(), SeedError> {
        self.with_mailbox(mailbox, |mailbox| mailbox.faults.clear())
    }

    /// Every API call (each inner request of a batch too) and every refresh
    /// waits `base` plus a uniformly random part of `jitter` before it is
    /// answered, holding its mailbox's concurrency slot meanwhile.
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.store.with(|state| state.latency = Latency { base, jitter });
    }

    /// What the mailbox saw so far.
    pub fn counters(&self, mailbox: &str) -> Counters {
        self.with_mailbox(mailbox, |mailbox| mailbox.counters.clone())
            .unwrap_or_default()
    }

    /// Calls no mailbox could be told from (unknown tokens, bad requests).
    pub fn unattributed_counters(&self) -> Counters {
        self.store.with(|state| state.unattributed.clone())
    }

    fn with_mailbox<T>(&self, mailbox: &str, act: impl FnOnce(&mut store::Mailbox) -> T) -> Result<T, SeedError> {
        self.store.with(|state| {
            let id = state.resolve_or_error(mailbox)?;
            state
                .mailboxes
                .get_mut(&id)
                .map(act)
                .ok_or_else(|| SeedError::UnknownMailbox(mailbox.to_owned()))
        })
    }
}
