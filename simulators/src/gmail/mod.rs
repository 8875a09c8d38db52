//! The Gmail simulator: Google's OAuth2 token endpoint (refresh grant), the
//! Gmail API subset the connector uses (`getProfile`, `messages.list` with
//! `q=after:` and paging, `messages.get` with `format=metadata`,
//! `history.list` with paging and stale start ids, labels), the batch endpoint
//! (`multipart/mixed` of `application/http` parts), quota units per user and
//! per project per minute, the per-user concurrency limit and Gmail's error
//! bodies, as `shared/reference/providers.md` describes them. One server
//! simulates many mailboxes, keyed by address; an access token is bound to one
//! of them (`users/me`).
//!
//! Gmail add-ins are installed by the Workspace admin, not through the Gmail
//! API: `GET/PUT/DELETE /gmail/v1/users/me/syncfleetAddin` is the simulator's
//! own stand-in for the mailbox's add-in state (see `simulators/docs/gmail.md`).
//!
//! A test drives it through [`GmailSimulator`]: it creates mailboxes and
//! refresh tokens, adds and deletes messages, expires history, arms faults,
//! sets latency and reads labels, add-in state and counters back.

mod api;
mod batch;
mod control;
mod faults;
mod quota;
mod routes;
mod store;

use std::{
    collections::BTreeMap,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use faults::Fault;

use crate::{
    Server,
    shared::{Latency, Random},
};
use store::{SYSTEM_LABELS, Store};

/// Quota units each method costs (Gmail's published costs by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitCosts {
    /// `users.getProfile`.
    pub get_profile: u64,
    /// `users.messages.list`.
    pub messages_list: u64,
    /// `users.messages.get`.
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

impl Default for UnitCosts {
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

impl UnitCosts {
    /// The units one call to `endpoint` costs (the token endpoint, the batch
    /// envelope and the add-in stand-in cost none; a batch's parts cost their own).
    pub fn of(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::Profile => self.get_profile,
            Endpoint::MessagesList => self.messages_list,
            Endpoint::MessagesGet => self.messages_get,
            Endpoint::HistoryList => self.history_list,
            Endpoint::LabelsList => self.labels_list,
            Endpoint::LabelsCreate => self.labels_create,
            Endpoint::LabelsDelete => self.labels_delete,
            Endpoint::Token | Endpoint::Batch | Endpoint::AddinGet | Endpoint::AddinPut | Endpoint::AddinDelete => 0,
        }
    }
}

/// How the simulated Gmail behaves.
#[derive(Debug, Clone)]
pub struct GmailConfig {
    /// `maxResults` of `messages.list` and `history.list` when the call gives
    /// none (Gmail: 100).
    pub page_size: u32,
    /// The largest `maxResults` taken (Gmail: 500); more answers 400.
    pub max_page_size: u32,
    /// Quota units one user may spend per minute (Gmail: 15,000).
    pub per_user_units_per_minute: u64,
    /// Quota units one project (OAuth client) may spend per minute (Gmail: 1,200,000).
    pub per_project_units_per_minute: u64,
    /// What each method costs.
    pub unit_costs: UnitCosts,
    /// How long history records are kept; a `startHistoryId` older than the
    /// oldest kept record answers 404.
    pub history_retention: Duration,
    /// The most parts one batch takes (Gmail: 100); more answers 400.
    pub max_batch: usize,
    /// Requests one user may have in flight; more answer 429.
    pub max_concurrent_per_user: u32,
    /// How long an access token works.
    pub access_token_lifetime: Duration,
    /// Whether a refresh answers a new refresh token and revokes the old one
    /// (Google does not rotate by default).
    pub rotate_refresh_tokens: bool,
}

impl Default for GmailConfig {
    fn default() -> Self {
        Self {
            page_size: 100,
            max_page_size: 500,
            per_user_units_per_minute: 15_000,
            per_project_units_per_minute: 1_200_000,
            unit_costs: UnitCosts::default(),
            history_retention: Duration::from_secs(7 * 24 * 60 * 60),
            max_batch: 100,
            max_concurrent_per_user: 10,
            access_token_lifetime: Duration::from_secs(3600),
            rotate_refresh_tokens: false,
        }
    }
}

/// The endpoints the simulator counts calls to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /token`.
    Token,
    /// `GET /gmail/v1/users/{user}/profile`.
    Profile,
    /// `GET /gmail/v1/users/{user}/messages`.
    MessagesList,
    /// `GET /gmail/v1/users/{user}/messages/{id}`.
    MessagesGet,
    /// `GET /gmail/v1/users/{user}/history`.
    HistoryList,
    /// `GET /gmail/v1/users/{user}/labels`.
    LabelsList,
    /// `POST /gmail/v1/users/{user}/labels`.
    LabelsCreate,
    /// `DELETE /gmail/v1/users/{user}/labels/{id}`.
    LabelsDelete,
    /// `POST /batch/gmail/v1` (the envelope; each part counts as its own call too).
    Batch,
    /// `GET /gmail/v1/users/{user}/syncfleetAddin` (simulated stand-in).
    AddinGet,
    /// `PUT /gmail/v1/users/{user}/syncfleetAddin` (simulated stand-in).
    AddinPut,
    /// `DELETE /gmail/v1/users/{user}/syncfleetAddin` (simulated stand-in).
    AddinDelete,
}

impl Endpoint {
    /// The endpoint's name in the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Profile => "profile",
            Endpoint::MessagesList => "messages_list",
            Endpoint::MessagesGet => "messages_get",
            Endpoint::HistoryList => "history_list",
            Endpoint::LabelsList => "labels_list",
            Endpoint::LabelsCreate => "labels_create",
            Endpoint::LabelsDelete => "labels_delete",
            Endpoint::Batch => "batch",
            Endpoint::AddinGet => "addin_get",
            Endpoint::AddinPut => "addin_put",
            Endpoint::AddinDelete => "addin_delete",
        }
    }
}

/// What a mailbox (or the simulator, for calls no mailbox could be told
/// from) saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls received, by endpoint (a batch counts once as `Batch` and once
    /// per part under the part's endpoint).
    pub calls: BTreeMap<Endpoint, u64>,
    /// Quota units charged.
    pub units_used: u64,
    /// Calls refused by a quota or the concurrency limit (403
    /// `userRateLimitExceeded`/`rateLimitExceeded`, 429).
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

    pub(crate) fn count(&mut self, endpoint: Endpoint) {
        *self.calls.entry(endpoint).or_default() += 1;
    }
}

/// A message to put in a mailbox, as if it arrived or was sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MessageSeed {
    /// The `From` header, e.g. `Ann Example <ann@example.test>`.
    pub from: String,
    /// The `To` addresses (each may carry a display name).
    #[serde(default)]
    pub to: Vec<String>,
    /// The `Cc` addresses.
    #[serde(default)]
    pub cc: Vec<String>,
    /// The subject.
    #[serde(default)]
    pub subject: String,
    /// The `Date` header and the internal date.
    pub sent_at: DateTime<Utc>,
    /// The start of the body, as plain text (Gmail answers it HTML-escaped).
    #[serde(default)]
    pub snippet: String,
    /// Whether the owner sent it (label `SENT`; else `INBOX` and `UNREAD`).
    #[serde(default)]
    pub sent: bool,
    /// The `Message-ID` header; a fresh one when absent.
    #[serde(default)]
    pub message_id: Option<String>,
}

/// A label of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Label {
    /// The label's id (`INBOX`, `Label_1`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether Gmail owns it (`system`) or the user made it (`user`).
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Why the simulator's handle could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// No such mailbox.
    #[error("unknown mailbox {0}")]
    UnknownMailbox(String),
    /// No such message in the mailbox.
    #[error("unknown message {0}")]
    UnknownMessage(String),
    /// No such label in the mailbox.
    #[error("unknown label {0}")]
    UnknownLabel(String),
}

/// A handle on one simulated Gmail: serve it, then shape and observe its
/// state. Clones share the state.
#[derive(Debug, Clone)]
pub struct GmailSimulator {
    store: Arc<Store>,
}

/// What [`GmailSimulator::start_local`] starts.
pub struct LocalGmail {
    /// The simulator, for messages, faults, counters and more mailboxes.
    pub simulator: GmailSimulator,
    /// Where it listens.
    pub server: Server,
    /// The mailbox created for the test.
    pub email: String,
    /// A refresh token of that mailbox.
    pub refresh_token: String,
}

/// The address of the mailbox [`GmailSimulator::start_local`] creates.
pub const LOCAL_MAILBOX: &str = "owner@gmail.simulated";

impl GmailSimulator {
    crate::shared::http_handle!(GmailConfig, "mailboxes");

    /// A simulator on a free loopback port with one mailbox ([`LOCAL_MAILBOX`])
    /// and a refresh token for it, what a test starts with; it stops when
    /// `shutdown` is cancelled.
    pub async fn start_local(config: GmailConfig, shutdown: CancellationToken) -> io::Result<LocalGmail> {
        let simulator = Self::new(config);
        let server = simulator.serve(crate::LOOPBACK, shutdown).await?;
        let refresh_token = simulator.create_mailbox(LOCAL_MAILBOX);
        Ok(LocalGmail {
            simulator,
            server,
            email: LOCAL_MAILBOX.to_owned(),
            refresh_token,
        })
    }

    /// Creates the mailbox of `email` (keeping it if it exists) and returns a
    /// new refresh token for it, as the user's authorization would.
    pub fn create_mailbox(&self, email: &str) -> String {
        let token = format!("1//0{}", uuid::Uuid::new_v4().simple());
        self.store.with(|state| {
            let key = state.mailbox_or_create(email).email.to_lowercase();
            state.refresh_tokens.insert(token.clone(), key);
        });
        token
    }

    /// Whether the mailbox of `email` exists.
    pub fn has_mailbox(&self, email: &str) -> bool {
        self.store.with(|state| state.mailbox(email).is_some())
    }

    /// Revokes a refresh token: refreshing with it answers `invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.store.with(|state| state.refresh_tokens.remove(token));
    }

    /// Ends every access token of the mailbox: calls with them answer 401.
    pub fn expire_access_tokens(&self, email: &str) {
        let email = email.to_lowercase();
        self.store
            .with(|state| state.access_tokens.retain(|_, token| token.email != email));
    }

    fn with_mailbox<T>(
        &self,
        email: &str,
        act: impl FnOnce(&mut store::Mailbox, &mut Random) -> Result<T, SeedError>,
    ) -> Result<T, SeedError> {
        self.store.with(|state| {
            let store::State { mailboxes, random, .. } = state;
            let mailbox = mailboxes
                .get_mut(&email.to_lowercase())
                .ok_or_else(|| SeedError::UnknownMailbox(email.to_owned()))?;
            act(mailbox, random)
        })
    }

    /// Puts a message in the mailbox (recording `messageAdded`) and returns its id.
    pub fn add_message(&self, email: &str, seed: MessageSeed) -> Result<String, SeedError> {
        self.with_mailbox(email, |mailbox, random| Ok(mailbox.add_message(random, &seed)))
    }

    /// Deletes a message for good (recording `messageDeleted`).
    pub fn delete_message(&self, email: &str, id: &str) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, random| {
            if mailbox.delete_message(random, id) {
                Ok(())
            } else {
                Err(SeedError::UnknownMessage(id.to_owned()))
            }
        })
    }

    /// Puts the label `label_id` on a message (recording `labelAdded`).
    pub fn add_label_to_message(&self, email: &str, id: &str, label_id: &str) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, random| {
            if !mailbox.has_label(label_id) {
                return Err(SeedError::UnknownLabel(label_id.to_owned()));
            }
            if mailbox.add_labels(random, id, &[label_id.to_owned()]) {
                Ok(())
            } else {
                Err(SeedError::UnknownMessage(id.to_owned()))
            }
        })
    }

    /// The ids of the mailbox's messages, newest first.
    pub fn message_ids(&self, email: &str) -> Result<Vec<String>, SeedError> {
        self.with_mailbox(email, |mailbox, _| Ok(api::listed_ids(mailbox)))
    }

    /// The labels of a message.
    pub fn message_labels(&self, email: &str, id: &str) -> Result<Vec<String>, SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox
                .messages
                .get(id)
                .map(|message| message.label_ids.clone())
                .ok_or_else(|| SeedError::UnknownMessage(id.to_owned()))
        })
    }

    /// The mailbox's labels: the system ones, then the user's.
    pub fn labels(&self, email: &str) -> Result<Vec<Label>, SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            let system = SYSTEM_LABELS.iter().map(|id| Label {
                id: (*id).to_owned(),
                name: (*id).to_owned(),
                kind: "system",
            });
            let user = mailbox.labels.iter().map(|label| Label {
                id: label.id.clone(),
                name: label.name.clone(),
                kind: "user",
            });
            Ok(system.chain(user).collect())
        })
    }

    /// The id of the add-in installed in the mailbox, if one is.
    pub fn addin(&self, email: &str) -> Result<Option<String>, SeedError> {
        self.with_mailbox(email, |mailbox, _| Ok(mailbox.addin.clone()))
    }

    /// Installs (`Some(id)`) or removes (`None`) the add-in, as the Workspace
    /// admin would.
    pub fn set_addin(&self, email: &str, addin: Option<String>) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.addin = addin;
            Ok(())
        })
    }

    /// The mailbox's current history id.
    pub fn history_id(&self, email: &str) -> Result<u64, SeedError> {
        self.with_mailbox(email, |mailbox, _| Ok(mailbox.history_id))
    }

    /// Drops the mailbox's history: every start id older than the current
    /// history id answers 404 from now on.
    pub fn expire_history(&self, email: &str) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.expire_history();
            Ok(())
        })
    }

    /// Quota units the mailbox spent in the last minute.
    pub fn units_in_last_minute(&self, email: &str) -> Result<u64, SeedError> {
        self.with_mailbox(email, |mailbox, _| Ok(mailbox.quota.used(Instant::now())))
    }

    /// Sets the units counted in the mailbox's last minute, as if spent now.
    pub fn set_units_in_last_minute(&self, email: &str, units: u64) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.quota.set_used(units, Instant::now());
            Ok(())
        })
    }

    /// The next `times` calls of the mailbox that `fault` applies to answer with it.
    pub fn inject_fault(&self, email: &str, fault: Fault, times: u32) -> Result<(), SeedError> {
        self.arm(email, fault, None, times)
    }

    /// The next `times` calls of the mailbox to `endpoint` answer with `fault`.
    pub fn inject_fault_on(&self, email: &str, endpoint: Endpoint, fault: Fault, times: u32) -> Result<(), SeedError> {
        self.arm(email, fault, Some(endpoint), times)
    }

    fn arm(&self, email: &str, fault: Fault, endpoint: Option<Endpoint>, times: u32) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.faults.arm(fault, endpoint, times);
            Ok(())
        })
    }

    /// Each call of the mailbox that `fault` applies to answers with it with
    /// `probability` (0 disarms the rate).
    pub fn set_fault_rate(&self, email: &str, fault: Fault, probability: f64) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.faults.set_rate(fault, probability);
            Ok(())
        })
    }

    /// Disarms every fault of the mailbox, one-shot and by rate.
    pub fn clear_faults(&self, email: &str) -> Result<(), SeedError> {
        self.with_mailbox(email, |mailbox, _| {
            mailbox.faults.clear();
            Ok(())
        })
    }

    /// Every call waits `base` plus a uniform random part of `jitter` before
    /// it is answered.
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.store.with(|state| state.latency = Latency { base, jitter });
    }

    /// What the mailbox saw so far.
    pub fn counters(&self, email: &str) -> Result<Counters, SeedError> {
        self.with_mailbox(email, |mailbox, _| Ok(mailbox.counters.clone()))
    }

    /// Calls no mailbox could be told from (unknown tokens and refresh
    /// tokens, unknown paths).
    pub fn unattributed_counters(&self) -> Counters {
        self.store.with(|state| state.unattributed.clone())
    }
}
