//! Credentials sealed into the real `credentials` table: round trip, binding
//! to the row, replacement, and re-encryption under a new key.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    secrets::{self, CredentialError, CredentialKind, KeyRing, OpenError, Owner},
};
use syncfleet_testkit::{TestEnv, organization, users as seed_users};

fn ring(versions: &[(i32, u8)]) -> KeyRing {
    let spec = versions
        .iter()
        .map(|(version, byte)| {
            format!(
                "{version}:{}",
                base64::engine::general_purpose::STANDARD.encode([*byte; 32])
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    KeyRing::parse(&SecretString::from(spec)).unwrap()
}

#[tokio::test]
async fn a_credential_round_trips_is_replaced_and_does_not_open_on_another_row() {
    let env = TestEnv::new().await;
    let organization = organization(&env.pool, AccessType::Office365, true).await;
    let users = seed_users(
        &env.pool,
        organization,
        2,
        SyncStatus::Enabled,
        chrono::Utc::now(),
        false,
    )
    .await;
    let ring = ring(&[(1, 1)]);
    let (alice, bob) = (Owner::User(users[0]), Owner::User(users[1]));
    let kind = CredentialKind::MailboxRefreshToken;

    secrets::store(
        &env.pool,
        &ring,
        alice,
        kind,
        &SecretString::from("first-token".to_owned()),
    )
    .await
    .unwrap();
    secrets::store(
        &env.pool,
        &ring,
        alice,
        kind,
        &SecretString::from("rotated-token".to_owned()),
    )
    .await
    .unwrap();
    let opened = secrets::load(&env.pool, &ring, alice, kind).await.unwrap().unwrap();
    assert_eq!(opened.expose_secret(), "rotated-token");
    assert!(secrets::load(&env.pool, &ring, bob, kind).await.unwrap().is_none());
    let stored: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE user_id = $1")
        .bind(users[0])
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("rotated-token"));

    // Alice's sealed value copied onto Bob's row does not open as Bob's.
    sqlx::query(
        "INSERT INTO credentials (id, user_id, kind, key_version, nonce, ciphertext)
         SELECT gen_random_uuid(), $2, kind, key_version, nonce, ciphertext FROM credentials WHERE user_id = $1",
    )
    .bind(users[0])
    .bind(users[1])
    .execute(&env.pool)
    .await
    .unwrap();
    let error = secrets::load(&env.pool, &ring, bob, kind).await.unwrap_err();
    assert!(matches!(error, CredentialError::Open(OpenError::Corrupt)), "{error}");

    // The organization's credential lives beside the users' without clashing.
    let org = Owner::Organization(organization);
    let password = CredentialKind::ImpersonationPassword;
    secrets::store(&env.pool, &ring, org, password, &SecretString::from("svc".to_owned()))
        .await
        .unwrap();
    secrets::store(&env.pool, &ring, org, password, &SecretString::from("svc2".to_owned()))
        .await
        .unwrap();
    let opened = secrets::load(&env.pool, &ring, org, password).await.unwrap().unwrap();
    assert_eq!(opened.expose_secret(), "svc2");

    assert!(secrets::delete(&env.pool, alice, kind).await.unwrap());
    assert!(!secrets::delete(&env.pool, alice, kind).await.unwrap());
    assert!(secrets::load(&env.pool, &ring, alice, kind).await.unwrap().is_none());
    env.cleanup().await;
}

#[tokio::test]
async fn reencryption_moves_every_credential_to_the_new_key_and_can_run_again() {
    let env = TestEnv::new().await;
    let organization = organization(&env.pool, AccessType::ExchangeDirect, true).await;
    let users = seed_users(
        &env.pool,
        organization,
        5,
        SyncStatus::Enabled,
        chrono::Utc::now(),
        false,
    )
    .await;
    let old = ring(&[(1, 1)]);
    for (index, user) in users.iter().enumerate() {
        let secret = SecretString::from(format!("password-{index}"));
        secrets::store(
            &env.pool,
            &old,
            Owner::User(*user),
            CredentialKind::MailboxPassword,
            &secret,
        )
        .await
        .unwrap();
    }
    let rotated = ring(&[(1, 1), (2, 2)]);
    let done = secrets::reencrypt_all(&env.pool, &rotated, 2).await.unwrap();
    assert_eq!((done.resealed, done.current), (5, 0));
    let again = secrets::reencrypt_all(&env.pool, &rotated, 2).await.unwrap();
    assert_eq!((again.resealed, again.current), (0, 5));

    // Only the new key is needed now.
    let only_new = ring(&[(2, 2)]);
    for (index, user) in users.iter().enumerate() {
        let opened = secrets::load(
            &env.pool,
            &only_new,
            Owner::User(*user),
            CredentialKind::MailboxPassword,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(opened.expose_secret(), format!("password-{index}"));
    }
    env.cleanup().await;
}
