//! The permission to push, granted and revoked in a user's details.

use chrono::Utc;
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{organization, users};

use super::{Fleet, sign_in, webdriver::Browser};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_admin_grants_and_revokes_the_push_permission_in_the_user_details() {
    let fleet = Fleet::start().await;
    let pool = fleet.env.pool.clone();
    let org = organization(&pool, AccessType::Office365, true).await;
    let user = users(&pool, org, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let lead = create_token(&pool, "org_admin", Some(org), None, "lead@acme.example")
        .await
        .unwrap();
    let role = || async {
        sqlx::query_scalar::<_, String>("SELECT role FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &fleet, &lead).await;
    for (value, stored) in [("org_admin", "org_admin"), ("user", "user")] {
        browser.go(&fleet.url(&format!("/panel/users/{user}"))).await;
        browser.choose("select[name=role]", value).await;
        browser.click_on("form.role button").await;
        browser.wait_for_text("Saved", LIMIT).await;
        assert_eq!(role().await, stored);
        let shown = browser
            .script("return document.querySelector('select[name=role]').value;")
            .await;
        assert_eq!(shown, value, "the details show the stored role");
    }
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT details FROM activities WHERE user_id = $1 AND kind = 'user_updated' ORDER BY occurred_at",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        ["changed: role (role now org_admin)", "changed: role (role now user)"],
        "each change is an activity"
    );
    browser.stop().await;
    fleet.stop().await;
}
