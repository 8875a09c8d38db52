//! The session's credentials: access tokens kept between sessions (no
//! refresh while one is valid), a refused one refreshed once, and a rotated
//! refresh token that survives the database failing while it is stored.

use std::time::Duration;

use secrecy::ExposeSecret;
use syncfleet_common::secrets::{self, CredentialKind, Owner};
use syncfleet_simulators::{gmail, graph, salesforce};
use syncfleet_testkit::{ProviderConfigs, Providers, reset_blocked, session_count, test_key_ring, wait_until};

use super::{Access, BUYER, Fixture, LIMIT};
use crate::support::force_sync;

impl Fixture {
    /// Refreshes seen by the mailbox's and Salesforce's token endpoints.
    fn refreshes(&self) -> (u64, u64) {
        let mailbox = match self.access {
            Access::Office365 => self
                .providers
                .graph
                .counters(&self.email)
                .calls_to(graph::Endpoint::Token),
            Access::Gmail => self
                .providers
                .gmail
                .counters(&self.email)
                .unwrap()
                .calls_to(gmail::Endpoint::Token),
            _ => 0,
        };
        let crm = self
            .providers
            .salesforce
            .counters(&self.providers.org)
            .calls_to(salesforce::Endpoint::Token);
        (mailbox, crm)
    }

    /// Makes the kept access tokens expired, as an hour later.
    pub(super) async fn expire_kept_access_tokens(&self) {
        sqlx::query(
            "UPDATE credentials SET expires_at = now() - interval '1 second' \
             WHERE user_id = $1 AND kind IN ('mailbox_access_token', 'crm_access_token')",
        )
        .bind(self.user)
        .execute(&self.env.pool)
        .await
        .unwrap();
    }

    async fn stored(&self, kind: CredentialKind) -> Option<String> {
        secrets::load(&self.env.pool, &test_key_ring(), Owner::User(self.user), kind)
            .await
            .unwrap()
            .map(|secret| secret.expose_secret().to_owned())
    }
}

async fn kept_access_tokens_spare_the_refreshes(access: Access) {
    let fixture = Fixture::new(access).await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(
        fixture.refreshes(),
        (1, 1),
        "the first session refreshes each side once"
    );
    // Both access tokens are kept, sealed, valid for well beyond a cadence.
    let kept: Vec<(String, bool)> = sqlx::query_as(
        "SELECT kind, expires_at > now() + interval '30 minutes' FROM credentials \
         WHERE user_id = $1 AND kind LIKE '%access_token' ORDER BY kind",
    )
    .bind(fixture.user)
    .fetch_all(&fixture.env.pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        [
            ("crm_access_token".to_owned(), true),
            ("mailbox_access_token".to_owned(), true)
        ]
    );

    // Later sessions use them: new mail is logged with no refresh at all
    // (Salesforce's identity is kept with its token: the owned records are
    // read without a refresh to learn the user's id).
    fixture.receive(BUYER, "Kept tokens");
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.items_to_crm, 1);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(
        fixture.refreshes(),
        (1, 1),
        "no refresh while the kept tokens are valid"
    );

    // Once they expire, the next session refreshes each side once (new
    // mail, so that the session calls Salesforce whatever the mailbox type).
    fixture.expire_kept_access_tokens().await;
    fixture.receive(BUYER, "Refreshed tokens");
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.refreshes(), (2, 2));
    assert_eq!(fixture.tasks().len(), 2);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn office365_sessions_reuse_the_kept_access_tokens_until_they_expire() {
    kept_access_tokens_spare_the_refreshes(Access::Office365).await;
}

#[tokio::test]
async fn gmail_sessions_reuse_the_kept_access_tokens_until_they_expire() {
    kept_access_tokens_spare_the_refreshes(Access::Gmail).await;
}

#[tokio::test]
async fn a_kept_access_token_the_provider_refuses_is_refreshed_once_and_the_session_goes_on() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // The session was ended elsewhere: Graph refuses the kept token once.
    fixture
        .providers
        .graph
        .inject_fault(&fixture.email, graph::Fault::Unauthorized, 1)
        .unwrap();
    fixture.receive(BUYER, "After the 401");
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.last_session().await.items_to_crm, 1);
    assert_eq!(fixture.refreshes(), (2, 1));
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn an_api_refusing_the_access_token_after_a_good_refresh_leaves_the_refresh_token_alone() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // Graph refuses the access tokens twice: the kept one, then the one the
    // token endpoint has just granted. The refresh token was accepted, so it
    // is not dead, and nobody is asked to reconnect.
    fixture
        .providers
        .graph
        .inject_fault(&fixture.email, graph::Fault::Unauthorized, 2)
        .unwrap();
    fixture.receive(BUYER, "Behind two 401s");
    assert_eq!(fixture.sync_once().await, "failed");
    assert_eq!(fixture.last_session().await.error_category.as_deref(), Some("auth"));
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials WHERE refused_at IS NOT NULL")
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    let asked: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE kind = 'reconnect'")
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    assert_eq!(
        (refused, asked),
        (0, 0),
        "a refresh token the provider accepted was marked refused"
    );

    // The next session calls the provider again and logs the mail.
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn replacing_a_refresh_token_drops_the_access_token_kept_for_the_old_one() {
    let fixture = Fixture::new(Access::Office365).await;
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert!(fixture.stored(CredentialKind::MailboxAccessToken).await.is_some());
    assert!(fixture.stored(CredentialKind::CrmAccessToken).await.is_some());
    // The user authorizes Salesforce again (the api stores the new refresh
    // token): the session kept for the old authorization goes with it.
    let ring = test_key_ring();
    let owner = Owner::User(fixture.user);
    let token = fixture.providers.salesforce.issue_refresh_token(&fixture.providers.org);
    secrets::store(
        &fixture.env.pool,
        &ring,
        owner,
        CredentialKind::CrmRefreshToken,
        &token.into(),
    )
    .await
    .unwrap();
    assert_eq!(fixture.stored(CredentialKind::CrmAccessToken).await, None);
    assert!(fixture.stored(CredentialKind::MailboxAccessToken).await.is_some());
    // The mailbox's authorization is removed: its access token too.
    secrets::delete(&fixture.env.pool, owner, CredentialKind::MailboxRefreshToken)
        .await
        .unwrap();
    assert_eq!(fixture.stored(CredentialKind::MailboxAccessToken).await, None);
    worker.stop().await;
    fixture.env.cleanup().await;
}

/// Resets the worker's connection blocked on the test's row lock while it
/// writes credentials; answers its pid.
async fn reset_the_blocked_credential_write(fixture: &Fixture, after: Option<i32>) -> i32 {
    reset_blocked(&fixture.env.pool, "INSERT INTO credentials", after).await
}

/// Both providers in their strict modes: every refresh rotates the refresh
/// token and the one it was given stops working at once, so a rotated token
/// the fleet failed to store would be an authorization lost.
async fn strict_fixture() -> Fixture {
    let providers = Providers::with(ProviderConfigs {
        graph: graph::GraphConfig {
            revoke_rotated_refresh_tokens: true,
            ..graph::GraphConfig::default()
        },
        salesforce: salesforce::SalesforceConfig {
            rotate_refresh_tokens: true,
            ..salesforce::SalesforceConfig::default()
        },
        ..ProviderConfigs::default()
    })
    .await;
    Fixture::with(Access::Office365, providers).await
}

/// The database resets the worker's connection twice while it stores the
/// refresh token of `kind` that a refresh just rotated: the store is retried
/// with the token held in memory, lands, and the authorization lives on.
async fn a_rotated_token_survives_connection_resets(kind: CredentialKind) {
    let fixture = strict_fixture().await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    let first = fixture.stored(kind).await.unwrap();
    let refreshes = fixture.refreshes();
    fixture.expire_kept_access_tokens().await;

    // The test holds the credential row: the worker's write after the next
    // refresh waits on it, and its connection is reset twice meanwhile.
    let mut holder = fixture.env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM credentials WHERE user_id = $1 AND kind = $2 FOR UPDATE")
        .bind(fixture.user)
        .bind(kind.as_str())
        .execute(&mut *holder)
        .await
        .unwrap();
    fixture.receive(BUYER, "Through the resets");
    force_sync(&fixture.env, fixture.user).await;
    let reset = reset_the_blocked_credential_write(&fixture, None).await;
    reset_the_blocked_credential_write(&fixture, Some(reset)).await;
    // The store is retried (the token held in memory) and lands once the
    // row is free.
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.rollback().await.unwrap();
    wait_until(LIMIT, "the session to succeed", || async {
        session_count(&fixture.env.pool, fixture.user, "succeeded").await == 2
    })
    .await;
    assert_eq!(fixture.last_session().await.items_to_crm, 1);
    let second = fixture.stored(kind).await.unwrap();
    assert_ne!(second, first, "the rotated refresh token is the one stored");

    // The authorization lives on: the next refresh uses the stored token
    // (the first one was revoked by the rotation).
    fixture.expire_kept_access_tokens().await;
    fixture.receive(BUYER, "After the resets");
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.refreshes(), (refreshes.0 + 2, refreshes.1 + 2));
    assert_eq!(fixture.tasks().len(), 2);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_rotated_mailbox_refresh_token_is_stored_through_connection_resets() {
    a_rotated_token_survives_connection_resets(CredentialKind::MailboxRefreshToken).await;
}

#[tokio::test]
async fn a_rotated_salesforce_refresh_token_is_stored_through_connection_resets() {
    a_rotated_token_survives_connection_resets(CredentialKind::CrmRefreshToken).await;
}

#[tokio::test]
async fn a_refused_authorization_asks_once_to_reconnect_stops_calling_the_provider_and_a_new_token_resumes_at_once() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // The user revoked the fleet's access: the stored token is refused at
    // the next refresh.
    let stored = fixture.stored(CredentialKind::MailboxRefreshToken).await.unwrap();
    fixture.providers.graph.revoke_refresh_token(&stored);
    fixture.expire_kept_access_tokens().await;
    assert_eq!(fixture.sync_once().await, "failed");
    assert_eq!(fixture.last_session().await.error_category.as_deref(), Some("auth"));

    // One email to the user and the organization's admins, one notification.
    let emails: Vec<(String, Vec<String>, String)> =
        sqlx::query_as("SELECT subject, recipients, body_text FROM email_outbox WHERE kind = 'reconnect'")
            .fetch_all(&fixture.env.pool)
            .await
            .unwrap();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].0, format!("Reconnect your mailbox: {}", fixture.email));
    assert!(emails[0].1.contains(&fixture.email), "{emails:?}");
    assert!(emails[0].2.contains("resumes at once"), "{emails:?}");
    let notifications: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, title FROM notifications WHERE user_id = $1")
            .bind(fixture.user)
            .fetch_all(&fixture.env.pool)
            .await
            .unwrap();
    assert_eq!(
        notifications,
        [("reconnect".to_owned(), "Reconnect your mailbox".to_owned())]
    );

    // The next sessions fail at once without calling the provider again,
    // and ask nothing more.
    let refreshes = fixture.refreshes();
    let graph_calls = fixture.providers.graph.counters(&fixture.email).total_calls();
    fixture.receive(BUYER, "While disconnected");
    assert_eq!(fixture.sync_once().await, "failed");
    assert_eq!(fixture.refreshes(), refreshes);
    assert_eq!(
        fixture.providers.graph.counters(&fixture.email).total_calls(),
        graph_calls
    );
    let emails: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE kind = 'reconnect'")
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    assert_eq!(emails, 1);

    // The user signs in again (the api stores the new token): the user is
    // due at once, and the mail waiting is logged.
    let token = fixture.providers.graph.create_mailbox(&fixture.email);
    secrets::store(
        &fixture.env.pool,
        &test_key_ring(),
        Owner::User(fixture.user),
        CredentialKind::MailboxRefreshToken,
        &token.into(),
    )
    .await
    .unwrap();
    let due: bool = sqlx::query_scalar("SELECT next_sync_at <= now() FROM user_runs WHERE user_id = $1")
        .bind(fixture.user)
        .fetch_one(&fixture.env.pool)
        .await
        .unwrap();
    assert!(
        due,
        "a new authorization replacing a refused one makes the user due at once"
    );
    assert_eq!(fixture.sync_once().await, "succeeded");
    assert_eq!(fixture.tasks().len(), 1);
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_refusal_right_after_an_abandoned_session_is_retried_and_only_the_retry_asks_to_reconnect() {
    let fixture = Fixture::new(Access::Office365).await;
    fixture.buyer_is_a_contact();
    let worker = fixture.worker(&[("SYNCFLEET_RETRY_BASE_DELAY", "1s")]);
    assert_eq!(fixture.sync_once().await, "succeeded");
    // The session ends as the sweep ends one whose lease expired (its
    // worker stalled through a database outage), and the provider refuses
    // the stored refresh token: as it does when that session rotated it and
    // its store of the new one has not landed yet.
    sqlx::query(
        "WITH abandoned AS ( \
             UPDATE sync_sessions SET status = 'abandoned' \
             WHERE id = (SELECT id FROM sync_sessions WHERE user_id = $1 ORDER BY started_at DESC LIMIT 1) \
         ) \
         UPDATE user_runs SET last_session_status = 'abandoned' WHERE user_id = $1",
    )
    .bind(fixture.user)
    .execute(&fixture.env.pool)
    .await
    .unwrap();
    let stored = fixture.stored(CredentialKind::MailboxRefreshToken).await.unwrap();
    fixture.providers.graph.revoke_refresh_token(&stored);
    fixture.expire_kept_access_tokens().await;

    let asked = || async {
        let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials WHERE refused_at IS NOT NULL")
            .fetch_one(&fixture.env.pool)
            .await
            .unwrap();
        let emails: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE kind = 'reconnect'")
            .fetch_one(&fixture.env.pool)
            .await
            .unwrap();
        let notes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = 'reconnect'")
                .bind(fixture.user)
                .fetch_one(&fixture.env.pool)
                .await
                .unwrap();
        (refused, emails, notes)
    };
    // The refusal cannot tell a dead authorization from a rotation in
    // flight: the session fails as transient and asks nothing, and its job
    // is retried. No store landed meanwhile: the retry's refusal is
    // conclusive, and asks once.
    let before = fixture.ended_sessions().await;
    force_sync(&fixture.env, fixture.user).await;
    wait_until(LIMIT, "the session and its retry to end", || async {
        fixture.ended_sessions().await >= before + 2
    })
    .await;
    let ended: Vec<(String, Option<String>, i32)> = sqlx::query_as(
        "SELECT status, error_category, attempt FROM sync_sessions WHERE user_id = $1 \
         ORDER BY started_at DESC LIMIT 2",
    )
    .bind(fixture.user)
    .fetch_all(&fixture.env.pool)
    .await
    .unwrap();
    let failed = |category: &str, attempt: i32| ("failed".to_owned(), Some(category.to_owned()), attempt);
    assert_eq!(ended, vec![failed("auth", 2), failed("transient", 1)]);
    assert_eq!(asked().await, (1, 1, 1), "asked once, by the retry");
    worker.stop().await;
    fixture.env.cleanup().await;
}

#[tokio::test]
async fn a_spooled_rotation_is_stored_only_while_the_token_it_consumed_is_still_the_stored_one() {
    use secrecy::SecretString;
    use syncfleet_worker::sync::spool::Spool;

    let fixture = Fixture::new(Access::Office365).await;
    let ring = test_key_ring();
    let owner = Owner::User(fixture.user);
    let kind = CredentialKind::MailboxRefreshToken;
    let dir = std::env::temp_dir().join(format!("syncfleet-spool-{}", uuid::Uuid::new_v4()));
    let spool = Spool::new(&dir.to_string_lossy());
    let token = |text: &str| SecretString::from(text.to_owned());
    // A rotation of `consumed` into `new` that never reached the database.
    let spooled = |consumed: String, new: &'static str| {
        let (spool, ring) = (spool.clone(), ring.clone());
        async move {
            let rotation = [(kind, SecretString::from(new), None)];
            spool
                .write(&ring, owner, kind, &token(&consumed), &rotation)
                .await
                .unwrap();
        }
    };
    // A pass over the entries older than `age`: (stored, dropped, left).
    let replay = |age: u64| {
        let (spool, ring, pool) = (spool.clone(), ring.clone(), fixture.env.pool.clone());
        async move {
            let replayed = spool.replay(&pool, &ring, Duration::from_secs(age)).await;
            (replayed.stored, replayed.dropped, replayed.left)
        }
    };
    let first = fixture.stored(kind).await.unwrap();

    // Two rotations of the stored token: the first one written is put back;
    // the second consumed a token that is no longer the stored one.
    spooled(first.clone(), "rotated-1").await;
    spooled(first, "rotated-2").await;
    assert_eq!(replay(0).await, (1, 1, 0));
    assert_eq!(fixture.stored(kind).await.as_deref(), Some("rotated-1"));

    // The user reconnected after the rotation: their new grant wins.
    spooled("rotated-1".to_owned(), "rotated-3").await;
    secrets::store(&fixture.env.pool, &ring, owner, kind, &token("reconnected"))
        .await
        .unwrap();
    assert_eq!(replay(0).await, (0, 1, 0));
    assert_eq!(fixture.stored(kind).await.as_deref(), Some("reconnected"));

    // An entry younger than the pass's age is a store still being tried:
    // left alone until it is older (or the worker starts again).
    spooled("reconnected".to_owned(), "rotated-4").await;
    assert_eq!(replay(60).await, (0, 0, 0));
    assert_eq!(fixture.stored(kind).await.as_deref(), Some("reconnected"));
    assert_eq!(replay(0).await, (1, 0, 0));
    assert_eq!(fixture.stored(kind).await.as_deref(), Some("rotated-4"));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "every entry stored or dropped is deleted"
    );

    // Nothing in the spool is in the clear.
    spooled("rotated-4".to_owned(), "secret-5").await;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!body.contains("secret-5") && !body.contains("rotated-4"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    fixture.env.cleanup().await;
}
