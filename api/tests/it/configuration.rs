//! A user's email configuration and credentials: secrets go in sealed and
//! never come out, every bad input names its field, nothing is half-applied.

use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus},
    secrets::{self, CredentialKind, Owner},
};
use syncfleet_testkit::{TestEnv, http, http_with_body, organization, test_key_ring, users};
use uuid::Uuid;

use crate::Api;

async fn setup(access: AccessType) -> (TestEnv, Api, Uuid, String) {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, access, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let token = create_token(&env.pool, "org_admin", Some(org), None, "lead@acme.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    (env, api, user, token)
}

async fn stored(env: &TestEnv, user: Uuid, kind: CredentialKind) -> Option<String> {
    secrets::load(&env.pool, &test_key_ring(), Owner::User(user), kind)
        .await
        .unwrap()
        .map(|secret| secret.expose_secret().to_owned())
}

#[tokio::test]
async fn a_direct_logon_password_is_stored_sealed_and_never_answered() {
    let (env, api, user, token) = setup(AccessType::ExchangeDirect).await;
    let path = format!("/v1/users/{user}/email-configuration");
    // The user had authorized Office 365: a password switches back from it.
    secrets::store(
        &env.pool,
        &test_key_ring(),
        Owner::User(user),
        CredentialKind::MailboxRefreshToken,
        &"ms-refresh-token".to_owned().into(),
    )
    .await
    .unwrap();
    let change = json!({
        "account_logon": "CONTOSO\\ada",
        "password": "correct horse battery staple",
        "salesforce_instance_url": "https://acme.my.salesforce.com",
    });
    let response = http_with_body(api.address, "PUT", &path, Some(&token), &change.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(!response.body.contains("correct horse"), "{}", response.body);
    let view = response.json();
    assert_eq!(view["account_logon"], "CONTOSO\\ada");
    assert_eq!(view["mailbox_password_set"], true);
    assert_eq!(
        view["mailbox_authorized"], false,
        "the Office 365 authorization was dropped"
    );
    assert_eq!(view["salesforce_instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(
        stored(&env, user, CredentialKind::MailboxPassword).await.as_deref(),
        Some("correct horse battery staple")
    );
    let read = http(api.address, "GET", &path, Some(&token)).await;
    assert_eq!(read.status, 200);
    assert!(!read.body.contains("correct horse"));
    assert_eq!(read.json()["mailbox_password_set"], true);

    // `null` clears, a missing field keeps.
    let response = http_with_body(
        api.address,
        "PUT",
        &path,
        Some(&token),
        &json!({"salesforce_instance_url": null}).to_string(),
    )
    .await;
    let view = response.json();
    assert_eq!(view["salesforce_instance_url"], Value::Null);
    assert_eq!(view["account_logon"], "CONTOSO\\ada");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_inputs_name_their_field_and_change_nothing() {
    let (env, api, user, token) = setup(AccessType::Office365).await;
    let path = format!("/v1/users/{user}/email-configuration");
    let cases = [
        (json!({"password": "secret-value-1"}), 400, "password"),
        (json!({"account_logon": "ada"}), 400, "account_logon"),
        (
            json!({"salesforce_instance_url": "http://acme.my.salesforce.com"}),
            400,
            "salesforce_instance_url",
        ),
        (
            json!({"salesforce_instance_url": "https://10.0.0.7"}),
            400,
            "salesforce_instance_url",
        ),
        (
            json!({"salesforce_instance_url": "not a url"}),
            400,
            "salesforce_instance_url",
        ),
        (json!({"email": "nobody"}), 400, "email"),
        (json!({"email": "x@y.example", "colour": "red"}), 400, "colour"),
        // A valid part with an invalid one: nothing is applied.
        (
            json!({"email": "new@acme.example", "password": "secret-value-2"}),
            400,
            "password",
        ),
    ];
    for (change, status, field) in cases {
        let response = http_with_body(api.address, "PUT", &path, Some(&token), &change.to_string()).await;
        assert_eq!(response.status, status, "{change}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{change}: {}", response.body);
        assert!(!response.body.contains("secret-value"), "{}", response.body);
    }
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_ne!(email, "new@acme.example");
    let stored_any: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials WHERE user_id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored_any, 0);

    // A wrongly typed secret is refused without echoing it.
    let response = http_with_body(
        api.address,
        "PUT",
        &format!("/v1/users/{user}/credentials/mailbox-refresh-token"),
        Some(&token),
        r#"{"token": ["secret-value-3"]}"#,
    )
    .await;
    assert_eq!(response.status, 400);
    assert!(!response.body.contains("secret-value-3"), "{}", response.body);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn refresh_tokens_are_stored_and_deleted_and_a_user_keeps_their_own_address() {
    let (env, api, user, admin) = setup(AccessType::Office365).await;
    let own = create_token(&env.pool, "user", None, Some(user), "ada@acme.test")
        .await
        .unwrap();
    let credential = |kind: &str| format!("/v1/users/{user}/credentials/{kind}");
    let response = http_with_body(
        api.address,
        "PUT",
        &credential("mailbox-refresh-token"),
        Some(&own),
        &json!({"token": "0.AXEA-refresh"}).to_string(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["mailbox_authorized"], true);
    assert!(!response.body.contains("0.AXEA"));
    assert_eq!(
        stored(&env, user, CredentialKind::MailboxRefreshToken).await.as_deref(),
        Some("0.AXEA-refresh")
    );

    let response = http_with_body(
        api.address,
        "PUT",
        &format!("/v1/users/{user}/email-configuration"),
        Some(&own),
        &json!({"email": "elsewhere@other.example"}).to_string(),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(response.json()["error"]["field"], "email");

    let response = http(
        api.address,
        "DELETE",
        &credential("mailbox-refresh-token"),
        Some(&admin),
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.body);
    assert_eq!(stored(&env, user, CredentialKind::MailboxRefreshToken).await, None);
    let response = http(
        api.address,
        "DELETE",
        &credential("mailbox-refresh-token"),
        Some(&admin),
    )
    .await;
    assert_eq!(response.status, 404);
    let response = http(api.address, "DELETE", &credential("api-key"), Some(&admin)).await;
    assert_eq!(
        (response.status, response.json()["error"]["code"].clone()),
        (404, json!("unknown_credential"))
    );

    // Another organization's admin sees nothing.
    let other_org = organization(&env.pool, AccessType::Office365, true).await;
    let stranger = create_token(&env.pool, "org_admin", Some(other_org), None, "x@other.test")
        .await
        .unwrap();
    let response = http(
        api.address,
        "GET",
        &format!("/v1/users/{user}/email-configuration"),
        Some(&stranger),
    )
    .await;
    assert_eq!(response.status, 404);
    api.stop().await;
    env.cleanup().await;
}

/// A host name of this machine's `/etc/hosts` that resolves to a loopback
/// or private address (every container names itself there).
fn local_host_name() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    hosts
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let address: std::net::IpAddr = words.next()?.parse().ok()?;
            let non_public = address.is_loopback()
                || matches!(address, std::net::IpAddr::V4(v4) if v4.is_private() || v4.is_link_local());
            non_public.then(|| words.find(|name| !name.ends_with("localhost") && !name.starts_with("ip6-")))?
        })
        .next()
        .map(str::to_owned)
        .expect("/etc/hosts names this machine with a loopback or private address")
}

#[tokio::test]
async fn a_url_whose_host_name_resolves_to_a_non_public_address_is_refused_when_saved() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let host = local_host_name();

    let cases = [
        (
            "PUT",
            format!("/v1/users/{user}/email-configuration"),
            json!({"salesforce_instance_url": format!("https://{host}/")}),
            "salesforce_instance_url",
        ),
        (
            "PUT",
            format!("/v1/users/{user}/crm"),
            json!({"instance_url": format!("https://{host}")}),
            "instance_url",
        ),
        (
            "POST",
            "/v1/organizations".to_owned(),
            json!({"name": "Internal", "external_id": "internal", "access_type": "exchange_impersonation",
                   "ews_url": format!("https://{host}/EWS/Exchange.asmx"), "impersonation_account": "svc",
                   "impersonation_password": "p"}),
            "ews_url",
        ),
    ];
    for (method, path, body, field) in cases {
        let response = http_with_body(api.address, method, &path, Some(&admin), &body.to_string()).await;
        assert_eq!(response.status, 400, "{path} {body}: {}", response.body);
        let error = &response.json()["error"];
        assert_eq!(error["field"], field, "{}", response.body);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{host} resolves to")),
            "{}",
            response.body
        );
    }
    let (url, organizations): (Option<String>, i64) = sqlx::query_as(
        "SELECT salesforce_instance_url, (SELECT count(*) FROM organizations WHERE external_id = 'internal') \
         FROM users WHERE id = $1",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((url, organizations), (None, 0), "nothing is saved");
    api.stop().await;
    env.cleanup().await;
}
