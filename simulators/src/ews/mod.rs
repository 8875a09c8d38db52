//! The Exchange Web Services simulator: SOAP 1.1 on `POST /EWS/Exchange.asmx`
//! with Basic authentication, Direct Logon (an account opens its own mailbox)
//! and Impersonation (a service account with the ApplicationImpersonation
//! role opens any mailbox, named in the `ExchangeImpersonation` header and in
//! `X-AnchorMailbox`), `SyncFolderItems` with opaque sync states, the item,
//! folder, user configuration and add-in operations the connector uses, and
//! Exchange's throttling (`EWSMaxConcurrency` per account, a request budget
//! answering `ErrorServerBusy` with `BackOffMilliseconds`), as
//! `shared/reference/providers.md` describes them.
//!
//! A test drives it through [`EwsSimulator`]: it creates accounts, mailboxes
//! and service accounts, puts messages in folders, arms faults, sets latency
//! and reads mailbox content and counters back. The same is offered over HTTP
//! under `/_control/ews` (see `simulators/docs/ews.md`).

mod control;
mod faults;
mod operations;
mod routes;
mod store;
mod xml;

use std::{collections::BTreeMap, io, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use faults::Fault;

use crate::{Server, shared::Latency};
use store::Store;

/// How the simulated Exchange behaves.
#[derive(Debug, Clone)]
pub struct EwsConfig {
    /// Concurrent requests per authenticated account (`EWSMaxConcurrency`:
    /// 27 by default, 10 on Exchange 2010); past it a call answers
    /// `ErrorExceededConnectionCount`. Under impersonation the service account
    /// is the one counted.
    pub max_concurrency: u32,
    /// The `BackOffMilliseconds` an `ErrorServerBusy` answer carries when the
    /// request budget is spent.
    pub busy_backoff_ms: u64,
    /// Requests per account in any sliding minute before the server answers
    /// `ErrorServerBusy`: a simple stand-in for Exchange's time-based budget.
    pub requests_per_minute: u32,
    /// How long a sync state stays valid after it was handed out; an older
    /// one answers `ErrorInvalidSyncStateData`.
    pub sync_state_lifetime: Duration,
}

impl Default for EwsConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 27,
            busy_backoff_ms: 5000,
            requests_per_minute: 600,
            sync_state_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// The largest `MaxChangesReturned` `SyncFolderItems` takes.
pub const MAX_CHANGES_RETURNED: u32 = 512;

/// The EWS operations the simulator counts calls to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `SyncFolderItems`.
    SyncFolderItems,
    /// `GetItem`.
    GetItem,
    /// `CreateItem`.
    CreateItem,
    /// `UpdateItem`.
    UpdateItem,
    /// `DeleteItem`.
    DeleteItem,
    /// `GetFolder`.
    GetFolder,
    /// `FindFolder`.
    FindFolder,
    /// `CreateFolder`.
    CreateFolder,
    /// `DeleteFolder`.
    DeleteFolder,
    /// `GetUserConfiguration`.
    GetUserConfiguration,
    /// `CreateUserConfiguration`.
    CreateUserConfiguration,
    /// `UpdateUserConfiguration`.
    UpdateUserConfiguration,
    /// `DeleteUserConfiguration`.
    DeleteUserConfiguration,
    /// `InstallApp`.
    InstallApp,
    /// `UninstallApp`.
    UninstallApp,
    /// `GetAppManifests`.
    GetAppManifests,
    /// Anything else (answered with the SOAP fault `ErrorInvalidRequest`) or a
    /// body that is not a SOAP request.
    Unknown,
}

const OPERATIONS: [Operation; 16] = [
    Operation::SyncFolderItems,
    Operation::GetItem,
    Operation::CreateItem,
    Operation::UpdateItem,
    Operation::DeleteItem,
    Operation::GetFolder,
    Operation::FindFolder,
    Operation::CreateFolder,
    Operation::DeleteFolder,
    Operation::GetUserConfiguration,
    Operation::CreateUserConfiguration,
    Operation::UpdateUserConfiguration,
    Operation::DeleteUserConfiguration,
    Operation::InstallApp,
    Operation::UninstallApp,
    Operation::GetAppManifests,
];

impl Operation {
    /// The operation's element name (`Unknown` for the rest).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SyncFolderItems => "SyncFolderItems",
            Operation::GetItem => "GetItem",
            Operation::CreateItem => "CreateItem",
            Operation::UpdateItem => "UpdateItem",
            Operation::DeleteItem => "DeleteItem",
            Operation::GetFolder => "GetFolder",
            Operation::FindFolder => "FindFolder",
            Operation::CreateFolder => "CreateFolder",
            Operation::DeleteFolder => "DeleteFolder",
            Operation::GetUserConfiguration => "GetUserConfiguration",
            Operation::CreateUserConfiguration => "CreateUserConfiguration",
            Operation::UpdateUserConfiguration => "UpdateUserConfiguration",
            Operation::DeleteUserConfiguration => "DeleteUserConfiguration",
            Operation::InstallApp => "InstallApp",
            Operation::UninstallApp => "UninstallApp",
            Operation::GetAppManifests => "GetAppManifests",
            Operation::Unknown => "Unknown",
        }
    }

    /// The operation an element of a SOAP body names.
    pub fn from_name(name: &str) -> Self {
        OPERATIONS
            .into_iter()
            .find(|operation| operation.as_str() == name)
            .unwrap_or(Operation::Unknown)
    }
}

/// What an account (or the simulator, for calls no account could be told
/// from) saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls received, by operation (refused ones included).
    pub calls: BTreeMap<Operation, u64>,
    /// Calls answered `ErrorServerBusy` or `ErrorExceededConnectionCount` by
    /// the limits (armed faults count under `faults`).
    pub throttled: u64,
    /// Calls answered by an armed fault.
    pub faults: u64,
}

impl Counters {
    /// Calls received by `operation`.
    pub fn calls_to(&self, operation: Operation) -> u64 {
        self.calls.get(&operation).copied().unwrap_or_default()
    }

    /// Calls received in all.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// A mail folder a message can be put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFolder {
    /// `inbox`.
    Inbox,
    /// `sentitems`.
    SentItems,
}

impl MessageFolder {
    /// The `DistinguishedFolderId` of the folder.
    pub fn distinguished_id(self) -> &'static str {
        match self {
            MessageFolder::Inbox => "inbox",
            MessageFolder::SentItems => "sentitems",
        }
    }
}

/// An email address with its display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The SMTP address.
    pub address: String,
    /// The display name (empty: none).
    #[serde(default)]
    pub name: String,
}

impl Address {
    /// An address with a display name.
    pub fn new(address: &str, name: &str) -> Self {
        Self {
            address: address.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// A message put in a mailbox as if it had been received or sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSeed {
    /// The subject.
    #[serde(default)]
    pub subject: String,
    /// The sender.
    #[serde(default)]
    pub from: Option<Address>,
    /// The `To` recipients.
    #[serde(default)]
    pub to: Vec<Address>,
    /// The `Cc` recipients.
    #[serde(default)]
    pub cc: Vec<Address>,
    /// The body, as plain text.
    #[serde(default)]
    pub body: String,
    /// The `Message-ID`, when there is one.
    #[serde(default)]
    pub internet_message_id: Option<String>,
    /// When it was sent.
    pub sent: DateTime<Utc>,
    /// When it arrived in the mailbox.
    pub received: DateTime<Utc>,
}

/// A calendar item as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EwsEvent {
    /// Its item id.
    pub id: String,
    /// The subject.
    pub subject: String,
    /// The body, as plain text.
    pub body: String,
    /// The location.
    pub location: String,
    /// The start.
    pub start: DateTime<Utc>,
    /// The end.
    pub end: DateTime<Utc>,
    /// Its categories.
    pub categories: Vec<String>,
    /// Its extended properties, by property name (or tag).
    pub extended_properties: BTreeMap<String, String>,
}

/// A contact as the simulator holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EwsContact {
    /// Its item id.
    pub id: String,
    /// `GivenName`.
    pub given_name: String,
    /// `Surname`.
    pub surname: String,
    /// `CompanyName`.
    pub company: String,
    /// `EmailAddresses[EmailAddress1]`.
    pub email: String,
    /// `PhoneNumbers[BusinessPhone]`.
    pub phone: String,
    /// `FileAs`.
    pub file_as: String,
    /// Its categories.
    pub categories: Vec<String>,
    /// Its extended properties, by property name (or tag).
    pub extended_properties: BTreeMap<String, String>,
}

/// A folder of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EwsFolder {
    /// Its folder id.
    pub id: String,
    /// Its distinguished name (`inbox`, `msgfolderroot`...), if it has one.
    pub distinguished: Option<String>,
    /// The display name.
    pub display_name: String,
    /// The parent folder's id (none for the mailbox root).
    pub parent: Option<String>,
}

/// Why the simulator's state could not be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// No such account.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// No such mailbox.
    #[error("unknown mailbox {0}")]
    UnknownMailbox(String),
    /// No such item in the mailbox.
    #[error("unknown item {0}")]
    UnknownItem(String),
    /// The name or address is taken.
    #[error("{0} already exists")]
    Exists(String),
}

/// What [`EwsSimulator::start_local`] starts.
pub struct LocalEws {
    /// The simulator, for faults, counters and more accounts.
    pub simulator: EwsSimulator,
    /// Where it listens.
    pub server: Server,
    /// An account whose own mailbox is [`LocalEws::smtp`] (Direct Logon).
    pub account: String,
    /// Its password.
    pub password: String,
    /// The account's mailbox.
    pub smtp: String,
}

impl LocalEws {
    /// The EWS endpoint's URL.
    pub fn ews_url(&self) -> String {
        format!("{}{}", self.server.base_url(), EWS_PATH)
    }
}

/// Where Exchange serves EWS.
pub const EWS_PATH: &str = "/EWS/Exchange.asmx";

/// A handle on one simulated Exchange organisation: serve it, then shape and
/// observe its state. Clones share the state.
#[derive(Debug, Clone)]
pub struct EwsSimulator {
    store: Arc<Store>,
}

impl EwsSimulator {
    crate::shared::http_handle!(EwsConfig, "accounts");

    /// A simulator on a free loopback port with one account and its own
    /// mailbox, what a test starts with; it stops when `shutdown` is cancelled.
    pub async fn start_local(config: EwsConfig, shutdown: CancellationToken) -> io::Result<LocalEws> {
        let simulator = Self::new(config);
        let server = simulator.serve(crate::LOOPBACK, shutdown).await?;
        let account = "alice@contoso.test".to_owned();
        let password = format!("Pw-{}", uuid::Uuid::new_v4().simple());
        let created = simulator
            .create_account(&account, &password)
            .and_then(|()| simulator.create_mailbox(&account, &account));
        created.map_err(io::Error::other)?;
        Ok(LocalEws {
            simulator,
            server,
            smtp: account.clone(),
            account,
            password,
        })
    }

    /// Creates an account that logs on with `password` (Direct Logon to the
    /// mailbox it owns).
    pub fn create_account(&self, account: &str, password: &str) -> Result<(), SetupError> {
        self.store.with(|state| state.create_account(account, password, false))
    }

    /// Creates a service account; with `impersonation_role` it holds the
    /// ApplicationImpersonation role and may open any mailbox.
    pub fn create_service_account(
        &self,
        name: &str,
        password: &str,
        impersonation_role: bool,
    ) -> Result<(), SetupError> {
        self.store
            .with(|state| state.create_account(name, password, impersonation_role))
    }

    /// Grants or removes the ApplicationImpersonation role of an account.
    pub fn set_impersonation_role(&self, account: &str, granted: bool) -> Result<(), SetupError> {
        self.store.with(|state| {
            let account = state.account_mut(account)?;
            account.impersonation_role = granted;
            Ok(())
        })
    }

    /// Creates the mailbox `smtp`, owned by `owner` (the account whose Direct
    /// Logon opens it; an account owns one mailbox at most), with the
    /// distinguished folders and the default category list.
    pub fn create_mailbox(&self, smtp: &str, owner: &str) -> Result<(), SetupError> {
        self.store.with(|state| state.create_mailbox(smtp, owner))
    }

    /// Puts a message in `folder` of `smtp`, as if received or sent, and
    /// returns its item id.
    pub fn add_message(&self, smtp: &str, folder: MessageFolder, seed: MessageSeed) -> Result<String, SetupError> {
        self.store
            .with(|state| state.add_message(smtp, folder.distinguished_id(), seed))
    }

    /// Replaces a message's content, as an edit or a move back and forth
    /// would: the next sync reports it as updated.
    pub fn update_message(&self, smtp: &str, id: &str, seed: MessageSeed) -> Result<(), SetupError> {
        self.store.with(|state| state.update_message(smtp, id, seed))
    }

    /// Marks a message read or unread: the next sync reports a
    /// `ReadFlagChange`.
    pub fn set_read(&self, smtp: &str, id: &str, read: bool) -> Result<(), SetupError> {
        self.store.with(|state| state.set_read(smtp, id, read))
    }

    /// Deletes any item (message, event, contact) of `smtp`.
    pub fn delete_item(&self, smtp: &str, id: &str) -> Result<(), SetupError> {
        self.store.with(|state| state.delete_item(smtp, id))
    }

    /// Deletes a message, as [`EwsSimulator::delete_item`] does.
    pub fn delete_message(&self, smtp: &str, id: &str) -> Result<(), SetupError> {
        self.delete_item(smtp, id)
    }

    /// The calendar items of `smtp`, in creation order.
    pub fn events(&self, smtp: &str) -> Vec<EwsEvent> {
        self.store.with(|state| state.events(smtp))
    }

    /// The contacts of `smtp`, in creation order.
    pub fn contacts(&self, smtp: &str) -> Vec<EwsContact> {
        self.store.with(|state| state.contacts(smtp))
    }

    /// The folders of `smtp`, distinguished ones first.
    pub fn folders(&self, smtp: &str) -> Vec<EwsFolder> {
        self.store.with(|state| state.folders(smtp))
    }

    /// The names in the master category list of `smtp` (the `CategoryList`
    /// user configuration of its calendar).
    pub fn categories(&self, smtp: &str) -> Vec<String> {
        self.store.with(|state| state.categories(smtp))
    }

    /// The ids of the add-ins installed in `smtp`.
    pub fn apps(&self, smtp: &str) -> Vec<String> {
        self.store.with(|state| state.apps(smtp))
    }

    /// Makes every sync state handed out for `smtp` invalid: the next
    /// `SyncFolderItems` with one answers `ErrorInvalidSyncStateData`.
    pub fn invalidate_sync_states(&self, smtp: &str) {
        self.store.with(|state| state.invalidate_sync_states(smtp));
    }

    /// The next `times` calls made by the account `target`, or to the mailbox
    /// `target`, that `fault` applies to answer with it.
    pub fn inject_fault(&self, target: &str, fault: Fault, times: u32) {
        self.store.with(|state| {
            state
                .faults
                .entry(target.to_lowercase())
                .or_default()
                .arm(fault, None, times)
        });
    }

    /// Each call by or to `target` answers with `fault` with `probability`
    /// (0 disarms it).
    pub fn set_fault_rate(&self, target: &str, fault: Fault, probability: f64) {
        self.store.with(|state| {
            state
                .faults
                .entry(target.to_lowercase())
                .or_default()
                .set_rate(fault, probability);
        });
    }

    /// Disarms every fault of `target`.
    pub fn clear_faults(&self, target: &str) {
        self.store.with(|state| {
            if let Some(faults) = state.faults.get_mut(&target.to_lowercase()) {
                faults.clear();
            }
        });
    }

    /// Every call waits `base` plus a uniform random share of `jitter` before
    /// it is answered (while it counts toward the account's concurrency).
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.store.with(|state| state.latency = Latency { base, jitter });
    }

    /// What the account `account` saw so far.
    pub fn counters(&self, account: &str) -> Counters {
        self.store.with(|state| {
            state
                .accounts
                .get(&account.to_lowercase())
                .map(|account| account.counters.clone())
                .unwrap_or_default()
        })
    }

    /// Calls no account could be told from (missing or wrong credentials).
    pub fn unattributed_counters(&self) -> Counters {
        self.store.with(|state| state.unattributed.clone())
    }
}
