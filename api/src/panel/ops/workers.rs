//! The console's workers: each worker's heartbeat (live first, then silent,
//! draining and stopped, as the API orders them), its version and host,
//! and the deliveries it has in flight per queue.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

use super::{Page, count, when_relative};
use crate::panel::{
    Panel,
    error::PanelError,
    page::{Query, text},
    session::Session,
};

/// A worker's state as the page names it, with whether it needs a look.
fn state_label(state: &str) -> (&str, bool) {
    match state {
        "live" => ("Live", false),
        "draining" => ("Draining", false),
        "stopped" => ("Stopped", false),
        "silent" => ("Silent", true),
        other => (other, true),
    }
}

/// The workers' content, `now` being when the list was read.
pub fn content(listed: &Value, now: DateTime<Utc>) -> Markup {
    let workers: Vec<&Value> = listed["workers"].as_array().into_iter().flatten().collect();
    // Whole seconds or not (a fraction prints as one).
    let silent_after = listed["silent_after_seconds"].as_f64().unwrap_or(0.0);
    let in_state = |state: &str| workers.iter().filter(|worker| worker["state"] == state).count();
    let mut versions: Vec<&str> = workers
        .iter()
        .filter(|worker| matches!(worker["state"].as_str(), Some("live" | "draining")))
        .map(|worker| text(&worker["version"]))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    html! {
        p.summary {
            strong { (in_state("live")) } " live · "
            strong.off[in_state("silent") > 0] { (in_state("silent")) } " silent · "
            strong { (in_state("draining")) } " draining · "
            strong { (in_state("stopped")) } " stopped"
        }
        p.hint {
            "A worker is silent when its last heartbeat is older than " (silent_after) " s: killed, cut off, or stuck. "
            @if versions.len() > 1 { "Running versions: " (versions.join(", ")) " (a rollout in progress?)." }
        }
        @if workers.is_empty() {
            p { "No worker has reported yet." }
        } @else {
            div.scroll {
                table.list data-table="workers" {
                    thead {
                        tr {
                            @for label in ["Worker", "State", "Version", "Host", "Started", "Last heartbeat"] {
                                th scope="col" rowspan="2" { (label) }
                            }
                            th.group scope="colgroup" colspan="3" { "In flight" }
                        }
                        tr {
                            @for label in ["Priority", "Cadence", "Push"] { th.num scope="col" { (label) } }
                        }
                    }
                    tbody {
                        @for worker in &workers {
                            @let (state, alert) = state_label(text(&worker["state"]));
                            tr.off[alert] data-worker=(text(&worker["id"])) {
                                th scope="row" { code { (text(&worker["id"])) } }
                                td data-col="state" { span class={ "badge " (text(&worker["state"])) } { (state) } }
                                td { (text(&worker["version"])) }
                                td { (text(&worker["host"])) }
                                td { (when_relative(&worker["started_at"], now)) }
                                td { (when_relative(&worker["last_seen_at"], now)) }
                                td.num { (count(&worker["in_flight"]["priority"])) }
                                td.num { (count(&worker["in_flight"]["cadence"])) }
                                td.num { (count(&worker["in_flight"]["push"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /panel/ops/workers`.
pub async fn page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let listed = panel.v1.get(&session, "/v1/ops/workers").await?;
    let now = Utc::now();
    let page = Page {
        session: &session,
        query: &query,
        tab: "Workers",
        base: "/panel/ops/workers",
        live: Some(now),
        notice: None,
    };
    Ok(page.render("Workers", content(&listed, now)))
}
