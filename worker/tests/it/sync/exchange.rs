//! Exchange users, through Direct Logon and through Impersonation.

use chrono::Utc;
use serde_json::json;
use syncfleet_simulators::ews::Fault;

use super::{Access, BUYER, Fixture};

#[tokio::test]
async fn direct_logon_mail_becomes_exactly_one_task_even_when_replayed() {
    super::mail_becomes_one_task_per_message(Access::ExchangeDirect).await;
}

#[tokio::test]
async fn impersonated_mail_becomes_exactly_one_task_even_when_replayed() {
    super::mail_becomes_one_task_per_message(Access::Impersonation { role: true }).await;
}

#[tokio::test]
async fn an_invalid_sync_state_leads_to_a_full_resync_without_duplicates() {
    super::an_expired_cursor_resyncs_without_duplicates(Access::ExchangeDirect, |fixture| {
        fixture.providers.ews.invalidate_sync_states(&fixture.email);
    })
    .await;
}

#[tokio::test]
async fn impersonation_denied_fails_the_session_with_an_authorization_issue() {
    let fixture = Fixture::new(Access::Impersonation { role: false }).await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "failed");
    let session = fixture.last_session().await;
    assert_eq!(
        (session.error_category.as_deref(), session.error_source.as_deref()),
        (Some("auth"), Some("mailbox"))
    );
    let message = session.error_message.unwrap_or_default();
    assert!(message.contains("ErrorImpersonateUserDenied"), "{message}");
    assert!(!message.contains("service-password"), "{message}");
    assert_eq!(fixture.failures().await, (1, Some("auth".to_owned())));
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn server_busy_back_off_milliseconds_is_honoured_before_the_retry() {
    super::a_provider_delay_is_honoured_before_the_retry(Access::ExchangeDirect, |fixture| {
        fixture
            .providers
            .ews
            .inject_fault(&fixture.email, Fault::ServerBusy { backoff_ms: 4000 }, 1);
    })
    .await;
}

#[tokio::test]
async fn crm_events_owned_by_the_user_appear_in_the_exchange_calendar_once() {
    let fixture = Fixture::new(Access::ExchangeDirect).await;
    let salesforce = &fixture.providers.salesforce;
    let org = &fixture.providers.org;
    let owner = salesforce.default_user(org).unwrap();
    let start = Utc::now() + chrono::Duration::days(2);
    salesforce
        .insert_record(
            org,
            "Event",
            json!({
                "Subject": "Site visit & <demo>",
                "StartDateTime": start.to_rfc3339(),
                "EndDateTime": (start + chrono::Duration::hours(2)).to_rfc3339(),
                "OwnerId": owner,
            }),
        )
        .unwrap();
    salesforce.insert_contact(org, BUYER).unwrap();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.sync_once().await, "succeeded");
    let events = fixture.providers.ews.events(&fixture.email);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, "Site visit & <demo>");
    worker.stop().await;
    fixture.env.cleanup().await;
}
