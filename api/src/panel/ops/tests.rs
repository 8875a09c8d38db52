//! The console's pages rendered from answers of `/v1/ops/...` as the API
//! spells them: what each page must show, and the Operations section shown
//! to admins only.

use axum::{body::to_bytes, response::Response};
use chrono::{Duration, DurationRound, Utc};
use serde_json::{Value, json};
use syncfleet_common::domain::DeadJobAction;

use super::{
    Page, Refresh, age, dead_jobs, limits,
    overview::{self, Overview},
    suspended, with_refresh, workers,
};
use crate::{
    auth::Role,
    panel::{page::Query, session::Session},
};

async fn html(response: Response) -> String {
    String::from_utf8(to_bytes(response.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap()
}

fn overview_answer() -> Value {
    let now = Utc::now();
    let minute = |ago: i64| (now.duration_trunc(Duration::minutes(1)).unwrap() - Duration::minutes(ago)).to_rfc3339();
    json!({
        "generated_at": now.to_rfc3339(),
        "broker": {"source": "management"},
        "queues": [
            {"queue": "sf.sync", "role": "cadence", "ready": 120, "unacknowledged": 8, "consumers": 4, "publish_rate": 35.5, "deliver_rate": 34.0, "ack_rate": 33.9},
            {"queue": "sf.sync.priority", "role": "priority", "ready": 0, "unacknowledged": 0, "consumers": 4, "publish_rate": null, "deliver_rate": null, "ack_rate": null},
            {"queue": "sf.dead", "role": "dead", "ready": 3, "unacknowledged": null, "consumers": null, "publish_rate": null, "deliver_rate": null, "ack_rate": null}
        ],
        "scheduler": {
            "leader": {"holder": "scheduler-7f9c", "term": 4, "since": minute(30), "expires_at": (now + Duration::seconds(20)).to_rfc3339()},
            "due_not_queued": 12,
            "lag_seconds": {"p50": 0.4, "p99": 2.25}
        },
        "sessions_per_minute": [
            {"minute": minute(1), "status": "succeeded", "count": 40},
            {"minute": minute(1), "status": "failed", "count": 3},
            {"minute": minute(0), "status": "succeeded_with_issues", "count": 5},
            {"minute": minute(90), "status": "succeeded", "count": 7}
        ],
        "queue_depth_history": [
            {"minute": minute(2), "queue": "cadence", "ready": 100},
            {"minute": minute(1), "queue": "cadence", "ready": 120},
            {"minute": minute(1), "queue": "push", "ready": 2}
        ],
        "lag_history": [
            {"minute": minute(2), "p50": 0.3, "p99": 1.5},
            {"minute": minute(1), "p50": 0.4, "p99": null}
        ],
        "outbox": {"backlog": 2, "oldest_at": minute(10)},
        "dead_jobs": {"waiting": 3}
    })
}

fn dead_job(id: &str, status: &str) -> Value {
    json!({
        "id": id, "job_id": "0193a0a0-0000-7000-8000-000000000001", "kind": "sync", "queue": "sf.sync",
        "reason": "delivery_limit", "deliveries": 5, "dead_at": "2026-12-07T16:00:00Z",
        "user_id": "0193a0a0-0000-7000-8000-0000000000aa", "user_email": "amy@acme.example",
        "organization_id": "0193a0a0-0000-7000-8000-0000000000bb", "organization_name": "Acme",
        "status": status, "resolved_at": null, "resolved_by": null, "replay_job_id": null,
        "last_error": "Salesforce answered 500 <script>"
    })
}

#[test]
fn the_overview_shows_what_needs_attention_the_queues_and_three_charts() {
    let overview: Overview = serde_json::from_value(overview_answer()).unwrap();
    let page = overview::content(&overview).into_string();
    for expected in [
        "Dead jobs waiting",
        "scheduler-7f9c",
        "Term 4",
        "0.40 s",
        "p99 2.25 s",
        "12 users due and not queued yet",
        "sf.sync.priority",
        "35.5/s",
        "Dead letters",
        "Queue depth (ready)",
        "Sessions per minute",
        "Cadence lag",
    ] {
        assert!(page.contains(expected), "{expected:?} is missing:\n{page}");
    }
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    assert_eq!(
        page.matches("<rect class=\"bar").count(),
        3,
        "the sessions of the hour, not the one 90 minutes ago"
    );
    assert!(page.contains("<td class=\"num\">—</td>"), "an unknown count is a dash");
    assert!(!page.contains("<script"), "no script in the page's content");
}

#[test]
fn an_overview_without_a_leader_or_broker_management_says_so() {
    let mut answer = overview_answer();
    answer["scheduler"]["leader"] = Value::Null;
    answer["broker"]["source"] = json!("amqp");
    answer["sessions_per_minute"] = json!([]);
    let overview: Overview = serde_json::from_value(answer).unwrap();
    let page = overview::content(&overview).into_string();
    assert!(page.contains("No scheduler holds the lease"), "{page}");
    assert!(page.contains("Read over AMQP"), "{page}");
    assert!(page.contains("No data in the last hour"), "{page}");
}

#[test]
fn workers_show_their_state_heartbeat_and_deliveries_in_flight() {
    let now = Utc::now();
    let listed = json!({
        "silent_after_seconds": 37.5,
        "workers": [
            {"id": "worker-a", "version": "0.1.0", "host": "node-1", "started_at": (now - Duration::hours(2)).to_rfc3339(), "last_seen_at": (now - Duration::seconds(3)).to_rfc3339(), "state": "live", "in_flight": {"priority": 0, "cadence": 3, "push": 1}},
            {"id": "worker-b", "version": "0.2.0", "host": "node-2", "started_at": (now - Duration::hours(1)).to_rfc3339(), "last_seen_at": (now - Duration::seconds(60)).to_rfc3339(), "state": "silent", "in_flight": {"priority": 0, "cadence": 0, "push": 0}}
        ]
    });
    let page = workers::content(&listed, now).into_string();
    assert!(page.contains("3 s ago"), "{page}");
    assert!(page.contains("<tr class=\"off\" data-worker=\"worker-b\">"), "{page}");
    assert!(page.contains("older than 37.5 s"), "{page}");
    assert!(page.contains("<strong>1</strong> live"), "{page}");
}

#[test]
fn the_dead_jobs_list_offers_the_selection_and_the_filter_with_a_confirmation() {
    let session = Session::for_tests(Role::Admin);
    let query = Query::parse(Some("kind=sync&since=2026-12-07T15:00"));
    let listed =
        json!({"items": [dead_job("0193a0a0-0000-7000-8000-000000000010", "dead")], "next_cursor": "c2", "total": 7});
    let organizations = [("0193a0a0-0000-7000-8000-0000000000bb".to_owned(), "Acme".to_owned())];
    let page = dead_jobs::list_content(&session, &query, &listed, &organizations, None).into_string();
    for expected in [
        "name=\"id\" value=\"0193a0a0-0000-7000-8000-000000000010\"",
        "data-confirm=\"Replay {n} selected dead job(s)? Each is published again as a new job.\"",
        "Discard all 7 matching",
        "(kind &quot;sync&quot;, dead since 2026-12-07T15:00:00Z)",
        "<input type=\"hidden\" name=\"since\" value=\"2026-12-07T15:00:00Z\">",
        "<input type=\"hidden\" name=\"confirmed\" value=\"\">",
        "Salesforce answered 500 &lt;script&gt;",
        "href=\"/panel/ops/dead-jobs/0193a0a0-0000-7000-8000-000000000010\"",
        "rel=\"next\"",
    ] {
        assert!(page.contains(expected), "{expected:?} is missing:\n{page}");
    }
    let replayed = json!({"items": [dead_job("0193a0a0-0000-7000-8000-000000000011", "replayed")], "total": 1});
    let page = dead_jobs::list_content(
        &session,
        &Query::parse(Some("status=replayed")),
        &replayed,
        &organizations,
        None,
    )
    .into_string();
    assert!(!page.contains("data-confirm"), "a replayed job has no actions: {page}");
}

#[test]
fn a_dead_job_shows_its_envelope_and_attempts_and_asks_before_a_change() {
    let session = Session::for_tests(Role::Admin);
    let mut job = dead_job("0193a0a0-0000-7000-8000-000000000010", "dead");
    job["envelope"] = json!({"version": 1, "job_id": "0193a0a0-0000-7000-8000-000000000001", "kind": "sync"});
    job["payload_text"] = Value::Null;
    job["attempts"] = json!([{"session_id": "0193a0a0-0000-7000-8000-0000000000cc", "attempt": 1, "started_at": "2026-12-07T15:59:00Z", "status": "failed", "error": "boom"}]);
    let page = dead_jobs::inspect_content(&session, &job, None).into_string();
    for expected in [
        "&quot;job_id&quot;: &quot;0193a0a0-0000-7000-8000-000000000001&quot;",
        "href=\"/panel/sessions/0193a0a0-0000-7000-8000-0000000000cc\"",
        "action=\"/panel/ops/dead-jobs/0193a0a0-0000-7000-8000-000000000010/replay\" data-confirm=",
        "action=\"/panel/ops/dead-jobs/0193a0a0-0000-7000-8000-000000000010/discard\" data-confirm=",
        session.csrf().as_str(),
    ] {
        assert!(page.contains(expected), "{expected:?} is missing:\n{page}");
    }
    job["status"] = json!("discarded");
    job["resolved_at"] = json!("2026-12-07T16:10:00Z");
    job["resolved_by"] = json!("admin@fleet.example");
    let page = dead_jobs::inspect_content(&session, &job, None).into_string();
    assert!(!page.contains("/replay\""), "{page}");
    assert!(page.contains("by admin@fleet.example"), "{page}");
}

#[test]
fn a_bulk_action_answers_a_result_per_job() {
    let results = json!({"results": [
        {"id": "0193a0a0-0000-7000-8000-000000000010", "outcome": "replayed", "message": null, "replay_job_id": "0193a0a0-0000-7000-8000-0000000000dd"},
        {"id": "0193a0a0-0000-7000-8000-000000000011", "outcome": "already", "message": null, "replay_job_id": "0193a0a0-0000-7000-8000-0000000000ee"},
        {"id": "0193a0a0-0000-7000-8000-000000000012", "outcome": "conflict", "message": "the dead job was discarded", "replay_job_id": null}
    ]});
    let page = dead_jobs::results_content(DeadJobAction::Replay, &results, None).into_string();
    assert!(
        page.contains("Replay of 3 dead job(s): 1 replayed, 1 already replayed, 1 refused"),
        "{page}"
    );
    assert!(
        page.contains("<tr class=\"off\" data-result=\"0193a0a0-0000-7000-8000-000000000012\">"),
        "{page}"
    );
    assert!(page.contains("the dead job was discarded"), "{page}");
}

#[test]
fn limits_show_cooldowns_allocations_and_throttling() {
    let now = Utc::now();
    let answer = json!({
        "cooldowns": [{"provider": "graph", "account": "tenant-1", "until": (now + Duration::seconds(95)).to_rfc3339(), "reason": "429 Retry-After 120"}],
        "salesforce_orgs": [{"org": "acme.my.salesforce.com", "used": 9000, "allocation": 10000, "reserve_percent": 15, "usable": 8500, "observed_at": now.to_rfc3339(), "near_reserve": true}],
        "throttled_last_hour": [{"provider": "salesforce", "count": 17}]
    });
    let page = limits::content(&answer, now).into_string();
    for expected in [
        "Microsoft Graph",
        "tenant-1",
        "in 1 min 3",
        "near the reserve",
        "9000 (90 %)",
        "17",
    ] {
        assert!(page.contains(expected), "{expected:?} is missing:\n{page}");
    }
    let empty = limits::content(
        &json!({"cooldowns": [], "salesforce_orgs": [], "throttled_last_hour": []}),
        now,
    )
    .into_string();
    assert!(empty.contains("No account is cooling down."), "{empty}");
}

#[test]
fn suspended_users_are_grouped_listed_and_offered_the_enable_action() {
    let answer = json!({
        "groups": [{"class": "auth", "organization_id": "0193a0a0-0000-7000-8000-0000000000bb", "organization_name": "Acme", "count": 2}],
        "items": [{"user_id": "0193a0a0-0000-7000-8000-0000000000aa", "email": "amy@acme.example", "name": "Amy", "organization_id": "0193a0a0-0000-7000-8000-0000000000bb", "organization_name": "Acme", "class": "auth", "sync_status": "disabled_auth_error", "last_error": "invalid_grant", "suspended_at": "2026-12-07T16:00:00Z"}],
        "next_cursor": null, "total": 1
    });
    let page = suspended::content(&Query::default(), &answer, &[], None).into_string();
    for expected in [
        "Disabled: authorization error",
        "data-select=\"0193a0a0-0000-7000-8000-0000000000aa\" data-name=\"amy@acme.example\"",
        "data-action=\"enable-sync\" data-confirm=\"Enable synchronization\"",
        "?class=auth&amp;organization_id=0193a0a0-0000-7000-8000-0000000000bb",
        "invalid_grant",
    ] {
        assert!(page.contains(expected), "{expected:?} is missing:\n{page}");
    }
}

#[tokio::test]
async fn the_operations_section_is_in_the_navigation_of_admins_only() {
    let query = Query::default();
    for (role, shown) in [(Role::Admin, true), (Role::OrgAdmin, false)] {
        let session = Session::for_tests(role);
        let response = crate::panel::page::shell(
            &session,
            crate::panel::page::Section::Users,
            "Users",
            None,
            maud::html! {},
        );
        let page = html(response).await;
        assert_eq!(page.contains("href=\"/panel/ops\""), shown, "{role:?}: {page}");
    }
    let session = Session::for_tests(Role::Admin);
    let page = Page {
        session: &session,
        query: &query,
        tab: "Workers",
        base: "/panel/ops/workers",
        live: Some(Utc::now()),
        notice: None,
    };
    let page = html(page.render("Workers", maud::html! {})).await;
    assert!(
        page.contains("<a href=\"/panel/ops\" aria-current=\"page\">Operations</a>"),
        "{page}"
    );
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>"),
        "{page}"
    );
    assert!(page.contains("data-refresh=\"30\""), "{page}");
    assert!(page.contains("href=\"/panel/ops/workers?refresh=off\""), "{page}");
    let paused = Query::parse(Some("refresh=off"));
    let page = Page {
        session: &session,
        query: &paused,
        tab: "Workers",
        base: "/panel/ops/workers",
        live: Some(Utc::now()),
        notice: None,
    };
    let page = html(page.render("Workers", maud::html! {})).await;
    assert!(!page.contains("http-equiv"), "paused: {page}");
    assert!(page.contains("Resume auto-refresh"), "{page}");
    assert!(
        page.contains("href=\"/panel/ops/dead-jobs?refresh=off\""),
        "the tabs stay paused: {page}"
    );
}

#[test]
fn the_refresh_is_paused_by_off_and_its_interval_is_bounded() {
    let of = |raw: &str| Refresh::of(&Query::parse(Some(raw)));
    assert_eq!(of(""), Refresh::Every(30));
    assert_eq!(of("refresh=off"), Refresh::Paused);
    assert_eq!(of("refresh=5"), Refresh::Every(5));
    assert_eq!(of("refresh=1"), Refresh::Every(30), "too often");
    assert_eq!(of("refresh=soon"), Refresh::Every(30));
}

#[test]
fn pausing_keeps_the_page_and_its_filters() {
    let query = Query::parse(Some("status=dead&cursor=abc&refresh=10"));
    assert_eq!(
        with_refresh(&query, Some("off")).to_suffix(),
        "?status=dead&cursor=abc&refresh=off"
    );
    assert_eq!(with_refresh(&query, None).to_suffix(), "?status=dead&cursor=abc");
}

#[test]
fn ages_read_in_words() {
    assert_eq!(age(5), "5 s ago");
    assert_eq!(age(125), "2 min 5 s ago");
    assert_eq!(age(-90), "in 1 min 30 s");
    assert_eq!(age(7200 + 60), "2 h 1 min ago");
    assert_eq!(age(90_000), "1 d 1 h ago");
}
