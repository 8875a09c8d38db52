//! The console's suspended users: those whose sync the fleet disabled after
//! repeated errors (authorization, throttling, other), counted by class and
//! organization, listed with their last error, and enabled again by the
//! users' own bulk action (`POST /v1/users/actions/enable-sync` through the
//! panel's actions route, as on the Users tab), after a confirmation.

use axum::{extract::State, response::Response};
use chrono::Utc;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{Page, when_relative};
use crate::panel::{
    Panel,
    error::PanelError,
    page::{self, Query, text},
    session::Session,
    users::{self, sync_status_label},
};

const CLASSES: [(&str, &str); 3] = [
    ("auth", "Authorization errors"),
    ("throttling", "Throttling errors"),
    ("other", "Other errors"),
];

fn class_label(class: &str) -> &str {
    CLASSES
        .iter()
        .find(|(key, _)| *key == class)
        .map_or(class, |(_, label)| label)
}

/// The suspended users' content.
pub fn content(query: &Query, listed: &Value, organizations: &[(String, String)], error: Option<&str>) -> Markup {
    let base = "/panel/ops/suspended";
    let groups: Vec<&Value> = listed["groups"].as_array().into_iter().flatten().collect();
    let items: Vec<&Value> = listed["items"].as_array().into_iter().flatten().collect();
    let now = Utc::now();
    html! {
        p.hint { "Users whose synchronization the fleet disabled after repeated errors of one class. Enable them once the cause is fixed (a new authorization, a quota raised)." }
        @if !groups.is_empty() {
            div.scroll.narrow {
                table.list data-table="suspended-groups" {
                    caption { "By class and organization" }
                    thead { tr { th scope="col" { "Class" } th scope="col" { "Organization" } th.num scope="col" { "Users" } th scope="col" { "Show" } } }
                    tbody {
                        @for group in &groups {
                            @let filtered = Query::default()
                                .with("class", group["class"].as_str())
                                .with("organization_id", group["organization_id"].as_str());
                            tr {
                                td { (class_label(text(&group["class"]))) }
                                th scope="row" { (text(&group["organization_name"])) }
                                td.num { (group["count"].as_i64().unwrap_or(0)) }
                                td { a href={ (base) (filtered.to_suffix()) } aria-label={ "Show the " (class_label(text(&group["class"])).to_lowercase()) " of " (text(&group["organization_name"])) } { "Show" } }
                            }
                        }
                    }
                }
            }
        }
        div.toolbar {
            form.filters method="get" action=(base) {
                @if !organizations.is_empty() {
                    (page::select("organization_id", "Organization", organizations, query.get("organization_id"), Some("Any")))
                }
                (page::select("class", "Class", &page::choices(&CLASSES), query.get("class"), Some("Any")))
                @if let Some(refresh) = query.get("refresh") { input type="hidden" name="refresh" value=(refresh); }
                button type="submit" { "Filter" }
                a.button href=(base) { "Clear" }
            }
            @if !items.is_empty() {
                // The Users tab's bulk action: the panel's script confirms,
                // posts the selection and shows each user's result.
                div.bulk data-bulk-actions role="group" aria-label="Actions for the selected users" {
                    button.primary type="button" data-action="enable-sync" data-confirm="Enable synchronization" { "Enable sync for the selected users" }
                }
            }
        }
        (page::error_banner(error))
        @if items.is_empty() {
            p.empty { "No suspended users" @if query.get("class").is_some() || query.get("organization_id").is_some() { " match" } "." }
        } @else {
            div.scroll {
                table.list data-table="suspended" {
                    thead {
                        tr {
                            th.select scope="col" { input type="checkbox" data-select-all aria-label="Select all suspended users on this page"; }
                            th scope="col" { "User" }
                            th scope="col" { "Organization" }
                            th scope="col" { "Class" }
                            th scope="col" { "Synchronization Status" }
                            th scope="col" { "Last error" }
                            th scope="col" { "Suspended" }
                        }
                    }
                    tbody {
                        @for user in &items {
                            @let id = text(&user["user_id"]);
                            @let email = text(&user["email"]);
                            tr data-user=(id) {
                                td.select { input type="checkbox" data-select=(id) data-name=(email) aria-label={ "Select " (email) }; }
                                th scope="row" {
                                    a href={ "/panel/users/" (id) } { (email) }
                                    @if !text(&user["name"]).is_empty() { br; span.hint { (text(&user["name"])) } }
                                }
                                td { a href={ "/panel/organizations/" (text(&user["organization_id"])) } { (text(&user["organization_name"])) } }
                                td { (class_label(text(&user["class"]))) }
                                td.off { (page::label_of(text(&user["sync_status"]), sync_status_label)) }
                                td data-col="message" { (text(&user["last_error"])) }
                                td { (when_relative(&user["suspended_at"], now)) }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(base, query, listed))
    }
}

/// `GET /panel/ops/suspended`.
pub async fn page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let api_query = query.only(&["organization_id", "class", "page_size", "cursor"]);
    let listed = panel
        .v1
        .get(&session, &format!("/v1/ops/suspended{}", api_query.to_suffix()))
        .await;
    let (listed, error) = match listed {
        Ok(listed) => (listed, None),
        Err(error) if error.is_shown() => (json!({"groups": [], "items": [], "total": 0}), Some(error.message())),
        Err(error) => return Err(error),
    };
    let organizations = users::organizations(&panel, &session).await?;
    let page = Page {
        session: &session,
        query: &query,
        tab: "Suspended users",
        base: "/panel/ops/suspended",
        live: Some(Utc::now()),
        notice: None,
    };
    Ok(page.render(
        "Suspended users",
        content(&query, &listed, &organizations, error.as_deref()),
    ))
}
