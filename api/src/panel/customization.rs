//! The Customization page (M14, M16): push a colleague's saved customization
//! to selected users or all users of the organization, with the seeds'
//! filters, and follow the push's progress; set the organization's default.

use axum::{
    Json, Router,
    extract::State,
    http::Method,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use syncfleet_common::domain::UserRole;

use super::{
    Form, Id, Panel,
    error::PanelError,
    organizations::{notice, parse_id},
    page::{self, Query, Section, text, when},
    session::Session,
    users,
};

pub fn routes() -> Router<Panel> {
    Router::new()
        .route("/panel/customization", get(push_page))
        .route("/panel/pushes", post(push))
        .route("/panel/pushes/{id}", get(progress_page))
        .route("/panel/pushes/{id}/progress", get(progress))
        .route("/panel/organizations/{id}/default-customization", post(save_default))
}

/// The readable name of a user's profile.
fn role_label(role: UserRole) -> &'static str {
    match role {
        UserRole::User => "User",
        UserRole::OrgAdmin => "Organization admin",
    }
}

/// The filters the push page passes on.
const FILTERS: [&str; 5] = ["product_users_only", "name", "email", "role", "group"];

async fn push_page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let organizations = users::organizations(&panel, &session).await?;
    let organization = query
        .get("organization_id")
        .map(str::to_owned)
        .or_else(|| session.organization_id.map(|id| id.to_string()))
        .or_else(|| organizations.first().map(|(id, _)| id.clone()));
    let content = match organization {
        Some(organization) => {
            body(
                &panel,
                &session,
                &query,
                &organizations,
                &parse_id(&organization)?.to_string(),
                None,
            )
            .await?
        }
        None => html! { p { "There is no organization yet." } },
    };
    Ok(page::shell(
        &session,
        Section::Customization,
        "Customization",
        notice(&query),
        content,
    ))
}

async fn body(
    panel: &Panel,
    session: &Session,
    query: &Query,
    organizations: &[(String, String)],
    organization: &str,
    error: Option<&str>,
) -> Result<Markup, PanelError> {
    // The colleagues shown: the organization's users, searched by the name
    // or email filter (the push applies every filter again on the server).
    let search = query.get("name").or(query.get("email"));
    let mut list_query = Query::default().with("page_size", Some("200"));
    if let Some(search) = search {
        list_query = list_query.with("q", Some(search));
    }
    let listed = panel
        .v1
        .get(
            session,
            &format!("/v1/organizations/{organization}/users{}", list_query.to_suffix()),
        )
        .await?;
    let colleagues: Vec<(String, String)> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|user| {
            (
                text(&user["id"]).to_owned(),
                format!("{} <{}>", text(&user["name"]), text(&user["email"])),
            )
        })
        .collect();
    let pusher = query.get("from_user_id");
    let default = panel
        .v1
        .get(
            session,
            &format!("/v1/organizations/{organization}/default-customization"),
        )
        .await?;
    let checked = |key: &str| query.get(key).is_some();
    Ok(html! {
        (page::error_banner(error))
        form.filters method="get" action="/panel/customization" {
            @if session.is_admin() {
                (page::select("organization_id", "Organization", organizations, Some(organization), None))
            }
            (page::select("from_user_id", "Push the saved customization of", &colleagues, pusher, Some("Choose a user")))
            label.field.check { input type="checkbox" name="product_users_only" value="true" checked[checked("product_users_only")]; span { "Only users of the product" } }
            (page::text_input("name", "Name contains", query.get("name"), "search"))
            (page::text_input("email", "Email contains", query.get("email"), "search"))
            (page::select("role", "Profile", &page::enum_choices(UserRole::ALL, role_label), query.get("role"), Some("Any")))
            (page::text_input("group", "Group", query.get("group"), "text"))
            button type="submit" { "Apply filters" }
        }
        form.card method="post" action="/panel/pushes" data-push-form {
            (page::csrf_field(session))
            input type="hidden" name="organization_id" value=(organization);
            @if let Some(pusher) = pusher { input type="hidden" name="from_user_id" value=(pusher); }
            @for key in FILTERS { @if let Some(value) = query.get(key) { input type="hidden" name={ "filter_" (key) } value=(value); } }
            h2 { "Share the customization with colleagues" }
            @if pusher.is_none() { p.hint { "Choose whose saved customization to push, then select the colleagues." } }
            label.check { input type="checkbox" data-select-all-push; " Select all" }
            ul.colleagues {
                @for (id, label) in &colleagues {
                    li { label.check { input type="checkbox" name="user_ids" value=(id) data-push-user; " " (label) } }
                }
            }
            @if listed["next_cursor"].is_string() { p.hint { "The first 200 matching users are listed; narrow with the filters, or push to all users." } }
            div.buttons {
                button.primary type="submit" name="mode" value="selected" data-selected-count { "Selected users" }
                button type="submit" name="mode" value="all" data-confirm="Push to every user of the organization that matches the filters?" { "All users" }
            }
        }
        form.card method="post" action={ "/panel/organizations/" (organization) "/default-customization" } {
            (page::csrf_field(session))
            h2 { "The organization's default customization" }
            p.hint {
                "Version " (default["version"].as_i64().unwrap_or(0))
                @if let Some(by) = default["updated_by"].as_str() { ", set by " (by) " " (when(&default["updated_at"])) }
                ". Users reset to it (Reset sidebar customization)."
            }
            label.field.wide { span { "Default document (JSON)" } textarea name="document" rows="10" spellcheck="false" { (serde_json::to_string_pretty(&default["document"]).unwrap_or_default()) } }
            div.buttons { button.primary type="submit" { "Set as the organization's default" } }
        }
    })
}

async fn push(State(panel): State<Panel>, Form { session, fields }: Form) -> Result<Response, PanelError> {
    let mut request = Map::new();
    if fields.get("mode") == Some("all") {
        request.insert("all".into(), json!(true));
    } else {
        request.insert("user_ids".into(), json!(fields.all("user_ids")));
    }
    if let Some(pusher) = fields.filled("from_user_id") {
        request.insert("from_user_id".into(), json!(pusher));
    }
    let mut filter = Map::new();
    for key in FILTERS {
        if let Some(value) = fields.filled(&format!("filter_{key}")) {
            let value = if key == "product_users_only" {
                json!(true)
            } else {
                json!(value)
            };
            filter.insert(key.into(), value);
        }
    }
    if !filter.is_empty() {
        request.insert("filter".into(), Value::Object(filter));
    }
    match panel
        .v1
        .send(&session, Method::POST, "/v1/pushes", &Value::Object(request))
        .await
    {
        Ok(created) => Ok(Redirect::to(&format!("/panel/pushes/{}", text(&created["id"]))).into_response()),
        Err(error) if error.is_shown() => {
            // Back on the page the admin came from, with the API's reason.
            let organization = parse_id(fields.get("organization_id").unwrap_or_default())?.to_string();
            let mut query = Query::default().with("organization_id", Some(&organization));
            if let Some(pusher) = fields.filled("from_user_id") {
                query = query.with("from_user_id", Some(pusher));
            }
            for key in FILTERS {
                if let Some(value) = fields.filled(&format!("filter_{key}")) {
                    query = query.with(key, Some(value));
                }
            }
            let organizations = users::organizations(&panel, &session).await?;
            let content = body(
                &panel,
                &session,
                &query,
                &organizations,
                &organization,
                Some(&format!("Not pushed: {}", error.message())),
            )
            .await?;
            let mut response = page::shell(&session, Section::Customization, "Customization", None, content);
            *response.status_mut() = error.status();
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

fn progress_view(push: &Value) -> Markup {
    let total = push["total"].as_i64().unwrap_or(0);
    let done = push["applied"].as_i64().unwrap_or(0) + push["failed"].as_i64().unwrap_or(0);
    html! {
        div #push-progress data-status=(text(&push["status"])) {
            p { "Status: " strong data-field="status" { (text(&push["status"])) } }
            progress max=(total.max(1)) value=(done) aria-label="Push progress" {}
            dl.facts {
                dt { "Recipients" } dd data-field="total" { (total) }
                dt { "Applied" } dd data-field="applied" { (push["applied"].as_i64().unwrap_or(0)) }
                dt { "Failed" } dd data-field="failed" { (push["failed"].as_i64().unwrap_or(0)) }
                dt { "Pending" } dd data-field="pending" { (push["pending"].as_i64().unwrap_or(0)) }
                dt { "Started" } dd { (when(&push["created_at"])) }
                dt { "Finished" } dd data-field="finished_at" { (when(&push["finished_at"])) }
            }
        }
    }
}

async fn progress_page(session: Session, State(panel): State<Panel>, Id(id): Id) -> Result<Response, PanelError> {
    let push = panel.v1.get(&session, &format!("/v1/pushes/{id}")).await?;
    let content = html! {
        div data-poll={ "/panel/pushes/" (id) "/progress" } {
            (progress_view(&push))
        }
        p.hint { "The push runs in the background: each recipient is notified, and the pusher gets an email when it completes." }
        p { a href={ "/panel/customization?organization_id=" (text(&push["organization_id"])) } { "Back to Customization" } }
    };
    Ok(page::shell(
        &session,
        Section::Customization,
        "Customization push",
        Some("Push started."),
        content,
    ))
}

/// The push's progress as JSON, for the page to poll.
async fn progress(session: Session, State(panel): State<Panel>, Id(id): Id) -> Result<Response, PanelError> {
    let push = panel.v1.get(&session, &format!("/v1/pushes/{id}")).await?;
    Ok(Json(json!({
        "status": push["status"],
        "total": push["total"],
        "applied": push["applied"],
        "failed": push["failed"],
        "pending": push["pending"],
        "finished_at": when(&push["finished_at"]),
    }))
    .into_response())
}

async fn save_default(
    State(panel): State<Panel>,
    Id(id): Id,
    Form { session, fields }: Form,
) -> Result<Response, PanelError> {
    let given = fields.get("document").unwrap_or_default();
    let result = match serde_json::from_str::<Value>(given) {
        Ok(document) => panel
            .v1
            .send(
                &session,
                Method::PUT,
                &format!("/v1/organizations/{id}/default-customization"),
                &json!({ "document": document }),
            )
            .await
            .map(|_| ()),
        Err(error) => Err(PanelError::BadForm(format!("document: not JSON ({error})"))),
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/panel/customization?organization_id={id}&done=saved")).into_response()),
        Err(error) if error.is_shown() => {
            let organizations = users::organizations(&panel, &session).await?;
            let query = Query::default().with("organization_id", Some(&id.to_string()));
            let content = body(
                &panel,
                &session,
                &query,
                &organizations,
                &id.to_string(),
                Some(&format!("Default not saved: {}", error.message())),
            )
            .await?;
            let mut response = page::shell(&session, Section::Customization, "Customization", None, content);
            *response.status_mut() = error.status();
            Ok(response)
        }
        Err(error) => Err(error),
    }
}
