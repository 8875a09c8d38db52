//! The Graph client against the Graph simulator.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use syncfleet_connectors::{
    ConnectorError, ErrorKind, Provider,
    graph::{CRM_ID_PROPERTY, GraphClient, GraphOptions},
    mailbox::{
        ADDIN_ID, AddinStatus, ContactDraft, Continuation, EventDraft, MailFolder, Mailbox, MessageChange,
        PRODUCT_CATEGORY, Upsert,
    },
    oauth::{GrantSink, OAuthApp, OAuthGrant, OAuthSession},
    ssrf::UrlPolicy,
};
use syncfleet_simulators::{
    Server,
    graph::{Endpoint, Fault, Folder, GraphConfig, GraphSimulator, LocalGraph, MessageSeed, Recipient},
};
use tokio_util::sync::CancellationToken;

use crate::support::http;

const CANARY: &str = "canary-7f3c9e2a-secret";

/// A simulated Graph with one mailbox and a refresh token for it; stops when dropped.
struct Graph {
    simulator: GraphSimulator,
    server: Server,
    mailbox: String,
    refresh_token: String,
    shutdown: CancellationToken,
}

impl Graph {
    async fn start(config: GraphConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalGraph {
            simulator,
            server,
            mailbox,
            refresh_token,
        } = GraphSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            server,
            mailbox,
            refresh_token,
            shutdown,
        }
    }

    async fn default() -> Self {
        Self::start(GraphConfig::default()).await
    }

    fn url(&self) -> Url {
        Url::parse(&self.server.base_url()).unwrap()
    }

    fn app(&self, client_secret: &str) -> Arc<OAuthApp> {
        Arc::new(OAuthApp {
            provider: Provider::Graph,
            token_url: self.url().join("/organizations/oauth2/v2.0/token").unwrap(),
            client_id: "syncfleet-tests".to_owned(),
            client_secret: SecretString::from(client_secret.to_owned()),
            scopes: vec![
                "https://graph.microsoft.com/.default".to_owned(),
                "offline_access".to_owned(),
            ],
        })
    }

    fn session(&self, refresh_token: &str) -> OAuthSession {
        OAuthSession::new(
            http(UrlPolicy::LOCAL_TESTS),
            self.app("client-secret"),
            SecretString::from(refresh_token.to_owned()),
        )
    }

    fn options(&self) -> GraphOptions {
        GraphOptions {
            base_url: self.url(),
            ..GraphOptions::default()
        }
    }

    fn client_with(&self, options: GraphOptions, session: OAuthSession) -> GraphClient {
        GraphClient::new(http(UrlPolicy::LOCAL_TESTS), options, self.mailbox.clone(), session)
    }

    fn client(&self) -> GraphClient {
        self.client_with(self.options(), self.session(&self.refresh_token))
    }

    fn seed(&self, folder: Folder, subject: &str, sent_at: DateTime<Utc>) -> String {
        self.simulator
            .add_message(
                &self.mailbox,
                folder,
                MessageSeed {
                    from: Recipient::named("Megan Bowen", "megan@contoso.example"),
                    to: vec![Recipient::new("client@example.test")],
                    cc: vec![Recipient::named("Alex Wilber", "alex@contoso.example")],
                    subject: subject.to_owned(),
                    sent_at,
                    body: format!("{subject}: the body, longer than the preview the client keeps."),
                },
            )
            .unwrap()
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Keeps every rotated refresh token it is handed, as the worker would persist them.
#[derive(Default)]
struct RecordingSink {
    tokens: Mutex<Vec<String>>,
}

impl GrantSink for RecordingSink {
    fn store<'a>(
        &'a self,
        grant: &'a OAuthGrant,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>> {
        if let Some(refresh_token) = &grant.refresh_token {
            self.tokens
                .lock()
                .unwrap()
                .push(refresh_token.expose_secret().to_owned());
        }
        Box::pin(async { Ok(()) })
    }
}

fn day(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, day, 9, 0, 0).unwrap()
}

/// Follows `folder` from `cursor` (or a baseline from `since`) to its end:
/// the changes, the pages read and the delta link to store.
async fn round(
    client: &GraphClient,
    folder: MailFolder,
    mut cursor: Option<String>,
    since: DateTime<Utc>,
) -> (Vec<MessageChange>, usize, String) {
    let mut changes = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.message_changes(folder, cursor.as_deref(), since).await.unwrap();
        pages += 1;
        changes.extend(page.changes);
        match page.continuation {
            Continuation::More(next) => cursor = Some(next),
            Continuation::Complete(delta) => return (changes, pages, delta),
        }
    }
}

fn upserted_ids(changes: &[MessageChange]) -> Vec<String> {
    let mut ids: Vec<String> = changes
        .iter()
        .filter_map(|change| match change {
            MessageChange::Upsert(message) => Some(message.id.clone()),
            MessageChange::Removed { .. } => None,
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn delta_pages_through_the_baseline_then_the_delta_link_returns_only_new_changed_and_removed() {
    let graph = Graph::default().await;
    graph.seed(Folder::Inbox, "Before the baseline", day(1));
    let mut inbox: Vec<String> = (0..7)
        .map(|index| graph.seed(Folder::Inbox, "Inbound", day(10 + index)))
        .collect();
    let sent = graph.seed(Folder::SentItems, "Outbound", day(12));
    let client = graph.client_with(
        GraphOptions {
            page_size: 3,
            body_preview_chars: 12,
            ..graph.options()
        },
        graph.session(&graph.refresh_token),
    );
    assert_eq!(client.folders(), [MailFolder::Inbox, MailFolder::SentItems]);

    let (changes, pages, delta_link) = round(&client, MailFolder::Inbox, None, day(5)).await;
    assert_eq!(pages, 3, "7 messages at 3 a page");
    inbox.sort();
    assert_eq!(
        upserted_ids(&changes),
        inbox,
        "immutable ids, and only from the baseline on"
    );
    let MessageChange::Upsert(message) = &changes[0] else {
        panic!("{changes:?}");
    };
    assert!(!message.sent_by_owner);
    assert_eq!(message.from.as_ref().unwrap().name.as_deref(), Some("Megan Bowen"));
    assert_eq!(message.to[0].address, "client@example.test");
    assert_eq!(
        message.to[0].name, None,
        "Graph repeats the address when there is no name"
    );
    assert_eq!(message.cc[0].address, "alex@contoso.example");
    assert_eq!(message.body_preview, "Inbound: the");
    assert!(message.internet_message_id.as_deref().unwrap().starts_with('<'));

    let (sent_changes, _, _) = round(&client, MailFolder::SentItems, None, day(5)).await;
    let [MessageChange::Upsert(outbound)] = sent_changes.as_slice() else {
        panic!("{sent_changes:?}");
    };
    assert_eq!((outbound.id.as_str(), outbound.sent_by_owner), (sent.as_str(), true));

    // Nothing changed: the delta link answers nothing.
    let (changes, _, delta_link) = round(&client, MailFolder::Inbox, Some(delta_link), day(5)).await;
    assert!(changes.is_empty(), "{changes:?}");

    let new = graph.seed(Folder::Inbox, "Newer", day(20));
    graph
        .simulator
        .update_message(&graph.mailbox, &inbox[0], "Renamed")
        .unwrap();
    graph.simulator.delete_message(&graph.mailbox, &inbox[1]).unwrap();
    let (changes, _, _) = round(&client, MailFolder::Inbox, Some(delta_link), day(5)).await;
    let mut expected = vec![new, inbox[0].clone()];
    expected.sort();
    assert_eq!(upserted_ids(&changes), expected);
    assert!(changes.contains(&MessageChange::Removed { id: inbox[1].clone() }));
    assert_eq!(changes.len(), 3);
    let counters = graph.simulator.counters(&graph.mailbox);
    assert_eq!(counters.calls_to(Endpoint::MessagesDelta), 3 + 1 + 1 + 1);
}

#[tokio::test]
async fn an_expired_delta_link_is_a_sync_state_expired_error() {
    let graph = Graph::default().await;
    graph.seed(Folder::Inbox, "Inbound", day(10));
    let client = graph.client();
    let (_, _, delta_link) = round(&client, MailFolder::Inbox, None, day(1)).await;

    graph.simulator.expire_delta_tokens(&graph.mailbox).unwrap();
    let error = client
        .message_changes(MailFolder::Inbox, Some(&delta_link), day(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");
    assert!(error.to_string().contains("syncStateNotFound"), "{error}");

    // A resync from scratch works again.
    let (changes, _, _) = round(&client, MailFolder::Inbox, None, day(1)).await;
    assert_eq!(changes.len(), 1);
}

#[tokio::test]
async fn a_delta_link_to_another_host_is_refused_before_any_call() {
    let graph = Graph::default().await;
    let client = graph.client();
    let elsewhere = "http://127.0.0.2:1/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken=abc";
    let error = client
        .message_changes(MailFolder::Inbox, Some(elsewhere), day(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert_eq!(client.calls(), 0);
}

#[tokio::test]
async fn a_throttled_answer_surfaces_the_delay_graph_gave() {
    let graph = Graph::default().await;
    let client = graph.client();
    let fault = Fault::Throttled {
        retry_after: Some(Duration::from_secs(7)),
    };
    graph.simulator.inject_fault(&graph.mailbox, fault, 1).unwrap();
    let error = client
        .message_changes(MailFolder::Inbox, None, day(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    graph
        .simulator
        .inject_fault(&graph.mailbox, Fault::Throttled { retry_after: None }, 1)
        .unwrap();
    let error = client.check().await.unwrap_err();
    assert_eq!((error.kind(), error.retry_after()), (ErrorKind::Throttled, None));

    graph
        .simulator
        .inject_fault(&graph.mailbox, Fault::ServerError, 1)
        .unwrap();
    assert_eq!(client.check().await.unwrap_err().kind(), ErrorKind::Transient);
    client.check().await.unwrap();
}

#[tokio::test]
async fn calls_past_the_mailbox_concurrency_are_throttled_and_counted() {
    let graph = Graph::default().await;
    graph.simulator.set_latency(Duration::from_millis(300), Duration::ZERO);
    let client = graph.client();
    let (a, b, c, d, e, f) = tokio::join!(
        client.check(),
        client.check(),
        client.check(),
        client.check(),
        client.check(),
        client.check()
    );
    let results = [a, b, c, d, e, f];
    let throttled: Vec<&ConnectorError> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert_eq!(throttled.len(), 2, "{results:?}");
    for error in throttled {
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
        assert!(error.to_string().contains("MailboxConcurrency"), "{error}");
    }
    assert_eq!(graph.simulator.counters(&graph.mailbox).throttled, 2);
}

#[tokio::test]
async fn rotated_refresh_tokens_reach_the_sink_and_the_old_ones_are_refused_afterwards() {
    // The simulator's strict mode: Microsoft leaves a rotated token valid,
    // this test wants each superseded one refused.
    let graph = Graph::start(GraphConfig {
        revoke_rotated_refresh_tokens: true,
        ..GraphConfig::default()
    })
    .await;
    let sink = Arc::new(RecordingSink::default());
    let session = graph.session(&graph.refresh_token).with_sink(sink.clone());
    let client = graph.client_with(graph.options(), session);

    client.check().await.unwrap();
    assert_eq!(sink.tokens.lock().unwrap().len(), 1);
    // The session ends: the client refreshes once with the rotated token and retries.
    graph.simulator.expire_sessions(&graph.mailbox).unwrap();
    client.check().await.unwrap();
    let tokens = sink.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    // Two refreshes, one read, then a refused read and its retry.
    assert_eq!(client.calls(), 2 + 1 + 2);
    assert_eq!(graph.simulator.counters(&graph.mailbox).calls_to(Endpoint::Token), 2);

    for old in [graph.refresh_token.as_str(), tokens[0].as_str()] {
        let error = graph
            .client_with(graph.options(), graph.session(old))
            .check()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
        assert!(error.to_string().contains("AADSTS50173"), "{error}");
    }
    // The newest one still works.
    graph
        .client_with(graph.options(), graph.session(&tokens[1]))
        .check()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_revoked_refresh_token_is_an_authorization_error() {
    let graph = Graph::default().await;
    graph.simulator.revoke_refresh_token(&graph.refresh_token);
    let error = graph.client().check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("invalid_grant"), "{error}");
}

#[tokio::test]
async fn a_token_refused_again_after_one_refresh_is_an_authorization_error() {
    let graph = Graph::default().await;
    let client = graph.client();
    graph
        .simulator
        .inject_fault(&graph.mailbox, Fault::Unauthorized, 2)
        .unwrap();
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("InvalidAuthenticationToken"), "{error}");
    assert_eq!(graph.simulator.counters(&graph.mailbox).calls_to(Endpoint::Token), 2);

    let other = "lidia.holloway@contoso.example";
    graph.simulator.create_mailbox(other);
    let elsewhere = GraphClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        graph.options(),
        other.to_owned(),
        graph.session(&graph.simulator.issue_refresh_token(&graph.mailbox).unwrap()),
    );
    let error = elsewhere.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("ErrorAccessDenied"), "{error}");
}

fn event(index: usize, subject: &str) -> EventDraft {
    let start = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap() + chrono::Duration::hours(index as i64);
    EventDraft {
        crm_id: format!("00U{index:012}"),
        subject: format!("{subject} {index}"),
        body: "Agenda".to_owned(),
        location: "Room 4".to_owned(),
        start,
        end: start + chrono::Duration::minutes(30),
    }
}

fn crm_id_of(item: &serde_json::Value) -> &str {
    item["singleValueExtendedProperties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|property| property["id"] == CRM_ID_PROPERTY)
        .unwrap()["value"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn twenty_five_events_go_in_two_batches_and_one_deleted_meanwhile_is_created_again() {
    let graph = Graph::default().await;
    // Calls take a while, so parallel inner requests would be throttled.
    graph
        .simulator
        .set_latency(Duration::from_millis(5), Duration::from_millis(5));
    let client = graph.client();
    let first: Vec<Upsert<EventDraft>> = (0..25)
        .map(|index| Upsert {
            existing: None,
            item: event(index, "Review"),
        })
        .collect();
    let ids: Vec<String> = client
        .upsert_events(&first)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let counters = graph.simulator.counters(&graph.mailbox);
    assert_eq!(counters.calls_to(Endpoint::Batch), 2);
    assert_eq!(counters.calls_to(Endpoint::Events), 25);
    assert_eq!(
        counters.throttled, 0,
        "never more than the mailbox's concurrency at once"
    );
    let events = graph.simulator.events(&graph.mailbox);
    assert_eq!(events.len(), 25);
    for (index, id) in ids.iter().enumerate() {
        let stored = events.iter().find(|stored| stored["id"] == id.as_str()).unwrap();
        assert_eq!(crm_id_of(stored), format!("00U{index:012}"));
        assert_eq!(stored["categories"], serde_json::json!([PRODUCT_CATEGORY]));
        assert_eq!(stored["start"]["timeZone"], "UTC");
    }

    graph.simulator.delete_event(&graph.mailbox, &ids[3]).unwrap();
    let second: Vec<Upsert<EventDraft>> = (0..25)
        .map(|index| Upsert {
            existing: Some(ids[index].clone()),
            item: event(index, "Rescheduled"),
        })
        .collect();
    let again: Vec<String> = client
        .upsert_events(&second)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_ne!(again[3], ids[3], "created again");
    for index in (0..25).filter(|index| *index != 3) {
        assert_eq!(again[index], ids[index]);
    }
    let events = graph.simulator.events(&graph.mailbox);
    assert_eq!(events.len(), 25);
    assert!(
        events
            .iter()
            .all(|stored| stored["subject"].as_str().unwrap().starts_with("Rescheduled"))
    );
    // The 404 fails the rest of its chain (424): they go again with the
    // re-creation, so three batches in all.
    assert_eq!(
        graph.simulator.counters(&graph.mailbox).calls_to(Endpoint::Batch),
        2 + 3
    );
}

#[tokio::test]
async fn inner_throttling_is_waited_out_once_when_short_and_is_the_items_error_when_long() {
    let graph = Graph::default().await;
    let client = graph.client();
    let events: Vec<Upsert<EventDraft>> = (0..3)
        .map(|index| Upsert {
            existing: None,
            item: event(index, "Call"),
        })
        .collect();
    let short = Fault::Throttled {
        retry_after: Some(Duration::from_secs(1)),
    };
    graph
        .simulator
        .inject_fault_on(&graph.mailbox, Endpoint::Events, short, 1)
        .unwrap();
    let results = client.upsert_events(&events).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(graph.simulator.counters(&graph.mailbox).calls_to(Endpoint::Batch), 2);

    let long = Fault::Throttled {
        retry_after: Some(Duration::from_secs(30)),
    };
    graph
        .simulator
        .inject_fault_on(&graph.mailbox, Endpoint::Events, long, 1)
        .unwrap();
    let results = client.upsert_events(&events).await.unwrap();
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(
        (error.kind(), error.retry_after()),
        (ErrorKind::Throttled, Some(Duration::from_secs(30)))
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(graph.simulator.events(&graph.mailbox).len(), 3 + 2);
}

#[tokio::test]
async fn a_refused_item_is_a_validation_error_and_the_others_are_written() {
    let graph = Graph::default().await;
    let client = graph.client();
    let mut backwards = event(1, "Backwards");
    backwards.end = backwards.start - chrono::Duration::hours(1);
    let events = [event(0, "Fine"), backwards, event(2, "Fine")].map(|item| Upsert { existing: None, item });
    let results = client.upsert_events(&events).await.unwrap();
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");

    let contacts = [Upsert {
        existing: None,
        item: ContactDraft {
            crm_id: "003000000000001".to_owned(),
            email: "ada@example.test".to_owned(),
            first_name: "Ada".to_owned(),
            last_name: "Lovelace".to_owned(),
            company: "Analytical Engines".to_owned(),
            phone: "+44 20 7946 0000".to_owned(),
        },
    }];
    let written = client.upsert_contacts(&contacts).await.unwrap();
    let id = written[0].as_ref().unwrap();
    let stored = graph.simulator.contacts(&graph.mailbox);
    assert_eq!(stored[0]["id"], id.as_str());
    assert_eq!(stored[0]["emailAddresses"][0]["address"], "ada@example.test");
    assert_eq!(stored[0]["businessPhones"][0], "+44 20 7946 0000");
    assert_eq!(crm_id_of(&stored[0]), "003000000000001");
}

#[tokio::test]
async fn initialize_and_reset_are_idempotent() {
    let graph = Graph::default().await;
    let client = graph.client();
    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    let categories = graph.simulator.categories(&graph.mailbox);
    assert_eq!(categories.len(), 1);
    assert_eq!(categories[0].display_name, PRODUCT_CATEGORY);
    let folders = graph.simulator.folders(&graph.mailbox);
    assert_eq!(folders.len(), 1);
    assert_eq!(folders[0].display_name, PRODUCT_CATEGORY);

    client.reset().await.unwrap();
    client.reset().await.unwrap();
    assert!(graph.simulator.categories(&graph.mailbox).is_empty());
    assert!(graph.simulator.folders(&graph.mailbox).is_empty());
    client.initialize().await.unwrap();
    assert_eq!(graph.simulator.folders(&graph.mailbox).len(), 1);
}

#[tokio::test]
async fn the_addin_is_installed_reported_and_removed() {
    let graph = Graph::default().await;
    let client = graph.client();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
    client.install_addin().await.unwrap();
    client.install_addin().await.unwrap();
    assert_eq!(graph.simulator.addin(&graph.mailbox).as_deref(), Some(ADDIN_ID));
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::Installed);
    client.remove_addin().await.unwrap();
    client.remove_addin().await.unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);

    // Another add-in installed by an administrator is not ours.
    graph
        .simulator
        .set_addin(&graph.mailbox, Some("00000000-0000-4000-8000-000000000000"))
        .unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the canary: {text}");
}

#[tokio::test]
async fn a_canary_secret_never_appears_in_any_error_or_debug_output() {
    let graph = Graph::default().await;
    let app = graph.app(&format!("{CANARY}-client-secret"));
    assert_clean("OAuthApp Debug", &format!("{app:?}"));
    let session = OAuthSession::new(
        http(UrlPolicy::LOCAL_TESTS),
        app.clone(),
        SecretString::from(format!("{CANARY}-refresh")),
    );
    assert_clean("OAuthSession Debug", &format!("{session:?}"));
    let client = graph.client_with(graph.options(), session);
    assert_clean("GraphClient Debug", &format!("{client:?}"));

    let mut errors = vec![
        client.check().await.unwrap_err(),
        client
            .message_changes(MailFolder::Inbox, None, day(1))
            .await
            .unwrap_err(),
        client
            .message_changes(
                MailFolder::Inbox,
                Some(&format!("https://evil.example/v1.0/?token={CANARY}")),
                day(1),
            )
            .await
            .unwrap_err(),
        client
            .upsert_events(&[Upsert {
                existing: None,
                item: event(0, "x"),
            }])
            .await
            .unwrap_err(),
    ];
    // A good session whose access token the provider then refuses.
    let good = OAuthSession::new(
        http(UrlPolicy::LOCAL_TESTS),
        app,
        SecretString::from(graph.refresh_token.clone()),
    );
    let client = graph.client_with(graph.options(), good.clone());
    client.check().await.unwrap();
    graph
        .simulator
        .inject_fault(&graph.mailbox, Fault::Unauthorized, 2)
        .unwrap();
    errors.push(client.check().await.unwrap_err());
    assert_clean("OAuthSession Debug", &format!("{good:?}"));

    for url in [
        format!("https://user:{CANARY}@example.com"),
        format!("http://10.0.0.1/?token={CANARY}"),
    ] {
        let refused = graph.client_with(
            GraphOptions {
                base_url: Url::parse(&url).unwrap(),
                ..GraphOptions::default()
            },
            graph.session(&graph.refresh_token),
        );
        assert_clean("GraphClient Debug", &format!("{refused:?}"));
        errors.push(
            refused
                .message_changes(MailFolder::Inbox, None, day(1))
                .await
                .unwrap_err(),
        );
    }

    assert_eq!(errors.len(), 7);
    for error in &errors {
        assert_clean("Display", &error.to_string());
        assert_clean("Debug", &format!("{error:?}"));
    }
    assert_eq!(errors[0].kind(), ErrorKind::Authorization, "{}", errors[0]);
}

#[tokio::test]
async fn both_folders_first_pages_travel_in_one_batch_and_answer_as_the_direct_calls_do() {
    let graph = Graph::default().await;
    let inbound: Vec<String> = (0..4)
        .map(|index| graph.seed(Folder::Inbox, "Inbound", day(10 + index)))
        .collect();
    let outbound = graph.seed(Folder::SentItems, "Outbound", day(12));
    let client = graph.client_with(
        GraphOptions {
            page_size: 3,
            ..graph.options()
        },
        graph.session(&graph.refresh_token),
    );
    let streams = [(MailFolder::Inbox, None), (MailFolder::SentItems, None)];
    let pages = client.first_pages(&streams, day(5)).await.unwrap();
    let counters = graph.simulator.counters(&graph.mailbox);
    assert_eq!(
        (
            counters.calls_to(Endpoint::Batch),
            counters.calls_to(Endpoint::MessagesDelta)
        ),
        (1, 2),
        "one call for both folders"
    );
    let [Ok(inbox), Ok(sent)] = pages.as_slice() else {
        panic!("{pages:?}");
    };
    // The inbox has a second page, followed directly from the batch's link.
    assert_eq!(inbox.changes.len(), 3);
    let Continuation::More(next) = &inbox.continuation else {
        panic!("{inbox:?}");
    };
    let (rest, _, inbox_delta) = round(&client, MailFolder::Inbox, Some(next.clone()), day(5)).await;
    let mut seen = upserted_ids(&inbox.changes);
    seen.extend(upserted_ids(&rest));
    seen.sort();
    let mut expected = inbound.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(upserted_ids(&sent.changes), [outbound]);
    let Continuation::Complete(sent_delta) = &sent.continuation else {
        panic!("{sent:?}");
    };

    // From the stored delta links: only the new mail; expired delta links
    // come back as each folder's own error, for the caller to resync.
    let newer = graph.seed(Folder::Inbox, "Newer", day(20));
    let streams = [
        (MailFolder::Inbox, Some(inbox_delta.as_str())),
        (MailFolder::SentItems, Some(sent_delta.as_str())),
    ];
    let pages = client.first_pages(&streams, day(5)).await.unwrap();
    let [Ok(inbox), Ok(sent)] = pages.as_slice() else {
        panic!("{pages:?}");
    };
    assert_eq!(upserted_ids(&inbox.changes), [newer]);
    assert!(sent.changes.is_empty());
    graph.simulator.expire_delta_tokens(&graph.mailbox).unwrap();
    let pages = client.first_pages(&streams, day(5)).await.unwrap();
    for page in &pages {
        let error = page.as_ref().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");
    }
    let counters = graph.simulator.counters(&graph.mailbox);
    assert_eq!(counters.calls_to(Endpoint::Batch), 3);
}
