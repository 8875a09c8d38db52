//! The EWS connector against the simulator: Direct Logon and Impersonation,
//! sync paging and state, throttling, writes, customization and the add-in.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Url;
use secrecy::SecretString;
use syncfleet_connectors::{
    ConnectorError, ErrorKind,
    ews::{EwsClient, EwsLogon, EwsOptions},
    mailbox::{
        ADDIN_ID, AddinStatus, ContactDraft, Continuation, EventDraft, MailFolder, MailMessage, Mailbox, MessageChange,
        PRODUCT_CATEGORY, Upsert,
    },
    ssrf::UrlPolicy,
};
use syncfleet_simulators::{
    Server,
    ews::{Address, EwsConfig, EwsSimulator, Fault, LocalEws, MessageFolder, MessageSeed, Operation},
};
use tokio_util::sync::CancellationToken;

use crate::support::http;

/// A simulated Exchange with one account and its own mailbox; stops when dropped.
struct Exchange {
    simulator: EwsSimulator,
    server: Server,
    account: String,
    password: String,
    smtp: String,
    shutdown: CancellationToken,
}

impl Exchange {
    async fn start(config: EwsConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalEws {
            simulator,
            server,
            account,
            password,
            smtp,
        } = EwsSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            server,
            account,
            password,
            smtp,
            shutdown,
        }
    }

    async fn default() -> Self {
        Self::start(EwsConfig::default()).await
    }

    fn url(&self) -> Url {
        Url::parse(&format!("{}/EWS/Exchange.asmx", self.server.base_url())).unwrap()
    }

    fn client(&self, logon: EwsLogon, options: EwsOptions) -> EwsClient {
        EwsClient::new(http(UrlPolicy::LOCAL_TESTS), options, self.url(), logon).unwrap()
    }

    fn direct_with(&self, options: EwsOptions) -> EwsClient {
        self.client(
            EwsLogon::Direct {
                account: self.account.clone(),
                password: SecretString::from(self.password.clone()),
            },
            options,
        )
    }

    fn direct(&self) -> EwsClient {
        self.direct_with(EwsOptions::default())
    }

    fn add(&self, folder: MessageFolder, seed: MessageSeed) -> String {
        self.simulator.add_message(&self.smtp, folder, seed).unwrap()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn seed(subject: &str, received: DateTime<Utc>) -> MessageSeed {
    MessageSeed {
        subject: subject.to_owned(),
        from: Some(Address::new("client@example.test", "A Client")),
        to: vec![Address::new("alice@contoso.test", "Alice")],
        cc: vec![Address::new("cc@example.test", "")],
        body: format!("Body of {subject}"),
        internet_message_id: Some(format!("<{}@example.test>", subject.replace(' ', "."))),
        sent: received - TimeDelta::seconds(5),
        received,
    }
}

/// Follows a stream page by page to its end: the upserted messages, the
/// removed ids, the final cursor and the number of pages.
async fn drain(
    client: &EwsClient,
    folder: MailFolder,
    mut cursor: Option<String>,
    since: DateTime<Utc>,
) -> Result<(Vec<MailMessage>, Vec<String>, String, usize), ConnectorError> {
    let (mut upserts, mut removed, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = client.message_changes(folder, cursor.as_deref(), since).await?;
        pages += 1;
        for change in page.changes {
            match change {
                MessageChange::Upsert(message) => upserts.push(message),
                MessageChange::Removed { id } => removed.push(id),
            }
        }
        match page.continuation {
            Continuation::More(next) => cursor = Some(next),
            Continuation::Complete(state) => return Ok((upserts, removed, state, pages)),
        }
        assert!(pages < 100, "the stream never completes");
    }
}

fn ids(messages: &[MailMessage]) -> BTreeSet<String> {
    messages.iter().map(|message| message.id.clone()).collect()
}

#[tokio::test]
async fn direct_logon_syncs_both_folders_page_by_page_from_the_baseline() {
    let exchange = Exchange::default().await;
    let now = Utc::now();
    let since = now - TimeDelta::days(6);
    let mut recent_inbox = BTreeSet::new();
    for index in 0..5 {
        // Older and newer messages interleaved, so the baseline filter runs
        // on every page.
        exchange.add(
            MessageFolder::Inbox,
            seed(&format!("old {index}"), since - TimeDelta::days(index + 1)),
        );
        recent_inbox.insert(exchange.add(
            MessageFolder::Inbox,
            seed(&format!("new {index}"), now - TimeDelta::hours(index)),
        ));
    }
    let mut recent_sent = BTreeSet::new();
    for index in 0..3 {
        recent_sent.insert(exchange.add(MessageFolder::SentItems, seed(&format!("sent {index}"), now)));
    }
    exchange.add(
        MessageFolder::SentItems,
        seed("sent long ago", since - TimeDelta::days(30)),
    );

    let client = exchange.direct_with(EwsOptions {
        max_changes_returned: 3,
        get_item_batch: 2,
        body_preview_chars: 7,
        ..EwsOptions::default()
    });
    assert_eq!(client.folders(), [MailFolder::Inbox, MailFolder::SentItems]);

    let (inbox, removed, _, pages) = drain(&client, MailFolder::Inbox, None, since).await.unwrap();
    assert!(removed.is_empty());
    assert_eq!(pages, 4, "10 changes, 3 a page");
    assert_eq!(ids(&inbox), recent_inbox);
    let first = inbox.iter().find(|message| message.subject == "new 0").unwrap();
    assert!(!first.sent_by_owner);
    assert_eq!(first.from.as_ref().unwrap().address, "client@example.test");
    assert_eq!(first.from.as_ref().unwrap().name.as_deref(), Some("A Client"));
    assert_eq!(first.to[0].address, "alice@contoso.test");
    assert_eq!(first.cc[0].address, "cc@example.test");
    assert_eq!(first.cc[0].name, None);
    assert_eq!(first.internet_message_id.as_deref(), Some("<new.0@example.test>"));
    assert_eq!(first.body_preview, "Body of");
    assert_eq!(first.sent_at.timestamp(), (now - TimeDelta::seconds(5)).timestamp());

    let (sent, _, _, _) = drain(&client, MailFolder::SentItems, None, since).await.unwrap();
    assert_eq!(ids(&sent), recent_sent);
    assert!(sent.iter().all(|message| message.sent_by_owner));

    let counters = exchange.simulator.counters(&exchange.account);
    assert_eq!(counters.calls_to(Operation::SyncFolderItems), 4 + 2);
    // GetItem in batches of 2 over pages of 3 ids: the inbox's pages hold
    // 3, 3, 3 and 1 ids, the sent items' 3 and 1.
    assert_eq!(counters.calls_to(Operation::GetItem), (2 + 2 + 2 + 1) + (2 + 1));
    assert_eq!(u64::from(client.calls()), counters.total_calls());
}

#[tokio::test]
async fn a_second_sync_returns_only_the_changes_made_since() {
    let exchange = Exchange::default().await;
    let now = Utc::now();
    let since = now - TimeDelta::days(6);
    let kept = exchange.add(MessageFolder::Inbox, seed("kept", now));
    let edited = exchange.add(MessageFolder::Inbox, seed("to edit", now));
    let deleted = exchange.add(MessageFolder::Inbox, seed("to delete", now));
    let read = exchange.add(MessageFolder::Inbox, seed("to read", now));
    let client = exchange.direct();
    let (first, _, cursor, _) = drain(&client, MailFolder::Inbox, None, since).await.unwrap();
    assert_eq!(first.len(), 4);

    let (nothing, none_removed, cursor, _) = drain(&client, MailFolder::Inbox, Some(cursor), since).await.unwrap();
    assert!(nothing.is_empty() && none_removed.is_empty());

    let simulator = &exchange.simulator;
    simulator
        .update_message(&exchange.smtp, &edited, seed("edited", now))
        .unwrap();
    simulator.delete_message(&exchange.smtp, &deleted).unwrap();
    simulator.set_read(&exchange.smtp, &read, true).unwrap();
    let arrived = exchange.add(MessageFolder::Inbox, seed("arrived", now));
    let (changed, removed, _, _) = drain(&client, MailFolder::Inbox, Some(cursor), since).await.unwrap();
    assert_eq!(ids(&changed), BTreeSet::from([edited.clone(), arrived]));
    assert_eq!(
        changed.iter().find(|message| message.id == edited).unwrap().subject,
        "edited"
    );
    assert_eq!(removed, [deleted]);
    assert!(!ids(&changed).contains(&kept) && !ids(&changed).contains(&read));
}

#[tokio::test]
async fn a_message_deleted_between_the_sync_and_its_reading_is_removed() {
    let exchange = Exchange::default().await;
    let now = Utc::now();
    let client = exchange.direct();
    let (_, _, cursor, _) = drain(&client, MailFolder::Inbox, None, now - TimeDelta::days(6))
        .await
        .unwrap();
    let id = exchange.add(MessageFolder::Inbox, seed("short-lived", now));
    // Every call waits a while after it is counted: the message is deleted
    // once the GetItem that reads it is counted and before it is answered.
    exchange
        .simulator
        .set_latency(Duration::from_millis(400), Duration::ZERO);
    let simulator = exchange.simulator.clone();
    let (account, smtp, target) = (exchange.account.clone(), exchange.smtp.clone(), id.clone());
    let deleter = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while simulator.counters(&account).calls_to(Operation::GetItem) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "GetItem never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        simulator.delete_message(&smtp, &target).unwrap();
    });
    let page = client
        .message_changes(MailFolder::Inbox, Some(&cursor), now)
        .await
        .unwrap();
    deleter.await.unwrap();
    assert_eq!(page.changes, [MessageChange::Removed { id }]);
}

#[tokio::test]
async fn impersonation_opens_the_mailbox_with_the_role_and_is_refused_without_it() {
    let exchange = Exchange::default().await;
    let simulator = &exchange.simulator;
    simulator.create_account("bob@contoso.test", "bob-pw").unwrap();
    simulator
        .create_mailbox("bob@contoso.test", "bob@contoso.test")
        .unwrap();
    simulator
        .add_message("bob@contoso.test", MessageFolder::Inbox, seed("for bob", Utc::now()))
        .unwrap();
    simulator
        .create_service_account("svc-sync@contoso.test", "svc-pw", true)
        .unwrap();
    simulator
        .create_service_account("svc-norole@contoso.test", "svc-pw", false)
        .unwrap();
    let impersonating = |service_account: &str, smtp_address: &str| {
        exchange.client(
            EwsLogon::Impersonation {
                service_account: service_account.to_owned(),
                password: SecretString::from("svc-pw"),
                smtp_address: smtp_address.to_owned(),
            },
            EwsOptions::default(),
        )
    };

    let client = impersonating("svc-sync@contoso.test", "bob@contoso.test");
    client.check().await.unwrap();
    let (messages, _, _, _) = drain(&client, MailFolder::Inbox, None, Utc::now() - TimeDelta::days(6))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].subject, "for bob");
    // The service account's calls count against its own budget, not Bob's.
    assert_eq!(simulator.counters("svc-sync@contoso.test").total_calls(), 3);
    assert_eq!(simulator.counters("bob@contoso.test").total_calls(), 0);

    let error = impersonating("svc-norole@contoso.test", "bob@contoso.test")
        .check()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("ErrorImpersonateUserDenied"), "{error}");

    let error = impersonating("svc-sync@contoso.test", "nobody@contoso.test")
        .check()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("ErrorNonExistentMailbox"), "{error}");
}

#[tokio::test]
async fn a_wrong_password_is_an_authorization_error() {
    let exchange = Exchange::default().await;
    let client = exchange.client(
        EwsLogon::Direct {
            account: exchange.account.clone(),
            password: SecretString::from("not-the-password"),
        },
        EwsOptions::default(),
    );
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("401"), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn server_busy_is_throttled_with_the_back_off_exchange_asked_for() {
    let exchange = Exchange::start(EwsConfig {
        requests_per_minute: 3,
        busy_backoff_ms: 7000,
        ..EwsConfig::default()
    })
    .await;
    let client = exchange.direct();
    exchange
        .simulator
        .inject_fault(&exchange.account, Fault::ServerBusy { backoff_ms: 1234 }, 1);
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(1234)));
    assert!(error.to_string().contains("ErrorServerBusy"), "{error}");

    // The budget: three calls a minute, the fourth answers ErrorServerBusy.
    for _ in 0..3 {
        client.check().await.unwrap();
    }
    let error = client.check().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_millis(7000)), "{error}");
}

#[tokio::test]
async fn http_503_is_throttled_without_a_delay() {
    let exchange = Exchange::default().await;
    exchange.simulator.inject_fault(&exchange.smtp, Fault::Http503, 1);
    let error = exchange.direct().check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn too_many_concurrent_calls_of_one_account_are_throttled() {
    let exchange = Exchange::start(EwsConfig {
        max_concurrency: 2,
        ..EwsConfig::default()
    })
    .await;
    exchange
        .simulator
        .set_latency(Duration::from_millis(300), Duration::ZERO);
    let client = exchange.direct();
    let results = futures_like_join(&client).await;
    let throttled: Vec<&ConnectorError> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert_eq!(results.len() - throttled.len(), 2, "{results:?}");
    for error in &throttled {
        assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
        assert!(error.to_string().contains("ErrorExceededConnectionCount"), "{error}");
    }
    assert_eq!(exchange.simulator.counters(&exchange.account).throttled, 2);

    exchange
        .simulator
        .inject_fault(&exchange.account, Fault::ConnectionCount, 1);
    exchange.simulator.set_latency(Duration::ZERO, Duration::ZERO);
    assert_eq!(client.check().await.unwrap_err().kind(), ErrorKind::Throttled);
    client.check().await.unwrap();
}

/// Four `check` calls at once.
async fn futures_like_join(client: &EwsClient) -> Vec<Result<(), ConnectorError>> {
    let (a, b, c, d) = tokio::join!(client.check(), client.check(), client.check(), client.check());
    vec![a, b, c, d]
}

#[tokio::test]
async fn an_invalid_sync_state_asks_for_a_full_resync() {
    let exchange = Exchange::default().await;
    let since = Utc::now() - TimeDelta::days(6);
    exchange.add(MessageFolder::Inbox, seed("one", Utc::now()));
    let client = exchange.direct();
    let (_, _, cursor, _) = drain(&client, MailFolder::Inbox, None, since).await.unwrap();

    exchange.simulator.invalidate_sync_states(&exchange.smtp);
    let error = client
        .message_changes(MailFolder::Inbox, Some(&cursor), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");

    let (again, _, cursor, _) = drain(&client, MailFolder::Inbox, None, since).await.unwrap();
    assert_eq!(again.len(), 1);
    exchange
        .simulator
        .inject_fault(&exchange.account, Fault::InvalidSyncState, 1);
    let error = client
        .message_changes(MailFolder::Inbox, Some(&cursor), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");
    let error = client
        .message_changes(MailFolder::Inbox, Some("not-a-state"), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");
}

fn event(crm_id: &str, subject: &str, hours: i64) -> EventDraft {
    let start = DateTime::parse_from_rfc3339("2025-03-10T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    EventDraft {
        crm_id: crm_id.to_owned(),
        subject: subject.to_owned(),
        body: format!("About {subject}"),
        location: "Room 1".to_owned(),
        start,
        end: start + TimeDelta::hours(hours),
    }
}

fn contact(crm_id: &str, last_name: &str) -> ContactDraft {
    ContactDraft {
        crm_id: crm_id.to_owned(),
        email: format!("{}@example.test", last_name.to_lowercase()),
        first_name: "Pat".to_owned(),
        last_name: last_name.to_owned(),
        company: "Acme".to_owned(),
        phone: "+1 555 0100".to_owned(),
    }
}

#[tokio::test]
async fn events_are_created_updated_recreated_and_refused_item_by_item() {
    let exchange = Exchange::default().await;
    let client = exchange.direct_with(EwsOptions {
        write_batch: 2,
        ..EwsOptions::default()
    });
    let created = client
        .upsert_events(&[
            Upsert {
                existing: None,
                item: event("00U1", "Kick-off", 1),
            },
            Upsert {
                existing: None,
                item: event("00U2", "Ends before it starts", -1),
            },
            Upsert {
                existing: None,
                item: event("00U3", "Review", 2),
            },
        ])
        .await
        .unwrap();
    let first = created[0].clone().unwrap();
    let refused = created[1].clone().unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("ErrorCalendarEndDateIsEarlierThanStartDate")
    );
    let third = created[2].clone().unwrap();
    let events = exchange.simulator.events(&exchange.smtp);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].subject, "Kick-off");
    assert_eq!(events[0].categories, [PRODUCT_CATEGORY]);
    assert_eq!(events[0].extended_properties["SyncfleetCrmId"], "00U1");
    assert_eq!(events[0].location, "Room 1");
    assert_eq!(events[0].end - events[0].start, TimeDelta::hours(1));

    // The third was deleted in the mailbox meanwhile: it is created again.
    exchange.simulator.delete_item(&exchange.smtp, &third).unwrap();
    let mut moved = event("00U1", "Kick-off (moved)", 3);
    moved.location = String::new();
    let updated = client
        .upsert_events(&[
            Upsert {
                existing: Some(first.clone()),
                item: moved,
            },
            Upsert {
                existing: Some(third.clone()),
                item: event("00U3", "Review again", 2),
            },
        ])
        .await
        .unwrap();
    assert_eq!(updated[0].as_ref().unwrap(), &first);
    let recreated = updated[1].clone().unwrap();
    assert_ne!(recreated, third);
    let events = exchange.simulator.events(&exchange.smtp);
    assert_eq!(events.len(), 2);
    let moved = events.iter().find(|event| event.id == first).unwrap();
    assert_eq!(moved.subject, "Kick-off (moved)");
    assert_eq!(moved.location, "");
    assert_eq!(moved.end - moved.start, TimeDelta::hours(3));
    let again = events.iter().find(|event| event.id == recreated).unwrap();
    assert_eq!(again.subject, "Review again");
    assert_eq!(again.extended_properties["SyncfleetCrmId"], "00U3");

    let counters = exchange.simulator.counters(&exchange.account);
    // Two batches of creates, then one update batch and one re-create.
    assert_eq!(counters.calls_to(Operation::CreateItem), 3);
    assert_eq!(counters.calls_to(Operation::UpdateItem), 1);
}

#[tokio::test]
async fn contacts_are_created_and_updated_with_emptied_fields_removed() {
    let exchange = Exchange::default().await;
    let client = exchange.direct();
    let created = client
        .upsert_contacts(&[
            Upsert {
                existing: None,
                item: contact("0031", "Doe"),
            },
            Upsert {
                existing: None,
                item: contact("0032", "Roe"),
            },
        ])
        .await
        .unwrap();
    let doe = created[0].clone().unwrap();
    let contacts = exchange.simulator.contacts(&exchange.smtp);
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].file_as, "Doe, Pat");
    assert_eq!(contacts[0].email, "doe@example.test");
    assert_eq!(contacts[0].phone, "+1 555 0100");
    assert_eq!(contacts[0].categories, [PRODUCT_CATEGORY]);
    assert_eq!(contacts[0].extended_properties["SyncfleetCrmId"], "0031");

    let mut changed = contact("0031", "Doe-Smith");
    changed.company = String::new();
    changed.phone = String::new();
    let updated = client
        .upsert_contacts(&[Upsert {
            existing: Some(doe.clone()),
            item: changed,
        }])
        .await
        .unwrap();
    assert_eq!(updated[0].as_ref().unwrap(), &doe);
    let contacts = exchange.simulator.contacts(&exchange.smtp);
    let doe = contacts.iter().find(|contact| contact.id == doe).unwrap();
    assert_eq!(doe.surname, "Doe-Smith");
    assert_eq!(doe.email, "doe-smith@example.test");
    assert_eq!((doe.company.as_str(), doe.phone.as_str()), ("", ""));
}

#[tokio::test]
async fn initialize_and_reset_are_idempotent() {
    let exchange = Exchange::default().await;
    let client = exchange.direct();
    let product_folders = || {
        exchange
            .simulator
            .folders(&exchange.smtp)
            .into_iter()
            .filter(|folder| folder.display_name == PRODUCT_CATEGORY)
            .count()
    };
    let product_categories = || {
        exchange
            .simulator
            .categories(&exchange.smtp)
            .into_iter()
            .filter(|category| category == PRODUCT_CATEGORY)
            .count()
    };
    let defaults = exchange.simulator.categories(&exchange.smtp).len();

    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    assert_eq!(product_folders(), 1);
    assert_eq!(product_categories(), 1);
    assert_eq!(exchange.simulator.categories(&exchange.smtp).len(), defaults + 1);
    let root = exchange
        .simulator
        .folders(&exchange.smtp)
        .into_iter()
        .find(|folder| folder.distinguished.as_deref() == Some("msgfolderroot"))
        .unwrap();
    let product = exchange
        .simulator
        .folders(&exchange.smtp)
        .into_iter()
        .find(|folder| folder.display_name == PRODUCT_CATEGORY)
        .unwrap();
    assert_eq!(product.parent.as_ref(), Some(&root.id));

    client.reset().await.unwrap();
    client.reset().await.unwrap();
    assert_eq!(product_folders(), 0);
    assert_eq!(product_categories(), 0);
    assert_eq!(exchange.simulator.categories(&exchange.smtp).len(), defaults);
}

#[tokio::test]
async fn the_addin_is_installed_listed_and_removed() {
    let exchange = Exchange::default().await;
    let client = exchange.direct();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
    client.install_addin().await.unwrap();
    client.install_addin().await.unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::Installed);
    assert_eq!(exchange.simulator.apps(&exchange.smtp), [ADDIN_ID]);
    client.remove_addin().await.unwrap();
    client.remove_addin().await.unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
    assert!(exchange.simulator.apps(&exchange.smtp).is_empty());
}

#[tokio::test]
async fn xml_special_characters_round_trip_in_subjects_and_names() {
    let exchange = Exchange::default().await;
    let tricky = r#"Q&A <urgent> "quoted" 'single' & more"#;
    let mut message = seed(tricky, Utc::now());
    message.from = Some(Address::new("o'brien@example.test", r#"O'Brien & Sons <Ltd> "HQ""#));
    message.body = "a < b && c > d".to_owned();
    exchange.add(MessageFolder::Inbox, message);
    let client = exchange.direct();
    let (messages, _, _, _) = drain(&client, MailFolder::Inbox, None, Utc::now() - TimeDelta::days(1))
        .await
        .unwrap();
    assert_eq!(messages[0].subject, tricky);
    let from = messages[0].from.as_ref().unwrap();
    assert_eq!(from.address, "o'brien@example.test");
    assert_eq!(from.name.as_deref(), Some(r#"O'Brien & Sons <Ltd> "HQ""#));
    assert_eq!(messages[0].body_preview, "a < b && c > d");

    client
        .upsert_events(&[Upsert {
            existing: None,
            item: event("00U<&>", tricky, 1),
        }])
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    let mut person = contact("003'\"", r#"D'Arcy & <Co> "Ltd""#);
    person.email = "d'arcy@example.test".to_owned();
    client
        .upsert_contacts(&[Upsert {
            existing: None,
            item: person,
        }])
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    let events = exchange.simulator.events(&exchange.smtp);
    assert_eq!(events[0].subject, tricky);
    assert_eq!(events[0].extended_properties["SyncfleetCrmId"], "00U<&>");
    let contacts = exchange.simulator.contacts(&exchange.smtp);
    assert_eq!(contacts[0].surname, r#"D'Arcy & <Co> "Ltd""#);
    assert_eq!(contacts[0].email, "d'arcy@example.test");
    assert_eq!(contacts[0].extended_properties["SyncfleetCrmId"], "003'\"");
}

#[tokio::test]
async fn a_password_never_shows_in_errors_or_debug_output() {
    let exchange = Exchange::default().await;
    let canary = "canary-Pw-7f3a&<>\"'";
    let simulator = &exchange.simulator;
    simulator
        .create_service_account("svc-audit@contoso.test", canary, false)
        .unwrap();
    let wrong = exchange.client(
        EwsLogon::Direct {
            account: exchange.account.clone(),
            password: SecretString::from(canary),
        },
        EwsOptions::default(),
    );
    let impersonating = exchange.client(
        EwsLogon::Impersonation {
            service_account: "svc-audit@contoso.test".to_owned(),
            password: SecretString::from(canary),
            smtp_address: exchange.smtp.clone(),
        },
        EwsOptions::default(),
    );
    simulator.inject_fault("svc-audit@contoso.test", Fault::ServerBusy { backoff_ms: 10 }, 1);
    let errors = [
        wrong.check().await.unwrap_err(),
        impersonating.check().await.unwrap_err(),
        impersonating.check().await.unwrap_err(),
        impersonating
            .message_changes(MailFolder::Inbox, Some("bad"), Utc::now())
            .await
            .unwrap_err(),
    ];
    let kinds: Vec<ErrorKind> = errors.iter().map(ConnectorError::kind).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::Authorization,
            ErrorKind::Throttled,
            ErrorKind::Authorization,
            ErrorKind::Authorization
        ]
    );
    for text in errors
        .iter()
        .flat_map(|error| [error.to_string(), format!("{error:?}")])
        .chain([format!("{wrong:?}"), format!("{impersonating:?}")])
    {
        assert!(!text.contains("7f3a"), "{text}");
    }
    let logon = EwsLogon::Direct {
        account: "a".to_owned(),
        password: SecretString::from(canary),
    };
    assert!(!format!("{logon:?}").contains("7f3a"));
}

#[tokio::test]
async fn the_ews_url_is_checked_against_the_ssrf_policy() {
    let exchange = Exchange::default().await;
    let error = EwsClient::new(
        http(UrlPolicy::STRICT),
        EwsOptions::default(),
        exchange.url(),
        EwsLogon::Direct {
            account: exchange.account.clone(),
            password: SecretString::from(exchange.password.clone()),
        },
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    let too_many = EwsClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        EwsOptions {
            max_changes_returned: 513,
            ..EwsOptions::default()
        },
        exchange.url(),
        EwsLogon::Direct {
            account: exchange.account.clone(),
            password: SecretString::from(exchange.password.clone()),
        },
    );
    assert!(too_many.is_err());
}
