//! Admin jobs through the real PostgreSQL, RabbitMQ and Redis and the
//! provider simulators: each action queued as the API queues it ends with its
//! job's status and result, the user's row and the activity.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::Value;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    queue::{JobEnvelope, Route},
    secrets::{self, CredentialKind, Owner},
};
use syncfleet_connectors::mailbox::{ADDIN_ID, PRODUCT_CATEGORY};
use syncfleet_simulators::graph::Fault;
use syncfleet_testkit::{TestEnv, free_port, http_get, organization, test_key_ring, users, wait_until};
use syncfleet_worker::sync::SettingsCheck;
use uuid::Uuid;

use crate::{
    support::start,
    sync::{Access, Fixture, LIMIT},
};

/// Who requests the jobs.
const ADMIN: &str = "admin@fleet.example";

/// Queues an admin job as the API does: its row, then its job on the
/// priority queue.
async fn queue(env: &TestEnv, user: Uuid, action: &str) -> JobEnvelope {
    let job = JobEnvelope::admin(user, action, Utc::now());
    sqlx::query(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by, status, request) \
         SELECT $1, $2, organization_id, id, $3, 'queued', $4 FROM users WHERE id = $5",
    )
    .bind(job.job_id)
    .bind(action)
    .bind(ADMIN)
    .bind(&job.params)
    .bind(user)
    .execute(&env.pool)
    .await
    .unwrap();
    publish(env, &job).await;
    job
}

async fn publish(env: &TestEnv, job: &JobEnvelope) {
    env.publisher()
        .await
        .publish(Route::Priority, std::slice::from_ref(job))
        .await
        .unwrap();
}

/// An admin job's row.
#[derive(Debug, sqlx::FromRow)]
struct Job {
    status: String,
    result: Option<Value>,
    error: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

async fn job(env: &TestEnv, id: Uuid) -> Job {
    sqlx::query_as("SELECT status, result, error, started_at, finished_at FROM admin_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Waits for the job to end; answers its row.
async fn ended(env: &TestEnv, id: Uuid) -> Job {
    wait_until(LIMIT, "the admin job to end", || async {
        matches!(job(env, id).await.status.as_str(), "succeeded" | "failed")
    })
    .await;
    job(env, id).await
}

/// Queues an action and waits for its job to end.
async fn run(env: &TestEnv, user: Uuid, action: &str) -> Job {
    let queued = queue(env, user, action).await;
    ended(env, queued.job_id).await
}

/// (kind, actor, details) of the user's activities, oldest first.
async fn activities(env: &TestEnv, user: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT kind, actor, details FROM activities WHERE user_id = $1 ORDER BY occurred_at, id")
        .bind(user)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// (mailbox_status, sidebar_status, sync_status, disabled_reason).
async fn user_row(env: &TestEnv, user: Uuid) -> (String, String, String, Option<String>) {
    sqlx::query_as("SELECT mailbox_status, sidebar_status, sync_status, disabled_reason FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

async fn count(env: &TestEnv, table: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE user_id = $1"))
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// A free address for the worker's /metrics.
fn ops_address() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Waits until the worker's metrics hold `series`.
async fn wait_for_series(ops: SocketAddr, series: &str) {
    wait_until(LIMIT, series, || async {
        tokio::net::TcpStream::connect(ops).await.is_ok() && http_get(ops, "/metrics").await.1.contains(series)
    })
    .await;
}

#[tokio::test]
async fn checks_report_what_they_found_and_change_nothing_else() {
    let fixture = Fixture::new(Access::Office365).await;
    let (env, user) = (&fixture.env, fixture.user);
    let worker = fixture.worker(&[]);

    let settings = run(env, user, "check-settings").await;
    assert_eq!(settings.status, "succeeded", "{settings:?}");
    let result = settings.result.unwrap();
    assert_eq!(
        (result["settings"].as_str(), result["access_type"].as_str()),
        (Some("complete"), Some("office365"))
    );

    let mailbox = run(env, user, "check-mailbox").await;
    assert_eq!(mailbox.status, "succeeded", "{mailbox:?}");
    let result = mailbox.result.unwrap();
    assert_eq!(result["mailbox"], "reachable");
    assert_eq!(result["provider"], "graph");
    assert_eq!(result["address"].as_str(), Some(fixture.email.as_str()));

    let crm = run(env, user, "check-crm").await;
    assert_eq!(crm.status, "succeeded", "{crm:?}");
    let result = crm.result.unwrap();
    assert_eq!(result["crm"], "reachable");
    assert!(result["salesforce_user_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(result["daily_api_requests"]["max"].as_u64().unwrap() > 0, "{result}");

    let sidebar = run(env, user, "check-sidebar").await;
    assert_eq!(sidebar.status, "succeeded", "{sidebar:?}");
    assert_eq!(sidebar.result.unwrap()["sidebar"], "not_installed");
    let (mailbox_status, sidebar_status, sync_status, _) = user_row(env, user).await;
    assert_eq!(
        (mailbox_status.as_str(), sidebar_status.as_str(), sync_status.as_str()),
        ("not_initialized", "not_installed", "enabled")
    );
    assert!(activities(env, user).await.is_empty(), "checks record no activity");

    // A missing piece of configuration is the settings check's finding.
    sqlx::query("UPDATE users SET salesforce_instance_url = NULL WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    let settings = run(env, user, "check-settings").await;
    assert_eq!(settings.status, "failed");
    assert_eq!(settings.error.as_deref(), Some("no Salesforce instance URL is set"));
    assert!(settings.finished_at.is_some());

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_wrong_mailbox_password_fails_the_job_at_once_without_the_secret() {
    let fixture = Fixture::new(Access::ExchangeDirect).await;
    let (env, user) = (&fixture.env, fixture.user);
    let wrong = "canary-3b9e7a-wrong-password";
    secrets::store(
        &env.pool,
        &test_key_ring(),
        Owner::User(user),
        CredentialKind::MailboxPassword,
        &SecretString::from(wrong.to_owned()),
    )
    .await
    .unwrap();
    let worker = fixture.worker(&[("SYNCFLEET_RETRY_BASE_DELAY", "1s")]);

    let check = run(env, user, "check-mailbox").await;
    assert_eq!(check.status, "failed", "{check:?}");
    let error = check.error.unwrap();
    assert!(
        error.starts_with("Exchange Web Services refused the authorization"),
        "{error}"
    );
    assert!(!error.contains(wrong), "the error holds the password: {error}");
    assert!(check.result.is_none());

    // A refusal is not retried, even for an action that changes the mailbox.
    let install = queue(env, user, "install-sidebar").await;
    let install = ended(env, install.job_id).await;
    assert_eq!(install.status, "failed", "{install:?}");
    assert!(!install.error.unwrap().contains("gave up after"));
    assert!(fixture.providers.ews.apps(&fixture.email).is_empty());
    let (_, sidebar_status, _, _) = user_row(env, user).await;
    assert_eq!(
        sidebar_status, "unknown",
        "a failed action leaves the user's row as it was"
    );
    assert!(activities(env, user).await.is_empty());
    let lease: Option<Uuid> = sqlx::query_scalar("SELECT running_session_id FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(lease, None, "the failed action released the user's lease");

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn reset_mailbox_removes_the_customization_and_the_next_enabled_sync_restores_it() {
    let fixture = Fixture::new(Access::Office365).await;
    let (env, user) = (&fixture.env, fixture.user);
    let graph = &fixture.providers.graph;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    let customized = || {
        (
            graph
                .categories(&fixture.email)
                .iter()
                .any(|category| category.display_name == PRODUCT_CATEGORY),
            graph
                .folders(&fixture.email)
                .iter()
                .any(|folder| folder.display_name == PRODUCT_CATEGORY),
        )
    };
    assert_eq!(customized(), (true, true));

    let reset = run(env, user, "reset-mailbox").await;
    assert_eq!(reset.status, "succeeded", "{reset:?}");
    let result = reset.result.unwrap();
    assert_eq!(
        (result["mailbox"].as_str(), result["sync_status"].as_str()),
        (Some("reset"), Some("disabled"))
    );
    assert_eq!(customized(), (false, false), "the category and folder are gone");
    let (mailbox_status, _, sync_status, reason) = user_row(env, user).await;
    assert_eq!(
        (mailbox_status.as_str(), sync_status.as_str()),
        ("not_initialized", "disabled")
    );
    assert!(reason.unwrap().contains("mailbox was reset by admin@fleet.example"));
    let activities = activities(env, user).await;
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(
        (activities[0].0.as_str(), activities[0].1.as_str()),
        ("sync_disabled_customization_uninstalled", ADMIN)
    );
    assert!(activities[0].2.contains("it was enabled"), "{activities:?}");

    // Enabled again, the next sync initializes the mailbox afresh.
    sqlx::query("UPDATE users SET sync_status = 'enabled', disabled_reason = NULL WHERE id = $1")
        .bind(user)
        .execute(&env.pool)
        .await
        .unwrap();
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.scope, "initial");
    assert_eq!(customized(), (true, true));
    assert_eq!(user_row(env, user).await.0, "initialized");

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn reinitialize_mailbox_starts_afresh_without_duplicates_on_either_side() {
    let fixture = Fixture::new(Access::ExchangeDirect).await;
    let (env, user) = (&fixture.env, fixture.user);
    fixture.buyer_is_a_contact();
    fixture.receive(crate::sync::BUYER, "Quote for 40 seats");
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1);
    assert!(count(env, "sync_state", user).await > 0);
    // The buyer, a Contact of the user, was written into the mailbox.
    assert_eq!(fixture.providers.ews.contacts(&fixture.email).len(), 1);
    assert_eq!(count(env, "item_mappings", user).await, 2);

    let reinitialized = run(env, user, "reinitialize-mailbox").await;
    assert_eq!(reinitialized.status, "succeeded", "{reinitialized:?}");
    let result = reinitialized.result.unwrap();
    assert_eq!(result["mailbox_status"], "not_initialized");
    assert!(result["sync_state_cleared"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(result["mappings_cleared"], 1, "the Task's mapping; the Contact's stays");
    assert_eq!(count(env, "sync_state", user).await, 0);
    assert_eq!(count(env, "item_mappings", user).await, 1);
    let due: bool = sqlx::query_scalar("SELECT next_sync_at <= now() FROM user_runs WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(due, "the user is due at once");
    let (mailbox_status, _, sync_status, _) = user_row(env, user).await;
    assert_eq!(
        (mailbox_status.as_str(), sync_status.as_str()),
        ("not_initialized", "enabled")
    );
    let kinds: Vec<String> = activities(env, user).await.into_iter().map(|(kind, ..)| kind).collect();
    assert_eq!(kinds, ["mailbox_reinitialized"]);

    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.scope, "initial");
    assert_eq!(fixture.tasks().len(), 1, "the fresh sync rewrote the Task, not a copy");
    assert_eq!(
        fixture.providers.ews.contacts(&fixture.email).len(),
        1,
        "the fresh sync rewrote the mailbox's Contact, not a copy"
    );
    assert_eq!(count(env, "item_mappings", user).await, 2);

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn install_sidebar_then_check_sidebar_reports_it_installed_until_removed() {
    let fixture = Fixture::new(Access::ExchangeDirect).await;
    let (env, user) = (&fixture.env, fixture.user);
    let ews = &fixture.providers.ews;
    let worker = fixture.worker(&[]);

    let install = run(env, user, "install-sidebar").await;
    assert_eq!(install.status, "succeeded", "{install:?}");
    assert_eq!(install.result.unwrap()["sidebar"], "installed");
    assert_eq!(ews.apps(&fixture.email), [ADDIN_ID]);
    assert_eq!(user_row(env, user).await.1, "installed");

    let check = run(env, user, "check-sidebar").await;
    assert_eq!(check.result.unwrap()["sidebar"], "installed");

    let remove = run(env, user, "remove-sidebar").await;
    assert_eq!(remove.status, "succeeded", "{remove:?}");
    assert_eq!(remove.result.unwrap()["sidebar"], "not_installed");
    assert!(ews.apps(&fixture.email).is_empty());
    assert_eq!(user_row(env, user).await.1, "not_installed");
    let check = run(env, user, "check-sidebar").await;
    assert_eq!(check.result.unwrap()["sidebar"], "not_installed");

    let activities = activities(env, user).await;
    let kinds: Vec<(&str, &str)> = activities
        .iter()
        .map(|(kind, actor, _)| (kind.as_str(), actor.as_str()))
        .collect();
    assert_eq!(kinds, [("sidebar_installed", ADMIN), ("sidebar_removed", ADMIN)]);

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_mutating_action_waits_for_the_users_lease_then_runs() {
    let fixture = Fixture::new(Access::Office365).await;
    let (env, user) = (&fixture.env, fixture.user);
    let ops = ops_address();
    let worker = fixture.worker(&[("SYNCFLEET_OPS_LISTEN", &ops.to_string())]);
    // A session of the user holds the lease.
    sqlx::query(
        "UPDATE user_runs SET running_session_id = $2, lease_expires_at = now() + interval '3 seconds' WHERE user_id = $1",
    )
    .bind(user)
    .bind(Uuid::now_v7())
    .execute(&env.pool)
    .await
    .unwrap();

    let install = queue(env, user, "install-sidebar").await;
    wait_for_series(
        ops,
        r#"syncfleet_worker_jobs_total{queue="priority",outcome="deferred"} 1"#,
    )
    .await;
    let waiting = job(env, install.job_id).await;
    assert_eq!((waiting.status.as_str(), waiting.started_at), ("queued", None));
    assert_eq!(fixture.providers.graph.addin(&fixture.email), None);

    // The session ends and releases the lease; the deferred job runs then.
    let released_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE user_runs SET running_session_id = NULL, lease_expires_at = NULL WHERE user_id = $1 RETURNING now()",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let install = ended(env, install.job_id).await;
    assert_eq!(install.status, "succeeded", "{install:?}");
    assert!(install.started_at.unwrap() >= released_at);
    assert_eq!(fixture.providers.graph.addin(&fixture.email).as_deref(), Some(ADDIN_ID));

    // Checks take no lease: one runs at once while a session holds it.
    sqlx::query(
        "UPDATE user_runs SET running_session_id = $2, lease_expires_at = now() + interval '60 seconds' WHERE user_id = $1",
    )
    .bind(user)
    .bind(Uuid::now_v7())
    .execute(&env.pool)
    .await
    .unwrap();
    let check = run(env, user, "check-sidebar").await;
    assert_eq!(check.result.unwrap()["sidebar"], "installed");

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_passing_fault_is_a_checks_finding_and_a_mutating_actions_retry() {
    let fixture = Fixture::new(Access::Office365).await;
    let (env, user) = (&fixture.env, fixture.user);
    let graph = &fixture.providers.graph;
    let ops = ops_address();
    let worker = fixture.worker(&[
        ("SYNCFLEET_OPS_LISTEN", &ops.to_string()),
        ("SYNCFLEET_RETRY_BASE_DELAY", "1s"),
    ]);

    graph.inject_fault(&fixture.email, Fault::ServerError, 1).unwrap();
    let check = run(env, user, "check-sidebar").await;
    assert_eq!(check.status, "failed", "{check:?}");
    let error = check.error.unwrap();
    assert!(error.starts_with("Microsoft Graph is unavailable"), "{error}");
    assert_eq!(user_row(env, user).await.1, "unknown");

    graph.inject_fault(&fixture.email, Fault::ServerError, 1).unwrap();
    let install = run(env, user, "install-sidebar").await;
    assert_eq!(install.status, "succeeded", "{install:?}");
    assert_eq!(graph.addin(&fixture.email).as_deref(), Some(ADDIN_ID));
    wait_for_series(
        ops,
        r#"syncfleet_worker_jobs_total{queue="priority",outcome="retried"} 1"#,
    )
    .await;

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_finished_job_runs_nothing_again() {
    let fixture = Fixture::new(Access::Office365).await;
    let (env, user) = (&fixture.env, fixture.user);
    let ops = ops_address();
    let worker = fixture.worker(&[("SYNCFLEET_OPS_LISTEN", &ops.to_string())]);
    let install = queue(env, user, "install-sidebar").await;
    let first = ended(env, install.job_id).await;
    assert_eq!(first.status, "succeeded", "{first:?}");
    // Someone removes the add-in by hand; the job's message comes again.
    fixture.providers.graph.set_addin(&fixture.email, None).unwrap();

    publish(env, &install).await;
    wait_for_series(
        ops,
        r#"syncfleet_worker_jobs_total{queue="priority",outcome="dropped"} 1"#,
    )
    .await;
    assert_eq!(
        fixture.providers.graph.addin(&fixture.email),
        None,
        "not installed again"
    );
    let again = job(env, install.job_id).await;
    assert_eq!((again.status, again.finished_at), (first.status, first.finished_at));
    assert_eq!(activities(env, user).await.len(), 1);

    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_worker_without_admin_support_fails_the_job_clearly() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let worker = start(&env, SettingsCheck, &[]);

    let check = run(&env, user, "check-mailbox").await;
    assert_eq!(check.status, "failed");
    assert_eq!(
        check.error.as_deref(),
        Some("this worker cannot run admin actions (check-mailbox)")
    );

    worker.stop().await;
    env.cleanup().await;
}
