//! An admin's session in the panel, start to end, in headless Chromium:
//! sign in, create an organization (a bad form first), add users, sort,
//! filter and hide columns, force a sync and see its session, a mass action
//! with a mixed result, save and push a customization and follow its
//! progress, the activity with its rows box and CSV export, and the narrow
//! screen. Screenshots of the main pages go to `artifacts/screenshots`.

use std::time::Duration;

use chrono::Utc;
use fantoccini::key::Key;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{organization, users};
use uuid::Uuid;

use super::{
    Fleet, sign_in,
    webdriver::{Browser, RELOAD},
};

const LIMIT: Duration = Duration::from_secs(30);

/// The id in a panel URL after `prefix` (`/panel/users/<id>...`).
fn id_after(url: &str, prefix: &str) -> Uuid {
    let rest = url
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("{url} has no {prefix}"));
    Uuid::parse_str(&rest[..36]).unwrap()
}

async fn names_in_list(browser: &Browser) -> Vec<String> {
    browser.texts("table[data-table=users] tbody td[data-col=name]").await
}

async fn impersonation_hidden(browser: &Browser) -> Value {
    browser
        .script("return document.querySelector('[data-for-access=exchange_impersonation]').hidden;")
        .await
}

/// Waits until the push page says the push completed (its script polls).
async fn push_completes(browser: &Browser) {
    browser
        .wait_for_element("#push-progress[data-status=completed]", LIMIT)
        .await;
}

async fn add_user(browser: &Browser, fleet: &Fleet, organization: Uuid, name: &str, email: &str) -> Uuid {
    browser
        .go(&fleet.url(&format!("/panel/users/new?organization_id={organization}")))
        .await;
    browser.fill("input[name=name]", name).await;
    browser.fill("input[name=email]", email).await;
    browser.click_on("form.card button.primary").await;
    browser.wait_for_text("Created.", LIMIT).await;
    id_after(&browser.url().await, "/panel/users/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_runs_the_fleet_from_the_panel_in_a_real_browser() {
    let fleet = Fleet::start().await;
    let pool = fleet.env.pool.clone();
    let admin = create_token(&pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    // A user connected to the simulated Office 365 and Salesforce, in an
    // organization of their own.
    let connected = fleet.providers.office365_users(&pool, 1).await[0];
    let connected_email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(connected)
        .fetch_one(&pool)
        .await
        .unwrap();

    // A disabled organization, shown in red.
    let disabled = organization(&pool, AccessType::Gmail, false).await;

    let browser = Browser::start(1280, 900).await;
    browser.go(&fleet.url("/panel/login")).await;
    browser.screenshot("01-sign-in").await;
    sign_in(&browser, &fleet, &admin).await;
    browser.wait_for_text("Organizations", LIMIT).await;
    let class = browser
        .script(&format!(
            "return document.querySelector('a[href=\"/panel/organizations/{disabled}\"]').closest('tr').className;"
        ))
        .await;
    assert_eq!(class, "off", "a disabled organization's row is red");
    browser.screenshot("02-organizations").await;

    // A new organization: Impersonation without its EWS URL is refused with
    // the API's message naming the field, and nothing is created.
    browser.click_on("a[href='/panel/organizations/new']").await;
    browser.fill("input[name=name]", "Acme Sales").await;
    browser.fill("input[name=external_id]", "acme-sales").await;
    assert_eq!(
        impersonation_hidden(&browser).await,
        true,
        "the impersonation fields appear only for that access type"
    );
    browser
        .choose("select[name=access_type]", "exchange_impersonation")
        .await;
    assert_eq!(impersonation_hidden(&browser).await, false);
    browser.click_on("form.card button.primary").await;
    let page = browser.wait_for_text("ews_url", LIMIT).await;
    assert!(
        page.contains("ews_url: an Exchange Impersonation organization needs its EWS URL"),
        "{page}"
    );
    browser.screenshot("03-organization-form-error").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE external_id = 'acme-sales'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing half-applied");
    assert_eq!(
        browser
            .script("return document.querySelector('input[name=name]').value;")
            .await,
        "Acme Sales",
        "the form keeps what was typed"
    );
    browser.choose("select[name=access_type]", "office365").await;
    browser.click_on("form.card button.primary").await;
    browser.wait_for_text("Created.", LIMIT).await;
    let acme = id_after(&browser.url().await, "/panel/organizations/");
    assert_eq!(
        browser
            .script("return document.querySelector('input[name=external_id]').readOnly;")
            .await,
        true,
        "External Id is read-only once saved"
    );

    // Users: two through the form, two more as recipients of the push.
    let zed = add_user(&browser, &fleet, acme, "Zed Zulu", "zed@acme.example").await;
    let amy = add_user(&browser, &fleet, acme, "Amy Alpha", "amy@acme.example").await;
    browser.screenshot("04-user-details").await;
    // Amy's details: an address another user has is refused, naming the
    // field, and nothing changes.
    browser.fill("input[name=email]", "zed@acme.example").await;
    browser.click_on("form.card button.primary").await;
    let page = browser
        .wait_for_text("email: another user already has the address zed@acme.example", LIMIT)
        .await;
    assert!(!page.contains("Saved."), "{page}");
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(amy)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(email, "amy@acme.example");
    let recipients = users(&pool, acme, 2, SyncStatus::Enabled, Utc::now(), false).await;

    // The list of the organization's users, sorted by name both ways.
    browser.go(&fleet.url("/panel/users")).await;
    browser
        .choose("form.filters select[name=organization_id]", &acme.to_string())
        .await;
    browser.click_on("form.filters button[type=submit]").await;
    browser.wait_for_text("4 shown of 4", LIMIT).await;
    let ascending = names_in_list(&browser).await;
    assert_eq!(
        ascending.first().map(String::as_str),
        Some("Amy Alpha"),
        "{ascending:?}"
    );
    assert_eq!(ascending.last().map(String::as_str), Some("Zed Zulu"), "{ascending:?}");
    browser.click_on("th[data-col=name] summary").await;
    browser.click_on("th[data-col=name] .menu a:nth-of-type(2)").await;
    browser.wait_for_text("Name ▼", LIMIT).await;
    let descending = names_in_list(&browser).await;
    assert_eq!(
        descending.iter().rev().cloned().collect::<Vec<_>>(),
        ascending,
        "descending is the reverse"
    );
    assert!(browser.url().await.contains("order=desc"), "sorting is the server's");
    // New users start disabled: their rows are red.
    let amy_row_class = browser
        .script(&format!(
            "return document.querySelector('tr[data-user=\"{amy}\"]').className;"
        ))
        .await;
    assert_eq!(amy_row_class, "off");
    // Hide a column from its menu, show it again from the ☰ menu.
    browser.click_on("th[data-col=email] summary").await;
    browser.click_on("th[data-col=email] button[data-hide-col]").await;
    let email_hidden = "return document.querySelector('th[data-col=email]').classList.contains('col-hidden');";
    assert_eq!(browser.script(email_hidden).await, true);
    browser.click_on("details.colchooser summary").await;
    browser
        .click_on("details.colchooser input[data-toggle-col=email]")
        .await;
    assert_eq!(browser.script(email_hidden).await, false);
    // Pages of two: the next page holds the other two, the previous page
    // the first two again.
    browser
        .go(&fleet.url(&format!("/panel/users?organization_id={acme}&page_size=2")))
        .await;
    browser.wait_for_text("2 shown of 4", LIMIT).await;
    let first_page = names_in_list(&browser).await;
    assert_eq!(first_page, ascending[..2]);
    browser.click_on("a[rel=next]").await;
    browser.wait_for_text("Previous page", LIMIT).await;
    assert_eq!(names_in_list(&browser).await, ascending[2..]);
    browser.click_on("button[data-back]").await;
    browser.wait_for_text("Next page", LIMIT).await;
    assert_eq!(names_in_list(&browser).await, first_page);
    browser
        .go(&fleet.url(&format!("/panel/users?organization_id={acme}")))
        .await;

    // The keyboard opens a column's menu and Escape closes it.
    let menu_open = "return document.querySelector('th[data-col=created] details').open;";
    browser.keys("th[data-col=created] summary", Key::Enter).await;
    assert_eq!(browser.script(menu_open).await, true, "Enter opens the menu");
    browser.keys("th[data-col=created] summary", Key::Escape).await;
    assert_eq!(browser.script(menu_open).await, false, "Escape closes it");
    // Search.
    browser.fill("form.filters input[name=q]", "amy").await;
    browser.click_on("form.filters button[type=submit]").await;
    browser.wait_for_text("1 shown of 1", LIMIT).await;
    assert_eq!(names_in_list(&browser).await, ["Amy Alpha"]);
    browser.screenshot("05-users").await;

    // Force sync from the row's actions menu; the worker runs it and the
    // session appears on the user's Statistics tab.
    browser
        .go(&fleet.url(&format!("/panel/users?q={connected_email}")))
        .await;
    browser
        .click_on(&format!("tr[data-user=\"{connected}\"] details.actions summary"))
        .await;
    browser
        .click_on(&format!("tr[data-user=\"{connected}\"] button[data-action=force-sync]"))
        .await;
    let page = browser
        .wait_for_text("Force synchronization: succeeded for 1 user (queued).", LIMIT)
        .await;
    assert!(!page.contains("failed"), "{page}");
    let statistics = fleet.url(&format!("/panel/users/{connected}/statistics"));
    browser.go(&statistics).await;
    browser
        .until("a succeeded session on the Statistics tab", LIMIT, RELOAD, || async {
            let statuses = browser.texts("tr[data-session] td[data-col=status]").await;
            if statuses == ["succeeded"] {
                return Ok(());
            }
            browser.go(&statistics).await;
            Err(format!("sessions {statuses:?}"))
        })
        .await;
    assert_eq!(browser.text("tr[data-session] td[data-col=trigger]").await, "force");
    browser.screenshot("06-user-statistics").await;
    browser
        .click_on("tr[data-session] td[data-col=actions] a:not([download])")
        .await;
    let page = browser.wait_for_text("Synchronization session", LIMIT).await;
    assert!(page.contains("Download log") && page.contains("initial"), "{page}");
    browser.go(&statistics).await;
    // Its log downloads as a zip.
    let log: Value = browser
        .script_async(
            "var done = arguments[arguments.length - 1];\
             fetch(document.querySelector('tr[data-session] a[download]').href, {credentials: 'same-origin'})\
               .then(function (r) { return r.arrayBuffer().then(function (b) { var v = new Uint8Array(b); done({status: r.status, type: r.headers.get('content-type'), magic: v[0] === 0x50 && v[1] === 0x4b}); }); });",
            vec![],
        )
        .await;
    assert_eq!(log, json!({"status": 200, "type": "application/zip", "magic": true}));

    // The user's other tabs: what is stored (never the secret), the last
    // session's issues, the activity of the force sync.
    browser
        .go(&fleet.url(&format!("/panel/users/{connected}/connectivity")))
        .await;
    let page = browser.wait_for_text("Stored credentials", LIMIT).await;
    assert!(
        page.contains("Mailbox authorization (OAuth)\tstored")
            || page.contains("Mailbox authorization (OAuth)\nstored"),
        "{page}"
    );
    browser
        .go(&fleet.url(&format!("/panel/users/{connected}/issues")))
        .await;
    browser
        .wait_for_text("The issues of the last synchronization session.", LIMIT)
        .await;
    browser
        .go(&fleet.url(&format!("/panel/users/{connected}/activity")))
        .await;
    browser.wait_for_text("Rows to show", LIMIT).await;

    // A mass action with a mixed result: delete refuses the user whose
    // mailbox the sync initialized, and deletes the other.
    browser.go(&fleet.url("/panel/users")).await;
    browser.click_on(&format!("input[data-select=\"{connected}\"]")).await;
    browser.click_on(&format!("input[data-select=\"{amy}\"]")).await;
    browser.click_on(".toolbar details.actions summary").await;
    browser
        .click_on(".toolbar details.actions button[data-action=delete]")
        .await;
    let question = browser.accept_dialog().await;
    assert_eq!(question, "Delete: 2 users?");
    let page = browser.wait_for_text("Delete: 1 succeeded, 1 failed.", LIMIT).await;
    assert!(page.contains("mailbox"), "the refusal's reason is shown: {page}");
    assert_eq!(
        browser
            .script("return document.querySelector('#toasts .toast').className;")
            .await,
        "toast fail"
    );
    browser.screenshot("07-mass-action-result").await;
    let remaining: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
        .bind(vec![connected, amy])
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(remaining, [connected], "Amy is deleted, the initialized user is not");

    // Zed saves a customization on their Customization tab...
    browser
        .go(&fleet.url(&format!("/panel/users/{zed}/customization")))
        .await;
    let document = json!({"schema_version": 1, "objects": {"Contact": {"visible": true, "fields": ["Name"], "order": 1}}, "behavior": {"auto_open": true}});
    browser.fill("textarea[name=document]", &document.to_string()).await;
    browser.click_on("form.card button[value=save]").await;
    browser.wait_for_text("Saved.", LIMIT).await;
    // ...which the admin pushes to two colleagues.
    browser
        .go(&fleet.url(&format!("/panel/customization?organization_id={acme}")))
        .await;
    browser.choose("select[name=from_user_id]", &zed.to_string()).await;
    browser.click_on("form.filters button[type=submit]").await;
    browser.wait_for_text("0 Selected users", LIMIT).await;
    for recipient in &recipients {
        browser
            .click_on(&format!("input[data-push-user][value=\"{recipient}\"]"))
            .await;
    }
    assert_eq!(browser.text("button[data-selected-count]").await, "2 Selected users");
    browser.screenshot("08-customization-push").await;
    browser.click_on("button[data-selected-count]").await;
    browser.wait_for_text("Customization push", LIMIT).await;
    push_completes(&browser).await;
    assert_eq!(browser.text("[data-field=applied]").await, "2");
    assert_eq!(browser.text("[data-field=failed]").await, "0");
    assert_eq!(browser.text("[data-field=pending]").await, "0");
    browser.screenshot("09-push-progress").await;
    for recipient in &recipients {
        let saved: Value = sqlx::query_scalar("SELECT document FROM customizations WHERE user_id = $1")
            .bind(recipient)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(saved, document, "the push reached {recipient}");
    }
    // "All users" with a name filter: the filter reaches the push, which
    // goes to the two "User ..." colleagues and not to Zed.
    browser
        .go(&fleet.url(&format!(
            "/panel/customization?organization_id={acme}&from_user_id={zed}&name=User"
        )))
        .await;
    browser.click_on("button[value=all]").await;
    let question = browser.accept_dialog().await;
    assert!(question.starts_with("Push to every user"), "{question}");
    browser.wait_for_text("Customization push", LIMIT).await;
    push_completes(&browser).await;
    assert_eq!(browser.text("[data-field=total]").await, "2", "the name filter applied");
    assert_eq!(browser.text("[data-field=applied]").await, "2");

    // The organization's default customization, set on the same page; a
    // document that is not JSON is refused, naming the field.
    browser
        .go(&fleet.url(&format!("/panel/customization?organization_id={acme}")))
        .await;
    browser
        .fill("form[action$='/default-customization'] textarea", "{not json")
        .await;
    browser
        .click_on("form[action$='/default-customization'] button.primary")
        .await;
    browser
        .wait_for_text("Default not saved: document: not JSON", LIMIT)
        .await;
    let default = json!({"schema_version": 1, "behavior": {"auto_open": false}});
    browser
        .fill("form[action$='/default-customization'] textarea", &default.to_string())
        .await;
    browser
        .click_on("form[action$='/default-customization'] button.primary")
        .await;
    let page = browser.wait_for_text("Saved.", LIMIT).await;
    assert!(page.contains("Version 1, set by admin@fleet.example"), "{page}");

    // The organization's activity: the rows box refuses what the API
    // refuses, naming it; 0 shows all; the CSV export downloads.
    browser
        .go(&fleet.url(&format!("/panel/organizations/{acme}/activity")))
        .await;
    browser.fill("input[name=rows]", "5000").await;
    browser
        .script("document.querySelector('input[name=rows]').removeAttribute('max');")
        .await;
    browser.click_on("form.filters button.primary").await;
    let page = browser.wait_for_text("rows", LIMIT).await;
    assert!(page.contains("rows:"), "the API's error names the field: {page}");
    browser.fill("input[name=rows]", "0").await;
    browser.click_on("form.filters button.primary").await;
    let page = browser.wait_for_text("organization_created", LIMIT).await;
    assert!(page.contains("user_added"), "{page}");
    assert!(browser.url().await.contains("rows=0"));
    browser.screenshot("10-organization-activity").await;
    let csv = browser
        .script_async(
            "var done = arguments[arguments.length - 1];\
             fetch(document.querySelector('a[data-export]').href, {credentials: 'same-origin'})\
               .then(function (r) { return r.text().then(function (t) { done({status: r.status, type: r.headers.get('content-type'), disposition: r.headers.get('content-disposition'), body: t}); }); });",
            vec![],
        )
        .await;
    assert_eq!(csv["status"], 200, "{csv}");
    assert_eq!(csv["type"], "text/csv; charset=utf-8");
    assert!(
        csv["disposition"]
            .as_str()
            .unwrap_or_default()
            .starts_with("attachment"),
        "{csv}"
    );
    let body = csv["body"].as_str().unwrap_or_default();
    assert!(
        body.starts_with("occurred_at,actor,kind,details,log,user_id\r\n"),
        "{body}"
    );
    assert!(
        body.contains("organization_created") && body.contains("user_added"),
        "{body}"
    );

    // Statistics and email configuration sub-tabs.
    browser
        .go(&fleet.url(&format!("/panel/organizations/{acme}/statistics")))
        .await;
    browser.wait_for_text("Zed Zulu", LIMIT).await;
    browser
        .go(&fleet.url(&format!("/panel/organizations/{acme}/email-configuration")))
        .await;
    browser.wait_for_text("Office 365", LIMIT).await;

    // Deleting an organization asks first, and is refused while a mailbox
    // of it is initialized, with the reason; the disabled one goes.
    let connected_org: Uuid = sqlx::query_scalar("SELECT organization_id FROM users WHERE id = $1")
        .bind(connected)
        .fetch_one(&pool)
        .await
        .unwrap();
    for (organization, outcome) in [
        (
            connected_org,
            "Not deleted: 1 user(s) of the organization have an initialized mailbox: reset them first",
        ),
        (disabled, "Deleted."),
    ] {
        browser.go(&fleet.url("/panel/organizations")).await;
        browser
            .click_on(&format!(
                "form[action='/panel/organizations/{organization}/delete'] button"
            ))
            .await;
        let question = browser.accept_dialog().await;
        assert!(question.starts_with("Delete the organization "), "{question}");
        browser.wait_for_text(outcome, LIMIT).await;
    }
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM organizations WHERE id = ANY($1)")
        .bind(vec![connected_org, disabled])
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [connected_org]);

    // A narrow screen: the page does not scroll sideways (tables scroll in
    // their own box).
    browser.resize(420, 900).await;
    browser
        .go(&fleet.url(&format!("/panel/users?organization_id={acme}")))
        .await;
    browser.wait_for_text("Zed Zulu", LIMIT).await;
    let overflow = browser
        .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page scrolls sideways by {overflow} px"
    );
    browser.screenshot("11-users-narrow").await;

    browser.stop().await;
    fleet.stop().await;
}
