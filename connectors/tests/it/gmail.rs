//! The Gmail client against the simulator.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::SecretString;
use syncfleet_connectors::{
    ConnectorError, ErrorKind, Provider,
    gmail::{GmailClient, GmailOptions},
    mailbox::{
        ADDIN_ID, AddinStatus, ContactDraft, Continuation, EventDraft, MailFolder, MailMessage, Mailbox, MessageChange,
        MessagePage, PRODUCT_CATEGORY, Upsert,
    },
    oauth::{OAuthApp, OAuthSession},
    ssrf::UrlPolicy,
};
use syncfleet_simulators::{
    Server,
    gmail::{Endpoint, Fault, GmailConfig, GmailSimulator, LocalGmail, MessageSeed},
};
use tokio_util::sync::CancellationToken;

use crate::support::http;

/// A simulated Gmail with one mailbox and a refresh token for it; stops when dropped.
struct Gmail {
    simulator: GmailSimulator,
    server: Server,
    email: String,
    refresh_token: String,
    shutdown: CancellationToken,
}

impl Gmail {
    async fn start(config: GmailConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalGmail {
            simulator,
            server,
            email,
            refresh_token,
        } = GmailSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            server,
            email,
            refresh_token,
            shutdown,
        }
    }

    async fn default() -> Self {
        Self::start(GmailConfig::default()).await
    }

    fn url(&self) -> Url {
        Url::parse(&self.server.base_url()).unwrap()
    }

    fn app(&self, client_secret: &str) -> Arc<OAuthApp> {
        Arc::new(OAuthApp {
            provider: Provider::Gmail,
            token_url: self.url().join("/token").unwrap(),
            client_id: "syncfleet-tests.apps.googleusercontent.com".to_owned(),
            client_secret: SecretString::from(client_secret.to_owned()),
            scopes: Vec::new(),
        })
    }

    fn session_with(&self, refresh_token: &str) -> OAuthSession {
        OAuthSession::new(
            http(UrlPolicy::LOCAL_TESTS),
            self.app("client-secret"),
            SecretString::from(refresh_token.to_owned()),
        )
    }

    fn options(&self) -> GmailOptions {
        GmailOptions {
            base_url: self.url(),
            ..GmailOptions::default()
        }
    }

    fn client(&self) -> GmailClient {
        self.client_with(self.options())
    }

    fn client_with(&self, options: GmailOptions) -> GmailClient {
        GmailClient::new(
            http(UrlPolicy::LOCAL_TESTS),
            options,
            self.session_with(&self.refresh_token),
        )
    }

    fn add(&self, subject: &str, sent_at: DateTime<Utc>, sent: bool) -> String {
        self.simulator
            .add_message(
                &self.email,
                MessageSeed {
                    from: "\"Doe, Ann\" <ann@example.test>".to_owned(),
                    to: vec!["Owner <owner@gmail.simulated>".to_owned()],
                    cc: vec!["bo@example.test".to_owned(), "Cy <cy@example.test>".to_owned()],
                    subject: subject.to_owned(),
                    sent_at,
                    snippet: format!("About {subject} & more"),
                    sent,
                    message_id: None,
                },
            )
            .unwrap()
    }

    fn counters(&self) -> syncfleet_simulators::gmail::Counters {
        self.simulator.counters(&self.email).unwrap()
    }
}

impl Drop for Gmail {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn hours_ago(hours: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(hours)
}

/// Follows `More` until `Complete`: the pages and the final cursor.
async fn drain(client: &GmailClient, cursor: Option<String>, since: DateTime<Utc>) -> (Vec<MessagePage>, String) {
    let mut cursor = cursor;
    let mut pages = Vec::new();
    loop {
        let page = client
            .message_changes(MailFolder::AllMail, cursor.as_deref(), since)
            .await
            .unwrap();
        let continuation = page.continuation.clone();
        pages.push(page);
        match continuation {
            Continuation::More(next) => cursor = Some(next),
            Continuation::Complete(done) => return (pages, done),
        }
        assert!(pages.len() < 50, "the stream never completes");
    }
}

fn upserts(pages: &[MessagePage]) -> Vec<MailMessage> {
    pages
        .iter()
        .flat_map(|page| &page.changes)
        .filter_map(|change| match change {
            MessageChange::Upsert(message) => Some(message.clone()),
            MessageChange::Removed { .. } => None,
        })
        .collect()
}

fn removals(pages: &[MessagePage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| &page.changes)
        .filter_map(|change| match change {
            MessageChange::Removed { id } => Some(id.clone()),
            MessageChange::Upsert(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn a_full_sync_pages_through_mail_after_since_then_history_brings_additions_and_deletions() {
    let gmail = Gmail::default().await;
    let recent: Vec<String> = (0..5)
        .map(|index| gmail.add(&format!("Recent {index}"), hours_ago(index + 1), index == 2))
        .collect();
    let old = gmail.add("Old", hours_ago(24 * 10), false);
    let client = gmail.client_with(GmailOptions {
        page_size: 3,
        batch_size: 2,
        ..gmail.options()
    });
    assert_eq!(client.folders(), [MailFolder::AllMail]);
    let since = hours_ago(24 * 6);

    let (pages, cursor) = drain(&client, None, since).await;
    assert_eq!(pages.len(), 2, "five messages in pages of three");
    assert!(matches!(&pages[0].continuation, Continuation::More(next) if next.starts_with("full:")));
    assert!(cursor.starts_with("history:"), "{cursor}");
    let synced = upserts(&pages);
    let ids: HashSet<&str> = synced.iter().map(|message| message.id.as_str()).collect();
    assert_eq!(
        ids,
        recent.iter().map(String::as_str).collect(),
        "the old message is before since"
    );
    let sent = synced.iter().find(|message| message.id == recent[2]).unwrap();
    assert!(sent.sent_by_owner);
    assert_eq!(sent.subject, "Recent 2");
    assert_eq!(sent.body_preview, "About Recent 2 & more");
    let from = sent.from.as_ref().unwrap();
    assert_eq!(
        (from.address.as_str(), from.name.as_deref()),
        ("ann@example.test", Some("Doe, Ann"))
    );
    assert_eq!(sent.to[0].address, "owner@gmail.simulated");
    assert_eq!(sent.cc.len(), 2);
    assert!(
        sent.internet_message_id
            .as_deref()
            .unwrap()
            .ends_with("@mail.simulated>")
    );
    assert!((sent.sent_at - hours_ago(3)).num_seconds().abs() < 60);
    assert_eq!(synced.iter().filter(|message| message.sent_by_owner).count(), 1);

    // Pages of three fetched two at a time: 2 + 1 batches, then 1.
    let counters = gmail.counters();
    assert_eq!(counters.calls_to(Endpoint::Profile), 1);
    assert_eq!(counters.calls_to(Endpoint::MessagesList), 2);
    assert_eq!(counters.calls_to(Endpoint::Batch), 3);
    assert_eq!(counters.calls_to(Endpoint::MessagesGet), 5);
    assert_eq!(client.quota_units_used(), counters.units_used);
    assert_eq!(client.quota_units_used(), 1 + 2 * 5 + 5 * 5);
    // One refresh, one profile, two lists, three batches.
    assert_eq!(client.calls(), 7);

    // New mail, a deletion and one message added and deleted in between.
    let fresh: Vec<String> = (0..3)
        .map(|index| gmail.add(&format!("Fresh {index}"), Utc::now(), false))
        .collect();
    let fleeting = gmail.add("Fleeting", Utc::now(), false);
    gmail.simulator.delete_message(&gmail.email, &fleeting).unwrap();
    gmail.simulator.delete_message(&gmail.email, &recent[0]).unwrap();
    gmail.simulator.delete_message(&gmail.email, &old).unwrap();
    let gets_before = gmail.counters().calls_to(Endpoint::MessagesGet);

    let (pages, next_cursor) = drain(&client, Some(cursor.clone()), since).await;
    assert!(pages.len() >= 2, "seven history records in pages of three");
    assert!(matches!(&pages[0].continuation, Continuation::More(next) if next.starts_with("history:")));
    let added: Vec<String> = upserts(&pages).into_iter().map(|message| message.id).collect();
    assert_eq!(added, fresh);
    assert_eq!(removals(&pages), [fleeting.clone(), recent[0].clone(), old.clone()]);
    // The fleeting message was not fetched: its deletion came in the same page.
    assert_eq!(gmail.counters().calls_to(Endpoint::MessagesGet) - gets_before, 3);
    assert_ne!(next_cursor, cursor);

    // Caught up: nothing more, and the cursor holds.
    let page = client
        .message_changes(MailFolder::AllMail, Some(&next_cursor), since)
        .await
        .unwrap();
    assert!(page.changes.is_empty());
    assert_eq!(page.continuation, Continuation::Complete(next_cursor));
}

#[tokio::test]
async fn a_stale_history_id_expires_the_sync_state_and_a_full_sync_recovers() {
    let gmail = Gmail::default().await;
    gmail.add("Before", hours_ago(1), false);
    let client = gmail.client();
    let since = hours_ago(24);
    let (_, cursor) = drain(&client, None, since).await;

    let later = gmail.add("Later", Utc::now(), false);
    gmail.simulator.expire_history(&gmail.email).unwrap();
    let error = client
        .message_changes(MailFolder::AllMail, Some(&cursor), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");

    let (pages, fresh_cursor) = drain(&client, None, since).await;
    let ids: Vec<String> = upserts(&pages).into_iter().map(|message| message.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&later));
    let page = client
        .message_changes(MailFolder::AllMail, Some(&fresh_cursor), since)
        .await
        .unwrap();
    assert!(page.changes.is_empty());

    // The simulator's stale-history fault answers the same way.
    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::StaleHistory, 1)
        .unwrap();
    let error = client
        .message_changes(MailFolder::AllMail, Some(&fresh_cursor), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");

    // A cursor this connector never wrote restarts the stream too.
    let error = client
        .message_changes(MailFolder::AllMail, Some("delta:abc"), since)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SyncStateExpired, "{error}");
}

#[tokio::test]
async fn a_message_deleted_between_list_and_get_is_skipped() {
    let gmail = Gmail::default().await;
    let kept = gmail.add("Kept", hours_ago(2), false);
    let doomed = gmail.add("Doomed", hours_ago(1), false);
    let client = gmail.client();
    // Each call waits, so the deletion lands after the list and before the batch.
    gmail.simulator.set_latency(Duration::from_millis(400), Duration::ZERO);
    let since = hours_ago(24);
    let sync = tokio::spawn(async move { client.message_changes(MailFolder::AllMail, None, since).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gmail.counters().calls_to(Endpoint::MessagesList) == 0 {
        assert!(Instant::now() < deadline, "the list never came");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gmail.simulator.delete_message(&gmail.email, &doomed).unwrap();
    let page = sync.await.unwrap().unwrap();
    let ids: Vec<String> = upserts(std::slice::from_ref(&page))
        .into_iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(ids, [kept]);
    assert_eq!(
        gmail.counters().calls_to(Endpoint::MessagesGet),
        2,
        "both were asked for"
    );
    assert!(matches!(page.continuation, Continuation::Complete(_)));
}

#[tokio::test]
async fn the_per_user_quota_throttles_batch_parts_and_calls_and_the_counters_show_it() {
    let gmail = Gmail::start(GmailConfig {
        per_user_units_per_minute: 12,
        ..GmailConfig::default()
    })
    .await;
    gmail.add("One", hours_ago(1), false);
    gmail.add("Two", hours_ago(2), false);
    let client = gmail.client();

    // Profile 1 + list 5 + first get 5 fit in 12; the second get does not,
    // not even when asked again.
    let error = client
        .message_changes(MailFolder::AllMail, None, hours_ago(24))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
    assert!(
        error
            .retry_after()
            .is_some_and(|delay| delay <= Duration::from_secs(60))
    );
    assert!(error.to_string().contains("userRateLimitExceeded"), "{error}");
    let counters = gmail.counters();
    assert_eq!(counters.throttled, 2);
    assert_eq!(
        counters.calls_to(Endpoint::Batch),
        2,
        "the refused part was asked again once"
    );
    assert_eq!(counters.units_used, 11);
    assert_eq!(client.quota_units_used(), 11, "refused parts spend nothing");

    // A whole call over the limit is throttled with the delay Gmail gave.
    client.check().await.unwrap();
    gmail.simulator.set_units_in_last_minute(&gmail.email, 12).unwrap();
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
    // The units were spent this second: they leave the window in about a minute.
    let delay = error.retry_after().unwrap();
    assert!(
        delay >= Duration::from_secs(58) && delay <= Duration::from_secs(60),
        "{delay:?}"
    );
    assert_eq!(gmail.counters().throttled, 3);
}

#[tokio::test]
async fn a_throttled_part_asked_again_once_succeeds() {
    let gmail = Gmail::default().await;
    let id = gmail.add("One", hours_ago(1), false);
    gmail
        .simulator
        .inject_fault_on(&gmail.email, Endpoint::MessagesGet, Fault::RateLimit, 1)
        .unwrap();
    let client = gmail.client();
    let page = client
        .message_changes(MailFolder::AllMail, None, hours_ago(24))
        .await
        .unwrap();
    let ids: Vec<String> = upserts(&[page]).into_iter().map(|message| message.id).collect();
    assert_eq!(ids, [id]);
    assert_eq!(gmail.counters().calls_to(Endpoint::Batch), 2);
}

#[tokio::test]
async fn a_spent_daily_limit_is_quota_exhausted_and_a_server_error_transient() {
    let gmail = Gmail::default().await;
    gmail.add("One", hours_ago(1), false);
    let client = gmail.client();
    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::DailyLimit, 1)
        .unwrap();
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::QuotaExhausted, "{error}");

    gmail
        .simulator
        .inject_fault_on(&gmail.email, Endpoint::MessagesGet, Fault::ServerError, 1)
        .unwrap();
    let error = client
        .message_changes(MailFolder::AllMail, None, hours_ago(24))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_the_call_succeeds() {
    let gmail = Gmail::default().await;
    let client = gmail.client();
    client.check().await.unwrap();
    assert_eq!(gmail.counters().calls_to(Endpoint::Token), 1);

    gmail.simulator.expire_access_tokens(&gmail.email);
    client.check().await.unwrap();
    assert_eq!(gmail.counters().calls_to(Endpoint::Token), 2);

    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::Unauthorized, 1)
        .unwrap();
    client.check().await.unwrap();
    assert_eq!(gmail.counters().calls_to(Endpoint::Token), 3);
    // Five profile calls (two refused) and three refreshes.
    assert_eq!(client.calls(), 8);

    // Refused again after the refresh: an authorization error, no loop.
    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::Unauthorized, 2)
        .unwrap();
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert_eq!(gmail.counters().calls_to(Endpoint::Token), 4);
}

#[tokio::test]
async fn a_401_in_a_batch_part_refreshes_and_asks_the_part_again() {
    let gmail = Gmail::default().await;
    let id = gmail.add("One", hours_ago(1), false);
    gmail
        .simulator
        .inject_fault_on(&gmail.email, Endpoint::MessagesGet, Fault::Unauthorized, 1)
        .unwrap();
    let client = gmail.client();
    let page = client
        .message_changes(MailFolder::AllMail, None, hours_ago(24))
        .await
        .unwrap();
    assert_eq!(upserts(&[page])[0].id, id);
    assert_eq!(gmail.counters().calls_to(Endpoint::Token), 2);
}

#[tokio::test]
async fn a_revoked_refresh_token_is_an_authorization_error() {
    let gmail = Gmail::default().await;
    gmail.simulator.revoke_refresh_token(&gmail.refresh_token);
    let client = gmail.client();
    let error = client.check().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert_eq!(
        error.to_string(),
        "Gmail refused the authorization: invalid_grant: Token has been expired or revoked."
    );
    let error = client
        .message_changes(MailFolder::AllMail, None, hours_ago(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert_eq!(gmail.counters().calls_to(Endpoint::Profile), 0);
}

#[tokio::test]
async fn initialize_and_reset_manage_the_product_label_idempotently() {
    let gmail = Gmail::default().await;
    let client = gmail.client();
    let user_labels = || -> Vec<String> {
        gmail
            .simulator
            .labels(&gmail.email)
            .unwrap()
            .into_iter()
            .filter(|label| label.kind == "user")
            .map(|label| label.name)
            .collect()
    };
    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    assert_eq!(user_labels(), [PRODUCT_CATEGORY]);
    assert_eq!(gmail.counters().calls_to(Endpoint::LabelsCreate), 1);

    client.reset().await.unwrap();
    client.reset().await.unwrap();
    assert!(user_labels().is_empty());
    assert_eq!(gmail.counters().calls_to(Endpoint::LabelsDelete), 1);

    client.initialize().await.unwrap();
    assert_eq!(user_labels(), [PRODUCT_CATEGORY]);
}

#[tokio::test]
async fn the_addin_state_follows_install_and_remove() {
    let gmail = Gmail::default().await;
    let client = gmail.client();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
    client.install_addin().await.unwrap();
    client.install_addin().await.unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::Installed);
    assert_eq!(gmail.simulator.addin(&gmail.email).unwrap().as_deref(), Some(ADDIN_ID));

    // Another add-in is not ours.
    gmail
        .simulator
        .set_addin(&gmail.email, Some("someone-else".to_owned()))
        .unwrap();
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);

    client.remove_addin().await.unwrap();
    client.remove_addin().await.unwrap();
    assert_eq!(gmail.simulator.addin(&gmail.email).unwrap(), None);
    assert_eq!(client.addin_status().await.unwrap(), AddinStatus::NotInstalled);
}

#[tokio::test]
async fn events_and_contacts_are_refused_without_a_call() {
    let gmail = Gmail::default().await;
    let client = gmail.client();
    assert!(!client.writes_crm_items());
    let event = Upsert {
        existing: None,
        item: EventDraft {
            crm_id: "00U000000000001".to_owned(),
            subject: "Meeting".to_owned(),
            body: String::new(),
            location: String::new(),
            start: Utc::now(),
            end: Utc::now(),
        },
    };
    let error = client.upsert_events(&[event]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("not supported by the Gmail API"), "{error}");
    let contact = Upsert {
        existing: None,
        item: ContactDraft {
            crm_id: "003000000000001".to_owned(),
            email: "ann@example.test".to_owned(),
            first_name: "Ann".to_owned(),
            last_name: "Example".to_owned(),
            company: String::new(),
            phone: String::new(),
        },
    };
    let error = client.upsert_contacts(&[contact]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert_eq!(client.calls(), 0);
    assert_eq!(gmail.counters().total_calls(), 0);
    let error = client
        .message_changes(MailFolder::Inbox, None, Utc::now())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
}

const CANARY: &str = "canary-5d1b7e4c-secret";

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the canary: {text}");
}

fn check_error(error: &ConnectorError) {
    assert_clean("Display", &error.to_string());
    assert_clean("Debug", &format!("{error:?}"));
}

#[tokio::test]
async fn a_canary_secret_never_appears_in_any_error_or_debug_output() {
    let gmail = Gmail::default().await;
    let app = gmail.app(&format!("{CANARY}-client-secret"));
    assert_clean("Debug", &format!("{app:?}"));
    let session = OAuthSession::new(
        http(UrlPolicy::LOCAL_TESTS),
        app.clone(),
        SecretString::from(format!("{CANARY}-refresh")),
    );
    assert_clean("Debug", &format!("{session:?}"));
    let client = GmailClient::new(http(UrlPolicy::LOCAL_TESTS), gmail.options(), session);
    assert_clean("Debug", &format!("{client:?}"));

    let mut errors = vec![client.check().await.unwrap_err()];
    errors.push(
        client
            .message_changes(MailFolder::AllMail, None, Utc::now())
            .await
            .unwrap_err(),
    );
    errors.push(client.initialize().await.unwrap_err());

    // A working session whose token is refused, with the canary as the secret.
    let good = OAuthSession::new(
        http(UrlPolicy::LOCAL_TESTS),
        app.clone(),
        SecretString::from(gmail.refresh_token.clone()),
    );
    let client = GmailClient::new(http(UrlPolicy::LOCAL_TESTS), gmail.options(), good.clone());
    client.check().await.unwrap();
    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::Unauthorized, 2)
        .unwrap();
    errors.push(client.check().await.unwrap_err());
    assert_clean("Debug", &format!("{client:?}"));

    // A base URL carrying the canary is refused without repeating it.
    for url in [
        format!("https://user:{CANARY}@example.com"),
        format!("http://10.0.0.1/?token={CANARY}"),
    ] {
        let client = GmailClient::new(
            http(UrlPolicy::LOCAL_TESTS),
            GmailOptions {
                base_url: Url::parse(&url).unwrap(),
                ..GmailOptions::default()
            },
            good.clone(),
        );
        errors.push(client.check().await.unwrap_err());
    }

    assert_eq!(errors.len(), 6);
    for error in &errors {
        check_error(error);
    }
}
