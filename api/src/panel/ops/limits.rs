//! The console's limits: the provider accounts cooling down (no call until
//! the provider's delay has passed), each Salesforce org's daily API use
//! against its allocation and the reserve kept for its users, and the
//! throttled answers of the last hour by provider.

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

fn provider_label(provider: &str) -> &str {
    match provider {
        "graph" => "Microsoft Graph",
        "ews" => "Exchange (EWS)",
        "gmail" => "Gmail",
        "salesforce" => "Salesforce",
        other => other,
    }
}

/// The limits' content, `now` being when they were read.
pub fn content(limits: &Value, now: DateTime<Utc>) -> Markup {
    let cooldowns: Vec<&Value> = limits["cooldowns"].as_array().into_iter().flatten().collect();
    let orgs: Vec<&Value> = limits["salesforce_orgs"].as_array().into_iter().flatten().collect();
    let throttled: Vec<&Value> = limits["throttled_last_hour"].as_array().into_iter().flatten().collect();
    html! {
        section aria-labelledby="cooldowns-heading" {
            h2 #cooldowns-heading { "Cooldowns" }
            p.hint { "An account a provider throttled: the fleet makes no call for it until the time the provider asked for." }
            @if let Some(error) = limits["cooldowns_error"].as_str() {
                p.error role="alert" { "The limiter did not answer: " (error) }
            } @else if cooldowns.is_empty() {
                p.empty { "No account is cooling down." }
            } @else {
                div.scroll {
                    table.list data-table="cooldowns" {
                        thead { tr { th scope="col" { "Provider" } th scope="col" { "Account" } th scope="col" { "Until" } th scope="col" { "Reason" } } }
                        tbody {
                            @for cooldown in &cooldowns {
                                tr {
                                    td { (provider_label(text(&cooldown["provider"]))) }
                                    th scope="row" { code { (text(&cooldown["account"])) } }
                                    td { (when_relative(&cooldown["until"], now)) }
                                    td data-col="message" { @match cooldown["reason"].as_str() { Some(reason) => (reason), None => "—" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="salesforce-heading" {
            h2 #salesforce-heading { "Salesforce API allocations" }
            p.hint { "Each org's API calls in the last 24 hours as its last answer reported them. The fleet stops short of the reserve, which is left to the org's own users." }
            @if orgs.is_empty() {
                p.empty { "No Salesforce org has reported its usage yet." }
            } @else {
                div.scroll {
                    table.list data-table="salesforce" {
                        thead {
                            tr {
                                th scope="col" { "Org" }
                                th scope="col" { "Used" }
                                th.num scope="col" { "Allocation" }
                                th.num scope="col" { "Reserve" }
                                th.num scope="col" { "Usable by the fleet" }
                                th scope="col" { "Reported" }
                            }
                        }
                        tbody {
                            @for org in &orgs {
                                @let near = org["near_reserve"].as_bool().unwrap_or(false);
                                @let used = org["used"].as_i64().unwrap_or(0);
                                @let allocation = org["allocation"].as_i64().unwrap_or(0).max(1);
                                @let usable = org["usable"].as_i64().unwrap_or(allocation);
                                tr.off[near] data-org=(text(&org["org"])) {
                                    th scope="row" { code { (text(&org["org"])) } }
                                    td {
                                        meter min="0" max=(allocation) value=(used) high=(usable)
                                            aria-label={ "Used " (used) " of " (allocation) } {}
                                        " " (used) " (" (used * 100 / allocation) " %)"
                                        @if near { " " strong { "near the reserve" } }
                                    }
                                    td.num { (count(&org["allocation"])) }
                                    td.num { (count(&org["reserve_percent"])) " %" }
                                    td.num { (count(&org["usable"])) }
                                    td { (when_relative(&org["observed_at"], now)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="throttled-heading" {
            h2 #throttled-heading { "Throttled in the last hour" }
            @if throttled.is_empty() {
                p.empty { "No provider throttled the fleet in the last hour." }
            } @else {
                div.scroll.narrow {
                    table.list data-table="throttled" {
                        thead { tr { th scope="col" { "Provider" } th.num scope="col" { "Throttled answers" } } }
                        tbody {
                            @for row in &throttled {
                                tr { th scope="row" { (provider_label(text(&row["provider"]))) } td.num { (count(&row["count"])) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /panel/ops/limits`.
pub async fn page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let limits = panel.v1.get(&session, "/v1/ops/limits").await?;
    let now = Utc::now();
    let page = Page {
        session: &session,
        query: &query,
        tab: "Limits and cooldowns",
        base: "/panel/ops/limits",
        live: Some(now),
        notice: None,
    };
    Ok(page.render("Limits and cooldowns", content(&limits, now)))
}
