//! Gmail users.

use syncfleet_simulators::gmail::Fault;

use super::{Access, Fixture};

#[tokio::test]
async fn new_mail_to_a_known_contact_becomes_exactly_one_task_even_when_replayed() {
    super::mail_becomes_one_task_per_message(Access::Gmail).await;
}

#[tokio::test]
async fn a_stale_history_id_leads_to_a_full_sync_without_duplicates() {
    super::an_expired_cursor_resyncs_without_duplicates(Access::Gmail, |fixture| {
        fixture.providers.gmail.expire_history(&fixture.email).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_spent_daily_quota_fails_the_session_as_quota_and_counts_as_throttling() {
    let fixture = Fixture::new(Access::Gmail).await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    fixture
        .providers
        .gmail
        .inject_fault(&fixture.email, Fault::DailyLimit, 1)
        .unwrap();
    assert_eq!(fixture.sync_once().await, "failed");
    let session = fixture.last_session().await;
    assert_eq!(
        (session.error_category.as_deref(), session.error_source.as_deref()),
        (Some("quota"), Some("mailbox"))
    );
    assert_eq!(fixture.failures().await, (1, Some("throttling".to_owned())));
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_gmail_mailbox_takes_no_events_from_the_crm_and_says_so() {
    let fixture = Fixture::new(Access::Gmail).await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    let session = fixture.last_session().await;
    assert_eq!(session.items_to_mailbox, 0);
    assert!(session.calls["gmail"].as_u64().unwrap() > 0, "{:?}", session.calls);
    worker.stop().await;
    fixture.env.cleanup().await;
}
