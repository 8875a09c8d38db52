//! The leader relays the email outbox over real SMTP (the simulator): sent
//! once, retried while the server is away, failed on a permanent refusal.

use std::time::Duration;

use syncfleet_simulators::smtp::{LocalSmtp, SmtpConfig, SmtpSimulator};
use syncfleet_testkit::{TestEnv, reset_blocked, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{Running, scheduler};

const LIMIT: Duration = Duration::from_secs(30);

async fn queue_email(env: &TestEnv, to: &str, subject: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO email_outbox (id, dedupe_key, kind, recipients, subject, body_text) \
         VALUES ($1, $2, 'test', $3, $4, 'Hello from the outbox.')",
    )
    .bind(id)
    .bind(format!("test:{id}"))
    .bind(vec![to.to_owned()])
    .bind(subject)
    .execute(&env.pool)
    .await
    .unwrap();
    id
}

async fn status(env: &TestEnv, id: Uuid) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempts, last_error FROM email_outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// The SMTP simulator, answering each reply after `latency`, and a
/// scheduler relaying to it every 100 ms.
async fn relay(env: &TestEnv, shutdown: &CancellationToken, latency: Duration) -> (LocalSmtp, Running) {
    let smtp = SmtpSimulator::start_local(SmtpConfig::default(), shutdown.clone())
        .await
        .unwrap();
    smtp.simulator.set_latency(latency, Duration::ZERO);
    let url = format!("smtp://{}", smtp.server.addr());
    let running = scheduler(
        env,
        &[
            ("SYNCFLEET_SMTP_URL", &url),
            ("SYNCFLEET_OUTBOX_POLL", "100ms"),
            ("SYNCFLEET_OUTBOX_RETRY_DELAY", "200ms"),
            ("SYNCFLEET_OUTBOX_MAX_ATTEMPTS", "20"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
        ],
    );
    (smtp, running)
}

#[tokio::test]
async fn queued_emails_are_sent_once_retried_while_smtp_is_away_and_failed_when_refused() {
    let env = TestEnv::new().await;
    let shutdown = CancellationToken::new();
    let (smtp, running) = relay(&env, &shutdown, Duration::ZERO).await;

    let first = queue_email(
        &env,
        "ada@customer.example",
        "Synchronization stopped for ada@customer.example",
    )
    .await;
    wait_until(LIMIT, "the first email to be sent", || async {
        status(&env, first).await.0 == "sent"
    })
    .await;
    let received = smtp.simulator.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].recipients, ["ada@customer.example"]);
    assert_eq!(
        received[0].subject.as_deref(),
        Some("Synchronization stopped for ada@customer.example")
    );
    assert_eq!(
        received[0].message_id.as_deref(),
        Some(format!("<{first}@outbox.syncfleet>").as_str())
    );

    // The server is away: the email waits, each attempt recorded, and goes
    // out once when it is back.
    smtp.simulator.set_down(true);
    let second = queue_email(&env, "bob@customer.example", "Second").await;
    wait_until(LIMIT, "attempts while SMTP is down", || async {
        status(&env, second).await.1 >= 2
    })
    .await;
    let (state, _, error) = status(&env, second).await;
    assert_eq!(state, "pending");
    assert!(error.is_some());
    smtp.simulator.set_down(false);
    wait_until(LIMIT, "the second email to be sent", || async {
        status(&env, second).await.0 == "sent"
    })
    .await;
    let to_bob = smtp
        .simulator
        .messages()
        .into_iter()
        .filter(|message| message.recipients == ["bob@customer.example"])
        .count();
    assert_eq!(to_bob, 1, "sent exactly once");

    // A permanent refusal fails the email at once.
    smtp.simulator.fail_next(1, 554).unwrap();
    let third = queue_email(&env, "carol@customer.example", "Third").await;
    wait_until(LIMIT, "the refused email to fail", || async {
        status(&env, third).await.0 == "failed"
    })
    .await;
    assert_eq!(status(&env, third).await.1, 1);

    running.stop().await;
    shutdown.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn an_email_accepted_while_the_database_resets_is_recorded_sent_not_sent_again() {
    let env = TestEnv::new().await;
    let shutdown = CancellationToken::new();
    // A slow server: the test has time to take the row while it answers.
    let (smtp, running) = relay(&env, &shutdown, Duration::from_millis(150)).await;
    let id = queue_email(&env, "dora@customer.example", "Through the resets").await;
    // The relay claimed it (committed) and is talking to the server: the
    // test holds the row, so recording the send waits, and its connection
    // is reset twice meanwhile, as when PostgreSQL restarts.
    wait_until(LIMIT, "the relay to claim the email", || async {
        status(&env, id).await.0 == "sending"
    })
    .await;
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM email_outbox WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let reset = reset_blocked(&env.pool, "UPDATE email_outbox", None).await;
    reset_blocked(&env.pool, "UPDATE email_outbox", Some(reset)).await;
    assert_eq!(smtp.simulator.messages_to("dora@customer.example").len(), 1);
    holder.rollback().await.unwrap();
    wait_until(LIMIT, "the email to be recorded sent", || async {
        status(&env, id).await.0 == "sent"
    })
    .await;
    assert_eq!(status(&env, id).await.1, 1, "one attempt");
    // Well past the poll: nothing sends it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        smtp.simulator.messages_to("dora@customer.example").len(),
        1,
        "sent exactly once"
    );
    running.stop().await;
    shutdown.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn an_email_whose_relay_died_sending_it_is_sent_when_its_lease_ends() {
    let env = TestEnv::new().await;
    let shutdown = CancellationToken::new();
    // A relay claimed these and died: one whose lease ended, one still held.
    let ended = queue_email(&env, "erin@customer.example", "Lease ended").await;
    let held = queue_email(&env, "finn@customer.example", "Lease held").await;
    sqlx::query(
        "UPDATE email_outbox SET status = 'sending', attempts = 1, \
             next_attempt_at = CASE WHEN id = $1 THEN now() - interval '1 second' ELSE now() + interval '1 hour' END",
    )
    .bind(ended)
    .execute(&env.pool)
    .await
    .unwrap();
    let (smtp, running) = relay(&env, &shutdown, Duration::ZERO).await;
    wait_until(LIMIT, "the interrupted email to be sent", || async {
        status(&env, ended).await.0 == "sent"
    })
    .await;
    assert_eq!(status(&env, ended).await.1, 2);
    let received = smtp.simulator.messages();
    assert_eq!(received.len(), 1, "the email still held is left to its relay");
    assert_eq!(
        received[0].message_id.as_deref(),
        Some(format!("<{ended}@outbox.syncfleet>").as_str())
    );
    assert_eq!(status(&env, held).await.0, "sending");
    running.stop().await;
    shutdown.cancel();
    env.cleanup().await;
}
