//! `syncfleet-api`'s command line: `--help` lists the commands, a bad flag is
//! refused as clap refuses it (status 2, naming the flag); `token create`
//! prints the token once, stores only its hash, and refuses bad combinations
//! with a reason; `secrets reencrypt` reseals every credential.

use std::process::Command;

use syncfleet_api::auth::token_hash;
use syncfleet_testkit::{TestEnv, binary};

fn token_create(env: &TestEnv, arguments: &[&str]) -> std::process::Output {
    Command::new(binary("syncfleet-api"))
        .envs(env.env_vars(&[]))
        .args(["token", "create"])
        .args(arguments)
        .output()
        .unwrap()
}

/// `syncfleet-api` with `arguments` and nothing else of a test's settings:
/// the command line is read before any setting.
fn api(arguments: &[&str]) -> std::process::Output {
    Command::new(binary("syncfleet-api")).args(arguments).output().unwrap()
}

#[test]
fn help_lists_the_commands_and_exits_zero() {
    let output = api(&["--help"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Usage: syncfleet-api [COMMAND]"), "{stdout}");
    for command in ["serve", "migrate", "token", "secrets"] {
        assert!(
            stdout.lines().any(|line| line.trim_start().starts_with(command)),
            "{command} is missing from:\n{stdout}"
        );
    }

    let output = api(&["token", "create", "--help"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for flag in ["--role <ROLE>", "--organization <ID>", "--user <ID>", "--label <TEXT>"] {
        assert!(stdout.contains(flag), "{flag} is missing from:\n{stdout}");
    }
}

#[test]
fn an_unknown_flag_is_refused_with_status_2_naming_it() {
    for arguments in [
        &["--frobnicate"][..],
        &["token", "create", "--role", "admin", "--frobnicate"],
        &["secrets", "reencrypt", "--frobnicate", "3"],
    ] {
        let output = api(arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(
            stderr.contains("unexpected argument '--frobnicate'"),
            "{arguments:?}: {stderr}"
        );
        assert!(stderr.contains("Usage: syncfleet-api"), "{arguments:?}: {stderr}");
    }
    let output = api(&["secrets", "reencrypt", "--batch", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--batch <N>': must be a positive integer"), "{stderr}");
}

#[tokio::test]
async fn token_create_prints_a_token_whose_hash_alone_is_stored() {
    let env = TestEnv::new().await;
    let output = token_create(&env, &["--role", "admin", "--label", "ops@example.test"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("DEBUG"),
        "the default log filter (info) lets debug events through: {stderr}"
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("sf_") && token.len() > 60, "{token}");

    let (role, label): (String, String) = sqlx::query_as("SELECT role, label FROM api_tokens WHERE token_sha256 = $1")
        .bind(token_hash(&token))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!((role.as_str(), label.as_str()), ("admin", "ops@example.test"));
    let stored_in_clear: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE label LIKE '%' || $1 || '%' OR encode(token_sha256, 'escape') = $1)",
    )
    .bind(&token)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(!stored_in_clear);
    env.cleanup().await;
}

#[tokio::test]
async fn token_create_refuses_incoherent_roles_with_a_reason() {
    let env = TestEnv::new().await;
    let organization = uuid::Uuid::new_v4().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["--role", "org_admin"], "needs --organization"),
        (&["--role", "admin", "--organization", &organization], "takes neither"),
        (&["--role", "root"], "must be admin, org_admin or user"),
        (&["--role", "user", "--user", "nobody"], "'--user <ID>': must be a UUID"),
    ];
    for (arguments, reason) in cases {
        let output = token_create(&env, arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(stderr.contains(reason), "{arguments:?}: {stderr}");
    }
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    env.cleanup().await;
}

/// `syncfleet-api secrets reencrypt` with `keys` as the key ring.
fn reencrypt(env: &TestEnv, keys: &str) -> std::process::Output {
    Command::new(binary("syncfleet-api"))
        .envs(env.env_vars(&[("SYNCFLEET_ENCRYPTION_KEYS", keys)]))
        .args(["secrets", "reencrypt", "--batch", "2"])
        .output()
        .unwrap()
}

#[tokio::test]
async fn secrets_reencrypt_moves_every_credential_to_the_newest_key() {
    use secrecy::ExposeSecret;
    use syncfleet_common::{
        domain::{AccessType, SyncStatus},
        secrets::{self, CredentialKind, KeyRing, Owner},
    };

    let env = TestEnv::new().await;
    let organization = syncfleet_testkit::organization(&env.pool, AccessType::Office365, true).await;
    let users = syncfleet_testkit::users(
        &env.pool,
        organization,
        3,
        SyncStatus::Enabled,
        chrono::Utc::now(),
        false,
    )
    .await;
    let old_key = "1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let new_key = "2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let ring = |spec: &str| KeyRing::parse(&spec.to_owned().into()).unwrap();
    for user in &users {
        secrets::store(
            &env.pool,
            &ring(old_key),
            Owner::User(*user),
            CredentialKind::CrmRefreshToken,
            &format!("token-of-{user}").into(),
        )
        .await
        .unwrap();
    }

    let refused = reencrypt(&env, "");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("SYNCFLEET_ENCRYPTION_KEYS"),
        "the error names the missing setting"
    );

    let output = reencrypt(&env, &format!("{new_key},{old_key}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("resealed 3 credentials"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        !stderr.contains("AgICAg") && !stderr.contains("AQEBAQ"),
        "no key material in the log"
    );
    for user in &users {
        let opened = secrets::load(
            &env.pool,
            &ring(new_key),
            Owner::User(*user),
            CredentialKind::CrmRefreshToken,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(opened.expose_secret(), format!("token-of-{user}"));
    }
    env.cleanup().await;
}
