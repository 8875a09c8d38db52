//! What a session writes, retries, and the per-user lease.

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use chrono::Utc;
use syncfleet_common::{
    domain::{AccessType, SyncStatus, Trigger},
    queue::{JobEnvelope, Route},
};
use syncfleet_testkit::{TestEnv, organization, session_count, users, wait_until};
use syncfleet_worker::sync::FailureClass;

use crate::support::{AlwaysFails, Chunked, FailsTransiently, Slow, cadence_sync, force_sync, start};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_configured_user_gets_a_check_session_with_its_log() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let worker = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);

    let job = force_sync(&env, user).await;
    wait_until(LIMIT, "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;

    let (scope, trigger, job_id, ended): (String, String, uuid::Uuid, bool) =
        sqlx::query_as("SELECT scope, trigger, job_id, ended_at IS NOT NULL FROM sync_sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (scope.as_str(), trigger.as_str(), job_id, ended),
        ("check", "force", job.job_id, true)
    );
    // It changed nothing: no log is compressed and stored for it (the
    // session row is its summary).
    let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_session_logs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(logs, 0);
    let (running, last_status): (Option<uuid::Uuid>, Option<String>) =
        sqlx::query_as("SELECT running_session_id, last_session_status FROM user_runs WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((running, last_status.as_deref()), (None, Some("succeeded")));

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn missing_settings_fail_the_session_with_one_issue_each() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Gmail, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let worker = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);

    force_sync(&env, user).await;
    wait_until(LIMIT, "the session to fail", || async {
        session_count(&env.pool, user, "failed").await == 1
    })
    .await;

    let issues: Vec<(String, String, String)> =
        sqlx::query_as("SELECT source, category, message FROM sync_issues WHERE user_id = $1 ORDER BY source, message")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let expected = [
        (
            "crm",
            "settings",
            "Salesforce has not been authorized (no OAuth refresh token)",
        ),
        ("crm", "settings", "no Salesforce instance URL is set"),
        (
            "mailbox",
            "settings",
            "the mailbox has not been authorized (no OAuth refresh token)",
        ),
    ];
    let actual: Vec<(&str, &str, &str)> = issues
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(actual, expected);
    let (category, issue_count): (Option<String>, i32) =
        sqlx::query_as("SELECT error_category, issue_count FROM sync_sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((category.as_deref(), issue_count), (Some("settings"), 3));

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_user_of_a_disabled_organization_gets_a_skipped_session_not_a_sync() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, false).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let worker = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);

    force_sync(&env, user).await;
    wait_until(LIMIT, "a skipped session", || async {
        session_count(&env.pool, user, "skipped").await == 1
    })
    .await;
    let message: Option<String> = sqlx::query_scalar("SELECT error_message FROM sync_sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        message.as_deref(),
        Some("synchronization is disabled for the organization")
    );

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn two_deliveries_of_one_job_never_run_two_sessions_at_once() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    // Two workers, and the same job published twice, as a broker redelivery
    // while the first run is still going would do.
    let first = start(&env, Slow(Duration::from_millis(1500)), &[]);
    let second = start(&env, Slow(Duration::from_millis(1500)), &[]);
    let job = JobEnvelope::sync(user, Trigger::Force, Utc::now());
    let publisher = env.publisher().await;
    publisher
        .publish(Route::Priority, &[job.clone(), job.clone()])
        .await
        .unwrap();

    wait_until(LIMIT, "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    // The second delivery waited for the lease, then found the job done.
    wait_until(LIMIT, "both deliveries to be settled", || async {
        env.ready(Route::Priority).await == 0
            && sqlx::query_scalar::<_, bool>("SELECT running_session_id IS NULL FROM user_runs WHERE user_id = $1")
                .bind(user)
                .fetch_one(&env.pool)
                .await
                .unwrap()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "the duplicate delivery must not open a second session");

    first.stop().await;
    second.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_job_succeeds() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let seen = Arc::new(AtomicU32::new(0));
    let work = FailsTransiently {
        failures: 2,
        seen: seen.clone(),
    };
    let worker = start(
        &env,
        work,
        &[
            ("SYNCFLEET_RETRY_BASE_DELAY", "1s"),
            ("SYNCFLEET_RETRY_MAX_ATTEMPTS", "5"),
        ],
    );

    cadence_sync(&env, user).await;
    wait_until(LIMIT, "the third attempt to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;

    let attempts: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT attempt, status, error_category FROM sync_sessions WHERE user_id = $1 ORDER BY started_at",
    )
    .bind(user)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let transient = Some("transient".to_owned());
    assert_eq!(
        attempts,
        [
            (1, "failed".to_owned(), transient.clone()),
            (2, "failed".to_owned(), transient),
            (3, "succeeded".to_owned(), None)
        ]
    );
    let queued: Option<uuid::Uuid> = sqlx::query_scalar("SELECT queued_job_id FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        queued, None,
        "a finished cadence job lets the scheduler queue the user again"
    );

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_past_its_retries_is_dead_lettered_with_an_engine_issue() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let work = FailsTransiently {
        failures: u32::MAX,
        seen: Arc::new(AtomicU32::new(0)),
    };
    let worker = start(
        &env,
        work,
        &[
            ("SYNCFLEET_RETRY_BASE_DELAY", "1s"),
            ("SYNCFLEET_RETRY_MAX_ATTEMPTS", "2"),
        ],
    );

    let job = cadence_sync(&env, user).await;
    wait_until(LIMIT, "the dead letter to be recorded", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_jobs WHERE job_id = $1")
            .bind(job.job_id)
            .fetch_one(&env.pool)
            .await
            .unwrap()
            == 1
    })
    .await;

    let reason: String = sqlx::query_scalar("SELECT reason FROM dead_jobs WHERE job_id = $1")
        .bind(job.job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(reason, "retries_exhausted");
    assert_eq!(session_count(&env.pool, user, "failed").await, 2);
    let engine_issues: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_issues WHERE user_id = $1 AND source = 'engine' AND category = 'internal' AND session_id IS NULL",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(engine_issues, 1);
    let queued: Option<uuid::Uuid> = sqlx::query_scalar("SELECT queued_job_id FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(queued, None, "the user is scheduled again at the next slot");

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_move_as_sessions_run() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", syncfleet_testkit::free_port()).parse().unwrap();
    let worker = start(
        &env,
        syncfleet_worker::sync::SettingsCheck,
        &[("SYNCFLEET_OPS_LISTEN", &ops.to_string())],
    );
    wait_until(LIMIT, "the worker to be ready", || async {
        tokio::net::TcpStream::connect(ops).await.is_ok() && syncfleet_testkit::http_get(ops, "/readyz").await.0 == 200
    })
    .await;
    let (_, before) = syncfleet_testkit::http_get(ops, "/metrics").await;
    assert!(
        !before.contains(r#"syncfleet_sessions_total{status="succeeded"}"#),
        "{before}"
    );

    force_sync(&env, user).await;
    wait_until(LIMIT, "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    let (status, after) = syncfleet_testkit::http_get(ops, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"syncfleet_sessions_total{status="succeeded"} 1"#,
        r#"syncfleet_worker_jobs_total{queue="priority",outcome="succeeded"} 1"#,
        r#"syncfleet_scheduling_lag_seconds_count{trigger="force"} 1"#,
        r#"syncfleet_sync_step_duration_seconds_count{step="check_settings"} 1"#,
        r#"syncfleet_worker_job_duration_seconds_count{queue="priority"} 1"#,
        "syncfleet_worker_in_flight 0",
    ] {
        assert!(after.contains(series), "missing {series:?} in\n{after}");
    }

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_session_stopped_at_its_budget_continues_in_follow_up_jobs_until_done() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let seen = Arc::new(AtomicU32::new(0));
    let worker = start(
        &env,
        Chunked {
            chunks: 2,
            seen: seen.clone(),
        },
        &[],
    );
    let first = cadence_sync(&env, user).await;
    wait_until(LIMIT, "three sessions, the last one done", || async {
        session_count(&env.pool, user, "succeeded").await == 3
    })
    .await;
    let jobs: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT job_id, trigger FROM sync_sessions WHERE user_id = $1 ORDER BY started_at")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(jobs[0].0, first.job_id);
    assert!(
        jobs[0].0 != jobs[1].0 && jobs[1].0 != jobs[2].0,
        "each follow-up is its own job: {jobs:?}"
    );
    assert!(jobs.iter().all(|(_, trigger)| trigger == "cadence"));
    // The last one done, the user is free to be scheduled again; no fourth
    // session runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    let queued: Option<uuid::Uuid> = sqlx::query_scalar("SELECT queued_job_id FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(queued, None);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn consecutive_failures_are_counted_per_class_and_reset_by_a_success() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let count = || async {
        sqlx::query_as::<_, (i32, Option<String>)>(
            "SELECT consecutive_failures, failure_class FROM user_runs WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap()
    };
    let run = |work: AlwaysFails, sessions: i64| {
        let env = &env;
        async move {
            let worker = start(env, work, &[]);
            for _ in 0..sessions {
                let before = session_count(&env.pool, user, "failed").await;
                force_sync(env, user).await;
                wait_until(LIMIT, "the failed session", || async {
                    session_count(&env.pool, user, "failed").await == before + 1
                })
                .await;
            }
            worker.stop().await;
        }
    };
    run(AlwaysFails(FailureClass::Authorization), 2).await;
    assert_eq!(count().await, (2, Some("auth".to_owned())));
    run(AlwaysFails(FailureClass::Settings), 1).await;
    assert_eq!(
        count().await,
        (1, Some("other".to_owned())),
        "another class starts over"
    );
    // The authorization failures marked the mailbox's token refused: the
    // user reconnects (a new one is stored) before the session succeeds.
    syncfleet_common::secrets::store(
        &env.pool,
        &syncfleet_testkit::test_key_ring(),
        syncfleet_common::secrets::Owner::User(user),
        syncfleet_common::secrets::CredentialKind::MailboxRefreshToken,
        &"reconnected".to_owned().into(),
    )
    .await
    .unwrap();
    let worker = start(&env, syncfleet_worker::sync::SettingsCheck, &[]);
    force_sync(&env, user).await;
    wait_until(LIMIT, "a successful session", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(count().await, (0, None));
    env.cleanup().await;
}

#[tokio::test]
async fn auto_suspend_disables_sync_exactly_at_the_threshold_with_an_activity_and_an_email() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let [user, admin] = users(&env.pool, org, 2, SyncStatus::Enabled, Utc::now(), true).await[..] else {
        unreachable!()
    };
    sqlx::query("UPDATE users SET role = 'org_admin', notification_email = 'admin-alerts@example.test' WHERE id = $1")
        .bind(admin)
        .execute(&env.pool)
        .await
        .unwrap();
    let status = || async {
        sqlx::query_as::<_, (String, i32)>("SELECT u.sync_status, r.consecutive_failures FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let worker = start(
        &env,
        AlwaysFails(FailureClass::Authorization),
        &[("SYNCFLEET_SUSPEND_AFTER_AUTH_FAILURES", "3")],
    );
    for failures in 1..=3 {
        force_sync(&env, user).await;
        wait_until(LIMIT, "the failed session", || async {
            session_count(&env.pool, user, "failed").await == failures
        })
        .await;
        let (sync_status, count) = status().await;
        assert_eq!(count, i32::try_from(failures).unwrap());
        let expected = if failures < 3 { "enabled" } else { "disabled_auth_error" };
        assert_eq!(sync_status, expected, "after {failures} failures");
    }
    let activities: Vec<(String, String, String)> =
        sqlx::query_as("SELECT kind, actor, details FROM activities WHERE user_id = $1")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(
        (activities[0].0.as_str(), activities[0].1.as_str()),
        ("disabled_auth_error", "system")
    );
    assert!(
        activities[0].2.contains("3 consecutive failed sessions"),
        "{activities:?}"
    );
    let user_email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let emails: Vec<(Vec<String>, String, String)> =
        sqlx::query_as("SELECT recipients, subject, body_text FROM email_outbox WHERE kind = 'sync_suspended'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(emails.len(), 1, "{emails:?}");
    let (mut recipients, subject, body) = emails[0].clone();
    recipients.sort();
    let mut expected = vec!["admin-alerts@example.test".to_owned(), user_email.clone()];
    expected.sort();
    assert_eq!(recipients, expected);
    assert_eq!(subject, format!("Synchronization stopped for {user_email}"));
    assert!(body.contains("Authorize the mailbox"), "{body}");

    // Disabled now: the next request ends as a skipped session, not a fourth
    // failure, and nothing more is written.
    force_sync(&env, user).await;
    wait_until(LIMIT, "the skipped session", || async {
        session_count(&env.pool, user, "skipped").await == 1
    })
    .await;
    assert_eq!(status().await, ("disabled_auth_error".to_owned(), 3));
    worker.stop().await;
    env.cleanup().await;
}

/// The value of a counter series in a Prometheus text answer (0 if absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn cadence_sessions_due_together_are_claimed_and_closed_in_shared_statements() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let count = 150;
    let due = users(&env.pool, org, count, SyncStatus::Enabled, Utc::now(), true).await;
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", syncfleet_testkit::free_port()).parse().unwrap();
    // The jobs wait in the queue before the worker starts, so that its
    // prefetch hands it many at once.
    for user in &due {
        cadence_sync(&env, *user).await;
    }
    let worker = start(
        &env,
        syncfleet_worker::sync::SettingsCheck,
        &[("SYNCFLEET_OPS_LISTEN", &ops.to_string())],
    );
    wait_until(Duration::from_secs(60), "every session to succeed", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sync_sessions WHERE organization_id = $1 AND status = 'succeeded'",
        )
        .bind(org)
        .fetch_one(&env.pool)
        .await
        .unwrap()
            == count as i64
    })
    .await;

    // Every session ended as it would on its own: one session per user,
    // its row (written once, at the close) holding what the claim kept on
    // the run row, the lease and the running session released, the job no
    // longer queued, the success recorded.
    let (sessions, released): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT user_id) FROM sync_sessions \
                    WHERE organization_id = $1 AND trigger = 'cadence' AND attempt = 1 AND worker_id <> '' \
                    AND scheduled_at <= started_at AND started_at <= ended_at), \
                (SELECT count(*) FROM users u JOIN user_runs r ON r.user_id = u.id \
                    WHERE u.organization_id = $1 AND running_session_id IS NULL AND running_started_at IS NULL \
                    AND lease_expires_at IS NULL AND queued_job_id IS NULL AND last_session_status = 'succeeded' \
                    AND consecutive_failures = 0)",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((sessions, released), (count as i64, count as i64));

    let (_, metrics) = syncfleet_testkit::http_get(ops, "/metrics").await;
    for write in ["claim", "close"] {
        let writes = counter(
            &metrics,
            &format!(r#"syncfleet_worker_group_commit_writes_total{{write="{write}"}}"#),
        );
        let statements = counter(
            &metrics,
            &format!(r#"syncfleet_worker_group_commit_statements_total{{write="{write}"}}"#),
        );
        assert_eq!(
            writes, count as u64,
            "every {write} went through the group commit\n{metrics}"
        );
        assert!(
            statements < writes,
            "{write}: {statements} statements for {writes} sessions: nothing was shared"
        );
    }

    worker.stop().await;
    env.cleanup().await;
}
