//! The Users tab: the list (M6) with server-side sorting, filtering, search
//! and paging, row checkboxes and the actions menu for one user or the
//! selection (M8), a new user (M7), and the activity list both tabs share
//! (M11).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use syncfleet_common::domain::{EffectiveSyncStatus, SyncStatus};
use uuid::Uuid;

use super::{
    Fields, Form, Panel,
    error::PanelError,
    organizations::notice,
    page::{self, Column, Query, Section, hidden, plain, sortable, text, when},
    session::{self, Session},
};

pub fn routes() -> Router<Panel> {
    Router::new()
        .route("/panel/users", get(list_page).post(create))
        .route("/panel/users/new", get(new_form))
        .route("/panel/actions/{action}", post(act))
}

/// Every action of M8, by the API's name, with its label and whether it asks
/// for confirmation first.
pub const ACTIONS: [(&str, &str, bool); 16] = [
    ("force-sync", "Force synchronization", false),
    ("enable-sync", "Enable synchronization", false),
    ("disable-sync", "Disable synchronization", true),
    ("reset-mailbox", "Reset mailbox", true),
    ("reinitialize-mailbox", "Re-initialize mailbox", true),
    ("check-settings", "Check settings", false),
    ("check-crm", "Check CRM connectivity", false),
    ("check-mailbox", "Check mailbox connectivity", false),
    ("install-sidebar", "Install sidebar", false),
    ("remove-sidebar", "Remove sidebar", true),
    ("check-sidebar", "Check add-in status", false),
    ("reset-customization", "Reset sidebar customization", true),
    ("change-organization", "Change organization", true),
    ("change-plan", "Change plan", true),
    ("delete", "Delete", true),
    ("force-delete", "Force delete", true),
];

const COLUMNS: [Column; 14] = [
    plain("actions", "Actions"),
    sortable("name", "Name", "name"),
    sortable("email", "Email", "email"),
    sortable("notification_email", "E-Mail for Notifications", "notification_email"),
    sortable("organization", "Organization", "organization"),
    plain("plan", "Plan"),
    plain("account_logon", "Account Logon"),
    sortable("sync", "Synchronization Status", "sync_status"),
    hidden(sortable("effective", "Effective Status", "effective_sync_status")),
    sortable("mailbox", "Mailbox Status", "mailbox_status"),
    sortable("last_session", "Last Session", "last_session_at"),
    sortable("created", "Created On", "created_at"),
    hidden(plain("error", "Disabled Due To An Error")),
    hidden(sortable("updated", "Updated On", "updated_at")),
];

/// The readable name of an effective synchronization status.
pub fn effective_status_label(status: EffectiveSyncStatus) -> &'static str {
    match status {
        EffectiveSyncStatus::Enabled => "Enabled",
        EffectiveSyncStatus::OrganizationDisabled => "Organization disabled",
        EffectiveSyncStatus::Disabled => "Disabled",
        EffectiveSyncStatus::Paused => "Paused",
        EffectiveSyncStatus::DisabledAuthError => "Disabled: authorization error",
        EffectiveSyncStatus::DisabledThrottlingError => "Disabled: throttling error",
        EffectiveSyncStatus::DisabledOtherError => "Disabled: other error",
    }
}

/// The readable name of a user's own synchronization status (as it shows
/// in an enabled organization).
pub fn sync_status_label(status: SyncStatus) -> &'static str {
    effective_status_label(EffectiveSyncStatus::of(status, true))
}

/// Organizations (id, name) the admin may see, for names and pickers.
pub async fn organizations(panel: &Panel, session: &Session) -> Result<Vec<(String, String)>, PanelError> {
    let listed = panel.v1.get(session, "/v1/organizations?page_size=500").await?;
    Ok(listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|organization| {
            (
                text(&organization["id"]).to_owned(),
                text(&organization["name"]).to_owned(),
            )
        })
        .collect())
}

/// The plans (id, name).
pub async fn plans(panel: &Panel, session: &Session) -> Result<Vec<(String, String)>, PanelError> {
    let listed = panel.v1.get(session, "/v1/plans").await?;
    Ok(listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|plan| (text(&plan["id"]).to_owned(), text(&plan["name"]).to_owned()))
        .collect())
}

fn name_of<'a>(pairs: &'a [(String, String)], id: &str) -> &'a str {
    pairs
        .iter()
        .find(|(key, _)| key == id)
        .map_or("", |(_, name)| name.as_str())
}

/// The choices of Change organization and Change plan: the organizations
/// and the plans.
pub type Choices<'a> = (&'a [(String, String)], &'a [(String, String)]);

/// The actions menu: one user's (`user` given) or the selection's. Without
/// `choices` (a row of a list: fifty rows of every organization would weigh
/// the page down), Change organization and Change plan open the user's
/// details, where both are fields.
pub fn actions_menu(user: Option<(&str, &str)>, choices: Option<Choices<'_>>) -> Markup {
    let (summary, label) = match user {
        Some((_, name)) => ("⋮", format!("Actions for {name}")),
        None => (
            "⋮ Actions for the selected users",
            "Actions for the selected users".to_owned(),
        ),
    };
    html! {
        details.actions data-user=[user.map(|(id, _)| id)] data-name=[user.map(|(_, name)| name)] {
            summary aria-label=(label) { (summary) }
            div.menu role="group" {
                @for (action, label, confirm) in ACTIONS {
                    @match (action, choices, user) {
                        ("change-organization" | "change-plan", None, Some((id, _))) => {
                            a href={ "/panel/users/" (id) } { (label) "…" }
                        }
                        ("change-organization", Some((organizations, _)), _) => {
                            div.param {
                                label { span.sr { (label) } select data-param="organization_id" aria-label="New organization" {
                                    @for (id, name) in organizations.iter() { option value=(id) { (name) } }
                                } }
                                button type="button" data-action=(action) data-confirm=[confirm.then_some(label)] { (label) }
                            }
                        }
                        ("change-plan", Some((_, plans)), _) => {
                            div.param {
                                label { span.sr { (label) } select data-param="plan_id" aria-label="New plan" {
                                    option value="" { "No plan" }
                                    @for (id, name) in plans.iter() { option value=(id) { (name) } }
                                } }
                                button type="button" data-action=(action) data-confirm=[confirm.then_some(label)] { (label) }
                            }
                        }
                        _ => { button type="button" data-action=(action) data-confirm=[confirm.then_some(label)] { (label) } }
                    }
                }
            }
        }
    }
}

/// The user list, of every organization the admin sees or of one.
pub async fn list(
    panel: &Panel,
    session: &Session,
    query: &Query,
    organization: Option<Uuid>,
) -> Result<Markup, PanelError> {
    let filters = [
        "sync_status",
        "effective_sync_status",
        "mailbox_status",
        "plan_id",
        "q",
        "sort",
        "order",
        "cursor",
        "page_size",
    ];
    let (base, path) = match organization {
        Some(id) => (
            format!("/panel/organizations/{id}/users"),
            format!("/v1/organizations/{id}/users"),
        ),
        None => ("/panel/users".to_owned(), "/v1/users".to_owned()),
    };
    let mut keys = filters.to_vec();
    if organization.is_none() {
        keys.push("organization_id");
    }
    let listed = panel
        .v1
        .get(session, &format!("{path}{}", query.only(&keys).to_suffix()))
        .await;
    let (listed, error) = match listed {
        Ok(listed) => (listed, None),
        Err(error) if error.is_shown() => (json!({"items": [], "total": 0}), Some(error.message())),
        Err(error) => return Err(error),
    };
    let organizations = organizations(panel, session).await?;
    let plans = plans(panel, session).await?;
    Ok(html! {
        div.toolbar {
            form.filters method="get" action=(base) {
                (page::text_input("q", "Search name or email", query.get("q"), "search"))
                @if organization.is_none() && organizations.len() > 1 {
                    (page::select("organization_id", "Organization", &organizations, query.get("organization_id"), Some("Any")))
                }
                (page::select("sync_status", "Synchronization Status", &page::enum_choices(SyncStatus::ALL, sync_status_label), query.get("sync_status"), Some("Any")))
                (page::select("effective_sync_status", "Effective Status", &page::enum_choices(EffectiveSyncStatus::ALL, effective_status_label), query.get("effective_sync_status"), Some("Any")))
                (page::select("mailbox_status", "Mailbox Status", &page::choices(&[("initialized", "Initialized"), ("not_initialized", "Not initialized")]), query.get("mailbox_status"), Some("Any")))
                @if !plans.is_empty() { (page::select("plan_id", "Plan", &plans, query.get("plan_id"), Some("Any"))) }
                @for key in ["sort", "order"] { @if let Some(value) = query.get(key) { input type="hidden" name=(key) value=(value); } }
                button type="submit" { "Filter" }
            }
            (page::column_menu("users", &base, &COLUMNS))
            (actions_menu(None, Some((&organizations, &plans))))
            a.button.primary href={ "/panel/users/new" @if let Some(id) = organization { "?organization_id=" (id) } } { "New user" }
        }
        (page::error_banner(error.as_deref()))
        div.scroll {
            table.list data-table="users" {
                thead { (page::header_row(&base, query, &COLUMNS, Some(html! { input type="checkbox" data-select-all aria-label="Select all users on this page"; }))) }
                tbody {
                    @for user in listed["items"].as_array().into_iter().flatten() {
                        @let id = text(&user["id"]);
                        @let name = text(&user["name"]);
                        @let effective = text(&user["effective_sync_status"]);
                        tr class=[(effective != EffectiveSyncStatus::Enabled.as_str()).then_some("off")] data-user=(id) {
                            td.select { input type="checkbox" data-select=(id) data-name=(name) aria-label={ "Select " (name) }; }
                            td data-col="actions" { (actions_menu(Some((id, name)), None)) }
                            td data-col="name" { a href={ "/panel/users/" (id) } { (name) } }
                            td data-col="email" { (text(&user["email"])) }
                            td data-col="notification_email" { (text(&user["notification_email"])) }
                            td data-col="organization" { (name_of(&organizations, text(&user["organization_id"]))) }
                            td data-col="plan" { (name_of(&plans, text(&user["plan_id"]))) }
                            td data-col="account_logon" { (text(&user["account_logon"])) }
                            td data-col="sync" { (page::label_of(text(&user["sync_status"]), sync_status_label)) }
                            td data-col="effective" { (page::label_of(effective, effective_status_label)) }
                            td data-col="mailbox" { (if text(&user["mailbox_status"]) == "initialized" { "Initialized" } else { "Not initialized" }) }
                            td data-col="last_session" { (when(&user["last_session"]["at"])) " " (text(&user["last_session"]["status"])) }
                            td data-col="created" { (when(&user["created_at"])) }
                            td data-col="error" { (text(&user["disabled_reason"])) }
                            td data-col="updated" { (when(&user["updated_at"])) }
                        }
                    }
                }
            }
        }
        (page::pager(&base, query, &listed))
    })
}

async fn list_page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let content = list(&panel, &session, &query, None).await?;
    Ok(page::shell(&session, Section::Users, "Users", notice(&query), content))
}

fn user_form(
    session: &Session,
    organizations: &[(String, String)],
    fields: Option<&Fields>,
    preset_organization: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let value = |name: &str| fields.and_then(|fields| fields.get(name)).map(str::to_owned);
    let organization = value("organization_id").or_else(|| preset_organization.map(str::to_owned));
    html! {
        (page::error_banner(error))
        form.card method="post" action="/panel/users" {
            (page::csrf_field(session))
            label.field { span { "Name" } input name="name" required value=[value("name")]; }
            label.field { span { "Email (SMTP address)" } input name="email" type="email" required value=[value("email")]; }
            label.field { span { "E-Mail for Notifications" } input name="notification_email" type="email" value=[value("notification_email")]; }
            (page::select("organization_id", "Organization", organizations, organization.as_deref(), session.is_admin().then_some("The default organization")))
            label.field { span { "Description" } textarea name="description" { (value("description").unwrap_or_default()) } }
            p.hint { "New users start with synchronization disabled until they are configured." }
            div.buttons { button.primary type="submit" { "Save" } a.button href="/panel/users" { "Cancel" } }
        }
    }
}

async fn new_form(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let organizations = organizations(&panel, &session).await?;
    let form = user_form(&session, &organizations, None, query.get("organization_id"), None);
    Ok(page::shell(&session, Section::Users, "New user", None, form))
}

async fn create(State(panel): State<Panel>, Form { session, fields }: Form) -> Result<Response, PanelError> {
    let mut new = Map::new();
    new.insert("name".into(), json!(fields.get("name").unwrap_or_default()));
    new.insert("email".into(), json!(fields.get("email").unwrap_or_default().trim()));
    for name in ["notification_email", "organization_id"] {
        if let Some(value) = fields.filled(name) {
            new.insert(name.into(), json!(value));
        }
    }
    if let Some(description) = fields.get("description") {
        new.insert("description".into(), json!(description));
    }
    match panel
        .v1
        .send(&session, Method::POST, "/v1/users", &Value::Object(new))
        .await
    {
        Ok(created) => Ok(Redirect::to(&format!("/panel/users/{}?done=created", text(&created["id"]))).into_response()),
        Err(error) if error.is_shown() => {
            let organizations = organizations(&panel, &session).await?;
            let form = user_form(&session, &organizations, Some(&fields), None, Some(&error.message()));
            let mut response = page::shell(&session, Section::Users, "New user", None, form);
            *response.status_mut() = error.status();
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

/// One action on one user or many: the API's bulk route answers a result
/// per user, which the page shows as a notification.
async fn act(
    session: Session,
    State(panel): State<Panel>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PanelError> {
    // Whatever the body's type claims, an action carries the CSRF header.
    session::check_csrf(&session, &headers, None)?;
    let Some((action, label, _)) = ACTIONS.iter().find(|(name, _, _)| *name == action) else {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no action {action:?}")})),
        )
            .into_response());
    };
    let request: Value = serde_json::from_slice(&body)
        .map_err(|error| PanelError::BadForm(format!("the action's body is not JSON: {error}")))?;
    let mut bulk = Map::new();
    bulk.insert("user_ids".into(), request["user_ids"].clone());
    match *action {
        "change-organization" => {
            bulk.insert("organization_id".into(), request["organization_id"].clone());
        }
        "change-plan" => {
            let plan = request["plan_id"].as_str().filter(|plan| !plan.is_empty());
            bulk.insert("plan_id".into(), plan.map_or(Value::Null, |plan| json!(plan)));
        }
        _ => {}
    }
    let answer = panel
        .v1
        .call(
            &session,
            Method::POST,
            &format!("/v1/users/actions/{action}"),
            Some(&Value::Object(bulk)),
        )
        .await?;
    let status = answer.status;
    let body = match answer.json() {
        Ok(results) => json!({"action": label, "results": results}),
        Err(error) => json!({"action": label, "error": error.message()}),
    };
    Ok((if status.is_success() { StatusCode::OK } else { status }, Json(body)).into_response())
}

/// The activity list (M11) of a user or an organization: the rows box (0 to
/// 2000, 0 all, default 60) with Refresh, CSV export, copy of the details.
pub async fn activity(
    panel: &Panel,
    session: &Session,
    base: &str,
    path: &str,
    query: &Query,
) -> Result<Markup, PanelError> {
    let rows = query.get("rows").unwrap_or("60");
    let listed = panel
        .v1
        .get(
            session,
            &format!("{path}{}", query.only(&["rows", "kind", "since", "until"]).to_suffix()),
        )
        .await;
    let (listed, error) = match listed {
        Ok(listed) => (listed, None),
        Err(error) if error.is_shown() => (json!({"items": []}), Some(error.message())),
        Err(error) => return Err(error),
    };
    let columns = [
        plain("date", "Date"),
        plain("by", "Changed By"),
        plain("type", "Type"),
        plain("details", "Details"),
        hidden(plain("user", "User ID")),
        plain("actions", "Actions"),
    ];
    Ok(html! {
        div.toolbar {
            form.filters method="get" action=(base) {
                label.field { span { "Rows to show (0 = all)" } input type="number" name="rows" min="0" max="2000" value=(rows); }
                button.primary type="submit" { "Refresh" }
            }
            a.button href={ (base) ".csv" (query.only(&["rows", "kind", "since", "until"]).to_suffix()) } data-export download { "Export to CSV" }
            (page::column_menu("activity", base, &columns))
        }
        (page::error_banner(error.as_deref()))
        div.scroll {
            table.list data-table="activity" {
                thead { tr { @for column in &columns { th scope="col" data-col=(column.key) data-default-hidden=[column.hidden.then_some("true")] { (column.label) } } } }
                tbody {
                    @for (index, item) in listed["items"].as_array().into_iter().flatten().enumerate() {
                        tr {
                            td data-col="date" { (when(&item["occurred_at"])) }
                            td data-col="by" { (text(&item["actor"])) }
                            td data-col="type" { (text(&item["kind"])) }
                            td data-col="details" {
                                span id={ "details-" (index) } { (text(&item["details"])) }
                                " " (page::copy_button(&format!("details-{index}"), "Copy"))
                            }
                            td data-col="user" { (text(&item["user_id"])) }
                            td data-col="actions" {
                                @if let Some(log) = item["log"].as_str() {
                                    pre.log hidden id={ "log-" (index) } { (log) }
                                    button type="button" data-download-text={ "log-" (index) } data-filename={ "activity-" (text(&item["id"])) ".log" } { "Download log" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if listed["more"].as_bool().unwrap_or(false) { p.hint { "More rows exist: raise the number of rows to show (0 shows all)." } }
    })
}
