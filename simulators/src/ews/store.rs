//! The simulator's state, in memory behind one mutex: accounts with their
//! concurrency, request window and counters; mailboxes with folders, items,
//! deletions, user configurations and add-ins; the sync states handed out;
//! armed faults. Every change to an item takes the mailbox's next change
//! number, which is what a sync state remembers.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Instant,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};

use super::{Counters, EwsConfig, EwsContact, EwsEvent, EwsFolder, MessageSeed, SetupError, faults::FaultTable, xml};
use crate::shared::{Latency, Random};

/// The folders every mailbox has: (distinguished id, display name, folder
/// class, parent's distinguished id).
const DISTINGUISHED: [(&str, &str, &str, Option<&str>); 8] = [
    ("root", "", "", None),
    ("msgfolderroot", "Top of Information Store", "IPF.Note", Some("root")),
    ("inbox", "Inbox", "IPF.Note", Some("msgfolderroot")),
    ("sentitems", "Sent Items", "IPF.Note", Some("msgfolderroot")),
    ("deleteditems", "Deleted Items", "IPF.Note", Some("msgfolderroot")),
    ("drafts", "Drafts", "IPF.Note", Some("msgfolderroot")),
    ("calendar", "Calendar", "IPF.Appointment", Some("msgfolderroot")),
    ("contacts", "Contacts", "IPF.Contact", Some("msgfolderroot")),
];

/// The master category list a new mailbox starts with, as Outlook writes it.
const DEFAULT_CATEGORY_LIST: &str = r#"<?xml version="1.0"?><categories default="Red category" lastSavedSession="0" xmlns="CategoryList.xsd"><category name="Red category" color="0" keyboardShortcut="0" guid="{c5e5a40f-4b1e-4cd8-bd10-8ca0b3c6d3a1}"/><category name="Orange category" color="1" keyboardShortcut="0" guid="{2b8a6b7e-35c4-4d54-8a3e-16b3c0f5e9a2}"/><category name="Yellow category" color="3" keyboardShortcut="0" guid="{f1a1a0e4-77a5-4a2b-93f0-8c0c1d9e2b13}"/><category name="Green category" color="4" keyboardShortcut="0" guid="{8d3a2c1b-5e6f-4a7b-9c0d-1e2f3a4b5c64}"/><category name="Blue category" color="7" keyboardShortcut="0" guid="{0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e65}"/><category name="Purple category" color="8" keyboardShortcut="0" guid="{a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c76}"/></categories>"#;

/// The user configuration holding the master category list.
pub(crate) const CATEGORY_LIST: &str = "CategoryList";

/// A folder of a mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    pub id: String,
    pub distinguished: Option<&'static str>,
    pub display_name: String,
    pub class: String,
    pub parent: Option<String>,
}

/// A message's content.
#[derive(Debug, Clone)]
pub(crate) struct MessageData {
    pub seed: MessageSeed,
}

/// A calendar item's content.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventData {
    pub location: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// A contact's content.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactData {
    pub given_name: String,
    pub surname: String,
    pub company: String,
    pub email: String,
    pub phone: String,
    pub file_as: String,
}

/// What an item is.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    Message(MessageData),
    Event(EventData),
    Contact(ContactData),
}

impl Content {
    /// The element name of the item's type.
    pub(crate) fn element(&self) -> &'static str {
        match self {
            Content::Message(_) => "Message",
            Content::Event(_) => "CalendarItem",
            Content::Contact(_) => "Contact",
        }
    }
}

/// An item of a mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub id: String,
    pub version: u64,
    pub folder: String,
    pub subject: String,
    pub body: String,
    pub categories: Vec<String>,
    pub extended: BTreeMap<String, String>,
    pub is_read: bool,
    pub content: Content,
    pub created_seq: u64,
    pub content_seq: u64,
    pub read_seq: u64,
}

impl Item {
    pub(crate) fn change_key(&self) -> String {
        format!("CQAAABYAAA{:08}", self.version)
    }
}

/// A deleted item, remembered so syncs from before the deletion report it.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub id: String,
    pub folder: String,
    pub created_seq: u64,
    pub deleted_seq: u64,
}

/// A mailbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    /// The lower-cased name of the account whose Direct Logon opens it.
    pub owner: String,
    pub seq: u64,
    pub folders: Vec<Folder>,
    pub items: BTreeMap<String, Item>,
    /// Item ids in creation order.
    pub order: Vec<String>,
    pub tombstones: Vec<Tombstone>,
    /// User configurations by (folder id, name): their `XmlData`.
    pub configurations: BTreeMap<(String, String), Option<Vec<u8>>>,
    /// Installed add-ins: id and manifest.
    pub apps: BTreeMap<String, Vec<u8>>,
}

impl Mailbox {
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn folder_by_distinguished(&self, name: &str) -> Option<&Folder> {
        self.folders.iter().find(|folder| folder.distinguished == Some(name))
    }

    pub(crate) fn folder(&self, id: &str) -> Option<&Folder> {
        self.folders.iter().find(|folder| folder.id == id)
    }

    /// Inserts a new item in `folder` and returns its id.
    pub(crate) fn insert(&mut self, folder: String, mut item: Item) -> String {
        let seq = self.next_seq();
        item.id = new_id("AAMkA");
        item.folder = folder;
        item.version = 1;
        item.created_seq = seq;
        item.content_seq = seq;
        item.read_seq = 0;
        let id = item.id.clone();
        self.order.push(id.clone());
        self.items.insert(id.clone(), item);
        id
    }

    /// Marks an item's content changed.
    pub(crate) fn touch(&mut self, id: &str) {
        let seq = self.next_seq();
        if let Some(item) = self.items.get_mut(id) {
            item.content_seq = seq;
            item.version += 1;
        }
    }

    /// Deletes an item, remembering the deletion for syncs.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(item) = self.items.remove(id) else {
            return false;
        };
        let seq = self.next_seq();
        self.order.retain(|kept| kept != id);
        self.tombstones.push(Tombstone {
            id: item.id,
            folder: item.folder,
            created_seq: item.created_seq,
            deleted_seq: seq,
        });
        true
    }

    /// The items of kind `element`, in creation order.
    fn items_of<'a>(&'a self, element: &'a str) -> impl Iterator<Item = &'a Item> + 'a {
        self.order
            .iter()
            .filter_map(|id| self.items.get(id))
            .filter(move |item| item.content.element() == element)
    }
}

/// One change a sync reports.
#[derive(Debug, Clone)]
pub(crate) enum SyncChange {
    Create {
        element: &'static str,
        id: String,
        change_key: String,
    },
    Update {
        element: &'static str,
        id: String,
        change_key: String,
    },
    Delete {
        id: String,
    },
    ReadFlag {
        id: String,
        is_read: bool,
    },
}

/// A page of `SyncFolderItems`.
#[derive(Debug)]
pub(crate) struct SyncPage {
    pub state: String,
    pub last: bool,
    pub changes: Vec<SyncChange>,
}

/// What a sync state stands for.
#[derive(Debug)]
struct SyncStateEntry {
    mailbox: String,
    folder: String,
    /// Every change up to this number was reported.
    watermark: u64,
    issued: Instant,
}

/// An account that logs on.
#[derive(Debug)]
pub(crate) struct Account {
    password: String,
    pub impersonation_role: bool,
    pub in_flight: u32,
    /// When its calls of the last minute were admitted.
    pub recent: VecDeque<Instant>,
    pub counters: Counters,
}

impl Account {
    pub(crate) fn password_matches(&self, password: &str) -> bool {
        // Constant time is not a concern of a simulator.
        self.password == password
    }
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub accounts: HashMap<String, Account>,
    pub mailboxes: HashMap<String, Mailbox>,
    sync_states: HashMap<String, SyncStateEntry>,
    pub faults: FaultTable,
    pub unattributed: Counters,
    pub latency: Latency,
    pub random: Random,
}

/// A fresh EWS-looking id: `prefix` and base64 of random bytes.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{prefix}{}", STANDARD.encode(bytes))
}

impl State {
    pub(crate) fn create_account(
        &mut self,
        name: &str,
        password: &str,
        impersonation_role: bool,
    ) -> Result<(), SetupError> {
        let key = name.to_lowercase();
        if self.accounts.contains_key(&key) {
            return Err(SetupError::Exists(name.to_owned()));
        }
        self.accounts.insert(
            key,
            Account {
                password: password.to_owned(),
                impersonation_role,
                in_flight: 0,
                recent: VecDeque::new(),
                counters: Counters::default(),
            },
        );
        Ok(())
    }

    pub(crate) fn account_mut(&mut self, name: &str) -> Result<&mut Account, SetupError> {
        self.accounts
            .get_mut(&name.to_lowercase())
            .ok_or_else(|| SetupError::UnknownAccount(name.to_owned()))
    }

    pub(crate) fn create_mailbox(&mut self, smtp: &str, owner: &str) -> Result<(), SetupError> {
        let owner = owner.to_lowercase();
        if !self.accounts.contains_key(&owner) {
            return Err(SetupError::UnknownAccount(owner));
        }
        let key = smtp.to_lowercase();
        if self.mailboxes.contains_key(&key) {
            return Err(SetupError::Exists(smtp.to_owned()));
        }
        // Direct Logon opens the one mailbox an account owns.
        if self.own_mailbox(&owner).is_some() {
            return Err(SetupError::Exists(format!("a mailbox owned by {owner}")));
        }
        let mut folders: Vec<Folder> = Vec::new();
        for (distinguished, display_name, class, parent) in DISTINGUISHED {
            let parent = parent.and_then(|parent| {
                folders
                    .iter()
                    .find(|folder| folder.distinguished == Some(parent))
                    .map(|folder| folder.id.clone())
            });
            folders.push(Folder {
                id: new_id("AQMkA"),
                distinguished: Some(distinguished),
                display_name: display_name.to_owned(),
                class: class.to_owned(),
                parent,
            });
        }
        let mut configurations = BTreeMap::new();
        if let Some(calendar) = folders.iter().find(|folder| folder.distinguished == Some("calendar")) {
            configurations.insert(
                (calendar.id.clone(), CATEGORY_LIST.to_owned()),
                Some(DEFAULT_CATEGORY_LIST.as_bytes().to_vec()),
            );
        }
        self.mailboxes.insert(
            key,
            Mailbox {
                owner,
                seq: 0,
                folders,
                items: BTreeMap::new(),
                order: Vec::new(),
                tombstones: Vec::new(),
                configurations,
                apps: BTreeMap::new(),
            },
        );
        Ok(())
    }

    pub(crate) fn mailbox_mut(&mut self, smtp: &str) -> Result<&mut Mailbox, SetupError> {
        self.mailboxes
            .get_mut(&smtp.to_lowercase())
            .ok_or_else(|| SetupError::UnknownMailbox(smtp.to_owned()))
    }

    /// The mailbox the account owns (its Direct Logon mailbox).
    pub(crate) fn own_mailbox(&self, account: &str) -> Option<String> {
        self.mailboxes
            .iter()
            .find(|(_, mailbox)| mailbox.owner == account)
            .map(|(key, _)| key.clone())
    }

    pub(crate) fn add_message(&mut self, smtp: &str, folder: &str, seed: MessageSeed) -> Result<String, SetupError> {
        let mailbox = self.mailbox_mut(smtp)?;
        let folder = mailbox
            .folder_by_distinguished(folder)
            .map(|folder| folder.id.clone())
            .ok_or_else(|| SetupError::UnknownMailbox(smtp.to_owned()))?;
        let item = Item {
            id: String::new(),
            version: 0,
            folder: String::new(),
            subject: seed.subject.clone(),
            body: seed.body.clone(),
            categories: Vec::new(),
            extended: BTreeMap::new(),
            is_read: false,
            content: Content::Message(MessageData { seed }),
            created_seq: 0,
            content_seq: 0,
            read_seq: 0,
        };
        Ok(mailbox.insert(folder, item))
    }

    pub(crate) fn update_message(&mut self, smtp: &str, id: &str, seed: MessageSeed) -> Result<(), SetupError> {
        let mailbox = self.mailbox_mut(smtp)?;
        let item = mailbox
            .items
            .get_mut(id)
            .ok_or_else(|| SetupError::UnknownItem(id.to_owned()))?;
        item.subject = seed.subject.clone();
        item.body = seed.body.clone();
        item.content = Content::Message(MessageData { seed });
        mailbox.touch(id);
        Ok(())
    }

    pub(crate) fn set_read(&mut self, smtp: &str, id: &str, read: bool) -> Result<(), SetupError> {
        let mailbox = self.mailbox_mut(smtp)?;
        let seq = mailbox.next_seq();
        let item = mailbox
            .items
            .get_mut(id)
            .ok_or_else(|| SetupError::UnknownItem(id.to_owned()))?;
        item.is_read = read;
        item.read_seq = seq;
        item.version += 1;
        Ok(())
    }

    pub(crate) fn delete_item(&mut self, smtp: &str, id: &str) -> Result<(), SetupError> {
        if self.mailbox_mut(smtp)?.remove(id) {
            Ok(())
        } else {
            Err(SetupError::UnknownItem(id.to_owned()))
        }
    }

    pub(crate) fn events(&self, smtp: &str) -> Vec<EwsEvent> {
        let Some(mailbox) = self.mailboxes.get(&smtp.to_lowercase()) else {
            return Vec::new();
        };
        mailbox
            .items_of("CalendarItem")
            .filter_map(|item| match &item.content {
                Content::Event(event) => Some(EwsEvent {
                    id: item.id.clone(),
                    subject: item.subject.clone(),
                    body: item.body.clone(),
                    location: event.location.clone(),
                    start: event.start.unwrap_or_default(),
                    end: event.end.unwrap_or_default(),
                    categories: item.categories.clone(),
                    extended_properties: item.extended.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn contacts(&self, smtp: &str) -> Vec<EwsContact> {
        let Some(mailbox) = self.mailboxes.get(&smtp.to_lowercase()) else {
            return Vec::new();
        };
        mailbox
            .items_of("Contact")
            .filter_map(|item| match &item.content {
                Content::Contact(contact) => Some(EwsContact {
                    id: item.id.clone(),
                    given_name: contact.given_name.clone(),
                    surname: contact.surname.clone(),
                    company: contact.company.clone(),
                    email: contact.email.clone(),
                    phone: contact.phone.clone(),
                    file_as: contact.file_as.clone(),
                    categories: item.categories.clone(),
                    extended_properties: item.extended.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn folders(&self, smtp: &str) -> Vec<EwsFolder> {
        let Some(mailbox) = self.mailboxes.get(&smtp.to_lowercase()) else {
            return Vec::new();
        };
        mailbox
            .folders
            .iter()
            .map(|folder| EwsFolder {
                id: folder.id.clone(),
                distinguished: folder.distinguished.map(str::to_owned),
                display_name: folder.display_name.clone(),
                parent: folder.parent.clone(),
            })
            .collect()
    }

    pub(crate) fn categories(&self, smtp: &str) -> Vec<String> {
        let Some(mailbox) = self.mailboxes.get(&smtp.to_lowercase()) else {
            return Vec::new();
        };
        let Some(calendar) = mailbox.folder_by_distinguished("calendar") else {
            return Vec::new();
        };
        let data = mailbox
            .configurations
            .get(&(calendar.id.clone(), CATEGORY_LIST.to_owned()))
            .cloned()
            .flatten()
            .unwrap_or_default();
        let Ok(root) = xml::parse(&String::from_utf8_lossy(&data)) else {
            return Vec::new();
        };
        root.children_named("category")
            .filter_map(|category| category.attribute("name"))
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn apps(&self, smtp: &str) -> Vec<String> {
        self.mailboxes
            .get(&smtp.to_lowercase())
            .map(|mailbox| mailbox.apps.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn invalidate_sync_states(&mut self, smtp: &str) {
        let key = smtp.to_lowercase();
        self.sync_states.retain(|_, entry| entry.mailbox != key);
    }

    /// A page of changes of `folder` in `mailbox` since `state` (all items
    /// without one), at most `max` of them. `Err` carries the response code.
    pub(crate) fn sync_folder_items(
        &mut self,
        mailbox_key: &str,
        folder: &str,
        state: Option<&str>,
        max: usize,
        config: &EwsConfig,
    ) -> Result<SyncPage, &'static str> {
        let watermark = match state {
            None => None,
            Some(state) => {
                let entry = self
                    .sync_states
                    .get(state)
                    .filter(|entry| entry.mailbox == mailbox_key && entry.folder == folder)
                    .filter(|entry| entry.issued.elapsed() < config.sync_state_lifetime)
                    .ok_or("ErrorInvalidSyncStateData")?;
                Some(entry.watermark)
            }
        };
        let mailbox = self.mailboxes.get(mailbox_key).ok_or("ErrorNonExistentMailbox")?;
        let since = watermark.unwrap_or(0);
        // Each item appears once, at its latest change; a deletion only when
        // the state had seen the item.
        let mut keyed: Vec<(u64, SyncChange)> = Vec::new();
        for item in mailbox.items.values().filter(|item| item.folder == folder) {
            let element = item.content.element();
            let latest = item.content_seq.max(item.read_seq);
            if latest <= since {
                continue;
            }
            let change = if item.created_seq > since || watermark.is_none() {
                SyncChange::Create {
                    element,
                    id: item.id.clone(),
                    change_key: item.change_key(),
                }
            } else if item.content_seq > since {
                SyncChange::Update {
                    element,
                    id: item.id.clone(),
                    change_key: item.change_key(),
                }
            } else {
                SyncChange::ReadFlag {
                    id: item.id.clone(),
                    is_read: item.is_read,
                }
            };
            keyed.push((latest, change));
        }
        if let Some(since) = watermark {
            for tombstone in &mailbox.tombstones {
                if tombstone.folder == folder && tombstone.deleted_seq > since && tombstone.created_seq <= since {
                    keyed.push((
                        tombstone.deleted_seq,
                        SyncChange::Delete {
                            id: tombstone.id.clone(),
                        },
                    ));
                }
            }
        }
        keyed.sort_by_key(|(seq, _)| *seq);
        let last = keyed.len() <= max;
        keyed.truncate(max);
        let new_watermark = match keyed.last() {
            Some((seq, _)) if !last => *seq,
            _ => mailbox.seq,
        };
        let changes = keyed.into_iter().map(|(_, change)| change).collect();
        let token = STANDARD.encode(format!("H4sI:{}", uuid::Uuid::new_v4().simple()));
        let now = Instant::now();
        let lifetime = config.sync_state_lifetime;
        self.sync_states
            .retain(|_, entry| now.saturating_duration_since(entry.issued) < lifetime);
        self.sync_states.insert(
            token.clone(),
            SyncStateEntry {
                mailbox: mailbox_key.to_owned(),
                folder: folder.to_owned(),
                watermark: new_watermark,
                issued: now,
            },
        );
        Ok(SyncPage {
            state: token,
            last,
            changes,
        })
    }

    pub(crate) fn count(&mut self, account: Option<&str>, operation: super::Operation) {
        let counters = match account.and_then(|account| self.accounts.get_mut(account)) {
            Some(account) => &mut account.counters,
            None => &mut self.unattributed,
        };
        *counters.calls.entry(operation).or_default() += 1;
    }
}

/// The state behind its lock.
pub(crate) type Store = crate::shared::Store<EwsConfig, State>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ews::MessageFolder;

    fn state_with_mailbox() -> State {
        let mut state = State::default();
        state.create_account("a@x.test", "pw", false).unwrap();
        state.create_mailbox("a@x.test", "a@x.test").unwrap();
        state
    }

    fn seed(subject: &str) -> MessageSeed {
        MessageSeed {
            subject: subject.to_owned(),
            ..MessageSeed::default()
        }
    }

    fn inbox(state: &State) -> String {
        state.mailboxes["a@x.test"]
            .folder_by_distinguished(MessageFolder::Inbox.distinguished_id())
            .unwrap()
            .id
            .clone()
    }

    #[test]
    fn a_sync_state_yields_only_the_changes_made_after_it_page_by_page() {
        let config = EwsConfig::default();
        let mut state = state_with_mailbox();
        let folder = inbox(&state);
        let first = state.add_message("a@x.test", "inbox", seed("1")).unwrap();
        let second = state.add_message("a@x.test", "inbox", seed("2")).unwrap();
        state.add_message("a@x.test", "sentitems", seed("sent")).unwrap();

        let page = state.sync_folder_items("a@x.test", &folder, None, 1, &config).unwrap();
        assert!(!page.last);
        assert!(matches!(&page.changes[..], [SyncChange::Create { id, .. }] if *id == first));
        let page = state
            .sync_folder_items("a@x.test", &folder, Some(&page.state), 1, &config)
            .unwrap();
        assert!(page.last);
        assert!(matches!(&page.changes[..], [SyncChange::Create { id, .. }] if *id == second));
        let caught_up = page.state;

        state.update_message("a@x.test", &first, seed("1 edited")).unwrap();
        state.delete_item("a@x.test", &second).unwrap();
        state.set_read("a@x.test", &first, true).unwrap();
        let third = state.add_message("a@x.test", "inbox", seed("3")).unwrap();
        state.delete_item("a@x.test", &third).unwrap();
        let page = state
            .sync_folder_items("a@x.test", &folder, Some(&caught_up), 10, &config)
            .unwrap();
        assert!(page.last);
        // The deletion first (older), then the update (its latest change is the
        // read flag, but the content changed too); the never-seen item is absent.
        assert!(
            matches!(&page.changes[..], [SyncChange::Delete { id: deleted }, SyncChange::Update { id: updated, .. }] if *deleted == second && *updated == first),
            "{:?}",
            page.changes
        );

        state.invalidate_sync_states("a@x.test");
        assert_eq!(
            state
                .sync_folder_items("a@x.test", &folder, Some(&caught_up), 10, &config)
                .unwrap_err(),
            "ErrorInvalidSyncStateData"
        );
        assert!(
            state
                .sync_folder_items("a@x.test", &folder, Some("garbage"), 10, &config)
                .is_err()
        );
    }

    #[test]
    fn the_default_category_list_is_read_by_name() {
        let state = state_with_mailbox();
        let categories = state.categories("a@x.test");
        assert_eq!(categories.len(), 6);
        assert_eq!(categories[0], "Red category");
    }
}
