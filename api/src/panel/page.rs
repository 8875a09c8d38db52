//! The page shell and the parts every list shares: sortable, filterable
//! column headers, the column menu, paging, notices and form fields.

use std::{fmt::Display, str::FromStr};

use axum::{
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use syncfleet_common::domain::AccessType;

use super::session::{CSRF_FIELD, Session};

/// The sections of the top navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Organizations,
    Users,
    Customization,
    /// The operator console (admins only).
    Operations,
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Syncfleet admin" }
        link rel="stylesheet" href="/panel/assets/panel.css";
        script src="/panel/assets/panel.js" defer {}
    }
}

/// A whole page for a signed-in admin.
pub fn shell(session: &Session, section: Section, title: &str, notice: Option<&str>, content: Markup) -> Response {
    shell_with_head(session, section, title, notice, html! {}, content)
}

/// A whole page with more in its `head` (the operator console's refresh
/// for browsers without scripts).
pub fn shell_with_head(
    session: &Session,
    section: Section,
    title: &str,
    notice: Option<&str>,
    extra_head: Markup,
    content: Markup,
) -> Response {
    let link = |target: Section, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(section == target).then_some("page")] { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head(title))
                meta name="csrf-token" content=(session.csrf());
                (extra_head)
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Syncfleet admin" }
                    nav aria-label="Main" {
                        (link(Section::Organizations, "/panel/organizations", "Organizations"))
                        (link(Section::Users, "/panel/users", "Users"))
                        (link(Section::Customization, "/panel/customization", "Customization"))
                        // Organization admins get the API's 404 there: no link.
                        @if session.is_admin() { (link(Section::Operations, "/panel/ops", "Operations")) }
                    }
                    span.who { (session.label) " (" (if session.is_admin() { "admin" } else { "organization admin" }) ")" }
                    form method="post" action="/panel/logout" {
                        (csrf_field(session))
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
                div #toasts .toasts role="status" aria-live="polite" {
                    @if let Some(notice) = notice {
                        div.toast.ok { (notice) }
                    }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without the navigation (sign-in, errors).
pub fn bare(status: StatusCode, title: &str, message: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.bare {
                main #main {
                    h1 { (title) }
                    p.error role="alert" { (message) }
                    p { a href="/panel/organizations" { "Back to the panel" } " · " a href="/panel/login" { "Sign in" } }
                }
            }
        }
    };
    let mut response = (status, Html(markup.into_string())).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// The sign-in page.
pub fn sign_in(status: StatusCode, error: Option<&str>) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Sign in")) }
            body.bare {
                main #main {
                    h1 { "Syncfleet admin: sign in" }
                    @if let Some(error) = error { p.error role="alert" { (error) } }
                    form.card method="post" action="/panel/login" {
                        label for="token" { "Admin or organization admin token" }
                        input #token type="password" name="token" autocomplete="off" required autofocus;
                        p.hint { "Mint one with " code { "syncfleet-api token create --role admin" } "." }
                        button.primary type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// The sub-tabs of an organization or a user: `(path under base, label)`.
pub fn tabs(name: &str, base: &str, entries: &[(&str, &str)], current: &str) -> Markup {
    html! {
        nav.tabs aria-label=(name) {
            @for (path, label) in entries {
                a href={ (base) (path) } aria-current=[(current == *label).then_some("page")] { (label) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf()); }
}

/// An error banner naming what is wrong.
pub fn error_banner(error: Option<&str>) -> Markup {
    html! { @if let Some(error) = error { p.error role="alert" { (error) } } }
}

/// A query string as pairs, to build links that change one parameter.
#[derive(Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query()))
    }
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        Self(serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default())
    }

    /// A parameter's value, when given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, value)| name == key && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// The same query with `key` set to `value` (or removed for `None`);
    /// any change but paging starts from the first page again.
    pub fn with(&self, key: &str, value: Option<&str>) -> Self {
        let mut pairs: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(name, _)| name != key && (key == "cursor" || name != "cursor"))
            .cloned()
            .collect();
        if let Some(value) = value {
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Self(pairs)
    }

    /// Only the named parameters that have values.
    pub fn only(&self, keys: &[&str]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(name, value)| keys.contains(&name.as_str()) && !value.is_empty())
                .cloned()
                .collect(),
        )
    }

    /// `?a=b&...` (empty when there is nothing).
    pub fn to_suffix(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        format!("?{}", serde_urlencoded::to_string(&self.0).unwrap_or_default())
    }
}

/// A column of a list.
pub struct Column {
    /// Its key (for hiding).
    pub key: &'static str,
    /// Its header.
    pub label: &'static str,
    /// The API's sort name, when it sorts.
    pub sort: Option<&'static str>,
    /// Hidden until the admin shows it.
    pub hidden: bool,
}

/// A column that sorts.
pub const fn sortable(key: &'static str, label: &'static str, sort: &'static str) -> Column {
    Column {
        key,
        label,
        sort: Some(sort),
        hidden: false,
    }
}

/// A column that does not sort.
pub const fn plain(key: &'static str, label: &'static str) -> Column {
    Column {
        key,
        label,
        sort: None,
        hidden: false,
    }
}

/// The same column, hidden by default.
pub const fn hidden(mut column: Column) -> Column {
    column.hidden = true;
    column
}

/// The header row: each column's menu sorts ascending or descending,
/// removes the sort, or hides the column.
pub fn header_row(base: &str, query: &Query, columns: &[Column], leading: Option<Markup>) -> Markup {
    let current = query.get("sort");
    let descending = query.get("order") == Some("desc");
    html! {
        tr {
            @if let Some(leading) = leading { th.select scope="col" { (leading) } }
            @for column in columns {
                @let sorted = column.sort.is_some() && current == column.sort;
                th scope="col" data-col=(column.key) data-default-hidden=[column.hidden.then_some("true")]
                    aria-sort=[sorted.then_some(if descending { "descending" } else { "ascending" })] {
                    span.label { (column.label) @if sorted { (if descending { " ▼" } else { " ▲" }) } }
                    details.colmenu {
                        summary aria-label={ "Column menu: " (column.label) } { "⌄" }
                        div.menu {
                            @if let Some(sort) = column.sort {
                                a href={ (base) (query.with("sort", Some(sort)).with("order", Some("asc")).to_suffix()) } { "Sort ascending" }
                                a href={ (base) (query.with("sort", Some(sort)).with("order", Some("desc")).to_suffix()) } { "Sort descending" }
                                @if sorted {
                                    a href={ (base) (query.with("sort", None).with("order", None).to_suffix()) } { "Remove sort" }
                                }
                            }
                            button type="button" data-hide-col=(column.key) { "Hide column" }
                        }
                    }
                }
            }
        }
    }
}

/// The ☰ menu: show or hide each column, clear all filters.
pub fn column_menu(table: &str, base: &str, columns: &[Column]) -> Markup {
    html! {
        details.colchooser data-for=(table) {
            summary aria-label="Columns and filters" { "☰ Columns" }
            div.menu {
                @for column in columns {
                    label { input type="checkbox" data-toggle-col=(column.key); " " (column.label) }
                }
                a href=(base) { "Clear all filters" }
            }
        }
    }
}

/// The pager under a list: its total, the first and the next page.
pub fn pager(base: &str, query: &Query, listed: &Value) -> Markup {
    let total = listed["total"].as_i64().unwrap_or(0);
    let shown = listed["items"].as_array().map_or(0, Vec::len);
    html! {
        nav.pager aria-label="Pages" {
            span { (shown) " shown of " (total) }
            @if query.get("cursor").is_some() {
                a href={ (base) (query.with("cursor", None).to_suffix()) } { "First page" }
                button type="button" data-back { "Previous page" }
            }
            @if let Some(next) = listed["next_cursor"].as_str() {
                a rel="next" href={ (base) (query.with("cursor", Some(next)).to_suffix()) } { "Next page" }
            }
        }
    }
}

/// A text input for a filter or a form.
pub fn text_input(name: &str, label: &str, value: Option<&str>, kind: &str) -> Markup {
    html! {
        label.field {
            span { (label) }
            input type=(kind) name=(name) value=[value];
        }
    }
}

/// A select with an empty "any" choice.
pub fn select(
    name: &str,
    label: &str,
    choices: &[(String, String)],
    current: Option<&str>,
    empty: Option<&str>,
) -> Markup {
    html! {
        label.field {
            span { (label) }
            select name=(name) {
                @if let Some(empty) = empty { option value="" { (empty) } }
                @for (value, text) in choices {
                    option value=(value) selected[current == Some(value.as_str())] { (text) }
                }
            }
        }
    }
}

/// Static choices as owned pairs.
pub fn choices(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(value, text)| ((*value).to_owned(), (*text).to_owned()))
        .collect()
}

/// A JSON string field, or "".
pub fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// A timestamp as the panel shows it (UTC, to the second).
pub fn when(value: &Value) -> String {
    value
        .as_str()
        .and_then(|raw| chrono::DateTime::parse_from_rfc3339(raw).ok())
        .map(|time| time.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The choices of a select over every value of a domain enum (its text,
/// as the API takes it), in the panel's words.
pub fn enum_choices<T: Copy + Display>(all: &[T], label: fn(T) -> &'static str) -> Vec<(String, String)> {
    all.iter()
        .map(|value| (value.to_string(), label(*value).to_owned()))
        .collect()
}

/// The panel's words for a domain enum's value as the API answered it (its
/// text); the text itself when it names no value.
pub fn label_of<T: FromStr>(raw: &str, label: fn(T) -> &'static str) -> &str {
    raw.parse().map_or(raw, label)
}

/// The readable name of an access type.
pub fn access_type_label(access: AccessType) -> &'static str {
    match access {
        AccessType::ExchangeDirect => "Microsoft Exchange Direct Logon",
        AccessType::ExchangeImpersonation => "Microsoft Exchange Impersonation",
        AccessType::Office365 => "Office 365",
        AccessType::Gmail => "Gmail",
    }
}

/// A copy-to-clipboard button for the text of the element `target`.
pub fn copy_button(target: &str, label: &str) -> Markup {
    html! { button.copy type="button" data-copy=(target) { (label) } }
}
