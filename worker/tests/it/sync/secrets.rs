//! No secret appears in any log, session log, issue or error text: canary
//! secrets (client secrets, a mailbox password, the refresh tokens) are
//! searched for everywhere a session writes, and in the worker's own log at
//! debug level.

use std::{process::Stdio, time::Duration};

use chrono::Utc;
use secrecy::ExposeSecret;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    secrets::{self, CredentialKind, Owner},
    session_log,
};
use syncfleet_testkit::{Providers, TestEnv, binary, organization, stop_gracefully, test_key_ring, users, wait_until};

use super::{BUYER, LIMIT};
use crate::support::force_sync;

const CANARY: &str = "canary-5e1f0c";

async fn ended(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE status <> 'running'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn no_secret_appears_in_any_log_issue_or_error() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    providers.salesforce.insert_contact(&providers.org, BUYER).unwrap();
    let office365 = providers.office365_users(&env.pool, 1).await[0];
    let exchange_org = organization(&env.pool, AccessType::ExchangeDirect, true).await;
    let exchange = users(&env.pool, exchange_org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let password = format!("{CANARY}-mailbox-password");
    providers.connect_exchange_direct(&env.pool, exchange, &password).await;

    let log_path = std::env::temp_dir().join(format!("syncfleet-canary-{}.log", uuid::Uuid::new_v4()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut settings = env.env_vars(&[("SYNCFLEET_LOG", "debug"), ("SYNCFLEET_LOG_FORMAT", "json")]);
    settings.extend(providers.env());
    settings.extend([
        (
            "SYNCFLEET_MICROSOFT_CLIENT_SECRET".to_owned(),
            format!("{CANARY}-microsoft-client-secret"),
        ),
        (
            "SYNCFLEET_SALESFORCE_CLIENT_SECRET".to_owned(),
            format!("{CANARY}-salesforce-client-secret"),
        ),
    ]);
    let worker = std::process::Command::new(binary("syncfleet-worker"))
        .envs(settings)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();

    // One good session each, then failures that put provider answers into
    // issues and errors: a revoked Microsoft token and a wrong password.
    for user in [office365, exchange] {
        let before = ended(&env).await;
        force_sync(&env, user).await;
        wait_until(LIMIT, "the session", || async { ended(&env).await > before }).await;
    }
    let ring = test_key_ring();
    let load = |user, kind| {
        let (pool, ring) = (&env.pool, &ring);
        async move {
            secrets::load(pool, ring, Owner::User(user), kind)
                .await
                .unwrap()
                .unwrap()
                .expose_secret()
                .to_owned()
        }
    };
    let mailbox_token = load(office365, CredentialKind::MailboxRefreshToken).await;
    let crm_token = load(office365, CredentialKind::CrmRefreshToken).await;
    // The access tokens kept between sessions are secrets too (Salesforce's
    // is a sealed document holding its token).
    let mailbox_access = load(office365, CredentialKind::MailboxAccessToken).await;
    let crm_session: serde_json::Value =
        serde_json::from_str(&load(office365, CredentialKind::CrmAccessToken).await).unwrap();
    let crm_access = crm_session["access_token"].as_str().unwrap().to_owned();
    providers.graph.revoke_refresh_token(&mailbox_token);
    // The access token kept from the good session lives its hour: the
    // revocation is met at the next refresh.
    sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND kind = 'mailbox_access_token'")
        .bind(office365)
        .execute(&env.pool)
        .await
        .unwrap();
    secrets::store(
        &env.pool,
        &ring,
        Owner::User(exchange),
        CredentialKind::MailboxPassword,
        &format!("{CANARY}-wrong-password").into(),
    )
    .await
    .unwrap();
    for user in [office365, exchange] {
        let before = ended(&env).await;
        force_sync(&env, user).await;
        wait_until(LIMIT, "the failed session", || async { ended(&env).await > before }).await;
    }
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE status = 'failed'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(failed, 2, "both failures happened, so their texts are searched");
    stop_gracefully(worker);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let secrets_seen = [CANARY.to_owned(), mailbox_token, crm_token, mailbox_access, crm_access];
    let mut texts = vec![("worker log".to_owned(), std::fs::read_to_string(&log_path).unwrap())];
    assert!(texts[0].1.contains("Sync session finished"), "the log was captured");
    let errors: Vec<(Option<String>,)> = sqlx::query_as("SELECT error_message FROM sync_sessions")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    texts.extend(
        errors
            .into_iter()
            .filter_map(|(text,)| text)
            .map(|text| ("session error".to_owned(), text)),
    );
    let issues: Vec<(String, Option<String>)> = sqlx::query_as("SELECT message, item_ref FROM sync_issues")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    texts.extend(
        issues
            .into_iter()
            .map(|(message, item)| ("issue".to_owned(), format!("{message} {}", item.unwrap_or_default()))),
    );
    let logs: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT log_gzip FROM sync_session_logs")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    for (log,) in logs {
        for entry in session_log::decode_gzip(&log).unwrap() {
            texts.push(("session log".to_owned(), format!("{} {}", entry.step, entry.message)));
        }
    }
    for (what, text) in &texts {
        for secret in &secrets_seen {
            assert!(!text.contains(secret.as_str()), "the {what} holds a secret: {text}");
        }
    }
    let _ = std::fs::remove_file(log_path);
    env.cleanup().await;
}
