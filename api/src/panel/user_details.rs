//! A user's pages: Details (editable fields, the read-only Sync ID with a
//! copy button, the actions menu), Connectivity (M9, by access type, secrets
//! write-only), Statistics with log download (M10), Sync Issues, Activity
//! (M11) and Customization (M13, M16).

use axum::{
    Router,
    extract::{Path, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use syncfleet_common::domain::{AccessType, EffectiveSyncStatus, SessionStatus, Trigger, UserRole};
use uuid::Uuid;

use super::{
    Fields, Form, Id, Panel, download,
    error::PanelError,
    organizations::{notice, parse_id, session_status_label},
    page::{self, Column, Query, Section, hidden, plain, sortable, text, when},
    session::Session,
    users::{self, effective_status_label, sync_status_label},
};

pub fn routes() -> Router<Panel> {
    Router::new()
        .route("/panel/users/{id}", get(details).post(save_details))
        .route(
            "/panel/users/{id}/connectivity",
            get(connectivity).post(save_connectivity),
        )
        .route("/panel/users/{id}/credentials/{kind}/delete", post(forget_credential))
        .route("/panel/users/{id}/statistics", get(statistics))
        .route("/panel/users/{id}/issues", get(issues))
        .route("/panel/users/{id}/activity", get(activity))
        .route("/panel/users/{id}/activity.csv", get(activity_csv))
        .route(
            "/panel/users/{id}/customization",
            get(customization).post(save_customization),
        )
        .route("/panel/users/{id}/customization.json", get(export_customization))
        .route("/panel/sessions/{id}", get(session_page))
        .route("/panel/sessions/{id}/log.zip", get(session_log))
}

fn tabs(id: Uuid, current: &str) -> Markup {
    page::tabs(
        "User",
        &format!("/panel/users/{id}"),
        &[
            ("", "Details"),
            ("/connectivity", "Connectivity"),
            ("/statistics", "Statistics"),
            ("/issues", "Sync Issues"),
            ("/activity", "Activity"),
            ("/customization", "Customization"),
        ],
        current,
    )
}

async fn user(panel: &Panel, session: &Session, id: Uuid) -> Result<Value, PanelError> {
    panel.v1.get(session, &format!("/v1/users/{id}")).await
}

fn title(user: &Value) -> String {
    format!("User {}", text(&user["name"]))
}

fn shell(
    session: &Session,
    user: &Value,
    id: Uuid,
    tab: &str,
    notice: Option<&str>,
    status: StatusCode,
    content: Markup,
) -> Response {
    let content = html! { (tabs(id, tab)) (content) };
    let mut response = page::shell(session, Section::Users, &title(user), notice, content);
    *response.status_mut() = status;
    response
}

/// The readable name of a role on the details form (an organization's
/// admin is the add-in's "Admin").
fn role_label(role: UserRole) -> &'static str {
    match role {
        UserRole::User => "User",
        UserRole::OrgAdmin => "Admin",
    }
}

fn details_form(
    session: &Session,
    user: &Value,
    organizations: &[(String, String)],
    plans: &[(String, String)],
    fields: Option<&Fields>,
    error: Option<&str>,
) -> Markup {
    let id = text(&user["id"]);
    let value = |name: &str| -> String {
        fields
            .and_then(|fields| fields.get(name))
            .map(str::to_owned)
            .unwrap_or_else(|| text(&user[name]).to_owned())
    };
    let effective = text(&user["effective_sync_status"]);
    html! {
        (page::error_banner(error))
        div.split {
            form.card method="post" action={ "/panel/users/" (id) } {
                (page::csrf_field(session))
                label.field {
                    span { "User ID (Sync ID)" }
                    span.copyrow { input #sync-id readonly aria-readonly="true" value=(id); (page::copy_button("sync-id", "Copy")) }
                }
                label.field { span { "Name" } input name="name" required value=(value("name")); }
                label.field { span { "Email (SMTP address)" } input name="email" type="email" required value=(value("email")); }
                label.field { span { "E-Mail for Notifications" } input name="notification_email" type="email" value=(value("notification_email")); }
                label.field { span { "Account Logon (Exchange account name)" } input name="account_logon" value=(value("account_logon")); }
                (page::select("organization_id", "Organization", organizations, Some(&value("organization_id")), None))
                (page::select("plan_id", "Plan", plans, Some(&value("plan_id")), Some("No plan")))
                label.field { span { "Description" } textarea name="description" { (value("description")) } }
                div.buttons { button.primary type="submit" { "Save" } }
            }
            div.card {
                dl.facts {
                    dt { "Synchronization Status" } dd { (page::label_of(text(&user["sync_status"]), sync_status_label)) }
                    dt { "Effective Synchronization Status" } dd class=[(effective != EffectiveSyncStatus::Enabled.as_str()).then_some("off")] { (page::label_of(effective, effective_status_label)) }
                    @if let Some(reason) = user["disabled_reason"].as_str() { dt { "Disabled Due To" } dd { (reason) } }
                    dt { "Mailbox Status" } dd { (if text(&user["mailbox_status"]) == "initialized" { "Initialized" } else { "Not initialized" }) }
                    dt { "Last synchronization session" }
                    dd {
                        @if let Some(session_id) = user["last_session"]["id"].as_str() {
                            a href={ "/panel/sessions/" (session_id) } { (when(&user["last_session"]["at"])) " " (text(&user["last_session"]["status"])) }
                        } @else { "none yet" }
                    }
                    dt { "Next synchronization" } dd { (when(&user["next_sync_at"])) }
                    dt { "Created On" } dd { (when(&user["created_at"])) }
                    dt { "Updated On" } dd { (when(&user["updated_at"])) }
                }
                // Its own form: the details form's Save stays where it was.
                form.role method="post" action={ "/panel/users/" (id) } {
                    (page::csrf_field(session))
                    (page::select("role", "Role (an Admin may push customizations to colleagues)", &page::enum_choices(UserRole::ALL, role_label), Some(&value("role")), None))
                    div.buttons { button type="submit" { "Save role" } }
                }
                (users::actions_menu(Some((id, text(&user["name"]))), Some((organizations, plans))))
            }
        }
    }
}

async fn details(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let organizations = users::organizations(&panel, &session).await?;
    let plans = users::plans(&panel, &session).await?;
    let content = details_form(&session, &user, &organizations, &plans, None, None);
    Ok(shell(
        &session,
        &user,
        id,
        "Details",
        notice(&query),
        StatusCode::OK,
        content,
    ))
}

async fn save_details(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    let current = user(&panel, &session, id).await?;
    // Only what changed, so the API writes the activities of real changes.
    let mut change = Map::new();
    for name in [
        "name",
        "email",
        "notification_email",
        "account_logon",
        "description",
        "organization_id",
        "plan_id",
        "role",
    ] {
        // The role has a form of its own: a field not sent is not changed.
        let Some(given) = fields.get(name).map(str::trim) else {
            continue;
        };
        if given != text(&current[name]) {
            let nullable = matches!(name, "notification_email" | "account_logon" | "plan_id");
            let value = if given.is_empty() && nullable {
                Value::Null
            } else {
                json!(given)
            };
            change.insert(name.into(), value);
        }
    }
    match panel
        .v1
        .apply(&session, Method::PATCH, &format!("/v1/users/{id}"), change)
        .await
    {
        Ok(()) => Ok(Redirect::to(&format!("/panel/users/{id}?done=saved")).into_response()),
        Err(error) if error.is_shown() => {
            let organizations = users::organizations(&panel, &session).await?;
            let plans = users::plans(&panel, &session).await?;
            let content = details_form(
                &session,
                &current,
                &organizations,
                &plans,
                Some(&fields),
                Some(&error.message()),
            );
            Ok(shell(&session, &current, id, "Details", None, error.status(), content))
        }
        Err(error) => Err(error),
    }
}

fn connectivity_form(
    session: &Session,
    id: Uuid,
    configuration: &Value,
    fields: Option<&Fields>,
    error: Option<&str>,
) -> Markup {
    let access_type = text(&configuration["access_type"]);
    let access = access_type.parse::<AccessType>().ok();
    let value = |name: &str| -> String {
        fields
            .and_then(|fields| fields.get(name))
            .map(str::to_owned)
            .unwrap_or_else(|| text(&configuration[name]).to_owned())
    };
    let stored = |flag: &str| configuration[flag].as_bool().unwrap_or(false);
    let forget = |kind: &str, label: &str| {
        html! {
            form.inline method="post" action={ "/panel/users/" (id) "/credentials/" (kind) "/delete" } data-confirm={ (label) "?" } {
                (page::csrf_field(session))
                button.danger type="submit" { (label) }
            }
        }
    };
    html! {
        (page::error_banner(error))
        div.split {
            form.card method="post" action={ "/panel/users/" (id) "/connectivity" } {
                (page::csrf_field(session))
                p { "Mailbox Access Type: " strong { (page::label_of(access_type, page::access_type_label)) } " (set by the organization)" }
                label.field { span { "SMTP email address" } input name="email" type="email" value=(value("email")); }
                @if access == Some(AccessType::ExchangeDirect) {
                    label.field { span { "Exchange account name" } input name="account_logon" value=(value("account_logon")); }
                    label.field {
                        span { "Password" }
                        input name="password" type="password" autocomplete="new-password"
                            placeholder=(if stored("mailbox_password_set") { "stored (type to replace)" } else { "not set" });
                    }
                }
                @if access == Some(AccessType::ExchangeImpersonation) {
                    p.hint { "Only the SMTP address is per user; the rest comes from the organization." }
                }
                label.field { span { "Salesforce instance URL" } input name="salesforce_instance_url" type="url" placeholder="https://example.my.salesforce.com" value=(value("salesforce_instance_url")); }
                div.buttons { button.primary type="submit" { "Save" } }
            }
            div.card {
                h2 { "Stored credentials" }
                p.hint { "Secrets are write-only: they are never shown." }
                dl.facts {
                    dt { "Mailbox password" } dd { (if stored("mailbox_password_set") { "stored" } else { "none" }) }
                    dt { "Mailbox authorization (OAuth)" } dd { (if stored("mailbox_authorized") { "stored" } else { "none" }) }
                    dt { "Salesforce authorization" } dd { (if stored("crm_authorized") { "stored" } else { "none" }) }
                }
                @if stored("mailbox_password_set") { (forget("mailbox_password", "Forget the mailbox password")) }
                @if stored("mailbox_authorized") { (forget("mailbox_refresh_token", "Delete the stored mailbox refresh token")) }
                @if stored("crm_authorized") { (forget("crm_refresh_token", "Delete the stored Salesforce refresh token")) }
            }
        }
    }
}

async fn connectivity(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let configuration = panel
        .v1
        .get(&session, &format!("/v1/users/{id}/email-configuration"))
        .await?;
    let content = connectivity_form(&session, id, &configuration, None, None);
    Ok(shell(
        &session,
        &user,
        id,
        "Connectivity",
        notice(&query),
        StatusCode::OK,
        content,
    ))
}

async fn save_connectivity(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let path = format!("/v1/users/{id}/email-configuration");
    let configuration = panel.v1.get(&session, &path).await?;
    let mut change = Map::new();
    for name in ["email", "account_logon", "salesforce_instance_url"] {
        if let Some(given) = fields.get(name).map(str::trim)
            && given != text(&configuration[name])
        {
            let nullable = name != "email";
            change.insert(
                name.into(),
                if given.is_empty() && nullable {
                    Value::Null
                } else {
                    json!(given)
                },
            );
        }
    }
    if let Some(password) = fields.get("password").filter(|password| !password.is_empty()) {
        change.insert("password".into(), json!(password));
    }
    match panel.v1.apply(&session, Method::PUT, &path, change).await {
        Ok(()) => Ok(Redirect::to(&format!("/panel/users/{id}/connectivity?done=saved")).into_response()),
        Err(error) if error.is_shown() => {
            // The password typed is not put back into the page.
            let content = connectivity_form(&session, id, &configuration, Some(&fields), Some(&error.message()));
            Ok(shell(
                &session,
                &user,
                id,
                "Connectivity",
                None,
                error.status(),
                content,
            ))
        }
        Err(error) => Err(error),
    }
}

async fn forget_credential(
    State(panel): State<Panel>,
    Path((id, kind)): Path<(String, String)>,
    Form { session, .. }: Form,
) -> Result<Response, PanelError> {
    let id = parse_id(&id)?;
    if !matches!(
        kind.as_str(),
        "mailbox_password" | "mailbox_refresh_token" | "crm_refresh_token"
    ) {
        return Err(PanelError::BadForm(format!("kind: no credential {kind:?}")));
    }
    let answer = panel
        .v1
        .call(
            &session,
            Method::DELETE,
            &format!("/v1/users/{id}/credentials/{kind}"),
            None,
        )
        .await?;
    if !answer.status.is_success() {
        return Err(answer.error());
    }
    Ok(Redirect::to(&format!("/panel/users/{id}/connectivity?done=saved")).into_response())
}

/// The readable name of what caused a job.
fn trigger_label(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Cadence => "Cadence",
        Trigger::Force => "Force",
        Trigger::Admin => "Admin",
    }
}

const SESSIONS: [Column; 13] = [
    hidden(plain("job", "Job ID")),
    sortable("start", "Start", "started_at"),
    sortable("end", "End", "ended_at"),
    sortable("status", "Status", "status"),
    sortable("scope", "Scope", "scope"),
    sortable("trigger", "Trigger", "trigger"),
    sortable("changes", "Changes (to CRM / to mailbox)", "items_to_crm"),
    sortable("issues", "Issues", "issue_count"),
    plain("category", "E Category"),
    plain("source", "E Source"),
    plain("message", "Message"),
    hidden(plain("exception", "Exception")),
    plain("actions", "Actions"),
];

async fn statistics(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let api_query = query.only(&[
        "status",
        "trigger",
        "scope",
        "since",
        "until",
        "sort",
        "order",
        "cursor",
        "page_size",
    ]);
    let listed = panel
        .v1
        .get(&session, &format!("/v1/users/{id}/sessions{}", api_query.to_suffix()))
        .await?;
    let base = format!("/panel/users/{id}/statistics");
    let content = html! {
        div.toolbar {
            form.filters method="get" action=(base) {
                (page::select("status", "Status", &page::enum_choices(SessionStatus::ALL, session_status_label), query.get("status"), Some("Any")))
                (page::select("trigger", "Trigger", &page::enum_choices(Trigger::ALL, trigger_label), query.get("trigger"), Some("Any")))
                button type="submit" { "Filter" }
                a.button href=(base) { "Refresh" }
            }
            (page::column_menu("sessions", &base, &SESSIONS))
        }
        div.scroll {
            table.list data-table="sessions" {
                thead { (page::header_row(&base, &query, &SESSIONS, None)) }
                tbody {
                    @for row in listed["items"].as_array().into_iter().flatten() {
                        @let session_id = text(&row["id"]);
                        tr data-session=(session_id) {
                            td data-col="job" { code { (text(&row["job_id"])) } }
                            td data-col="start" { (when(&row["started_at"])) }
                            td data-col="end" { (when(&row["ended_at"])) }
                            td data-col="status" { (text(&row["status"])) }
                            td data-col="scope" { (text(&row["scope"])) }
                            td data-col="trigger" { (text(&row["trigger"])) }
                            td data-col="changes" { (row["items_to_crm"].as_i64().unwrap_or(0)) " / " (row["items_to_mailbox"].as_i64().unwrap_or(0)) }
                            td data-col="issues" { (row["issue_count"].as_i64().unwrap_or(0)) }
                            td data-col="category" { (text(&row["error_category"])) }
                            td data-col="source" { (text(&row["error_source"])) }
                            td data-col="message" { (text(&row["error_message"])) }
                            td data-col="exception" { (text(&row["exception"])) }
                            td data-col="actions" {
                                a href={ "/panel/sessions/" (session_id) } { "Open job" }
                                @if !row["ended_at"].is_null() { " " a href={ "/panel/sessions/" (session_id) "/log.zip" } download { "Download log" } }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(&base, &query, &listed))
    };
    Ok(shell(&session, &user, id, "Statistics", None, StatusCode::OK, content))
}

fn issue_rows(items: &Value) -> Markup {
    html! {
        div.scroll {
            table.list data-table="issues" {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Source" } th scope="col" { "Category" } th scope="col" { "Item" } th scope="col" { "Message" } } }
                tbody {
                    @for issue in items.as_array().into_iter().flatten() {
                        tr {
                            td { (when(&issue["created_at"])) }
                            td { (text(&issue["source"])) }
                            td { (text(&issue["category"])) }
                            td { (text(&issue["item_ref"])) }
                            td { (text(&issue["message"])) }
                        }
                    }
                }
            }
        }
    }
}

async fn issues(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let api_query = query.only(&[
        "session_id",
        "source",
        "category",
        "sort",
        "order",
        "cursor",
        "page_size",
    ]);
    let listed = panel
        .v1
        .get(&session, &format!("/v1/users/{id}/issues{}", api_query.to_suffix()))
        .await?;
    let base = format!("/panel/users/{id}/issues");
    let content = html! {
        p.hint { "The issues of the last synchronization session." }
        (issue_rows(&listed["items"]))
        (page::pager(&base, &query, &listed))
    };
    Ok(shell(&session, &user, id, "Sync Issues", None, StatusCode::OK, content))
}

async fn activity(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let content = users::activity(
        &panel,
        &session,
        &format!("/panel/users/{id}/activity"),
        &format!("/v1/users/{id}/activities"),
        &query,
    )
    .await?;
    Ok(shell(&session, &user, id, "Activity", None, StatusCode::OK, content))
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
        &format!("/v1/users/{id}/activities.csv{}", query.to_suffix()),
    )
    .await
}

fn customization_form(session: &Session, id: Uuid, saved: &Value, document: &str, error: Option<&str>) -> Markup {
    html! {
        (page::error_banner(error))
        p {
            "Version " (saved["version"].as_i64().unwrap_or(0)) ", " (text(&saved["source"]))
            @if !saved["saved_at"].is_null() { ", saved " (when(&saved["saved_at"])) }
        }
        form.card method="post" action={ "/panel/users/" (id) "/customization" } {
            (page::csrf_field(session))
            label.field.wide { span { "Customization document (JSON)" } textarea name="document" rows="16" spellcheck="false" { (document) } }
            div.buttons {
                button.primary type="submit" name="do" value="save" { "Save" }
                button type="submit" name="do" value="reset" data-confirm="Reset this user's customization to the organization's default?" { "Reset to default" }
                a.button href={ "/panel/users/" (id) "/customization.json" } download { "Export to a file" }
            }
        }
    }
}

async fn customization(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
    query: Query,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let saved = panel.v1.get(&session, &format!("/v1/users/{id}/customization")).await?;
    let document = serde_json::to_string_pretty(&saved["document"]).unwrap_or_default();
    let content = customization_form(&session, id, &saved, &document, None);
    Ok(shell(
        &session,
        &user,
        id,
        "Customization",
        notice(&query),
        StatusCode::OK,
        content,
    ))
}

async fn save_customization(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    let user = user(&panel, &session, id).await?;
    let text_given = fields.get("document").unwrap_or_default().to_owned();
    let result = if fields.get("do") == Some("reset") {
        panel
            .v1
            .send(
                &session,
                Method::POST,
                &format!("/v1/users/{id}/actions/reset-customization"),
                &json!({}),
            )
            .await
    } else {
        match serde_json::from_str::<Value>(&text_given) {
            Ok(document) => {
                panel
                    .v1
                    .send(
                        &session,
                        Method::PUT,
                        &format!("/v1/users/{id}/customization"),
                        &json!({ "document": document }),
                    )
                    .await
            }
            Err(error) => Err(PanelError::BadForm(format!("document: not JSON ({error})"))),
        }
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/panel/users/{id}/customization?done=saved")).into_response()),
        Err(error) if error.is_shown() => {
            let saved = panel.v1.get(&session, &format!("/v1/users/{id}/customization")).await?;
            let content = customization_form(&session, id, &saved, &text_given, Some(&error.message()));
            Ok(shell(
                &session,
                &user,
                id,
                "Customization",
                None,
                error.status(),
                content,
            ))
        }
        Err(error) => Err(error),
    }
}

async fn export_customization(
    session: Session,
    State(panel): State<Panel>,
    Id(id): Id,
) -> Result<Response, PanelError> {
    download(&panel, &session, &format!("/v1/users/{id}/customization.json")).await
}

async fn session_page(session: Session, State(panel): State<Panel>, Id(id): Id) -> Result<Response, PanelError> {
    let detail = panel.v1.get(&session, &format!("/v1/sessions/{id}")).await?;
    let run = &detail["session"];
    let content = html! {
        p { a href={ "/panel/users/" (text(&run["user_id"])) "/statistics" } { "Back to the user's statistics" } }
        dl.facts {
            dt { "Session" } dd { code { (id) } }
            dt { "Job" } dd { code { (text(&run["job_id"])) } }
            dt { "Trigger" } dd { (text(&run["trigger"])) }
            dt { "Scope" } dd { (text(&run["scope"])) }
            dt { "Status" } dd { (text(&run["status"])) }
            dt { "Start" } dd { (when(&run["started_at"])) }
            dt { "End" } dd { (when(&run["ended_at"])) }
            dt { "To CRM / to mailbox" } dd { (run["items_to_crm"].as_i64().unwrap_or(0)) " / " (run["items_to_mailbox"].as_i64().unwrap_or(0)) }
            dt { "Calls" } dd { code { (run["calls"].to_string()) } }
            @if let Some(message) = run["error_message"].as_str() {
                dt { "Error" } dd { (text(&run["error_category"])) " (" (text(&run["error_source"])) "): " (message) }
            }
        }
        @if !run["ended_at"].is_null() { p { a.button href={ "/panel/sessions/" (id) "/log.zip" } download { "Download log" } } }
        h2 { "Issues" }
        (issue_rows(&detail["issues"]))
        @if detail["more_issues"].as_bool().unwrap_or(false) { p.hint { "Only the first 500 issues are shown." } }
    };
    Ok(page::shell(
        &session,
        Section::Users,
        "Synchronization session",
        None,
        content,
    ))
}

async fn session_log(session: Session, State(panel): State<Panel>, Id(id): Id) -> Result<Response, PanelError> {
    download(&panel, &session, &format!("/v1/sessions/{id}/log.zip")).await
}
