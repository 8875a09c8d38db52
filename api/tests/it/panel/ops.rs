//! The operator console in headless Chromium: an admin reads the overview's
//! charts, the workers, the limits and the suspended users, replays a dead
//! job and discards others with confirmation, enables suspended users
//! again; an organization admin sees no Operations section and gets the
//! not-found page at its address. Screenshots go to
//! `artifacts/screenshots/ops-*.png`.

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use fantoccini::key::Key;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus, Trigger},
    queue::JobEnvelope,
    ratelimit::Limiter,
};
use syncfleet_testkit::{organization, users};
use uuid::Uuid;

use super::{
    Fleet,
    security::{client, signed_in},
    sign_in,
    webdriver::Browser,
};

const LIMIT: Duration = Duration::from_secs(30);

/// The error every attempt of the seeded dead jobs failed with.
const LAST_ERROR: &str = "Salesforce answered 503 Service Unavailable (transient)";

/// A user's force sync job, dead-lettered `minutes` ago for `reason` after
/// three failed sessions, as the worker records one.
async fn dead_job(pool: &PgPool, prefix: &str, user: Uuid, organization: Uuid, reason: &str, minutes: i64) -> Uuid {
    let job = JobEnvelope::sync(user, Trigger::Force, Utc::now() - TimeDelta::minutes(minutes + 3));
    let id = Uuid::now_v7();
    let minutes = i32::try_from(minutes).unwrap();
    sqlx::query(
        "INSERT INTO dead_jobs (id, job_id, user_id, queue, reason, deliveries, payload, dead_at, kind, organization_id, last_error) \
         VALUES ($1, $2, $3, $4, $5, 3, $6, now() - make_interval(mins => $7), 'sync', $8, $9)",
    )
    .bind(id)
    .bind(job.job_id)
    .bind(user)
    .bind(format!("{prefix}.sync.priority"))
    .bind(reason)
    .bind(job.encode())
    .bind(minutes)
    .bind(organization)
    .bind(LAST_ERROR)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, status, scheduled_at, \
                                    started_at, ended_at, worker_id, error_category, error_source, error_message) \
         SELECT gen_random_uuid(), $1, $2, $3, attempt, 'force', 'failed', $4, \
                now() - make_interval(mins => $5 + 3 - attempt), \
                now() - make_interval(mins => $5 + 3 - attempt) + interval '2 seconds', \
                'worker-7c1e', 'transient', 'crm', $6 \
         FROM generate_series(1, 3) AS attempt",
    )
    .bind(user)
    .bind(organization)
    .bind(job.job_id)
    .bind(job.enqueued_at)
    .bind(minutes)
    .bind(LAST_ERROR)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// The last hour as workers and the leader would have written it: sessions
/// by status, the lag's histogram, queue depths, throttled answers.
async fn seed_history(pool: &PgPool) {
    let now = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let mut rows: Vec<(chrono::DateTime<Utc>, &str, String, f64)> = Vec::new();
    for ago in 1..60_i64 {
        let minute = now - TimeDelta::minutes(ago);
        let wave = ((ago as f64) / 9.0).sin();
        rows.push((minute, "sessions", "succeeded".into(), (48.0 + 14.0 * wave).round()));
        rows.push((
            minute,
            "sessions",
            "succeeded_with_issues".into(),
            (4.0 + 2.0 * wave).round(),
        ));
        if ago % 7 == 0 {
            rows.push((minute, "sessions", "failed".into(), 3.0));
        }
        if ago % 11 == 0 {
            rows.push((minute, "sessions", "abandoned".into(), 1.0));
        }
        rows.push((minute, "sessions", "skipped".into(), 2.0));
        rows.push((
            minute,
            "queue_depth",
            "cadence".into(),
            (220.0 + 160.0 * wave).round().max(0.0),
        ));
        rows.push((
            minute,
            "queue_depth",
            "priority".into(),
            if ago % 13 < 3 { 12.0 } else { 0.0 },
        ));
        rows.push((
            minute,
            "queue_depth",
            "push".into(),
            if (20..26).contains(&ago) { 40.0 } else { 0.0 },
        ));
        // Mostly quick; a slow stretch half an hour ago.
        let slow = (30..36).contains(&ago);
        rows.push((minute, "lag", "0.25".into(), if slow { 20.0 } else { 60.0 }));
        rows.push((minute, "lag", "0.5".into(), if slow { 30.0 } else { 25.0 }));
        rows.push((minute, "lag", "1".into(), 8.0));
        rows.push((minute, "lag", "2".into(), if slow { 30.0 } else { 1.0 }));
        if slow || ago % 9 == 0 {
            rows.push((minute, "lag", "5".into(), 2.0));
        }
        if ago % 5 == 0 {
            rows.push((minute, "throttled", "salesforce".into(), 2.0));
        }
    }
    rows.push((now - TimeDelta::minutes(3), "throttled", "graph".into(), 7.0));
    let (minutes, series, labels, values): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = rows.into_iter().fold(
        (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |(mut minutes, mut series, mut labels, mut values), (minute, name, label, value)| {
            minutes.push(minute);
            series.push(name.to_owned());
            labels.push(label);
            values.push(value);
            (minutes, series, labels, values)
        },
    );
    sqlx::query(
        "INSERT INTO fleet_minutes (minute, series, label, source, value) \
         SELECT minute, series, label, 'seed', value \
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::float8[]) AS t(minute, series, label, value)",
    )
    .bind(minutes)
    .bind(series)
    .bind(labels)
    .bind(values)
    .execute(pool)
    .await
    .unwrap();
}

/// Two more workers: one gone silent, one stopped.
async fn seed_workers(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO worker_heartbeats (worker_id, version, host, started_at, last_seen_at, interval_ms, draining, stopped_at, in_flight) VALUES \
         ('worker-7c1e', '0.1.0', 'node-b', now() - interval '3 hours', now() - interval '4 minutes', 5000, false, NULL, '{\"priority\": 0, \"cadence\": 2, \"push\": 0}'), \
         ('worker-31aa', '0.0.9', 'node-c', now() - interval '1 day', now() - interval '40 minutes', 5000, true, now() - interval '40 minutes', '{\"priority\": 0, \"cadence\": 0, \"push\": 0}')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO salesforce_org_usage (org, used, allocation, reserve_percent, observed_at) VALUES \
         ('acme.my.salesforce.com', 88200, 100000, 10, now() - interval '1 minute'), \
         ('globex.my.salesforce.com', 12400, 50000, 20, now() - interval '2 minutes')",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn named(pool: &PgPool, user: Uuid, name: &str, email: &str) {
    sqlx::query("UPDATE users SET name = $2, email = $3 WHERE id = $1")
        .bind(user)
        .bind(name)
        .bind(email)
        .execute(pool)
        .await
        .unwrap();
}

async fn dead_status(pool: &PgPool, id: Uuid) -> (String, Option<Uuid>, Option<String>) {
    sqlx::query_as("SELECT status, replay_job_id, resolved_by FROM dead_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The status a same-origin fetch of `path` answers in the page.
async fn status_of(browser: &Browser, path: &str) -> Value {
    browser
        .script_async(
            "var done = arguments[arguments.length - 1];\
             fetch(arguments[0], {credentials: 'same-origin', redirect: 'manual'}).then(function (r) { done(r.status); });",
            vec![json!(path)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_works_the_operator_console_and_an_organization_admin_never_sees_it() {
    let mut fleet = Fleet::start_with(&[("SYNCFLEET_RABBITMQ_MANAGEMENT_URL", crate::MANAGEMENT_URL)]).await;
    fleet.spawn("syncfleet-scheduler");
    let pool = fleet.env.pool.clone();
    let prefix = fleet.env.prefix.clone();
    let admin = create_token(&pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    let acme = organization(&pool, AccessType::Office365, true).await;
    sqlx::query("UPDATE organizations SET name = 'Acme Sales' WHERE id = $1")
        .bind(acme)
        .execute(&pool)
        .await
        .unwrap();
    let lead = create_token(&pool, "org_admin", Some(acme), None, "lead@acme.example")
        .await
        .unwrap();

    // Users not due for a day: the scheduler leaves them alone.
    let tomorrow = Utc::now() + TimeDelta::days(1);
    let people = users(&pool, acme, 4, SyncStatus::Enabled, tomorrow, false).await;
    for (user, (name, email)) in people.iter().zip([
        ("Ada Byron", "ada@acme.example"),
        ("Ben Carter", "ben@acme.example"),
        ("Cleo Diaz", "cleo@acme.example"),
        ("Dan Evans", "dan@acme.example"),
    ]) {
        named(&pool, *user, name, email).await;
    }
    let suspended = users(&pool, acme, 3, SyncStatus::DisabledAuthError, tomorrow, true).await;
    for (user, (name, email)) in suspended.iter().zip([
        ("Eve Fox", "eve@acme.example"),
        ("Finn Gray", "finn@acme.example"),
        ("Gus Hale", "gus@acme.example"),
    ]) {
        named(&pool, *user, name, email).await;
    }
    sqlx::query(
        "UPDATE users SET disabled_reason = 'Office 365 refused the refresh token (invalid_grant): the user must authorize again', \
         sync_status_changed_at = now() - interval '25 minutes' WHERE id = ANY($1)",
    )
    .bind(&suspended)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE users SET sync_status = 'disabled_throttling_error', \
         disabled_reason = 'Salesforce answered REQUEST_LIMIT_EXCEEDED 5 times in a row' WHERE id = $1",
    )
    .bind(suspended[2])
    .execute(&pool)
    .await
    .unwrap();

    let replayed = dead_job(&pool, &prefix, people[0], acme, "delivery_limit", 42).await;
    let discarded = [
        dead_job(&pool, &prefix, people[1], acme, "delivery_limit", 30).await,
        dead_job(&pool, &prefix, people[2], acme, "delivery_limit", 12).await,
    ];
    let by_filter = dead_job(&pool, &prefix, people[3], acme, "retries_exhausted", 5).await;
    seed_history(&pool).await;
    seed_workers(&pool).await;
    let limiter = Limiter::new(fleet.env.common().redis_url, &prefix, Duration::from_secs(1), 1);
    limiter
        .cool_down(
            "graph:contoso.onmicrosoft.com",
            Duration::from_secs(540),
            "429 Too Many Requests, Retry-After 540",
        )
        .await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &fleet, &admin).await;

    // The overview, from the navigation: what needs attention, the queues,
    // three charts over the hour. The scheduler takes the lead shortly.
    browser.click_on("header.top nav a[href='/panel/ops']").await;
    let page = browser.wait_for_text_reloading("Term ", LIMIT).await;
    assert_eq!(
        browser
            .script("return document.querySelector('#tile-dead + .big').textContent;")
            .await,
        "4",
        "{page}"
    );
    assert!(
        page.contains(&format!("{prefix}.sync.priority")),
        "the test's queues: {page}"
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('figure.chart svg').length;")
            .await,
        3
    );
    let bars = browser
        .script("return document.querySelectorAll('#chart-sessions rect.bar').length;")
        .await;
    assert!(bars.as_i64().unwrap() >= 59 * 3, "a stack per minute: {bars}");
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#chart-depth path.line, #chart-lag path.line').length;")
            .await,
        5,
        "three queues, two quantiles"
    );
    // The numbers under a chart open from the keyboard.
    browser.keys("#chart-lag details.numbers summary", Key::Enter).await;
    assert_eq!(
        browser
            .script("return document.querySelector('#chart-lag details.numbers').open;")
            .await,
        true
    );
    let lag_rows = browser.texts("#chart-lag details.numbers tbody tr").await;
    assert!(lag_rows.len() >= 59, "{lag_rows:?}");
    browser.keys("#chart-lag details.numbers summary", Key::Escape).await;
    browser.resize(1280, 1500).await;
    browser.go(&fleet.url("/panel/ops")).await;
    browser.wait_for_text("Cadence lag", LIMIT).await;
    browser.screenshot("ops-overview").await;
    browser.resize(1280, 900).await;

    // The page reloads itself, shows when, and pauses on request.
    browser.go(&fleet.url("/panel/ops?refresh=5")).await;
    let first = browser
        .element("[data-updated]")
        .await
        .attr("datetime")
        .await
        .unwrap()
        .unwrap_or_default();
    // Refreshed: the time it shows is another.
    browser
        .wait_for_element(&format!("[data-updated]:not([datetime=\"{first}\"])"), LIMIT)
        .await;
    browser.click_on("p.refresh a[href$='refresh=off']").await;
    let page = browser.wait_for_text("Auto-refresh paused", LIMIT).await;
    assert!(page.contains("Resume auto-refresh"), "{page}");
    assert_eq!(
        browser.script("return document.querySelector('[data-refresh]');").await,
        Value::Null
    );
    assert_eq!(
        browser
            .script("return document.querySelector('nav.tabs a[href^=\"/panel/ops/workers\"]').getAttribute('href');")
            .await,
        "/panel/ops/workers?refresh=off",
        "the other tabs stay paused"
    );

    // Workers: the fleet's own worker live, the seeded ones silent and
    // stopped.
    browser.click_on("nav.tabs a[href^='/panel/ops/workers']").await;
    let page = browser.wait_for_text("Last heartbeat", LIMIT).await;
    assert!(
        page.contains("1 live") && page.contains("1 silent") && page.contains("1 stopped"),
        "{page}"
    );
    assert_eq!(
        browser
            .script("return document.querySelector('tr[data-worker=\"worker-7c1e\"]').className;")
            .await,
        "off",
        "a silent worker is red"
    );
    assert_eq!(
        browser.texts("tbody td[data-col=state]").await,
        ["Live", "Silent", "Stopped"]
    );
    browser.screenshot("ops-workers").await;

    // Dead jobs: inspect one and replay it.
    browser.go(&fleet.url("/panel/ops/dead-jobs")).await;
    browser.wait_for_text("4 shown of 4", LIMIT).await;
    browser.screenshot("ops-dead-jobs").await;
    browser
        .click_on(&format!("tr[data-dead-job=\"{replayed}\"] td[data-col=actions] a"))
        .await;
    let page = browser.wait_for_text("Payload", LIMIT).await;
    assert!(
        page.contains("ada@acme.example") && page.contains("\"kind\": \"sync\""),
        "{page}"
    );
    assert_eq!(
        browser.texts("table[data-table=attempts] td[data-col=message]").await,
        [LAST_ERROR; 3],
        "every attempt with its error"
    );
    browser.resize(1280, 1200).await;
    browser.screenshot("ops-dead-job").await;
    browser.resize(1280, 900).await;
    browser.click_on("form[action$='/replay'] button").await;
    let question = browser.accept_dialog().await;
    assert_eq!(question, "Replay this dead job? It is published again as a new job.");
    let page = browser
        .wait_for_text("Replayed: the job was published again.", LIMIT)
        .await;
    assert!(page.contains("by admin@fleet.example"), "{page}");
    let (status, replay_job, by) = dead_status(&pool, replayed).await;
    assert_eq!(status, "replayed");
    assert!(replay_job.is_some());
    assert_eq!(by.as_deref(), Some("admin@fleet.example"));
    assert!(
        !page.contains("Discard"),
        "a replayed job offers no more actions: {page}"
    );

    // Two discarded by selection, each with its result.
    browser.go(&fleet.url("/panel/ops/dead-jobs")).await;
    browser.wait_for_text("3 shown of 3", LIMIT).await;
    for id in &discarded {
        browser.click_on(&format!("input[data-select=\"{id}\"]")).await;
    }
    browser.click_on("button[value=selected][formaction$='/discard']").await;
    let question = browser.accept_dialog().await;
    assert_eq!(question, "Discard 2 selected dead job(s)? They will not run.");
    let page = browser
        .wait_for_text("Discard of 2 dead job(s): 2 discarded", LIMIT)
        .await;
    assert_eq!(
        browser.texts("table[data-table=results] td[data-col=outcome]").await,
        ["Discarded", "Discarded"],
        "{page}"
    );
    browser.screenshot("ops-dead-jobs-results").await;
    for id in &discarded {
        assert_eq!(dead_status(&pool, *id).await.0, "discarded");
    }

    // The last one by the filter: replayed, and the replayed one is not
    // touched again.
    browser
        .go(&fleet.url("/panel/ops/dead-jobs?reason=retries_exhausted"))
        .await;
    browser.wait_for_text("1 shown of 1", LIMIT).await;
    browser.click_on("button[value=filter][formaction$='/replay']").await;
    let question = browser.accept_dialog().await;
    assert!(
        question.starts_with("Replay all 1 matching dead job(s) (reason \"retries_exhausted\")"),
        "{question}"
    );
    browser
        .wait_for_text("Replay of 1 dead job(s): 1 replayed", LIMIT)
        .await;
    assert_eq!(dead_status(&pool, by_filter).await.0, "replayed");
    browser.go(&fleet.url("/panel/ops/dead-jobs")).await;
    browser
        .wait_for_text("No dead jobs: nothing is waiting for an operator.", LIMIT)
        .await;
    browser.go(&fleet.url("/panel/ops/dead-jobs?status=discarded")).await;
    let page = browser.wait_for_text("2 shown of 2", LIMIT).await;
    assert!(page.contains("by admin@fleet.example"), "{page}");

    // Limits and cooldowns.
    browser.go(&fleet.url("/panel/ops/limits")).await;
    let page = browser.wait_for_text("contoso.onmicrosoft.com", LIMIT).await;
    assert!(page.contains("Retry-After 540"), "{page}");
    assert_eq!(
        browser
            .script("return document.querySelector('tr[data-org=\"acme.my.salesforce.com\"]').className;")
            .await,
        "off",
        "an org near its reserve is red"
    );
    browser.screenshot("ops-limits").await;

    // Suspended users: two enabled again through the users' action.
    browser.go(&fleet.url("/panel/ops/suspended")).await;
    let page = browser.wait_for_text("3 shown of 3", LIMIT).await;
    assert!(
        page.contains("Authorization errors") && page.contains("Throttling errors"),
        "{page}"
    );
    for user in &suspended[..2] {
        browser.click_on(&format!("input[data-select=\"{user}\"]")).await;
    }
    browser.screenshot("ops-suspended").await;
    browser
        .click_on("[data-bulk-actions] button[data-action=enable-sync]")
        .await;
    let question = browser.accept_dialog().await;
    assert_eq!(question, "Enable synchronization: 2 users?");
    browser
        .wait_for_text("Enable synchronization: succeeded for 2 users.", LIMIT)
        .await;
    browser.wait_for_text("1 shown of 1", LIMIT).await;
    let statuses: Vec<String> = sqlx::query_scalar("SELECT sync_status FROM users WHERE id = ANY($1) ORDER BY email")
        .bind(&suspended)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["enabled", "enabled", "disabled_throttling_error"]);

    // A narrow screen: the overview does not scroll sideways.
    browser.resize(420, 900).await;
    browser.go(&fleet.url("/panel/ops?refresh=off")).await;
    browser.wait_for_text("Cadence lag", LIMIT).await;
    let overflow = browser
        .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page scrolls sideways by {overflow} px"
    );
    browser.resize(1280, 900).await;

    // An organization admin: no Operations in the navigation, and the
    // API's 404 at its addresses.
    browser.click_on("header.top form button").await;
    browser.wait_for_text("sign in", LIMIT).await;
    sign_in(&browser, &fleet, &lead).await;
    browser.wait_for_text("Organizations", LIMIT).await;
    assert!(browser.find_all("header.top nav a[href='/panel/ops']").await.is_empty());
    browser.go(&fleet.url("/panel/ops")).await;
    browser.wait_for_text("Not found", LIMIT).await;
    for path in [
        "/panel/ops",
        "/panel/ops/workers",
        "/panel/ops/dead-jobs",
        &format!("/panel/ops/dead-jobs/{replayed}"),
        "/panel/ops/limits",
        "/panel/ops/suspended",
    ] {
        assert_eq!(status_of(&browser, path).await, 404, "{path}");
    }

    browser.stop().await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_script_a_dead_job_change_asks_on_a_page_first_and_an_organization_admin_changes_nothing() {
    let fleet = Fleet::start().await;
    let pool = fleet.env.pool.clone();
    let acme = organization(&pool, AccessType::Office365, true).await;
    let user = users(
        &pool,
        acme,
        1,
        SyncStatus::Enabled,
        Utc::now() + TimeDelta::days(1),
        false,
    )
    .await[0];
    let dead = dead_job(&pool, &fleet.env.prefix, user, acme, "delivery_limit", 3).await;
    let admin = create_token(&pool, "admin", None, None, "admin@fleet.example")
        .await
        .unwrap();
    let lead = create_token(&pool, "org_admin", Some(acme), None, "lead@acme.example")
        .await
        .unwrap();

    // An organization admin's post (their own valid CSRF token) is the
    // not-found page, and nothing changes.
    let (cookie, csrf) = signed_in(&fleet, &lead).await;
    let dead_id = dead.to_string();
    for path in [
        format!("/panel/ops/dead-jobs/{dead}/discard"),
        "/panel/ops/dead-jobs/actions/discard".to_owned(),
    ] {
        let response = client()
            .post(fleet.url(&path))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("confirmed", "yes"),
                ("scope", "selected"),
                ("id", dead_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(dead_status(&pool, dead).await.0, "dead");

    // An admin without the script: the first post asks, the confirmed one
    // discards.
    let (cookie, csrf) = signed_in(&fleet, &admin).await;
    let post = |fields: Vec<(&'static str, String)>| {
        client()
            .post(fleet.url(&format!("/panel/ops/dead-jobs/{dead}/discard")))
            .header("cookie", &cookie)
            .form(&fields)
            .send()
    };
    let response = post(vec![("csrf", csrf.clone()), ("confirmed", String::new())])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(&format!("Discard the dead job <code>{dead}</code>")),
        "{page}"
    );
    assert!(page.contains("name=\"confirmed\" value=\"yes\""), "{page}");
    assert_eq!(dead_status(&pool, dead).await.0, "dead", "asking changes nothing");
    let response = post(vec![("csrf", csrf.clone()), ("confirmed", "yes".to_owned())])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(dead_status(&pool, dead).await.0, "discarded");
    // Replaying it now is refused with the API's reason, on its page.
    let response = client()
        .post(fleet.url(&format!("/panel/ops/dead-jobs/{dead}/replay")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("confirmed", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Not replayed: this dead job was discarded; it cannot be replayed"),
        "{page}"
    );
    fleet.stop().await;
}
