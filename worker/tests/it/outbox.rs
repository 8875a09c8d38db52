//! The emails the worker writes into the outbox, sent by the scheduler
//! binary's relay to the SMTP simulator while it is down, then up: each is
//! sent exactly once, with the right content.

use std::{process::Child, time::Duration};

use chrono::Utc;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_simulators::smtp::{LocalSmtp, SmtpConfig, SmtpSimulator};
use syncfleet_testkit::{TestEnv, organization, stop_gracefully, users, wait_until};
use syncfleet_worker::sync::{FailureClass, SettingsCheck};
use tokio_util::sync::CancellationToken;

use crate::{
    push::{progress, publish, record_push},
    support::{AlwaysFails, force_sync, start},
};

const LIMIT: Duration = Duration::from_secs(60);

/// The SMTP simulator, down, and the scheduler binary relaying to it.
async fn relay_to_a_down_server(env: &TestEnv, stop: &CancellationToken) -> (LocalSmtp, Child) {
    let smtp = SmtpSimulator::start_local(SmtpConfig::default(), stop.clone())
        .await
        .unwrap();
    smtp.simulator.set_down(true);
    let url = format!("smtp://{}", smtp.server.addr());
    let scheduler = env.spawn(
        "syncfleet-scheduler",
        &[
            ("SYNCFLEET_SMTP_URL", &url),
            ("SYNCFLEET_OUTBOX_POLL", "100ms"),
            ("SYNCFLEET_OUTBOX_RETRY_DELAY", "100ms"),
            ("SYNCFLEET_OUTBOX_MAX_ATTEMPTS", "50"),
        ],
    );
    (smtp, scheduler)
}

/// An email's status and attempts, by kind.
async fn email(env: &TestEnv, kind: &str) -> Option<(String, i32)> {
    sqlx::query_as("SELECT status, attempts FROM email_outbox WHERE kind = $1")
        .bind(kind)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

/// Waits for refused attempts, brings the server up, waits for the send.
async fn outage_then_recovery(env: &TestEnv, smtp: &LocalSmtp, kind: &str) {
    wait_until(LIMIT, "attempts while SMTP is down", || async {
        email(env, kind)
            .await
            .is_some_and(|(status, attempts)| status == "pending" && attempts >= 2)
    })
    .await;
    assert!(smtp.simulator.messages().is_empty());
    smtp.simulator.set_down(false);
    wait_until(LIMIT, "the email to be sent", || async {
        email(env, kind).await.is_some_and(|(status, _)| status == "sent")
    })
    .await;
}

#[tokio::test]
async fn the_push_completion_email_waits_out_an_smtp_outage_and_is_sent_once_with_the_counts() {
    let env = TestEnv::new().await;
    let stop = CancellationToken::new();
    let (smtp, scheduler) = relay_to_a_down_server(&env, &stop).await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let elsewhere = organization(&env.pool, AccessType::Office365, true).await;
    let pusher = users(&env.pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    sqlx::query("UPDATE users SET notification_email = 'ada@pusher.example' WHERE id = $1")
        .bind(pusher)
        .execute(&env.pool)
        .await
        .unwrap();
    let recipients = users(&env.pool, org, 3, SyncStatus::Disabled, Utc::now(), false).await;
    let push = record_push(&env, org, pusher, &recipients).await;
    // One recipient leaves the organization before the push reaches them.
    sqlx::query("UPDATE users SET organization_id = $2 WHERE id = $1")
        .bind(recipients[0])
        .bind(elsewhere)
        .execute(&env.pool)
        .await
        .unwrap();
    let worker = start(&env, SettingsCheck, &[]);
    publish(&env, push.push_id).await;
    wait_until(LIMIT, "the push to complete", || async {
        progress(&env, push.push_id).await.0 == "completed"
    })
    .await;
    assert_eq!(progress(&env, push.push_id).await, ("completed".to_owned(), 2, 1));
    // A redelivered job finds the push completed and writes nothing more.
    publish(&env, push.push_id).await;

    outage_then_recovery(&env, &smtp, "push_completed").await;
    let sent = smtp.simulator.messages();
    assert_eq!(sent.len(), 1, "exactly one email");
    assert_eq!(sent[0].recipients, ["ada@pusher.example", "lead@acme.example"]);
    assert_eq!(
        sent[0].subject.as_deref(),
        Some("Customization push completed: 2 of 3 users updated")
    );
    let text = sent[0].text();
    assert!(text.contains("Applied: 2") && text.contains("Failed: 1"), "{text}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    worker.stop().await;
    stop_gracefully(scheduler);
    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn the_auto_suspend_email_waits_out_an_smtp_outage_and_is_sent_once() {
    let env = TestEnv::new().await;
    let stop = CancellationToken::new();
    let (smtp, scheduler) = relay_to_a_down_server(&env, &stop).await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    // Not due on the cadence: only the forced session runs.
    let user = users(
        &env.pool,
        org,
        1,
        SyncStatus::Enabled,
        Utc::now() + chrono::Duration::days(1),
        true,
    )
    .await[0];
    sqlx::query("UPDATE users SET notification_email = 'owner@customer.example' WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let worker = start(
        &env,
        AlwaysFails(FailureClass::Authorization),
        &[("SYNCFLEET_SUSPEND_AFTER_AUTH_FAILURES", "1")],
    );
    force_sync(&env, user).await;

    outage_then_recovery(&env, &smtp, "sync_suspended").await;
    let sent = smtp.simulator.messages();
    assert_eq!(sent.len(), 1, "exactly one email");
    assert_eq!(sent[0].recipients, ["owner@customer.example"]);
    let status: String = sqlx::query_scalar("SELECT sync_status FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "disabled_auth_error");

    worker.stop().await;
    stop_gracefully(scheduler);
    stop.cancel();
    env.cleanup().await;
}
