//! The console's dead jobs: the list (filtered by status, reason, kind,
//! organization and time, paged by the API's cursor), one job inspected
//! (its envelope and attempts), and replay or discard of one job, of a
//! selection, or of every job matching the filter. Each change asks first
//! (the script's confirmation, or without it a confirmation page) and the
//! bulk ones answer a result per job.

use axum::{
    extract::{Path, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use syncfleet_common::{
    domain::{DeadJobAction, DeadJobStatus},
    queue::JobKind,
};
use uuid::Uuid;

use super::{Page, count, notice, when_relative};
use crate::panel::{
    Fields, Form, Id, Panel,
    error::PanelError,
    organizations::not_found,
    page::{self, Column, Query, csrf_field, plain, text, when},
    session::Session,
    users,
};

/// An action's verb on a button.
fn verb(action: DeadJobAction) -> &'static str {
    match action {
        DeadJobAction::Replay => "Replay",
        DeadJobAction::Discard => "Discard",
    }
}

/// The filters the list passes to the API (besides the page).
const FILTERS: [&str; 4] = ["reason", "kind", "organization_id", "since"];

/// The reasons the fleet dead-letters a job with (the filter takes any).
const REASONS: [&str; 3] = ["delivery_limit", "retries_exhausted", "rejected"];

/// `since` as the API takes it: an RFC 3339 time as given, or the
/// browser's `datetime-local` (no zone) read as UTC. Anything else goes as
/// typed, for the API to refuse, naming the field.
fn since_for_api(raw: &str) -> String {
    if DateTime::parse_from_rfc3339(raw).is_ok() {
        return raw.to_owned();
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .map_or_else(
            || raw.to_owned(),
            |time| format!("{}Z", time.format("%Y-%m-%dT%H:%M:%S")),
        )
}

/// `since` as a `datetime-local` input shows it.
fn since_for_input(raw: &str) -> String {
    DateTime::parse_from_rfc3339(&since_for_api(raw))
        .map(|time| time.with_timezone(&Utc).format("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_else(|_| raw.to_owned())
}

/// The list's filters from a query or a form, `since` as the API takes it.
fn filter_pairs(get: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    FILTERS
        .iter()
        .filter_map(|name| {
            let value = get(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())?;
            let value = if *name == "since" { since_for_api(&value) } else { value };
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// The filters in words, for a confirmation.
fn filter_words(filters: &[(String, String)], organizations: &[(String, String)]) -> String {
    if filters.is_empty() {
        return "no filter: every dead job".to_owned();
    }
    filters
        .iter()
        .map(|(name, value)| match name.as_str() {
            "organization_id" => {
                let name = organizations
                    .iter()
                    .find(|(id, _)| id == value)
                    .map_or(value.as_str(), |(_, name)| name.as_str());
                format!("organization {name}")
            }
            "since" => format!("dead since {value}"),
            other => format!("{other} {value:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The readable name of a job's kind.
fn kind_label(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Sync => "Sync",
        JobKind::Admin => "Admin job",
        JobKind::Push => "Push",
    }
}

/// The readable name of where a dead job stands.
fn status_label(status: DeadJobStatus) -> &'static str {
    match status {
        DeadJobStatus::Dead => "Dead",
        DeadJobStatus::Replayed => "Replayed",
        DeadJobStatus::Discarded => "Discarded",
    }
}

/// The list's columns (the resolution shown for jobs already handled).
fn columns(status: &str) -> [Column; 10] {
    let mut resolved = plain("resolved", "Resolved");
    resolved.hidden = status == DeadJobStatus::Dead.as_str();
    let mut deliveries = plain("deliveries", "Deliveries");
    deliveries.hidden = true;
    [
        plain("dead_at", "Dead at"),
        plain("kind", "Kind"),
        plain("reason", "Reason"),
        deliveries,
        plain("user", "User"),
        plain("organization", "Organization"),
        plain("message", "Last error"),
        plain("status", "Status"),
        resolved,
        plain("actions", "Actions"),
    ]
}

/// A user's email linked to their details, or "—".
fn user_link(job: &Value) -> Markup {
    html! {
        @match (job["user_id"].as_str(), job["user_email"].as_str()) {
            (Some(id), email) => a href={ "/panel/users/" (id) } { (email.unwrap_or(id)) },
            (None, _) => "—",
        }
    }
}

fn organization_link(job: &Value) -> Markup {
    html! {
        @match (job["organization_id"].as_str(), job["organization_name"].as_str()) {
            (Some(id), name) => a href={ "/panel/organizations/" (id) } { (name.unwrap_or(id)) },
            (None, _) => "—",
        }
    }
}

fn resolution(job: &Value) -> Markup {
    html! {
        @if !job["resolved_at"].is_null() {
            (page::label_of(text(&job["status"]), status_label)) " " (when(&job["resolved_at"]))
            @if let Some(by) = job["resolved_by"].as_str() { " by " (by) }
            @if let Some(replay) = job["replay_job_id"].as_str() { ", as job " code { (replay) } }
        }
    }
}

/// The list page's content.
pub fn list_content(
    session: &Session,
    query: &Query,
    listed: &Value,
    organizations: &[(String, String)],
    error: Option<&str>,
) -> Markup {
    let base = "/panel/ops/dead-jobs";
    let status = query.get("status").unwrap_or(DeadJobStatus::Dead.as_str());
    let columns = columns(status);
    let filters = filter_pairs(|name| query.get(name).map(str::to_owned));
    let total = listed["total"].as_i64().unwrap_or(0);
    let items: Vec<&Value> = listed["items"].as_array().into_iter().flatten().collect();
    let actionable = status == DeadJobStatus::Dead.as_str();
    // Its own columns' memory per kind of list: the resolution, hidden for
    // the jobs waiting, shows for those handled.
    let table = if actionable { "dead-jobs" } else { "dead-jobs-handled" };
    let matching = if filters.is_empty() {
        format!("all {total}")
    } else {
        format!("all {total} matching")
    };
    html! {
        div.toolbar {
            form.filters method="get" action=(base) {
                (page::select("status", "Status", &page::enum_choices(DeadJobStatus::ALL, status_label), Some(status), None))
                label.field {
                    span { "Reason" }
                    input type="search" name="reason" list="dead-reasons" value=[query.get("reason")];
                    datalist #dead-reasons { @for reason in REASONS { option value=(reason) {} } }
                }
                (page::select("kind", "Kind", &page::enum_choices(JobKind::ALL, kind_label), query.get("kind"), Some("Any")))
                @if !organizations.is_empty() {
                    (page::select("organization_id", "Organization", organizations, query.get("organization_id"), Some("Any")))
                }
                label.field {
                    span { "Dead since (UTC)" }
                    input type="datetime-local" name="since" value=[query.get("since").map(since_for_input)];
                }
                @if let Some(refresh) = query.get("refresh") { input type="hidden" name="refresh" value=(refresh); }
                button type="submit" { "Filter" }
                a.button href=(base) { "Clear" }
            }
            (page::column_menu(table, base, &columns))
        }
        (page::error_banner(error))
        // The selection and "all matching" post the same form: the
        // buttons say which and where.
        form #bulk method="post" action={ (base) "/actions/replay" } {
            (csrf_field(session))
            input type="hidden" name="confirmed" value="";
            @for (name, value) in &filters { input type="hidden" name=(name) value=(value); }
            @if actionable && !items.is_empty() {
                div.toolbar.bulk role="group" aria-label="Replay or discard dead jobs" {
                    span { "Selected jobs:" }
                    button.primary type="submit" name="scope" value="selected" formaction={ (base) "/actions/replay" }
                        data-confirm="Replay {n} selected dead job(s)? Each is published again as a new job." { "Replay selected" }
                    button.danger type="submit" name="scope" value="selected" formaction={ (base) "/actions/discard" }
                        data-confirm="Discard {n} selected dead job(s)? They will not run." { "Discard selected" }
                    span { "Every job of the list:" }
                    button type="submit" name="scope" value="filter" formaction={ (base) "/actions/replay" }
                        data-confirm={ "Replay " (matching) " dead job(s) (" (filter_words(&filters, organizations)) ")?" } { "Replay " (matching) }
                    button.danger type="submit" name="scope" value="filter" formaction={ (base) "/actions/discard" }
                        data-confirm={ "Discard " (matching) " dead job(s) (" (filter_words(&filters, organizations)) ")?" } { "Discard " (matching) }
                }
            }
            @if items.is_empty() {
                p.empty { @if filters.is_empty() && actionable { "No dead jobs: nothing is waiting for an operator." } @else { "No dead jobs match." } }
            } @else {
                div.scroll {
                    table.list data-table=(table) {
                        thead {
                            (page::header_row(base, query, &columns, actionable.then(|| html! {
                                input type="checkbox" data-select-all aria-label="Select all dead jobs on this page";
                            })))
                        }
                        tbody {
                            @for job in &items {
                                @let id = text(&job["id"]);
                                tr data-dead-job=(id) {
                                    @if actionable {
                                        td.select { input type="checkbox" name="id" value=(id) data-select=(id) aria-label={ "Select the dead job of " (when(&job["dead_at"])) ", " (text(&job["reason"])) }; }
                                    }
                                    td data-col="dead_at" { (when(&job["dead_at"])) }
                                    td data-col="kind" { (page::label_of(text(&job["kind"]), kind_label)) }
                                    td data-col="reason" { (text(&job["reason"])) br; span.hint { code { (text(&job["queue"])) } } }
                                    td data-col="deliveries" { (count(&job["deliveries"])) }
                                    td data-col="user" { (user_link(job)) }
                                    td data-col="organization" { (organization_link(job)) }
                                    td data-col="message" { (text(&job["last_error"])) }
                                    td data-col="status" { (page::label_of(text(&job["status"]), status_label)) }
                                    td data-col="resolved" { (resolution(job)) }
                                    td data-col="actions" { a href={ (base) "/" (id) } aria-label={ "Inspect the dead job " (id) } { "Inspect" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(base, query, listed))
    }
}

/// `GET /panel/ops/dead-jobs`.
pub async fn list(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let mut api_query = Query(filter_pairs(|name| query.get(name).map(str::to_owned)));
    for name in ["status", "page_size", "cursor"] {
        if let Some(value) = query.get(name) {
            api_query.0.push((name.to_owned(), value.to_owned()));
        }
    }
    let listed = panel
        .v1
        .get(&session, &format!("/v1/ops/dead-jobs{}", api_query.to_suffix()))
        .await;
    let (listed, error) = match listed {
        Ok(listed) => (listed, None),
        Err(error) if error.is_shown() => (json!({"items": [], "total": 0}), Some(error.message())),
        Err(error) => return Err(error),
    };
    let organizations = users::organizations(&panel, &session).await?;
    let page = Page {
        session: &session,
        query: &query,
        tab: "Dead jobs",
        base: "/panel/ops/dead-jobs",
        live: Some(Utc::now()),
        notice: notice(&query),
    };
    let content = list_content(&session, &query, &listed, &organizations, error.as_deref());
    Ok(page.render("Dead jobs", content))
}

/// One dead job's page.
pub fn inspect_content(session: &Session, job: &Value, error: Option<&str>) -> Markup {
    let id = text(&job["id"]);
    let now = Utc::now();
    let envelope =
        (!job["envelope"].is_null()).then(|| serde_json::to_string_pretty(&job["envelope"]).unwrap_or_default());
    let attempts: Vec<&Value> = job["attempts"].as_array().into_iter().flatten().collect();
    html! {
        p { a href="/panel/ops/dead-jobs" { "Back to dead jobs" } }
        (page::error_banner(error))
        div.split {
            div.card {
                dl.facts {
                    dt { "Dead job" } dd { code { (id) } }
                    dt { "Job" } dd { @if let Some(job_id) = job["job_id"].as_str() { code { (job_id) } } @else { "— (not a job)" } }
                    dt { "Kind" } dd { (page::label_of(text(&job["kind"]), kind_label)) }
                    dt { "Queue" } dd { code { (text(&job["queue"])) } }
                    dt { "Reason" } dd { (text(&job["reason"])) }
                    dt { "Deliveries" } dd { (count(&job["deliveries"])) }
                    dt { "Dead at" } dd { (when_relative(&job["dead_at"], now)) }
                    dt { "User" } dd { (user_link(job)) }
                    dt { "Organization" } dd { (organization_link(job)) }
                    dt { "Status" } dd data-status=(text(&job["status"])) { (page::label_of(text(&job["status"]), status_label)) }
                    @if !job["resolved_at"].is_null() { dt { "Resolved" } dd { (resolution(job)) } }
                    @if let Some(error) = job["last_error"].as_str() { dt { "Last error" } dd.wrap { (error) } }
                }
            }
            div.card {
                h2 { "Actions" }
                @if text(&job["status"]) == DeadJobStatus::Dead.as_str() {
                    p.hint { "Replay publishes the job again under a new id; discard marks it handled without running it." }
                    div.buttons {
                        form.inline method="post" action={ "/panel/ops/dead-jobs/" (id) "/replay" } data-confirm="Replay this dead job? It is published again as a new job." {
                            (csrf_field(session))
                            input type="hidden" name="confirmed" value="";
                            button.primary type="submit" { "Replay" }
                        }
                        form.inline method="post" action={ "/panel/ops/dead-jobs/" (id) "/discard" } data-confirm="Discard this dead job? It will not run." {
                            (csrf_field(session))
                            input type="hidden" name="confirmed" value="";
                            button.danger type="submit" { "Discard" }
                        }
                    }
                } @else {
                    p { "This job was " (text(&job["status"])) ": nothing more to do." }
                }
            }
        }
        h2 { "Payload" }
        @match (&envelope, job["payload_text"].as_str()) {
            (Some(envelope), _) => {
                pre.payload #envelope tabindex="0" aria-label="The job as JSON" { (envelope) }
                p { (page::copy_button("envelope", "Copy the job")) }
            }
            (None, Some(payload)) => {
                p.hint { "The payload is not a job (not JSON):" }
                pre.payload #envelope tabindex="0" { (payload) }
            }
            (None, None) => p.hint { "The payload is not a job and not text." },
        }
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p.hint { "No session ran this job." }
        } @else {
            div.scroll {
                table.list data-table="attempts" {
                    thead { tr { th.num scope="col" { "Attempt" } th scope="col" { "Started" } th scope="col" { "Status" } th scope="col" { "Error" } th scope="col" { "Session" } } }
                    tbody {
                        @for attempt in &attempts {
                            tr {
                                td.num { (count(&attempt["attempt"])) }
                                td { (when(&attempt["started_at"])) }
                                td { (text(&attempt["status"])) }
                                td data-col="message" { (text(&attempt["error"])) }
                                td { @if let Some(session_id) = attempt["session_id"].as_str() { a href={ "/panel/sessions/" (session_id) } { "Open session" } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn inspect_page(session: &Session, query: &Query, job: &Value, error: Option<&str>, status: StatusCode) -> Response {
    let page = Page {
        session,
        query,
        tab: "Dead jobs",
        base: "/panel/ops/dead-jobs",
        live: None,
        notice: notice(query),
    };
    let mut response = page.render("Dead job", inspect_content(session, job, error));
    *response.status_mut() = status;
    response
}

/// `GET /panel/ops/dead-jobs/{id}`.
pub async fn inspect(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let job = panel.v1.get(&session, &format!("/v1/ops/dead-jobs/{id}")).await?;
    Ok(inspect_page(&session, &query, &job, None, StatusCode::OK))
}

/// The page that asks before a change when the script did not: the same
/// form again, confirmed.
fn confirmation(
    session: &Session,
    action: &str,
    question: Markup,
    fields: &Fields,
    label: &str,
    back: &str,
) -> Response {
    let query = Query::default();
    let page = Page {
        session,
        query: &query,
        tab: "Dead jobs",
        base: "/panel/ops/dead-jobs",
        live: None,
        notice: None,
    };
    let content = html! {
        form.card method="post" action=(action) {
            (csrf_field(session))
            input type="hidden" name="confirmed" value="yes";
            @for (name, value) in fields.0.iter().filter(|(name, _)| !matches!(name.as_str(), "csrf" | "confirmed")) {
                input type="hidden" name=(name) value=(value);
            }
            (question)
            div.buttons {
                button.primary type="submit" { (label) }
                a.button href=(back) { "Cancel" }
            }
        }
    };
    page.render("Confirm", content)
}

/// Replay or discard one job, once confirmed.
async fn act(
    panel: &Panel,
    id: Uuid,
    action: DeadJobAction,
    session: Session,
    fields: Fields,
) -> Result<Response, PanelError> {
    let path = format!("/v1/ops/dead-jobs/{id}");
    if fields.get("confirmed") != Some("yes") {
        // The job is read first: a caller who may not see it gets the 404
        // now, not a question.
        let job = panel.v1.get(&session, &path).await?;
        let question = html! {
            p { (verb(action)) " the dead job " code { (id) } " (" (text(&job["reason"])) ", dead at " (when(&job["dead_at"])) ")?" }
        };
        let back = format!("/panel/ops/dead-jobs/{id}");
        return Ok(confirmation(
            &session,
            &format!("{back}/{}", action.as_str()),
            question,
            &fields,
            verb(action),
            &back,
        ));
    }
    let answer = match action {
        DeadJobAction::Replay => {
            panel
                .v1
                .call(&session, Method::POST, &format!("{path}/replay"), None)
                .await?
        }
        DeadJobAction::Discard => panel.v1.call(&session, Method::DELETE, &path, None).await?,
    };
    if answer.status.is_success() {
        return Ok(Redirect::to(&format!("/panel/ops/dead-jobs/{id}?done={}", action.leads_to())).into_response());
    }
    let error = answer.error();
    if !error.is_shown() {
        return Err(error);
    }
    // The refusal (already discarded, already replayed) on the job's page.
    let job = panel.v1.get(&session, &path).await?;
    let message = format!("Not {}: {}", action.leads_to(), error.message());
    Ok(inspect_page(
        &session,
        &Query::default(),
        &job,
        Some(&message),
        error.status(),
    ))
}

/// `POST /panel/ops/dead-jobs/{id}/replay`.
pub async fn replay(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    act(&panel, id, DeadJobAction::Replay, session, fields).await
}

/// `POST /panel/ops/dead-jobs/{id}/discard`.
pub async fn discard(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    act(&panel, id, DeadJobAction::Discard, session, fields).await
}

/// An outcome of a bulk action in words, and whether it is a failure.
fn outcome_label(action: DeadJobAction, outcome: &str) -> (&'static str, bool) {
    if let Ok(status) = outcome.parse() {
        return (status_label(status), false);
    }
    match (outcome, action) {
        ("already", DeadJobAction::Replay) => ("Already replayed", false),
        ("already", DeadJobAction::Discard) => ("Already discarded", false),
        ("conflict", _) => ("Refused", true),
        ("not_found", _) => ("Not found", true),
        _ => ("Failed", true),
    }
}

/// A bulk action's results, one row per job.
pub fn results_content(action: DeadJobAction, results: &Value, error: Option<&str>) -> Markup {
    let results: Vec<&Value> = results["results"].as_array().into_iter().flatten().collect();
    let mut tally: Vec<(&str, usize)> = Vec::new();
    for result in &results {
        let (label, _) = outcome_label(action, text(&result["outcome"]));
        match tally.iter_mut().find(|(seen, _)| *seen == label) {
            Some((_, count)) => *count += 1,
            None => tally.push((label, 1)),
        }
    }
    let failed = results
        .iter()
        .any(|result| outcome_label(action, text(&result["outcome"])).1);
    html! {
        (page::error_banner(error))
        @if error.is_none() {
            p.summary.off[failed] role="status" data-summary {
                (verb(action)) " of " (results.len()) " dead job(s): "
                @if results.is_empty() { "none matched." }
                @for (index, (label, count)) in tally.iter().enumerate() {
                    @if index > 0 { ", " }
                    (count) " " (label.to_lowercase())
                }
            }
        }
        @if !results.is_empty() {
            div.scroll {
                table.list data-table="results" {
                    thead { tr { th scope="col" { "Dead job" } th scope="col" { "Outcome" } th scope="col" { "Message" } th scope="col" { "New job" } } }
                    tbody {
                        @for result in &results {
                            @let id = text(&result["id"]);
                            @let (label, failed) = outcome_label(action, text(&result["outcome"]));
                            tr.off[failed] data-result=(id) {
                                th scope="row" { a href={ "/panel/ops/dead-jobs/" (id) } { code { (id) } } }
                                td data-col="outcome" { (label) }
                                td data-col="message" { (text(&result["message"])) }
                                td { @if let Some(job) = result["replay_job_id"].as_str() { code { (job) } } }
                            }
                        }
                    }
                }
            }
        }
        p { a.button href="/panel/ops/dead-jobs" { "Back to dead jobs" } }
    }
}

/// `POST /panel/ops/dead-jobs/actions/{replay|discard}`: the selection
/// (`scope=selected`, the `id` fields) or every dead job matching the
/// filter fields (`scope=filter`).
pub async fn bulk(
    State(panel): State<Panel>,
    Path(action): Path<String>,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    let action = action
        .parse::<DeadJobAction>()
        .map_err(|_| not_found(&format!("there is no action {action:?} on dead jobs")))?;
    let by_filter = fields.get("scope") == Some("filter");
    let filters = filter_pairs(|name| fields.get(name).map(str::to_owned));
    let ids = fields.all("id");
    if !by_filter && ids.is_empty() {
        return Err(PanelError::BadForm(
            "id: select at least one dead job, or act on every job matching the filter".to_owned(),
        ));
    }
    let body = if by_filter {
        let filter: Map<String, Value> = filters
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        json!({ "filter": filter })
    } else {
        json!({ "ids": ids })
    };
    if fields.get("confirmed") != Some("yes") {
        // What the filter matches now, read as the caller: one who may not
        // see dead jobs gets the 404 here.
        let mut count_query = Query(filters.clone());
        count_query.0.push(("page_size".to_owned(), "1".to_owned()));
        let matched = panel
            .v1
            .get(&session, &format!("/v1/ops/dead-jobs{}", count_query.to_suffix()))
            .await?;
        let organizations = users::organizations(&panel, &session).await?;
        let question = if by_filter {
            html! {
                p { (verb(action)) " every dead job matching the filter (" (filter_words(&filters, &organizations)) ")?" }
                p.hint { (count(&matched["total"])) " match now; those matching when you confirm are handled, oldest first, at most 1,000 at a time." }
            }
        } else {
            html! {
                p { (verb(action)) " " (ids.len()) " selected dead job(s)?" }
                ul { @for id in &ids { li { code { (id) } } } }
            }
        };
        return Ok(confirmation(
            &session,
            &format!("/panel/ops/dead-jobs/actions/{}", action.as_str()),
            question,
            &fields,
            &format!(
                "{} {}",
                verb(action),
                if by_filter { "all matching" } else { "the selected" }
            ),
            "/panel/ops/dead-jobs",
        ));
    }
    let answer = panel
        .v1
        .call(
            &session,
            Method::POST,
            &format!("/v1/ops/dead-jobs/actions/{}", action.as_str()),
            Some(&body),
        )
        .await?;
    let status = answer.status;
    let (results, error) = match answer.json() {
        Ok(results) => (results, None),
        Err(error) if error.is_shown() => (Value::Null, Some(error.message())),
        Err(error) => return Err(error),
    };
    let query = Query::default();
    let page = Page {
        session: &session,
        query: &query,
        tab: "Dead jobs",
        base: "/panel/ops/dead-jobs",
        live: None,
        notice: None,
    };
    let title = format!("Dead jobs: {} results", action.as_str());
    let mut response = page.render(&title, results_content(action, &results, error.as_deref()));
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_the_browsers_local_time_as_utc_and_keeps_rfc_3339() {
        assert_eq!(since_for_api("2026-12-07T16:05"), "2026-12-07T16:05:00Z");
        assert_eq!(since_for_api("2026-12-07T16:05:30"), "2026-12-07T16:05:30Z");
        assert_eq!(since_for_api("2026-12-07T16:05:00+01:00"), "2026-12-07T16:05:00+01:00");
        assert_eq!(since_for_api("yesterday"), "yesterday", "the API names what is wrong");
        assert_eq!(since_for_input("2026-12-07T16:05:00+01:00"), "2026-12-07T15:05");
    }

    #[test]
    fn the_filter_in_words_names_the_organization() {
        let filters = filter_pairs(|name| match name {
            "kind" => Some("sync".to_owned()),
            "organization_id" => Some("o1".to_owned()),
            "reason" => Some("  ".to_owned()),
            _ => None,
        });
        let organizations = [("o1".to_owned(), "Acme".to_owned())];
        assert_eq!(
            filter_words(&filters, &organizations),
            "kind \"sync\", organization Acme"
        );
        assert_eq!(filter_words(&[], &organizations), "no filter: every dead job");
    }
}
