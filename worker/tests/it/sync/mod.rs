//! The real sync through the simulators, the real PostgreSQL and RabbitMQ,
//! for every access type: a fixture that connects one user and drives
//! sessions.

mod credentials;
mod exchange;
mod gmail;
mod limits;
mod office365;
mod secrets;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_simulators::{ews, gmail as gmail_sim, graph};
use syncfleet_testkit::{Providers, TestEnv, organization, users, wait_until};
use syncfleet_worker::{
    config,
    sync::{FleetGate, MailboxSync, ProviderConfig},
};
use uuid::Uuid;

use crate::support::{RunningWorker, force_sync, start};

pub const LIMIT: Duration = Duration::from_secs(60);
pub const BUYER: &str = "buyer@customer.example";

/// How the fixture's user reaches their mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Office365,
    Gmail,
    ExchangeDirect,
    /// Impersonation through a service account with (or without) the role.
    Impersonation {
        role: bool,
    },
}

pub const SERVICE_ACCOUNT: &str = "svc-syncfleet@contoso.example";

pub struct Fixture {
    pub env: TestEnv,
    pub providers: Providers,
    pub user: Uuid,
    pub email: String,
    pub access: Access,
}

impl Fixture {
    pub async fn new(access: Access) -> Self {
        Self::with(access, Providers::start().await).await
    }

    pub async fn with(access: Access, providers: Providers) -> Self {
        let env = TestEnv::new().await;
        let org = match access {
            Access::Office365 => organization(&env.pool, AccessType::Office365, true).await,
            Access::Gmail => organization(&env.pool, AccessType::Gmail, true).await,
            Access::ExchangeDirect => organization(&env.pool, AccessType::ExchangeDirect, true).await,
            Access::Impersonation { role } => {
                providers
                    .impersonation_organization(&env.pool, SERVICE_ACCOUNT, "service-password", role)
                    .await
            }
        };
        let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
        match access {
            Access::Office365 => providers.connect_office365(&env.pool, user).await,
            Access::Gmail => providers.connect_gmail(&env.pool, user).await,
            Access::ExchangeDirect => {
                providers
                    .connect_exchange_direct(&env.pool, user, "mailbox-password")
                    .await
            }
            Access::Impersonation { .. } => providers.connect_impersonated(&env.pool, user).await,
        }
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
            access,
        }
    }

    pub fn worker(&self, extra: &[(&str, &str)]) -> RunningWorker {
        sync_worker(&self.env, &self.providers, extra)
    }

    /// Puts a message from `from` to the user, sent at `sent_at`, in the
    /// user's inbox; answers its mailbox id.
    pub fn receive_at(&self, from: &str, subject: &str, sent_at: DateTime<Utc>) -> String {
        let body = format!("About {subject}.");
        match self.access {
            Access::Office365 => self
                .providers
                .graph
                .add_message(
                    &self.email,
                    graph::Folder::Inbox,
                    graph::MessageSeed {
                        from: graph::Recipient::new(from),
                        to: vec![graph::Recipient::new(&self.email)],
                        cc: Vec::new(),
                        subject: subject.to_owned(),
                        sent_at,
                        body,
                    },
                )
                .unwrap(),
            Access::Gmail => self
                .providers
                .gmail
                .add_message(
                    &self.email,
                    gmail_sim::MessageSeed {
                        from: from.to_owned(),
                        to: vec![self.email.clone()],
                        cc: Vec::new(),
                        subject: subject.to_owned(),
                        sent_at,
                        snippet: body,
                        sent: false,
                        message_id: None,
                    },
                )
                .unwrap(),
            Access::ExchangeDirect | Access::Impersonation { .. } => self
                .providers
                .ews
                .add_message(
                    &self.email,
                    ews::MessageFolder::Inbox,
                    ews::MessageSeed {
                        subject: subject.to_owned(),
                        from: Some(ews::Address::new(from, "")),
                        to: vec![ews::Address::new(&self.email, "")],
                        body,
                        sent: sent_at,
                        received: sent_at,
                        ..ews::MessageSeed::default()
                    },
                )
                .unwrap(),
        }
    }

    pub fn receive(&self, from: &str, subject: &str) -> String {
        self.receive_at(from, subject, Utc::now())
    }

    /// Makes [`BUYER`] a Contact of the Salesforce org; answers its id.
    pub fn buyer_is_a_contact(&self) -> String {
        self.providers
            .salesforce
            .insert_contact(&self.providers.org, BUYER)
            .unwrap()
    }

    pub fn tasks(&self) -> Vec<serde_json::Map<String, Value>> {
        self.providers.salesforce.records(&self.providers.org, "Task")
    }

    pub(super) async fn ended_sessions(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1 AND status <> 'running'")
            .bind(self.user)
            .fetch_one(&self.env.pool)
            .await
            .unwrap()
    }

    /// Forces a sync and waits for its session to end; answers its status.
    pub async fn sync_once(&self) -> String {
        let before = self.ended_sessions().await;
        force_sync(&self.env, self.user).await;
        wait_until(LIMIT, "the session to end", || async {
            self.ended_sessions().await > before
        })
        .await;
        self.last_session().await.status
    }

    pub async fn last_session(&self) -> Session {
        let (status, scope, items_to_crm, items_to_mailbox, error_category, error_source, error_message, calls) =
            sqlx::query_as(
                "SELECT status, scope, items_to_crm, items_to_mailbox, error_category, error_source,                         error_message, calls                  FROM sync_sessions WHERE user_id = $1 AND status <> 'running' ORDER BY started_at DESC LIMIT 1",
            )
            .bind(self.user)
            .fetch_one(&self.env.pool)
            .await
            .unwrap();
        Session {
            status,
            scope,
            items_to_crm,
            items_to_mailbox,
            error_category,
            error_source,
            error_message,
            calls,
        }
    }

    /// (source, category, item, message) of every issue so far.
    pub async fn issues(&self) -> Vec<(String, String, Option<String>, String)> {
        sqlx::query_as(
            "SELECT source, category, item_ref, message FROM sync_issues WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(self.user)
        .fetch_all(&self.env.pool)
        .await
        .unwrap()
    }

    /// How long after the failed session the successful retry started, once
    /// it has.
    pub async fn retry_waited(&self) -> chrono::Duration {
        wait_until(LIMIT, "the retry to succeed", || async {
            syncfleet_testkit::session_count(&self.env.pool, self.user, "succeeded").await == 2
        })
        .await;
        let (failed_at, retried_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "SELECT (SELECT ended_at FROM sync_sessions WHERE user_id = $1 AND status = 'failed'), \
                    (SELECT max(started_at) FROM sync_sessions WHERE user_id = $1 AND status = 'succeeded')",
        )
        .bind(self.user)
        .fetch_one(&self.env.pool)
        .await
        .unwrap();
        retried_at - failed_at
    }

    /// (consecutive failures, their class).
    pub async fn failures(&self) -> (i32, Option<String>) {
        sqlx::query_as("SELECT consecutive_failures, failure_class FROM user_runs WHERE user_id = $1")
            .bind(self.user)
            .fetch_one(&self.env.pool)
            .await
            .unwrap()
    }
}

/// An in-process worker running the real sync against `providers`.
pub fn sync_worker(env: &TestEnv, providers: &Providers, extra: &[(&str, &str)]) -> RunningWorker {
    let provider_env = providers.env();
    let mut settings: Vec<(&str, &str)> = provider_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    settings.extend_from_slice(extra);
    let source = env.source(&settings);
    let gate = FleetGate::from_source(&source, env.common().redis_url, &env.prefix, Duration::from_secs(30)).unwrap();
    let sync = MailboxSync::new(
        ProviderConfig::from_source(&source).unwrap(),
        config::budget(&source).unwrap(),
        std::sync::Arc::new(gate),
    )
    .unwrap();
    start(env, sync, &settings)
}

/// A finished session as stored.
#[derive(Debug)]
pub struct Session {
    pub status: String,
    pub scope: String,
    pub items_to_crm: i32,
    pub items_to_mailbox: i32,
    pub error_category: Option<String>,
    pub error_source: Option<String>,
    pub error_message: Option<String>,
    pub calls: Value,
}

/// What every access type must do: new mail to a known contact becomes one
/// Task, replays never duplicate, free-mail and unknown senders are skipped,
/// old mail is outside the baseline, and the next session is incremental.
pub async fn mail_becomes_one_task_per_message(access: Access) {
    let fixture = Fixture::new(access).await;
    let contact = fixture.buyer_is_a_contact();
    // A Lead with the same address loses to the Contact.
    fixture
        .providers
        .salesforce
        .insert_lead(&fixture.providers.org, BUYER)
        .unwrap();
    fixture.receive(BUYER, "Quote for 40 seats");
    fixture.receive("friend@gmail.com", "Dinner?");
    fixture.receive("stranger@unknown.example", "Cold call");
    fixture.receive_at(BUYER, "Last month", Utc::now() - chrono::Duration::days(20));
    let worker = fixture.worker(&[]);

    assert_eq!(fixture.sync_once().await, "succeeded");
    let session = fixture.last_session().await;
    assert_eq!(
        (session.scope.as_str(), session.items_to_crm),
        ("initial", 1),
        "{session:?}"
    );
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
    let session = fixture.last_session().await;
    assert_eq!(
        (session.scope.as_str(), session.items_to_crm),
        ("incremental", 1),
        "{session:?}"
    );
    assert_eq!(fixture.tasks().len(), 2);
    worker.stop().await;
    fixture.env.cleanup().await;
}

/// An expired cursor leads to a full resync that rewrites, never copies.
pub async fn an_expired_cursor_resyncs_without_duplicates(access: Access, expire: impl Fn(&Fixture)) {
    let fixture = Fixture::new(access).await;
    fixture.buyer_is_a_contact();
    fixture.receive(BUYER, "First");
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1);

    // New mail arrives, then the cursor expires before the next session.
    fixture.receive(BUYER, "Second");
    expire(&fixture);
    assert_eq!(fixture.sync_once().await, "succeeded_with_issues");
    assert_eq!(fixture.last_session().await.scope, "full_resync");
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

/// A provider that throttles with a delay (4 s, armed by `throttle`) fails
/// the session as throttled, and the retry waits at least that long.
pub async fn a_provider_delay_is_honoured_before_the_retry(access: Access, throttle: impl Fn(&Fixture)) {
    let fixture = Fixture::new(access).await;
    let worker = fixture.worker(&[("SYNCFLEET_RETRY_BASE_DELAY", "1s")]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    throttle(&fixture);
    assert_eq!(fixture.sync_once().await, "failed");
    assert_eq!(
        fixture.last_session().await.error_category.as_deref(),
        Some("throttled")
    );
    let waited = fixture.retry_waited().await;
    assert!(
        waited >= chrono::Duration::milliseconds(3900),
        "the retry came {waited} after the provider asked for 4 s"
    );
    worker.stop().await;
    fixture.env.cleanup().await;
}
