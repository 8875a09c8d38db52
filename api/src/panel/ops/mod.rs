//! The operator console (issue 16), a section of the panel for admins only:
//! the fleet's overview with its last hour in charts (`overview`), the
//! workers' heartbeats (`workers`), dead jobs to inspect, replay or discard
//! (`dead_jobs`), the providers' cooldowns and Salesforce allocations
//! (`limits`) and the users auto-suspended by errors (`suspended`). Like
//! every panel page it reads and changes through `/v1` (`/v1/ops/...` and
//! the user actions): an organization admin is not shown the section, and
//! gets the API's 404 as the not-found page if they type its address.
//!
//! The pages refresh themselves (the panel's script reloads them unless the
//! admin is selecting or typing; a `<noscript>` refresh otherwise); `?refresh=off`
//! pauses, `?refresh=N` sets the interval.

mod chart;
mod dead_jobs;
mod limits;
mod overview;
mod suspended;
#[cfg(test)]
mod tests;
mod workers;

use axum::{
    Router,
    response::Response,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;
use syncfleet_common::domain::DeadJobStatus;

use super::{
    Panel,
    page::{self, Query, Section},
    session::Session,
};

pub fn routes() -> Router<Panel> {
    Router::new()
        .route("/panel/ops", get(overview::page))
        .route("/panel/ops/workers", get(workers::page))
        .route("/panel/ops/dead-jobs", get(dead_jobs::list))
        .route("/panel/ops/dead-jobs/actions/{action}", post(dead_jobs::bulk))
        .route("/panel/ops/dead-jobs/{id}", get(dead_jobs::inspect))
        .route("/panel/ops/dead-jobs/{id}/replay", post(dead_jobs::replay))
        .route("/panel/ops/dead-jobs/{id}/discard", post(dead_jobs::discard))
        .route("/panel/ops/limits", get(limits::page))
        .route("/panel/ops/suspended", get(suspended::page))
}

/// The console's tabs: (path under `/panel/ops`, label).
const TABS: [(&str, &str); 5] = [
    ("", "Overview"),
    ("/workers", "Workers"),
    ("/dead-jobs", "Dead jobs"),
    ("/limits", "Limits and cooldowns"),
    ("/suspended", "Suspended users"),
];

/// How often a console page reloads itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Every so many seconds.
    Every(u32),
    /// Not at all (`?refresh=off`).
    Paused,
}

impl Refresh {
    /// The interval when the query does not name one.
    pub const DEFAULT_SECONDS: u32 = 30;

    /// From `?refresh=`: `off`, or seconds from 5 to 600 (anything else is
    /// the default).
    pub fn of(query: &Query) -> Self {
        match query.get("refresh") {
            Some("off") => Self::Paused,
            Some(seconds) => seconds
                .parse()
                .ok()
                .filter(|seconds| (5..=600).contains(seconds))
                .map_or(Self::Every(Self::DEFAULT_SECONDS), Self::Every),
            None => Self::Every(Self::DEFAULT_SECONDS),
        }
    }
}

/// The query with `refresh` set (or dropped), everything else kept, the
/// page's cursor too.
fn with_refresh(query: &Query, value: Option<&str>) -> Query {
    let mut pairs: Vec<(String, String)> = query.0.iter().filter(|(name, _)| name != "refresh").cloned().collect();
    if let Some(value) = value {
        pairs.push(("refresh".to_owned(), value.to_owned()));
    }
    Query(pairs)
}

/// The line under the tabs: when the page's data was read, and the
/// refresh's state with the link that pauses or resumes it.
fn refresh_bar(base: &str, query: &Query, updated: DateTime<Utc>) -> Markup {
    let refresh = Refresh::of(query);
    let seconds = match refresh {
        Refresh::Every(seconds) => Some(seconds),
        Refresh::Paused => None,
    };
    html! {
        p.refresh data-refresh=[seconds] {
            span {
                "Updated "
                time datetime=(updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) data-updated { (updated.format("%H:%M:%S")) " UTC" }
            }
            @match refresh {
                Refresh::Every(seconds) => {
                    span data-refresh-state { "Refreshes every " (seconds) " s" }
                    a href={ (base) (with_refresh(query, Some("off")).to_suffix()) } { "Pause auto-refresh" }
                }
                Refresh::Paused => {
                    span data-refresh-state { "Auto-refresh paused" }
                    a href={ (base) (with_refresh(query, None).to_suffix()) } { "Resume auto-refresh" }
                }
            }
            a href={ (base) (query.to_suffix()) } { "Refresh now" }
        }
    }
}

/// The console's tabs, keeping a paused refresh paused.
fn tabs(current: &str, query: &Query) -> Markup {
    let suffix = match Refresh::of(query) {
        Refresh::Paused => "?refresh=off",
        Refresh::Every(_) => "",
    };
    html! {
        nav.tabs aria-label="Operations" {
            @for (path, label) in TABS {
                a href={ "/panel/ops" (path) (suffix) } aria-current=[(current == label).then_some("page")] { (label) }
            }
        }
    }
}

/// A console page: `live` pages (their data's time given) show when they
/// were read and refresh themselves.
pub struct Page<'a> {
    pub session: &'a Session,
    pub query: &'a Query,
    /// The tab's label.
    pub tab: &'static str,
    /// The page's own path (for the refresh's links).
    pub base: &'a str,
    /// When the data shown was read, for a page that refreshes.
    pub live: Option<DateTime<Utc>>,
    pub notice: Option<&'static str>,
}

impl Page<'_> {
    /// The whole page around `content`.
    pub fn render(&self, title: &str, content: Markup) -> Response {
        let refreshing = match (self.live, Refresh::of(self.query)) {
            (Some(_), Refresh::Every(seconds)) => Some(seconds),
            _ => None,
        };
        // With the script, the script reloads (and holds off while the
        // admin works on the page); without it, the browser does.
        let head = html! {
            @if let Some(seconds) = refreshing { noscript { meta http-equiv="refresh" content=(seconds); } }
        };
        let content = html! {
            (tabs(self.tab, self.query))
            @if let Some(updated) = self.live { (refresh_bar(self.base, self.query, updated)) }
            (content)
        };
        page::shell_with_head(
            self.session,
            Section::Operations,
            &format!("Operations · {title}"),
            self.notice,
            head,
            content,
        )
    }
}

/// The notice a redirect asks for (a fixed text, never the query's).
fn notice(query: &Query) -> Option<&'static str> {
    match query.get("done")?.parse().ok()? {
        DeadJobStatus::Replayed => Some("Replayed: the job was published again."),
        DeadJobStatus::Discarded => Some("Discarded."),
        DeadJobStatus::Dead => None,
    }
}

/// A whole number, or "—" when the API does not know it.
fn count(value: &Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "—".to_owned(), |number| number.to_string())
}

/// A rate per second, or "—".
fn rate(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "—".to_owned(), |rate| format!("{rate:.1}/s"))
}

/// How long ago (or, negative, how long until) a time is, in words.
fn age(seconds: i64) -> String {
    let (magnitude, future) = (seconds.unsigned_abs(), seconds < 0);
    let text = match magnitude {
        0..60 => format!("{magnitude} s"),
        60..3600 => format!("{} min {} s", magnitude / 60, magnitude % 60),
        3600..86_400 => format!("{} h {} min", magnitude / 3600, magnitude % 3600 / 60),
        _ => format!("{} d {} h", magnitude / 86_400, magnitude % 86_400 / 3600),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A timestamp of the API's as a time, when it is one.
fn time_of(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|raw| DateTime::parse_from_rfc3339(raw).ok())
        .map(|time| time.with_timezone(&Utc))
}

/// A time with how long ago it was (or how long until it is).
fn relative(time: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) { (time.format("%Y-%m-%d %H:%M:%S")) }
        " " span.hint { "(" (age((now - time).num_seconds())) ")" }
    }
}

/// An API timestamp with how long ago it was, or "—".
fn when_relative(value: &Value, now: DateTime<Utc>) -> Markup {
    match time_of(value) {
        Some(time) => relative(time, now),
        None => html! { "—" },
    }
}
