//! The console's overview: what needs attention at a glance (dead jobs
//! waiting, the scheduler's leader and lag, the outbox), the queues as the
//! broker counts them, and the last hour in three charts: queue depth,
//! sessions per minute by status, and the cadence lag.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use syncfleet_common::domain::SessionStatus;

use super::{
    Page,
    chart::{self, Hour, Series, Unit},
    count, notice, rate, relative,
};
use crate::panel::{Panel, error::PanelError, page::Query, session::Session};

/// `GET /v1/ops/overview`, as the charts need it parsed.
#[derive(Debug, Deserialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub broker: Broker,
    pub queues: Vec<serde_json::Value>,
    pub scheduler: Scheduler,
    pub sessions_per_minute: Vec<SessionMinute>,
    pub queue_depth_history: Vec<DepthMinute>,
    pub lag_history: Vec<LagMinute>,
    pub outbox: Outbox,
    pub dead_jobs: DeadJobs,
}

/// Where the queue counts come from.
#[derive(Debug, Deserialize)]
pub struct Broker {
    /// `management` (counts, consumers and rates) or `amqp` (ready counts
    /// only).
    pub source: String,
    /// Why the queues are missing, when the broker did not answer.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Scheduler {
    pub leader: Option<Leader>,
    pub due_not_queued: i64,
    pub lag_seconds: Quantiles,
}

/// The scheduler replica holding the lease.
#[derive(Debug, Deserialize)]
pub struct Leader {
    pub holder: String,
    pub term: i64,
    pub since: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Sessions that ended in a minute with a status.
#[derive(Debug, Deserialize)]
pub struct SessionMinute {
    pub minute: DateTime<Utc>,
    pub status: SessionStatus,
    pub count: i64,
}

/// A queue's ready messages in a minute.
#[derive(Debug, Deserialize)]
pub struct DepthMinute {
    pub minute: DateTime<Utc>,
    pub queue: String,
    pub ready: i64,
}

/// The cadence lag's quantiles in a minute.
#[derive(Debug, Deserialize)]
pub struct LagMinute {
    pub minute: DateTime<Utc>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Outbox {
    pub backlog: i64,
    pub oldest_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct DeadJobs {
    pub waiting: i64,
}

/// The statuses of the sessions chart, bottom to top, with their labels and
/// colours (a running session has not ended: it is in no minute).
const SESSION_SERIES: [(SessionStatus, &str, &str); 5] = [
    (SessionStatus::Succeeded, "Succeeded", "c-succeeded"),
    (SessionStatus::SucceededWithIssues, "With issues", "c-issues"),
    (SessionStatus::Skipped, "Skipped", "c-skipped"),
    (SessionStatus::Abandoned, "Abandoned", "c-abandoned"),
    (SessionStatus::Failed, "Failed", "c-failed"),
];

/// The queues of the depth chart.
const DEPTH_SERIES: [(&str, &str, &str); 3] = [
    ("cadence", "Cadence", "c-cadence"),
    ("priority", "Priority", "c-priority"),
    ("push", "Push", "c-push"),
];

fn sessions_chart(overview: &Overview, hour: &Hour) -> Markup {
    let mut series = SESSION_SERIES.map(|(_, label, class)| Series::new(label, class));
    for point in &overview.sessions_per_minute {
        let layer = SESSION_SERIES.iter().position(|(status, _, _)| *status == point.status);
        if let (Some(layer), Some(index)) = (layer, hour.index(point.minute)) {
            series[layer].add(index, point.count as f64);
        }
    }
    // A minute without sessions is absent from the API's answer: it is a
    // minute of none, not an unknown one.
    let any: Vec<usize> = (0..chart::MINUTES)
        .filter(|index| series.iter().any(|one| one.values[*index].is_some()))
        .collect();
    for one in &mut series {
        for index in &any {
            one.values[*index].get_or_insert(0.0);
        }
    }
    chart::stacked("chart-sessions", "Sessions per minute", hour, &series, Unit::Count)
}

fn depth_chart(overview: &Overview, hour: &Hour) -> Markup {
    let mut series = DEPTH_SERIES.map(|(_, label, class)| Series::new(label, class));
    for point in &overview.queue_depth_history {
        let line = DEPTH_SERIES.iter().position(|(queue, _, _)| *queue == point.queue);
        if let (Some(line), Some(index)) = (line, hour.index(point.minute)) {
            series[line].add(index, point.ready as f64);
        }
    }
    chart::lines("chart-depth", "Queue depth (ready)", hour, &series, Unit::Count)
}

fn lag_chart(overview: &Overview, hour: &Hour) -> Markup {
    let mut p50 = Series::new("p50", "c-p50");
    let mut p99 = Series::new("p99", "c-p99");
    p99.dashed = true;
    for point in &overview.lag_history {
        if let Some(index) = hour.index(point.minute) {
            if let Some(value) = point.p50 {
                p50.add(index, value);
            }
            if let Some(value) = point.p99 {
                p99.add(index, value);
            }
        }
    }
    chart::lines("chart-lag", "Cadence lag", hour, &[p50, p99], Unit::Seconds)
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |value| format!("{value:.2} s"))
}

fn role_label(role: &str) -> &str {
    match role {
        "cadence" => "Cadence",
        "priority" => "Priority",
        "push" => "Push",
        "retry" => "Retry",
        "dead" => "Dead letters",
        other => other,
    }
}

/// The overview's content.
pub fn content(overview: &Overview) -> Markup {
    let now = overview.generated_at;
    let hour = Hour::ending(now);
    let management = overview.broker.source == "management";
    html! {
        div.tiles {
            section.tile.alert[overview.dead_jobs.waiting > 0] aria-labelledby="tile-dead" {
                h2 #tile-dead { "Dead jobs waiting" }
                p.big { (overview.dead_jobs.waiting) }
                p { a href="/panel/ops/dead-jobs" { "Review dead jobs" } }
            }
            section.tile.alert[overview.scheduler.leader.is_none()] aria-labelledby="tile-leader" {
                h2 #tile-leader { "Scheduler leader" }
                @match &overview.scheduler.leader {
                    Some(leader) => {
                        p.big.mono { (leader.holder) }
                        p { "Term " (leader.term) ", since " (relative(leader.since, now)) }
                        p.hint { "Lease until " (relative(leader.expires_at, now)) }
                    }
                    None => { p.big { "None" } p { "No scheduler holds the lease: nothing is being scheduled." } }
                }
            }
            section.tile aria-labelledby="tile-lag" {
                h2 #tile-lag { "Cadence lag now" }
                p.big { (seconds(overview.scheduler.lag_seconds.p50)) }
                p { "p99 " (seconds(overview.scheduler.lag_seconds.p99)) }
                p.hint { (overview.scheduler.due_not_queued) " users due and not queued yet" }
            }
            section.tile.alert[overview.outbox.backlog > 0 && overview.outbox.oldest_at.is_some_and(|oldest| (now - oldest).num_minutes() >= 5)] aria-labelledby="tile-outbox" {
                h2 #tile-outbox { "Email outbox" }
                p.big { (overview.outbox.backlog) }
                p {
                    @match overview.outbox.oldest_at {
                        Some(oldest) => { "Oldest waiting since " (relative(oldest, now)) }
                        None => { "Nothing waiting" }
                    }
                }
            }
        }
        section aria-labelledby="queues-heading" {
            h2 #queues-heading { "Queues" }
            @if let Some(error) = &overview.broker.error {
                p.error role="alert" { "The broker did not answer: " (error) }
            } @else if !management {
                p.hint { "Read over AMQP (the broker's management API is not configured or not reachable): ready messages and consumers only." }
            }
            div.scroll {
                table.list.numeric data-table="queues" {
                    thead {
                        tr {
                            th scope="col" { "Queue" }
                            th scope="col" { "Role" }
                            th scope="col" { "Ready" }
                            th scope="col" { "Unacknowledged" }
                            th scope="col" { "Consumers" }
                            th scope="col" { "Published" }
                            th scope="col" { "Delivered" }
                            th scope="col" { "Acknowledged" }
                        }
                    }
                    tbody {
                        @for queue in &overview.queues {
                            @let role = queue["role"].as_str().unwrap_or_default();
                            @let ready = queue["ready"].as_i64().unwrap_or(0);
                            tr.off[role == "dead" && ready > 0] data-queue=(role) {
                                th scope="row" { code { (queue["queue"].as_str().unwrap_or_default()) } }
                                td { (role_label(role)) }
                                td.num { (count(&queue["ready"])) }
                                td.num { (count(&queue["unacknowledged"])) }
                                td.num { (count(&queue["consumers"])) }
                                td.num { (rate(&queue["publish_rate"])) }
                                td.num { (rate(&queue["deliver_rate"])) }
                                td.num { (rate(&queue["ack_rate"])) }
                            }
                        }
                    }
                }
            }
        }
        div.charts {
            (depth_chart(overview, &hour))
            (sessions_chart(overview, &hour))
            (lag_chart(overview, &hour))
        }
        p.hint { "Times are UTC. Each chart covers the hour up to " (now.format("%H:%M")) "; its numbers are under it." }
    }
}

/// `GET /panel/ops`.
pub async fn page(session: Session, State(panel): State<Panel>, query: Query) -> Result<Response, PanelError> {
    let answer = panel.v1.get(&session, "/v1/ops/overview").await?;
    let overview: Overview = serde_json::from_value(answer)
        .map_err(|error| PanelError::Internal(format!("the API's overview did not parse: {error}")))?;
    let page = Page {
        session: &session,
        query: &query,
        tab: "Overview",
        base: "/panel/ops",
        live: Some(overview.generated_at),
        notice: notice(&query),
    };
    Ok(page.render("Overview", content(&overview)))
}
