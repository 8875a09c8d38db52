//! The Organizations tab: the list (M2), new and edit (M1, M3), delete (M4)
//! and the sub-tabs Users, Statistics, Activity and Email configuration (M5).

use axum::{
    Router,
    extract::State,
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use syncfleet_common::domain::{AccessType, SessionStatus};
use uuid::Uuid;

use super::{
    Fields, Form, Id, Panel, download,
    error::PanelError,
    page::{self, Column, Query, Section, hidden, plain, sortable, text, when},
    session::Session,
    users,
};

pub fn routes() -> Router<Panel> {
    Router::new()
        .route("/panel/organizations", get(list).post(create))
        .route("/panel/organizations/new", get(new_form))
        .route("/panel/organizations/{id}", get(edit_form).post(save))
        .route("/panel/organizations/{id}/delete", post(delete))
        .route("/panel/organizations/{id}/users", get(users_tab))
        .route("/panel/organizations/{id}/statistics", get(statistics_tab))
        .route("/panel/organizations/{id}/activity", get(activity_tab))
        .route("/panel/organizations/{id}/activity.csv", get(activity_csv))
        .route("/panel/organizations/{id}/email-configuration", get(email_tab))
}

/// A path's id, or the not-found page (never a malformed call to the API).
pub fn parse_id(raw: &str) -> Result<Uuid, PanelError> {
    Uuid::parse_str(raw).map_err(|_| not_found(&format!("{raw:?} is not an id")))
}

/// The not-found page, saying why.
pub fn not_found(what: &str) -> PanelError {
    PanelError::Api {
        status: StatusCode::NOT_FOUND,
        message: what.to_owned(),
        field: None,
    }
}

/// The notice a redirect asks for (a fixed text, never the query's).
pub fn notice(query: &Query) -> Option<&'static str> {
    match query.get("done")? {
        "created" => Some("Created."),
        "saved" => Some("Saved."),
        "deleted" => Some("Deleted."),
        "pushed" => Some("Push started."),
        _ => None,
    }
}

const COLUMNS: [Column; 5] = [
    hidden(plain("id", "ID")),
    sortable("name", "Name", "name"),
    sortable("access_type", "Mailbox Access Type", "access_type"),
    sortable("sync", "Synchronization Status", "sync_enabled"),
    plain("actions", "Actions"),
];

async fn list(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let api_query = query.only(&[
        "sort",
        "order",
        "access_type",
        "sync_enabled",
        "q",
        "cursor",
        "page_size",
    ]);
    let listed = panel
        .v1
        .get(&session, &format!("/v1/organizations{}", api_query.to_suffix()))
        .await;
    let (listed, error) = match listed {
        Ok(listed) => (listed, None),
        Err(error) if error.is_shown() => (json!({"items": [], "total": 0}), Some(error.message())),
        Err(error) => return Err(error),
    };
    let base = "/panel/organizations";
    let content = html! {
        div.toolbar {
            form.filters method="get" action=(base) {
                (page::text_input("q", "Name or External Id", query.get("q"), "search"))
                (page::select("access_type", "Mailbox Access Type", &page::enum_choices(AccessType::ALL, page::access_type_label), query.get("access_type"), Some("Any")))
                (page::select("sync_enabled", "Synchronization Status", &page::choices(&[("true", "Enabled"), ("false", "Disabled")]), query.get("sync_enabled"), Some("Any")))
                @for key in ["sort", "order"] { @if let Some(value) = query.get(key) { input type="hidden" name=(key) value=(value); } }
                button type="submit" { "Filter" }
            }
            (page::column_menu("organizations", base, &COLUMNS))
            @if session.is_admin() { a.button.primary href="/panel/organizations/new" { "New" } }
        }
        (page::error_banner(error.as_deref()))
        div.scroll {
            table.list data-table="organizations" {
                thead { (page::header_row(base, &query, &COLUMNS, None)) }
                tbody {
                    @for organization in listed["items"].as_array().into_iter().flatten() {
                        @let id = text(&organization["id"]);
                        @let enabled = organization["sync_enabled"].as_bool().unwrap_or(false);
                        tr class=[(!enabled).then_some("off")] {
                            td data-col="id" { code { (id) } }
                            td data-col="name" { a href={ "/panel/organizations/" (id) } { (text(&organization["name"])) } }
                            td data-col="access_type" { (page::label_of(text(&organization["access_type"]), page::access_type_label)) }
                            td data-col="sync" { (if enabled { "Enabled" } else { "Disabled" }) }
                            td data-col="actions" {
                                a href={ "/panel/organizations/" (id) } { "Edit" }
                                " "
                                a href={ "/panel/organizations/" (id) "/users" } { "Users" }
                                @if session.is_admin() && !organization["is_default"].as_bool().unwrap_or(false) {
                                    form.inline method="post" action={ "/panel/organizations/" (id) "/delete" } data-confirm={ "Delete the organization " (text(&organization["name"])) " and all its users?" } {
                                        (page::csrf_field(&session))
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(base, &query, &listed))
    };
    Ok(page::shell(
        &session,
        Section::Organizations,
        "Organizations",
        notice(&query),
        content,
    ))
}

/// The organization's form: new (every field) or edit (External Id and
/// access type read-only). Secrets are write-only: never filled in.
fn form(session: &Session, organization: &Value, fields: Option<&Fields>, error: Option<&str>) -> Markup {
    let is_new = organization.is_null();
    let value = |name: &str| -> String {
        fields
            .and_then(|fields| fields.get(name))
            .map(str::to_owned)
            .unwrap_or_else(|| text(&organization[name]).to_owned())
    };
    let access_type = value("access_type");
    let access_type = if access_type.is_empty() {
        AccessType::Office365.as_str().to_owned()
    } else {
        access_type
    };
    let access = access_type.parse::<AccessType>().ok();
    let exchange: Vec<&str> = AccessType::ALL
        .iter()
        .filter(|access| access.is_exchange())
        .map(|access| access.as_str())
        .collect();
    let sync_enabled = match fields {
        Some(fields) => fields.get("sync_enabled").is_some(),
        None => organization["sync_enabled"].as_bool().unwrap_or(true),
    };
    let action = if is_new {
        "/panel/organizations".to_owned()
    } else {
        format!("/panel/organizations/{}", text(&organization["id"]))
    };
    html! {
        (page::error_banner(error))
        form.card.org method="post" action=(action) {
            (page::csrf_field(session))
            label.field { span { "Name" } input name="name" required value=(value("name")); }
            label.field {
                span { "External Id" }
                @if is_new { input name="external_id" required value=(value("external_id")); }
                @else { input name="external_id" readonly aria-readonly="true" value=(value("external_id")); }
            }
            label.field {
                span { "Mailbox Access Type" }
                @if is_new {
                    select name="access_type" data-access-type {
                        @for each in AccessType::ALL { option value=(each.as_str()) selected[access == Some(*each)] { (page::access_type_label(*each)) } }
                    }
                } @else {
                    input readonly aria-readonly="true" value=(page::label_of(&access_type, page::access_type_label));
                    input type="hidden" name="access_type" value=(access_type) data-access-type;
                }
            }
            label.field.check { input type="checkbox" name="sync_enabled" value="true" checked[sync_enabled]; span { "Synchronization enabled" } }
            div data-for-access=(exchange.join(" ")) hidden[!access.is_some_and(AccessType::is_exchange)] {
                label.field { span { "EWS URL" } input name="ews_url" type="url" placeholder="https://mail.example.com/EWS/Exchange.asmx" value=(value("ews_url")); }
            }
            div data-for-access=(AccessType::ExchangeImpersonation.as_str()) hidden[access != Some(AccessType::ExchangeImpersonation)] {
                label.field { span { "Impersonation account login" } input name="impersonation_account" autocomplete="off" value=(value("impersonation_account")); }
                label.field {
                    span { "Impersonation account password" }
                    input name="impersonation_password" type="password" autocomplete="new-password"
                        placeholder=(if organization["impersonation_password_set"].as_bool().unwrap_or(false) { "stored (type to replace)" } else { "" });
                }
            }
            div.buttons {
                button.primary type="submit" { "Save" }
                a.button href="/panel/organizations" { "Cancel" }
            }
        }
    }
}

async fn new_form(session: Session) -> Response {
    page::shell(
        &session,
        Section::Organizations,
        "New organization",
        None,
        form(&session, &Value::Null, None, None),
    )
}

/// The API's body for a new organization, from the form: the fields of its
/// access type only.
fn new_body(fields: &Fields) -> Value {
    let access_type = fields.get("access_type").unwrap_or_default();
    let access = access_type.parse::<AccessType>().ok();
    let mut body = Map::new();
    body.insert("name".into(), json!(fields.get("name").unwrap_or_default()));
    body.insert(
        "external_id".into(),
        json!(fields.get("external_id").unwrap_or_default()),
    );
    body.insert("access_type".into(), json!(access_type));
    body.insert("sync_enabled".into(), json!(fields.get("sync_enabled").is_some()));
    if access.is_some_and(AccessType::is_exchange)
        && let Some(url) = fields.filled("ews_url")
    {
        body.insert("ews_url".into(), json!(url));
    }
    if access == Some(AccessType::ExchangeImpersonation) {
        for name in ["impersonation_account", "impersonation_password"] {
            if let Some(value) = fields.filled(name) {
                body.insert(name.into(), json!(value));
            }
        }
    }
    Value::Object(body)
}

async fn create(State(panel): State<Panel>, Form { session, fields }: Form) -> Result<Response, PanelError> {
    match panel
        .v1
        .send(&session, Method::POST, "/v1/organizations", &new_body(&fields))
        .await
    {
        Ok(created) => {
            Ok(Redirect::to(&format!("/panel/organizations/{}?done=created", text(&created["id"]))).into_response())
        }
        Err(error) if error.is_shown() => {
            let mut response = page::shell(
                &session,
                Section::Organizations,
                "New organization",
                None,
                form(&session, &Value::Null, Some(&fields), Some(&error.message())),
            );
            *response.status_mut() = error.status();
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

/// The tabs of an organization.
fn tabs(id: &str, current: &str) -> Markup {
    page::tabs(
        "Organization",
        &format!("/panel/organizations/{id}"),
        &[
            ("", "Details"),
            ("/users", "Users"),
            ("/statistics", "Statistics"),
            ("/activity", "Activity"),
            ("/email-configuration", "Email configuration"),
        ],
        current,
    )
}

async fn organization(panel: &Panel, session: &Session, id: Uuid) -> Result<Value, PanelError> {
    panel.v1.get(session, &format!("/v1/organizations/{id}")).await
}

fn title(organization: &Value) -> String {
    format!("Organization {}", text(&organization["name"]))
}

async fn edit_form(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let organization = organization(&panel, &session, id).await?;
    let content = html! {
        (tabs(&id.to_string(), "Details"))
        (form(&session, &organization, None, None))
        @if session.is_admin() && !organization["is_default"].as_bool().unwrap_or(false) {
            form.inline method="post" action={ "/panel/organizations/" (id) "/delete" } data-confirm={ "Delete the organization " (text(&organization["name"])) " and all its users?" } {
                (page::csrf_field(&session))
                button.danger type="submit" { "Delete organization" }
            }
        }
    };
    Ok(page::shell(
        &session,
        Section::Organizations,
        &title(&organization),
        notice(&query),
        content,
    ))
}

async fn save(State(panel): State<Panel>, Id(id): Id, Form { session, fields }: Form) -> Result<Response, PanelError> {
    let current = organization(&panel, &session, id).await?;
    // Only what changed: the API then writes exactly the activities of the
    // changes (a sync switch) and nothing else.
    let mut change = Map::new();
    let name = fields.get("name").unwrap_or_default();
    if name != text(&current["name"]) {
        change.insert("name".into(), json!(name));
    }
    let sync_enabled = fields.get("sync_enabled").is_some();
    if Some(sync_enabled) != current["sync_enabled"].as_bool() {
        change.insert("sync_enabled".into(), json!(sync_enabled));
    }
    let access = text(&current["access_type"]).parse::<AccessType>().ok();
    if access.is_some_and(AccessType::is_exchange) {
        let url = fields.get("ews_url").map(str::trim).unwrap_or_default();
        if url != text(&current["ews_url"]) {
            change.insert("ews_url".into(), if url.is_empty() { Value::Null } else { json!(url) });
        }
    }
    if access == Some(AccessType::ExchangeImpersonation) {
        let account = fields.get("impersonation_account").map(str::trim).unwrap_or_default();
        if account != text(&current["impersonation_account"]) {
            change.insert("impersonation_account".into(), json!(account));
        }
        if let Some(password) = fields.filled("impersonation_password") {
            change.insert("impersonation_password".into(), json!(password));
        }
    }
    match panel
        .v1
        .apply(&session, Method::PATCH, &format!("/v1/organizations/{id}"), change)
        .await
    {
        Ok(()) => Ok(Redirect::to(&format!("/panel/organizations/{id}?done=saved")).into_response()),
        Err(error) if error.is_shown() => {
            let content = html! {
                (tabs(&id.to_string(), "Details"))
                (form(&session, &current, Some(&fields), Some(&error.message())))
            };
            let mut response = page::shell(&session, Section::Organizations, &title(&current), None, content);
            *response.status_mut() = error.status();
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

async fn delete(State(panel): State<Panel>, Id(id): Id, Form { session, .. }: Form) -> Result<Response, PanelError> {
    let answer = panel
        .v1
        .call(&session, Method::DELETE, &format!("/v1/organizations/{id}"), None)
        .await?;
    if answer.status.is_success() {
        return Ok(Redirect::to("/panel/organizations?done=deleted").into_response());
    }
    let error = answer.error();
    if error.status() == StatusCode::NOT_FOUND {
        return Err(error);
    }
    // The refusal (initialized mailboxes, the default organization) on the
    // organization's page.
    let current = organization(&panel, &session, id).await?;
    let content = html! {
        (tabs(&id.to_string(), "Details"))
        (form(&session, &current, None, Some(&format!("Not deleted: {}", error.message()))))
    };
    let mut response = page::shell(&session, Section::Organizations, &title(&current), None, content);
    *response.status_mut() = error.status();
    Ok(response)
}

async fn users_tab(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let current = organization(&panel, &session, id).await?;
    let list = users::list(&panel, &session, &query, Some(id)).await?;
    let content = html! { (tabs(&id.to_string(), "Users")) (list) };
    Ok(page::shell(
        &session,
        Section::Organizations,
        &title(&current),
        None,
        content,
    ))
}

const STATISTICS: [Column; 11] = [
    sortable("user", "User", "name"),
    sortable("start", "Synchronization Start Date", "last_session_at"),
    sortable("status", "Status", "last_session_status"),
    plain("changes", "Changes"),
    sortable("issues", "Issues", "issue_count"),
    plain("category", "E Category"),
    plain("source", "E Source"),
    plain("message", "Message"),
    hidden(plain("session", "Session ID")),
    hidden(plain("email", "Email")),
    plain("actions", "Actions"),
];

async fn statistics_tab(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let current = organization(&panel, &session, id).await?;
    let api_query = query.only(&["status", "q", "sort", "order", "cursor", "page_size"]);
    let listed = panel
        .v1
        .get(
            &session,
            &format!("/v1/organizations/{id}/statistics{}", api_query.to_suffix()),
        )
        .await?;
    let base = format!("/panel/organizations/{id}/statistics");
    let content = html! {
        (tabs(&id.to_string(), "Statistics"))
        div.toolbar {
            form.filters method="get" action=(base) {
                (page::text_input("q", "User", query.get("q"), "search"))
                (page::select("status", "Status", &page::enum_choices(SessionStatus::ALL, session_status_label), query.get("status"), Some("Any")))
                button type="submit" { "Filter" }
            }
            (page::column_menu("statistics", &base, &STATISTICS))
        }
        div.scroll {
            table.list data-table="statistics" {
                thead { (page::header_row(&base, &query, &STATISTICS, None)) }
                tbody {
                    @for row in listed["items"].as_array().into_iter().flatten() {
                        @let session_id = text(&row["last_session_id"]);
                        tr {
                            td data-col="user" { a href={ "/panel/users/" (text(&row["user_id"])) } { (text(&row["name"])) } }
                            td data-col="start" { (when(&row["last_session_at"])) }
                            td data-col="status" { (text(&row["last_session_status"])) }
                            td data-col="changes" { (row["items_to_crm"].as_i64().unwrap_or(0) + row["items_to_mailbox"].as_i64().unwrap_or(0)) }
                            td data-col="issues" { (row["issue_count"].as_i64().unwrap_or(0)) }
                            td data-col="category" { (text(&row["error_category"])) }
                            td data-col="source" { (text(&row["error_source"])) }
                            td data-col="message" { (text(&row["error_message"])) }
                            td data-col="session" { code { (session_id) } }
                            td data-col="email" { (text(&row["email"])) }
                            td data-col="actions" {
                                @if !session_id.is_empty() {
                                    a href={ "/panel/sessions/" (session_id) } { "Open job" }
                                    " "
                                    a href={ "/panel/sessions/" (session_id) "/log.zip" } download { "Download log" }
                                }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(&base, &query, &listed))
    };
    Ok(page::shell(
        &session,
        Section::Organizations,
        &title(&current),
        None,
        content,
    ))
}

/// The readable name of a session's status.
pub fn session_status_label(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Running => "Running",
        SessionStatus::Succeeded => "Succeeded",
        SessionStatus::SucceededWithIssues => "Succeeded with issues",
        SessionStatus::Failed => "Failed",
        SessionStatus::Skipped => "Skipped",
        SessionStatus::Abandoned => "Abandoned",
    }
}

async fn activity_tab(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let current = organization(&panel, &session, id).await?;
    let activity = users::activity(
        &panel,
        &session,
        &format!("/panel/organizations/{id}/activity"),
        &format!("/v1/organizations/{id}/activities"),
        &query,
    )
    .await?;
    let content = html! { (tabs(&id.to_string(), "Activity")) (activity) };
    Ok(page::shell(
        &session,
        Section::Organizations,
        &title(&current),
        None,
        content,
    ))
}

async fn activity_csv(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let query = query.only(&["rows", "kind", "since", "until"]);
    download(
        &panel,
        &session,
        &format!("/v1/organizations/{id}/activities.csv{}", query.to_suffix()),
    )
    .await
}

async fn email_tab(session: Session, State(panel): State<Panel>, Id(id): Id) -> Result<Response, PanelError> {
    let current = organization(&panel, &session, id).await?;
    let access_type = text(&current["access_type"]);
    let content = html! {
        (tabs(&id.to_string(), "Email configuration"))
        dl.facts {
            dt { "Mailbox Access Type" } dd { (page::label_of(access_type, page::access_type_label)) }
            @match access_type.parse::<AccessType>().ok() {
                Some(AccessType::ExchangeDirect) => {
                    dt { "EWS URL" } dd { (text(&current["ews_url"])) }
                    dd.hint { "Users log on to their own Exchange mailboxes; each user's account name and password are set on their Connectivity tab." }
                }
                Some(AccessType::ExchangeImpersonation) => {
                    dt { "EWS URL" } dd { (text(&current["ews_url"])) }
                    dt { "Impersonation account" } dd { (text(&current["impersonation_account"])) }
                    dt { "Impersonation password" } dd { (if current["impersonation_password_set"].as_bool().unwrap_or(false) { "stored" } else { "not set" }) }
                    dd.hint { "One service account reaches every user's mailbox; only the SMTP address is per user." }
                }
                Some(AccessType::Office365) => { dd.hint { "Each user authorizes Office 365 (OAuth); the tokens are never readable." } }
                Some(AccessType::Gmail) | None => { dd.hint { "Each user authorizes Gmail (OAuth); the tokens are never readable." } }
            }
        }
        p { a.button href={ "/panel/organizations/" (id) } { "Edit the organization's access settings" } }
    };
    Ok(page::shell(
        &session,
        Section::Organizations,
        &title(&current),
        None,
        content,
    ))
}
