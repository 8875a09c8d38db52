//! The real sync of an Office 365 user through the Graph and Salesforce
//! simulators, the real PostgreSQL and RabbitMQ.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::Value;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    secrets::{self, CredentialKind, Owner},
    session_log,
};
use syncfleet_simulators::graph::{Fault, Folder, MessageSeed, Recipient};
use syncfleet_testkit::{Providers, TestEnv, organization, session_count, test_key_ring, users, wait_until};
use syncfleet_worker::{
    config,
    sync::{MailboxSync, ProviderConfig},
};
use uuid::Uuid;

use crate::support::{RunningWorker, force_sync, start};

const LIMIT: Duration = Duration::from_secs(60);
const BUYER: &str = "buyer@customer.example";

struct Fixture {
    env: TestEnv,
    providers: Providers,
    user: Uuid,
    email: String,
}

impl Fixture {
    async fn new() -> Self {
        let env = TestEnv::new().await;
        let providers = Providers::start().await;
        let org = organization(&env.pool, AccessType::Office365, true).await;
        let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
        providers.connect_office365(&env.pool, user).await;
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        Self {
            env,
            providers,
            user,
            email,
        }
    }

    fn worker(&self, extra: &[(&str, &str)]) -> RunningWorker {
        let provider_env = self.providers.env();
        let mut settings: Vec<(&str, &str)> = provider_env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        settings.extend_from_slice(extra);
        let source = self.env.source(&settings);
        let sync = MailboxSync::new(
            ProviderConfig::from_source(&source).unwrap(),
            config::budget(&source).unwrap(),
        )
        .unwrap();
        start(&self.env, sync, &settings)
    }

    fn mail(&self, from: &str, subject: &str, sent_at: DateTime<Utc>) -> MessageSeed {
        MessageSeed {
            from: Recipient::new(from),
            to: vec![Recipient::new(&self.email)],
            cc: Vec::new(),
            subject: subject.to_owned(),
            sent_at,
            body: format!("About {subject}."),
        }
    }

    fn receive(&self, from: &str, subject: &str) -> String {
        self.providers
            .graph
            .add_message(&self.email, Folder::Inbox, self.mail(from, subject, Utc::now()))
            .unwrap()
    }

    fn tasks(&self) -> Vec<serde_json::Map<String, Value>> {
        self.providers.salesforce.records(&self.providers.org, "Task")
    }

    /// Forces a sync and waits for its session to end; answers its status.
    async fn sync_once(&self) -> String {
        let before: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1 AND status <> 'running'")
                .bind(self.user)
                .fetch_one(&self.env.pool)
                .await
                .unwrap();
        // Force sync is refused within a minute by the api, not by the worker.
        force_sync(&self.env, self.user).await;
        wait_until(LIMIT, "the session to end", || async {
            let ended: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1 AND status <> 'running'")
                    .bind(self.user)
                    .fetch_one(&self.env.pool)
                    .await
                    .unwrap();
            ended > before
        })
        .await;
        self.last_session().await.0
    }

    /// (status, scope, items to CRM, error category, error source) of the
    /// latest session.
    async fn last_session(&self) -> (String, String, i32, Option<String>, Option<String>) {
        sqlx::query_as(
            "SELECT status, scope, items_to_crm, error_category, error_source FROM sync_sessions \
             WHERE user_id = $1 AND status <> 'running' ORDER BY started_at DESC LIMIT 1",
        )
        .bind(self.user)
        .fetch_one(&self.env.pool)
        .await
        .unwrap()
    }

    async fn issues(&self) -> Vec<(String, String, Option<String>, String)> {
        sqlx::query_as(
            "SELECT source, category, item_ref, message FROM sync_issues WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(self.user)
        .fetch_all(&self.env.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn new_mail_to_a_known_contact_becomes_exactly_one_task_even_when_replayed() {
    let fixture = Fixture::new().await;
    let contact = fixture
        .providers
        .salesforce
        .insert_contact(&fixture.providers.org, BUYER)
        .unwrap();
    fixture.receive(BUYER, "Quote for 40 seats");
    fixture.receive("friend@gmail.com", "Dinner?");
    fixture.receive("stranger@unknown.example", "Cold call");
    let old = fixture.mail(BUYER, "Last month", Utc::now() - chrono::Duration::days(20));
    fixture
        .providers
        .graph
        .add_message(&fixture.email, Folder::Inbox, old)
        .unwrap();
    let worker = fixture.worker(&[]);

    assert_eq!(fixture.sync_once().await, "succeeded");
    let (_, scope, items, _, _) = fixture.last_session().await;
    assert_eq!((scope.as_str(), items), ("initial", 1));
    let tasks = fixture.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["WhoId"], Value::String(contact));
    assert_eq!(tasks[0]["Subject"], "Email: Quote for 40 seats");
    assert_eq!(tasks[0]["TaskSubtype"], "Email");
    let status: String = sqlx::query_scalar("SELECT mailbox_status FROM users WHERE id = $1")
        .bind(fixture.user)
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    assert_eq!(status, "initialized");
    assert!(
        fixture
            .providers
            .graph
            .categories(&fixture.email)
            .iter()
            .any(|category| category.display_name == "Syncfleet")
    );

    // The CRM write happened but the cursors were never committed (a worker
    // killed in between): the replay upserts the same record.
    sqlx::query("DELETE FROM sync_state WHERE user_id = $1")
        .bind(fixture.user)
        .execute(&fixture.env.pool)
        .await
        .unwrap();
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1, "a replay never duplicates");

    // New mail in the next session: incremental, one more Task.
    fixture.receive(BUYER, "Signed order");
    assert_eq!(fixture.sync_once().await, "succeeded");
    let (_, scope, items, _, _) = fixture.last_session().await;
    assert_eq!((scope.as_str(), items), ("incremental", 1));
    assert_eq!(fixture.tasks().len(), 2);

    // The session's log names every step, with timings.
    let log: Vec<u8> = sqlx::query_scalar(
        "SELECT l.log_gzip FROM sync_session_logs l JOIN sync_sessions s ON s.id = l.session_id \
         WHERE s.user_id = $1 ORDER BY s.started_at DESC LIMIT 1",
    )
    .bind(fixture.user)
    .fetch_one(&fixture.env.pool)
    .await
    .unwrap();
    let steps: Vec<String> = session_log::decode_gzip(&log)
        .unwrap()
        .into_iter()
        .filter(|entry| entry.duration_ms.is_some())
        .map(|entry| entry.step)
        .collect();
    assert_eq!(
        steps,
        [
            "check_settings",
            "check_mailbox",
            "check_crm",
            "mail_to_crm:inbox",
            "mail_to_crm:sent",
            "crm_to_mailbox"
        ]
    );
    let calls: Value =
        sqlx::query_scalar("SELECT calls FROM sync_sessions WHERE user_id = $1 ORDER BY started_at DESC LIMIT 1")
            .bind(fixture.user)
            .fetch_one(&fixture.env.pool)
            .await
            .unwrap();
    assert!(calls["graph"].as_u64().unwrap() >= 3, "{calls}");
    assert!(calls["salesforce"].as_u64().unwrap() >= 3, "{calls}");
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn an_expired_delta_token_leads_to_a_full_resync_without_duplicates() {
    let fixture = Fixture::new().await;
    fixture
        .providers
        .salesforce
        .insert_contact(&fixture.providers.org, BUYER)
        .unwrap();
    fixture.receive(BUYER, "First");
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1);

    fixture.providers.graph.expire_delta_tokens(&fixture.email).unwrap();
    fixture.receive(BUYER, "Second");
    assert_eq!(fixture.sync_once().await, "succeeded_with_issues");
    let (_, scope, _, _, _) = fixture.last_session().await;
    assert_eq!(scope, "full_resync");
    assert_eq!(
        fixture.tasks().len(),
        2,
        "the resync rewrote the first Task, not a copy"
    );
    let issues = fixture.issues().await;
    assert!(
        issues
            .iter()
            .any(|(source, category, _, _)| source == "mailbox" && category == "sync_state_reset"),
        "{issues:?}"
    );
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_revoked_refresh_token_fails_the_session_with_an_authorization_issue() {
    let fixture = Fixture::new().await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // Microsoft rotated the token at the first refresh: revoke the stored one.
    let stored = secrets::load(
        &fixture.env.pool,
        &test_key_ring(),
        Owner::User(fixture.user),
        CredentialKind::MailboxRefreshToken,
    )
    .await
    .unwrap()
    .unwrap();
    fixture.providers.graph.revoke_refresh_token(stored.expose_secret());

    assert_eq!(fixture.sync_once().await, "failed");
    let (_, _, _, category, source) = fixture.last_session().await;
    assert_eq!(
        (category.as_deref(), source.as_deref()),
        (Some("auth"), Some("mailbox"))
    );
    let counted: (i32, Option<String>) =
        sqlx::query_as("SELECT consecutive_failures, failure_class FROM users WHERE id = $1")
            .bind(fixture.user)
            .fetch_one(&fixture.env.pool)
            .await
            .unwrap();
    assert_eq!(counted, (1, Some("auth".to_owned())));
    // Not retried: an authorization failure waits for the user.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(session_count(&fixture.env.pool, fixture.user, "failed").await, 1);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn graph_429_with_retry_after_is_honoured_before_the_retry() {
    let fixture = Fixture::new().await;
    let worker = fixture.worker(&[("SYNCFLEET_RETRY_BASE_DELAY", "1s")]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    fixture
        .providers
        .graph
        .inject_fault(
            &fixture.email,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(4)),
            },
            1,
        )
        .unwrap();
    assert_eq!(fixture.sync_once().await, "failed");
    let (_, _, _, category, _) = fixture.last_session().await;
    assert_eq!(category.as_deref(), Some("throttled"));
    wait_until(LIMIT, "the retry to succeed", || async {
        session_count(&fixture.env.pool, fixture.user, "succeeded").await == 2
    })
    .await;
    let (failed_at, retried_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT ended_at FROM sync_sessions WHERE user_id = $1 AND status = 'failed'), \
                (SELECT max(started_at) FROM sync_sessions WHERE user_id = $1 AND status = 'succeeded')",
    )
    .bind(fixture.user)
    .fetch_one(&fixture.env.pool)
    .await
    .unwrap();
    let waited = retried_at - failed_at;
    assert!(
        waited >= chrono::Duration::milliseconds(3900),
        "the retry came {waited} after the 429 asking for 4 s"
    );
    worker.stop().await;
    fixture.env.cleanup().await;
}
