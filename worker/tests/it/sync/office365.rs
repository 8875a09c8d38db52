//! Office 365 (Graph) users.

use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;
use syncfleet_common::{
    secrets::{self, CredentialKind, Owner},
    session_log,
};
use syncfleet_simulators::{
    graph::{Endpoint, Fault, GraphConfig},
    salesforce::ValidationRule,
};
use syncfleet_testkit::{ProviderConfigs, Providers, session_count, test_key_ring, wait_until};

use super::{Access, BUYER, Fixture, LIMIT};
use crate::support::force_sync;

#[tokio::test]
async fn new_mail_to_a_known_contact_becomes_exactly_one_task_even_when_replayed() {
    super::mail_becomes_one_task_per_message(Access::Office365).await;
}

#[tokio::test]
async fn an_expired_delta_token_leads_to_a_full_resync_without_duplicates() {
    super::an_expired_cursor_resyncs_without_duplicates(Access::Office365, |fixture| {
        fixture.providers.graph.expire_delta_tokens(&fixture.email).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_revoked_refresh_token_fails_the_session_with_an_authorization_issue() {
    let fixture = Fixture::new(Access::Office365).await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // Microsoft rotated the token at the first refresh, and the fleet stored
    // the new one: revoke that.
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
    // The access token kept from the first session lives its hour: the
    // revocation is met at the next refresh.
    fixture.expire_kept_access_tokens().await;

    assert_eq!(fixture.sync_once().await, "failed");
    let session = fixture.last_session().await;
    assert_eq!(
        (session.error_category.as_deref(), session.error_source.as_deref()),
        (Some("auth"), Some("mailbox"))
    );
    assert_eq!(fixture.failures().await, (1, Some("auth".to_owned())));
    // Not retried: an authorization failure waits for the user.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(session_count(&fixture.env.pool, fixture.user, "failed").await, 1);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn graph_429_with_retry_after_is_honoured_before_the_retry() {
    super::a_provider_delay_is_honoured_before_the_retry(Access::Office365, |fixture| {
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
    })
    .await;
}

#[tokio::test]
async fn an_item_refused_by_salesforce_validation_becomes_an_issue_and_the_rest_syncs() {
    let fixture = Fixture::new(Access::Office365).await;
    let salesforce = &fixture.providers.salesforce;
    salesforce.insert_contact(&fixture.providers.org, BUYER).unwrap();
    salesforce.add_validation_rule(
        &fixture.providers.org,
        ValidationRule {
            object: "Task".to_owned(),
            field: "Subject".to_owned(),
            contains: "CONFIDENTIAL".to_owned(),
            message: "Confidential mail may not be logged.".to_owned(),
        },
    );
    let refused = fixture.receive(BUYER, "CONFIDENTIAL merger");
    fixture.receive(BUYER, "Order one");
    fixture.receive(BUYER, "Order two");
    let worker = fixture.worker(&[]);

    assert_eq!(fixture.sync_once().await, "succeeded_with_issues");
    assert_eq!(fixture.last_session().await.items_to_crm, 2);
    let subjects: Vec<String> = fixture
        .tasks()
        .iter()
        .map(|task| task["Subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.iter().all(|subject| !subject.contains("CONFIDENTIAL")));
    let issues = fixture.issues().await;
    assert_eq!(issues.len(), 1, "{issues:?}");
    let (source, category, item, message) = &issues[0];
    assert_eq!((source.as_str(), category.as_str()), ("crm", "validation"));
    assert_eq!(item.as_deref(), Some(refused.as_str()));
    assert!(message.contains("Confidential mail may not be logged."), "{message}");
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn crm_events_and_contacts_owned_by_the_user_appear_in_the_mailbox_once() {
    let fixture = Fixture::new(Access::Office365).await;
    let salesforce = &fixture.providers.salesforce;
    let org = &fixture.providers.org;
    let owner = salesforce.default_user(org).unwrap();
    let start = Utc::now() + chrono::Duration::days(1);
    let event = salesforce
        .insert_record(
            org,
            "Event",
            json!({
                "Subject": "Quarterly review",
                "StartDateTime": start.to_rfc3339(),
                "EndDateTime": (start + chrono::Duration::hours(1)).to_rfc3339(),
                "Location": "Room 4",
                "OwnerId": owner,
            }),
        )
        .unwrap();
    salesforce
        .insert_record(
            org,
            "Contact",
            json!({"FirstName": "Ada", "LastName": "Buyer", "Email": BUYER, "OwnerId": owner}),
        )
        .unwrap();
    // Someone else's event stays out of this mailbox.
    let colleague = salesforce.create_user(org).unwrap();
    salesforce
        .insert_record(
            org,
            "Event",
            json!({
                "Subject": "Not mine",
                "StartDateTime": start.to_rfc3339(),
                "EndDateTime": (start + chrono::Duration::hours(1)).to_rfc3339(),
                "OwnerId": colleague,
            }),
        )
        .unwrap();
    let worker = fixture.worker(&[]);

    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.items_to_mailbox, 2);
    let events = fixture.providers.graph.events(&fixture.email);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["subject"], "Quarterly review");
    assert_eq!(fixture.providers.graph.contacts(&fixture.email).len(), 1);

    // Nothing changed: nothing is written again.
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.items_to_mailbox, 0);
    // The event moves in the CRM: the same mailbox item is updated.
    salesforce
        .update_record(org, "Event", &event, json!({"Subject": "Quarterly review (moved)"}))
        .unwrap();
    assert_eq!(fixture.sync_once().await, "succeeded");
    let events = fixture.providers.graph.events(&fixture.email);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["subject"], "Quarterly review (moved)");
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn the_session_records_its_steps_with_timings_and_its_calls_per_provider() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    fixture.receive(BUYER, "Hello");
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    let log: Vec<u8> = sqlx::query_scalar(
        "SELECT l.log_gzip FROM sync_session_logs l JOIN sync_sessions s ON s.id = l.session_id \
         WHERE s.user_id = $1",
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
            "initialize_mailbox",
            "mail_to_crm:inbox",
            "mail_to_crm:sent",
            "crm_to_mailbox"
        ]
    );
    let calls = fixture.last_session().await.calls;
    // The simulator counts a $batch and each request inside it; the session
    // counts HTTP calls (event and contact writes only travel in batches, and
    // both folders' deltas, one page each here, travel in one).
    let graph = fixture.providers.graph.counters(&fixture.email);
    assert_eq!(graph.calls_to(Endpoint::MessagesDelta), 2, "{graph:?}");
    let inner =
        graph.calls_to(Endpoint::Events) + graph.calls_to(Endpoint::Contacts) + graph.calls_to(Endpoint::MessagesDelta);
    assert_eq!(
        calls["graph"].as_u64(),
        Some(graph.total_calls() - inner),
        "{calls} {graph:?}"
    );
    // The simulator counts a Composite call and each query inside it; the
    // session's composite carries the Events and the Contacts queries.
    let salesforce = fixture.providers.salesforce.counters(&fixture.providers.org);
    let composites = salesforce.calls_to(syncfleet_simulators::salesforce::Endpoint::Composite);
    assert_eq!(composites, 1, "{salesforce:?}");
    assert_eq!(
        calls["salesforce"].as_u64(),
        Some(salesforce.total_calls() - 2 * composites),
        "{calls} {salesforce:?}"
    );
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_mailbox_larger_than_one_budget_is_synced_by_follow_up_jobs_without_duplicates() {
    let providers = Providers::with(ProviderConfigs {
        graph: GraphConfig {
            max_page_size: 5,
            ..GraphConfig::default()
        },
        ..ProviderConfigs::default()
    })
    .await;
    let fixture = Fixture::with(Access::Office365, providers).await;
    fixture.buyer_is_a_contact();
    for index in 0..12 {
        fixture.receive(BUYER, &format!("Message {index}"));
    }
    let worker = fixture.worker(&[("SYNCFLEET_SESSION_ITEM_BUDGET", "5")]);
    force_sync(&fixture.env, fixture.user).await;
    wait_until(LIMIT, "the follow-ups to finish the mailbox", || async {
        fixture.tasks().len() == 12 && session_count(&fixture.env.pool, fixture.user, "running").await == 0
    })
    .await;
    let sessions: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT trigger, status, items_to_crm FROM sync_sessions WHERE user_id = $1 ORDER BY started_at",
    )
    .bind(fixture.user)
    .fetch_all(&fixture.env.pool)
    .await
    .unwrap();
    assert_eq!(
        sessions,
        [
            ("force".to_owned(), "succeeded".to_owned(), 5),
            ("cadence".to_owned(), "succeeded".to_owned(), 5),
            ("cadence".to_owned(), "succeeded".to_owned(), 2),
        ],
        "each session stops at its budget and a follow-up job goes on"
    );
    let queued: Option<uuid::Uuid> = sqlx::query_scalar("SELECT queued_job_id FROM user_runs WHERE user_id = $1")
        .bind(fixture.user)
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    assert_eq!(
        queued, None,
        "the last follow-up lets the scheduler take the user again"
    );
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn the_salesforce_reserve_is_never_touched_and_the_job_is_deferred_without_a_failure_counted() {
    let fixture = Fixture::new(Access::Office365).await;
    let salesforce = &fixture.providers.salesforce;
    let org = &fixture.providers.org;
    salesforce.insert_contact(org, BUYER).unwrap();
    fixture.receive(BUYER, "Hello");
    // Other integrations already used 80% of the allocation: the reserve
    // (20%, the default) is all that is left.
    let max = salesforce.api_usage(org).unwrap().max;
    salesforce.set_api_usage(org, max * 80 / 100);
    let worker = fixture.worker(&[("SYNCFLEET_RETRY_BASE_DELAY", "1s")]);

    assert_eq!(fixture.sync_once().await, "failed");
    let session = fixture.last_session().await;
    assert_eq!(session.error_category.as_deref(), Some("throttled"), "{session:?}");
    let message = session.error_message.unwrap_or_default();
    assert!(
        message.contains("kept for the customer's other integrations"),
        "{message}"
    );
    let used = salesforce.api_usage(org).unwrap().used;
    assert!(
        used <= max * 80 / 100 + 1,
        "the fleet used {used} of {max}: past the reserve line at {}",
        max * 80 / 100
    );
    assert!(fixture.tasks().is_empty());
    assert_eq!(fixture.failures().await, (0, None), "a deferral counts no failure");
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn an_orgs_reported_allocation_replaces_the_configured_default() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    fixture
        .providers
        .salesforce
        .set_daily_api_max(&fixture.providers.org, 10_000_000);
    fixture.receive(BUYER, "First");
    // Configured for a tiny org (80 calls a day after the reserve: one call,
    // then one every 18 minutes); the org reports 10 million.
    let worker = fixture.worker(&[("SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS", "100")]);
    assert_eq!(
        fixture.sync_once().await,
        "succeeded",
        "{:?}",
        fixture.last_session().await
    );
    fixture.receive(BUYER, "Second");
    assert_eq!(
        fixture.sync_once().await,
        "succeeded",
        "{:?}",
        fixture.last_session().await
    );
    assert_eq!(fixture.tasks().len(), 2);
    worker.stop().await;
    fixture.env.cleanup().await;
}
