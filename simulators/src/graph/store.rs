//! The simulator's state, in memory behind one mutex: mailboxes with their
//! messages (and a change sequence delta reads), events, contacts, categories,
//! folders, add-in, counters, faults and limits; refresh and access tokens;
//! the delta and skip tokens handed out.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::{
    Category, Counters, Endpoint, Folder, GraphConfig, MailFolder, MessageSeed, Recipient, SeedError,
    delta::{DeltaToken, SkipToken},
    faults::Faults,
    items::{Items, Kind},
    limits::MailboxLimits,
    subscriptions::Subscriptions,
};
use crate::shared::{Issued, Latency, Random};

/// The state and the configuration it runs under.
pub(crate) type Store = crate::shared::Store<GraphConfig, State>;

/// A message as the mailbox keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// The immutable id (`Prefer: IdType="ImmutableId"`).
    pub id: String,
    pub folder: Folder,
    pub internet_message_id: String,
    pub subject: String,
    pub from: Recipient,
    pub to: Vec<Recipient>,
    pub cc: Vec<Recipient>,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub body: String,
    /// The mailbox's change sequence when it last changed.
    pub changed: u64,
    /// The change sequence when it arrived: the order messages received at
    /// the same instant list in, so a listing never depends on chance.
    pub arrived: u64,
}

impl Message {
    pub(crate) fn new(id: String, folder: Folder, seed: MessageSeed, seq: u64) -> Self {
        Self {
            internet_message_id: format!("<{}@simulated.example>", uuid::Uuid::new_v4().simple()),
            id,
            folder,
            subject: seed.subject,
            from: seed.from,
            to: seed.to,
            cc: seed.cc,
            sent_at: seed.sent_at,
            received_at: seed.sent_at,
            body: seed.body,
            changed: seq,
            arrived: seq,
        }
    }
}

/// A message deleted from a folder, which delta answers as `@removed`.
#[derive(Debug, Clone)]
pub(crate) struct Removal {
    pub id: String,
    pub folder: Folder,
    pub seq: u64,
}

/// One simulated mailbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    pub id: String,
    /// The ids of the well-known folders.
    pub inbox_id: String,
    pub sent_items_id: String,
    pub messages: BTreeMap<String, Message>,
    pub removals: Vec<Removal>,
    /// The change sequence: every change to a message takes the next number.
    pub seq: u64,
    /// Bumped to invalidate every delta and skip token issued before.
    pub delta_generation: u64,
    pub events: Items,
    pub contacts: Items,
    pub categories: Vec<Category>,
    pub folders: Vec<MailFolder>,
    pub addin: Option<String>,
    pub counters: Counters,
    pub faults: Faults,
    pub limits: MailboxLimits,
}

impl Mailbox {
    pub(crate) fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            inbox_id: format!("AQMkAD{}", uuid::Uuid::new_v4().simple()),
            sent_items_id: format!("AQMkAD{}", uuid::Uuid::new_v4().simple()),
            messages: BTreeMap::new(),
            removals: Vec::new(),
            seq: 0,
            delta_generation: 0,
            events: Items::new(Kind::Event),
            contacts: Items::new(Kind::Contact),
            categories: Vec::new(),
            folders: Vec::new(),
            addin: None,
            counters: Counters::default(),
            faults: Faults::default(),
            limits: MailboxLimits::default(),
        }
    }

    /// Puts a message in `folder` as if received (or sent) now, and returns
    /// its immutable id.
    pub(crate) fn add_message(&mut self, folder: Folder, seed: MessageSeed) -> String {
        let id = format!("AAkALg{}", uuid::Uuid::new_v4().simple());
        let seq = self.next_seq();
        self.messages
            .insert(id.clone(), Message::new(id.clone(), folder, seed, seq));
        id
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn remove_message(&mut self, id: &str) -> Result<(), SeedError> {
        let message = self
            .messages
            .remove(id)
            .ok_or_else(|| SeedError::UnknownItem(id.to_owned()))?;
        let seq = self.next_seq();
        self.removals.push(Removal {
            id: message.id,
            folder: message.folder,
            seq,
        });
        Ok(())
    }

    /// The well-known folder `name_or_id` names, by well-known name or id.
    pub(crate) fn well_known(&self, name_or_id: &str) -> Option<Folder> {
        if name_or_id.eq_ignore_ascii_case("inbox") || name_or_id == self.inbox_id {
            Some(Folder::Inbox)
        } else if name_or_id.eq_ignore_ascii_case("sentitems") || name_or_id == self.sent_items_id {
            Some(Folder::SentItems)
        } else {
            None
        }
    }

    pub(crate) fn folder_id(&self, folder: Folder) -> &str {
        match folder {
            Folder::Inbox => &self.inbox_id,
            Folder::SentItems => &self.sent_items_id,
        }
    }

    pub(crate) fn count(&mut self, endpoint: Endpoint) {
        *self.counters.calls.entry(endpoint).or_default() += 1;
    }
}

/// A live access token.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub mailbox: String,
    pub expires: Instant,
}

/// Why an access token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    Missing,
    Unknown,
    Expired,
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// By mailbox id.
    pub mailboxes: BTreeMap<String, Mailbox>,
    /// Lowercase UPN to mailbox id.
    upns: HashMap<String, String>,
    /// Live refresh tokens to mailbox id.
    pub refresh_tokens: HashMap<String, String>,
    /// Refresh tokens revoked or rotated away, to the mailbox they were for.
    pub revoked_refresh_tokens: HashMap<String, String>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub delta_tokens: Issued<DeltaToken>,
    pub skip_tokens: Issued<SkipToken>,
    pub unattributed: Counters,
    /// The strict mode of rotation as the control API set it, over the
    /// configuration's.
    pub revoke_rotated_refresh_tokens: Option<bool>,
    pub latency: Latency,
    pub random: Random,
    pub subscriptions: Subscriptions,
}

impl State {
    /// The id of the mailbox `name` names, by id or UPN (case-insensitive).
    pub(crate) fn resolve(&self, name: &str) -> Option<String> {
        if self.mailboxes.contains_key(name) {
            return Some(name.to_owned());
        }
        self.upns.get(&name.to_lowercase()).cloned()
    }

    pub(crate) fn resolve_or_error(&self, name: &str) -> Result<String, SeedError> {
        self.resolve(name)
            .ok_or_else(|| SeedError::UnknownMailbox(name.to_owned()))
    }

    pub(crate) fn ensure_mailbox(&mut self, upn: &str) -> String {
        if let Some(id) = self.resolve(upn) {
            return id;
        }
        self.insert_mailbox(upn, Mailbox::new())
    }

    /// Adds `mailbox` under `upn`, which no mailbox has yet, and returns its id.
    pub(crate) fn insert_mailbox(&mut self, upn: &str, mailbox: Mailbox) -> String {
        let id = mailbox.id.clone();
        self.upns.insert(upn.to_lowercase(), id.clone());
        self.mailboxes.insert(id.clone(), mailbox);
        id
    }

    pub(crate) fn issue_refresh_token(&mut self, mailbox: &str) -> String {
        let token = format!(
            "0.AXEA{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.refresh_tokens.insert(token.clone(), mailbox.to_owned());
        token
    }

    /// Issues an access token of `mailbox` that lives `lifetime`.
    pub(crate) fn issue_access_token(&mut self, mailbox: &str, lifetime: Duration) -> String {
        let token = format!(
            "EwBwA8l6BAAU{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.access_tokens.insert(
            token.clone(),
            AccessToken {
                mailbox: mailbox.to_owned(),
                expires: Instant::now() + lifetime,
            },
        );
        token
    }

    pub(crate) fn revoke_refresh_token(&mut self, token: &str) {
        if let Some(mailbox) = self.refresh_tokens.remove(token) {
            self.revoked_refresh_tokens.insert(token.to_owned(), mailbox);
        }
    }

    /// Whether a refresh revokes the refresh token it was given: the control
    /// API's choice, else the configuration's.
    pub(crate) fn revokes_rotated_refresh_tokens(&self, config: &GraphConfig) -> bool {
        self.revoke_rotated_refresh_tokens
            .unwrap_or(config.revoke_rotated_refresh_tokens)
    }

    pub(crate) fn expire_sessions(&mut self, mailbox: &str) {
        self.access_tokens.retain(|_, token| token.mailbox != mailbox);
    }

    /// The mailbox a bearer token is good for.
    pub(crate) fn authenticate(&self, token: Option<&str>, now: Instant) -> Result<String, TokenRefusal> {
        let token = token.filter(|token| !token.is_empty()).ok_or(TokenRefusal::Missing)?;
        let access = self.access_tokens.get(token).ok_or(TokenRefusal::Unknown)?;
        if now >= access.expires {
            return Err(TokenRefusal::Expired);
        }
        Ok(access.mailbox.clone())
    }

    /// Counts a call of `mailbox` (or an unattributed one) to `endpoint`.
    pub(crate) fn count(&mut self, mailbox: Option<&str>, endpoint: Endpoint) {
        match mailbox.and_then(|id| self.mailboxes.get_mut(id)) {
            Some(mailbox) => mailbox.count(endpoint),
            None => *self.unattributed.calls.entry(endpoint).or_default() += 1,
        }
    }
}
