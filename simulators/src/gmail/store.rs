//! The simulator's state, in memory behind one mutex: mailboxes with their
//! messages, history, labels, add-in state, quota window, counters and armed
//! faults; refresh and access tokens; the projects' quota windows. What a
//! change does to a mailbox (a new history id, a history record) lives here so
//! the API and the handle cannot disagree on it.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::{Counters, GmailConfig, MessageSeed, faults::Faults, quota::UnitWindow};
use crate::shared::{Latency, Random};

/// Gmail's system labels, which every mailbox has and none can delete.
pub(crate) const SYSTEM_LABELS: &[&str] = &[
    "INBOX",
    "SENT",
    "DRAFT",
    "SPAM",
    "TRASH",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
];

/// A message in a mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub id: String,
    pub thread_id: String,
    pub label_ids: Vec<String>,
    /// The RFC 5322 headers, in order.
    pub headers: Vec<(String, String)>,
    /// The start of the body, HTML-escaped as Gmail gives it.
    pub snippet: String,
    /// When Gmail received it (the `Date` header for sent mail).
    pub internal_date: DateTime<Utc>,
    /// The history id of its last change.
    pub history_id: u64,
    pub size_estimate: u64,
}

/// What a history record says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    MessageAdded,
    MessageDeleted,
    LabelsAdded(Vec<String>),
    LabelsRemoved(Vec<String>),
}

impl Change {
    /// The `historyTypes` value that selects it.
    pub(crate) fn history_type(&self) -> &'static str {
        match self {
            Change::MessageAdded => "messageAdded",
            Change::MessageDeleted => "messageDeleted",
            Change::LabelsAdded(_) => "labelAdded",
            Change::LabelsRemoved(_) => "labelRemoved",
        }
    }
}

/// One record of a mailbox's history.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRecord {
    pub id: u64,
    pub at: Instant,
    pub message_id: String,
    pub thread_id: String,
    /// The message's labels once the change was made.
    pub label_ids: Vec<String>,
    pub change: Change,
}

/// A label the user (or the product) created.
#[derive(Debug, Clone)]
pub(crate) struct UserLabel {
    pub id: String,
    pub name: String,
}

/// One simulated mailbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    pub email: String,
    pub messages: BTreeMap<String, Message>,
    pub history: VecDeque<HistoryRecord>,
    /// The mailbox's current history id.
    pub history_id: u64,
    /// The newest history id whose record is gone: a `startHistoryId` below it
    /// misses records and answers 404.
    pub pruned_through: u64,
    pub labels: Vec<UserLabel>,
    next_label: u64,
    /// The newest message id handed out: ids grow with arrival, as Gmail's
    /// do, so messages with the same internal date list newest first.
    last_message_id: u64,
    /// The add-in's id when it is installed.
    pub addin: Option<String>,
    pub counters: Counters,
    pub faults: Faults,
    pub quota: UnitWindow,
    pub in_flight: u32,
}

impl Mailbox {
    fn new(email: String, random: &mut Random) -> Self {
        Self {
            email,
            messages: BTreeMap::new(),
            history: VecDeque::new(),
            // Gmail's history ids are large and start anywhere.
            history_id: 1000 + random.next_u64() % 100_000,
            pruned_through: 0,
            labels: Vec::new(),
            next_label: 1,
            // Sixteen hex digits starting `18`, like Gmail's ids of today.
            last_message_id: 0x18 << 56 | random.next_u64() >> 16,
            addin: None,
            counters: Counters::default(),
            faults: Faults::default(),
            quota: UnitWindow::new(Instant::now()),
            in_flight: 0,
        }
    }

    /// A new history id: ids increase, not always by one.
    fn next_history_id(&mut self, random: &mut Random) -> u64 {
        self.history_id += 1 + random.next_u64() % 5;
        self.history_id
    }

    fn record(&mut self, random: &mut Random, message: &Message, change: Change) -> u64 {
        let id = self.next_history_id(random);
        self.history.push_back(HistoryRecord {
            id,
            at: Instant::now(),
            message_id: message.id.clone(),
            thread_id: message.thread_id.clone(),
            label_ids: message.label_ids.clone(),
            change,
        });
        id
    }

    pub(crate) fn add_message(&mut self, random: &mut Random, seed: &MessageSeed) -> String {
        self.last_message_id += 1 + random.next_u64() % 0x1_0000;
        let id = format!("{:016x}", self.last_message_id);
        let mut headers = vec![
            ("From".to_owned(), seed.from.clone()),
            ("To".to_owned(), seed.to.join(", ")),
        ];
        if !seed.cc.is_empty() {
            headers.push(("Cc".to_owned(), seed.cc.join(", ")));
        }
        headers.push(("Subject".to_owned(), seed.subject.clone()));
        headers.push(("Date".to_owned(), seed.sent_at.to_rfc2822()));
        let message_id = seed
            .message_id
            .clone()
            .unwrap_or_else(|| format!("<{}@mail.simulated>", uuid::Uuid::new_v4().simple()));
        headers.push(("Message-ID".to_owned(), message_id));
        let label_ids = if seed.sent {
            vec!["SENT".to_owned()]
        } else {
            vec!["INBOX".to_owned(), "UNREAD".to_owned()]
        };
        let mut message = Message {
            id: id.clone(),
            thread_id: id.clone(),
            label_ids,
            headers,
            snippet: escape_html(&seed.snippet),
            internal_date: seed.sent_at,
            history_id: 0,
            size_estimate: 512 + seed.snippet.len() as u64,
        };
        message.history_id = self.record(random, &message, Change::MessageAdded);
        self.messages.insert(id.clone(), message);
        id
    }

    pub(crate) fn delete_message(&mut self, random: &mut Random, id: &str) -> bool {
        let Some(message) = self.messages.remove(id) else {
            return false;
        };
        self.record(random, &message, Change::MessageDeleted);
        true
    }

    /// Adds `labels` the message lacks; records `labelAdded` when any was new.
    pub(crate) fn add_labels(&mut self, random: &mut Random, id: &str, labels: &[String]) -> bool {
        let Some(message) = self.messages.get_mut(id) else {
            return false;
        };
        let added: Vec<String> = labels
            .iter()
            .filter(|label| !message.label_ids.contains(label))
            .cloned()
            .collect();
        if added.is_empty() {
            return true;
        }
        message.label_ids.extend(added.iter().cloned());
        let snapshot = message.clone();
        let history_id = self.record(random, &snapshot, Change::LabelsAdded(added));
        if let Some(message) = self.messages.get_mut(id) {
            message.history_id = history_id;
        }
        true
    }

    /// Whether the mailbox has a label with this id (system or user).
    pub(crate) fn has_label(&self, id: &str) -> bool {
        SYSTEM_LABELS.contains(&id) || self.labels.iter().any(|label| label.id == id)
    }

    /// Creates a user label, or answers `None` when the name exists (names
    /// compare case-insensitively, system labels included).
    pub(crate) fn create_label(&mut self, name: &str) -> Option<UserLabel> {
        let taken = SYSTEM_LABELS.iter().any(|system| system.eq_ignore_ascii_case(name))
            || self.labels.iter().any(|label| label.name.eq_ignore_ascii_case(name));
        if taken {
            return None;
        }
        let label = UserLabel {
            id: format!("Label_{}", self.next_label),
            name: name.to_owned(),
        };
        self.next_label += 1;
        self.labels.push(label.clone());
        Some(label)
    }

    /// Deletes a user label and takes it off every message (recording
    /// `labelRemoved`); false when there is no such user label.
    pub(crate) fn delete_label(&mut self, random: &mut Random, id: &str) -> bool {
        let before = self.labels.len();
        self.labels.retain(|label| label.id != id);
        if self.labels.len() == before {
            return false;
        }
        let labelled: Vec<String> = self
            .messages
            .values()
            .filter(|message| message.label_ids.iter().any(|label| label == id))
            .map(|message| message.id.clone())
            .collect();
        for message_id in labelled {
            let Some(message) = self.messages.get_mut(&message_id) else {
                continue;
            };
            message.label_ids.retain(|label| label != id);
            let snapshot = message.clone();
            let history_id = self.record(random, &snapshot, Change::LabelsRemoved(vec![id.to_owned()]));
            if let Some(message) = self.messages.get_mut(&message_id) {
                message.history_id = history_id;
            }
        }
        true
    }

    /// Drops the records older than `retention`.
    pub(crate) fn prune_history(&mut self, retention: Duration, now: Instant) {
        while let Some(record) = self.history.front() {
            if now.saturating_duration_since(record.at) < retention {
                break;
            }
            self.pruned_through = self.pruned_through.max(record.id);
            self.history.pop_front();
        }
    }

    /// Drops every record: any start id older than the current one is stale.
    pub(crate) fn expire_history(&mut self) {
        self.history.clear();
        self.pruned_through = self.history_id;
    }
}

/// Escapes text as Gmail's snippets are.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// An access token the token endpoint issued.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub email: String,
    /// The OAuth client (Google Cloud project) it was issued to.
    pub client_id: String,
    pub expires: Instant,
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Mailboxes by address in lower case.
    pub mailboxes: BTreeMap<String, Mailbox>,
    /// Refresh token to mailbox address.
    pub refresh_tokens: HashMap<String, String>,
    pub access_tokens: HashMap<String, AccessToken>,
    /// Quota windows by OAuth client id.
    pub projects: HashMap<String, UnitWindow>,
    /// Base latency and jitter of every call.
    pub latency: Latency,
    /// Calls no mailbox could be told from.
    pub unattributed: Counters,
    pub random: Random,
}

impl State {
    /// The mailbox of `email`, created if needed.
    pub(crate) fn mailbox_or_create(&mut self, email: &str) -> &mut Mailbox {
        let key = email.to_lowercase();
        let State { mailboxes, random, .. } = self;
        mailboxes
            .entry(key)
            .or_insert_with(|| Mailbox::new(email.to_owned(), random))
    }

    pub(crate) fn mailbox(&mut self, email: &str) -> Option<&mut Mailbox> {
        self.mailboxes.get_mut(&email.to_lowercase())
    }
}

/// The state behind its mutex, with the configuration beside it.
pub(crate) type Store = crate::shared::Store<GmailConfig, State>;

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> MessageSeed {
        MessageSeed {
            from: "Ann <ann@example.test>".to_owned(),
            to: vec!["me@example.test".to_owned()],
            cc: Vec::new(),
            subject: "Hello".to_owned(),
            sent_at: Utc::now(),
            snippet: "Tom & Jerry's <b>".to_owned(),
            sent: false,
            message_id: None,
        }
    }

    #[test]
    fn every_change_records_history_under_a_growing_id() {
        let mut random = Random::seeded();
        let mut mailbox = Mailbox::new("me@example.test".to_owned(), &mut random);
        let start = mailbox.history_id;
        let id = mailbox.add_message(&mut random, &seed());
        assert_eq!(mailbox.messages[&id].snippet, "Tom &amp; Jerry&#39;s &lt;b&gt;");
        let label = mailbox.create_label("Syncfleet").unwrap();
        assert!(mailbox.create_label("syncfleet").is_none());
        assert!(mailbox.create_label("inbox").is_none());
        assert!(mailbox.add_labels(&mut random, &id, std::slice::from_ref(&label.id)));
        assert!(mailbox.delete_label(&mut random, &label.id));
        assert!(mailbox.delete_message(&mut random, &id));
        assert!(!mailbox.delete_message(&mut random, &id));
        let kinds: Vec<&str> = mailbox
            .history
            .iter()
            .map(|record| record.change.history_type())
            .collect();
        assert_eq!(kinds, ["messageAdded", "labelAdded", "labelRemoved", "messageDeleted"]);
        let ids: Vec<u64> = mailbox.history.iter().map(|record| record.id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids[0] > start);
        assert_eq!(mailbox.history_id, ids[3]);

        mailbox.expire_history();
        assert_eq!(mailbox.pruned_through, mailbox.history_id);
    }
}
