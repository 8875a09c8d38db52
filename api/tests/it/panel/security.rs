//! What the panel refuses: a change without the CSRF token or from another
//! origin (403, nothing changed), a plain user's token at sign-in, and an
//! organization admin's look at another organization, in the page or by
//! editing a URL (the not-found page); and a secret typed into a page is
//! never shown again.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Client, StatusCode, redirect::Policy};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{organization, users};
use uuid::Uuid;

use super::{Fleet, sign_in, webdriver::Browser};

pub(super) fn client() -> Client {
    syncfleet_connectors::http::install_tls_provider();
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signs in over HTTP; answers the cookie pair and the page's CSRF token.
pub(super) async fn signed_in(fleet: &Fleet, token: &str) -> (String, String) {
    let response = client()
        .post(fleet.url("/panel/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/panel"] {
        assert!(set_cookie.contains(flag), "the cookie is {flag}: {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = client()
        .get(fleet.url("/panel/organizations"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(token), "the token never appears in a page");
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

/// The new-organization form, with or without a CSRF token.
fn form(csrf: Option<&str>) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("name", "Forged".to_owned()),
        ("external_id", "forged-1".to_owned()),
        ("access_type", "office365".to_owned()),
    ];
    if let Some(csrf) = csrf {
        fields.push(("csrf", csrf.to_owned()));
    }
    fields
}

async fn organizations(fleet: &Fleet) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&fleet.env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_csrf_token_or_from_another_origin_is_refused_and_changes_nothing() {
    let fleet = Fleet::start().await;
    let admin = create_token(&fleet.env.pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    let (cookie, csrf) = signed_in(&fleet, &admin).await;
    let before = organizations(&fleet).await;
    for (what, fields, origin) in [
        ("no token", form(None), None),
        (
            "a wrong token",
            form(Some("0000000000000000000000000000000000000000")),
            None,
        ),
        ("another origin", form(Some(csrf.as_str())), Some("http://evil.example")),
    ] {
        let mut request = client()
            .post(fleet.url("/panel/organizations"))
            .header("cookie", &cookie)
            .form(&fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let page = response.text().await.unwrap();
        assert!(page.contains("Refused"), "{what}: {page}");
        assert_eq!(organizations(&fleet).await, before, "{what}: nothing was created");
    }

    // An action posted by a script without the header.
    let org = organization(&fleet.env.pool, AccessType::Office365, true).await;
    let user = users(&fleet.env.pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let response = client()
        .post(fleet.url("/panel/actions/disable-sync"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(format!("{{\"user_ids\": [\"{user}\"]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The same as a form another site could post.
    let response = client()
        .post(fleet.url("/panel/actions/disable-sync"))
        .header("cookie", &cookie)
        .form(&[("user_ids", user.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let status: String = sqlx::query_scalar("SELECT sync_status FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&fleet.env.pool)
        .await
        .unwrap();
    assert_eq!(status, "enabled", "the refused action changed nothing");

    // The same form with the page's token goes through: the refusals above
    // were the token's and the origin's.
    let response = client()
        .post(fleet.url("/panel/organizations"))
        .header("cookie", &cookie)
        .form(&form(Some(csrf.as_str())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(organizations(&fleet).await, before + 2);

    // Signed out, the cookie is cleared.
    let response = client()
        .post(fleet.url("/panel/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_admin_never_sees_another_organization_in_the_page_or_by_editing_a_url() {
    let fleet = Fleet::start().await;
    let pool = &fleet.env.pool;
    let mine = organization(pool, AccessType::Office365, true).await;
    let theirs = organization(pool, AccessType::Gmail, true).await;
    let my_user = users(pool, mine, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let their_user = users(pool, theirs, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let their_name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(theirs)
        .fetch_one(pool)
        .await
        .unwrap();
    let org_admin = create_token(pool, "org_admin", Some(mine), None, "boss@mine.example")
        .await
        .unwrap();
    let user_token = create_token(pool, "user", None, Some(my_user), "me@mine.example")
        .await
        .unwrap();

    let browser = Browser::start(1280, 900).await;
    // A plain user's token does not open the panel.
    sign_in(&browser, &fleet, &user_token).await;
    let page = browser.body_text().await;
    assert!(page.contains("this token is a user's"), "{page}");

    sign_in(&browser, &fleet, &org_admin).await;
    let page = browser.wait_for_text("Organizations", Duration::from_secs(10)).await;
    assert!(
        !page.contains(&their_name),
        "the list holds only their organization: {page}"
    );
    assert_eq!(
        browser.find_all("table[data-table=organizations] tbody tr").await.len(),
        1
    );

    for path in [
        format!("/panel/organizations/{theirs}"),
        format!("/panel/organizations/{theirs}/users"),
        format!("/panel/organizations/{theirs}/activity"),
        format!("/panel/users/{their_user}"),
        format!("/panel/users/{their_user}/connectivity"),
        format!("/panel/customization?organization_id={theirs}"),
    ] {
        browser.go(&fleet.url(&path)).await;
        let page = browser.body_text().await;
        assert!(page.contains("Not found"), "{path}: {page}");
        assert!(!page.contains(&their_name), "{path}: {page}");
    }
    // Their own user opens.
    browser.go(&fleet.url(&format!("/panel/users/{my_user}"))).await;
    browser.wait_for_text("User ID (Sync ID)", Duration::from_secs(5)).await;

    // A forged delete of the other organization, with the admin's own
    // CSRF token: the API's 404, and the organization is still there.
    let (cookie, csrf) = signed_in(&fleet, &org_admin).await;
    let response = client()
        .post(fleet.url(&format!("/panel/organizations/{theirs}/delete")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let still: Option<Uuid> = sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
        .bind(theirs)
        .fetch_optional(pool)
        .await
        .unwrap();
    assert_eq!(still, Some(theirs));

    browser.stop().await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_set_on_the_connectivity_tab_is_stored_sealed_and_never_shown_again() {
    let fleet = Fleet::start().await;
    let pool = &fleet.env.pool;
    let org = organization(pool, AccessType::ExchangeDirect, true).await;
    let user = users(pool, org, 1, SyncStatus::Disabled, Utc::now(), false).await[0];
    let admin = create_token(pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    let canary = "Canary-Pa55word-7f3e";
    let source = "return document.documentElement.outerHTML;";

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &fleet, &admin).await;
    browser
        .go(&fleet.url(&format!("/panel/users/{user}/connectivity")))
        .await;
    browser
        .wait_for_text("Exchange account name", Duration::from_secs(10))
        .await;
    // A refused change keeps nothing, and the typed password is not put
    // back into the page.
    browser.fill("input[name=account_logon]", "DOMAIN\\someone").await;
    browser.fill("input[name=password]", canary).await;
    browser
        .fill("input[name=salesforce_instance_url]", "ftp://example.com/x")
        .await;
    browser.click_on("form.card button.primary").await;
    let page = browser
        .wait_for_text("salesforce_instance_url:", Duration::from_secs(10))
        .await;
    assert!(
        !browser.script(source).await.as_str().unwrap().contains(canary),
        "{page}"
    );
    let stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM credentials WHERE user_id = $1 AND kind = 'mailbox_password'",
        )
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(stored().await, 0, "nothing half-applied");

    browser.fill("input[name=password]", canary).await;
    browser.fill("input[name=salesforce_instance_url]", "").await;
    browser.click_on("form.card button.primary").await;
    let page = browser.wait_for_text("Saved.", Duration::from_secs(10)).await;
    assert!(
        page.contains("Mailbox password\tstored") || page.contains("Mailbox password\nstored"),
        "{page}"
    );
    assert!(!browser.script(source).await.as_str().unwrap().contains(canary));
    assert_eq!(stored().await, 1, "the password is stored (sealed)");
    let ciphertext: Vec<u8> =
        sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE user_id = $1 AND kind = 'mailbox_password'")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        !ciphertext
            .windows(canary.len())
            .any(|window| window == canary.as_bytes()),
        "sealed, not plain"
    );
    let logon: Option<String> = sqlx::query_scalar("SELECT account_logon FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(logon.as_deref(), Some("DOMAIN\\someone"));

    // Forgetting it asks first.
    browser
        .click_on("form[action$='/credentials/mailbox_password/delete'] button")
        .await;
    browser.accept_dialog().await;
    browser.wait_for_text("Saved.", Duration::from_secs(10)).await;
    assert_eq!(stored().await, 0);

    browser.stop().await;
    fleet.stop().await;
}
