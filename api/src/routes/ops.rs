//! `/v1/ops/`: the operator console's API (admins only; anyone else gets
//! 404, as for a route that does not exist). The fleet's overview (queues,
//! the scheduler leader, due users, the lag, sessions per minute, the
//! outbox), the workers' heartbeats, dead jobs (list, inspect, replay,
//! discard, one or many), limits and cooldowns, and suspended users.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use syncfleet_common::{
    domain::{DeadJobAction, DeadJobStatus, SessionStatus, SyncStatus, Trigger},
    queue::{JobEnvelope, JobKind, Route},
    reserve, telemetry,
};
use tracing::{Span, info, warn};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Principal, Role},
    console::QueueView,
    error::ApiError,
    extract::{ApiJson, ListQuery, PathId},
    routes::list,
    store::ops::{self as store, DeadFilter, DeadJob, Queued},
};

/// The console's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(workers))
        .routes(routes!(list_dead_jobs))
        .routes(routes!(get_dead_job, discard_dead_job))
        .routes(routes!(replay_dead_job))
        .routes(routes!(dead_jobs_action))
        .routes(routes!(limits))
        .routes(routes!(suspended))
}

/// Only admins operate the fleet; to anyone else the console does not exist.
fn operator(principal: &Principal) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin => Ok(()),
        _ => Err(ApiError::not_found("route")),
    }
}

/// The scheduler as the console shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulerView {
    /// Null while no scheduler holds the lease.
    pub leader: Option<store::Leader>,
    /// Users whose slot passed and whose job is not queued yet.
    pub due_not_queued: i64,
    /// The cadence lag (slot to session start) over the last 5 minutes.
    pub lag_seconds: Percentiles,
}

/// Two percentiles, each the upper bound of the histogram bucket that holds
/// it (null without a sample; a value past the last bound is its bound).
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Sessions that ended in a minute with a status.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsMinute {
    pub minute: DateTime<Utc>,
    pub status: SessionStatus,
    pub count: i64,
}

/// A queue's depth at the end of a minute, as the leader read it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepthMinute {
    pub minute: DateTime<Utc>,
    /// `cadence`, `priority` or `push`.
    pub queue: String,
    pub ready: i64,
}

/// The cadence lag of the sessions that started in a minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct LagMinute {
    pub minute: DateTime<Utc>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// The outbox's backlog.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxView {
    /// Emails pending or being sent.
    pub backlog: i64,
    /// When the oldest of them was queued.
    pub oldest_at: Option<DateTime<Utc>>,
}

/// Where the queue figures came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerView {
    /// `management` (RabbitMQ's management API) or `amqp` (ready messages
    /// and consumers only).
    pub source: String,
    /// Why the queues are missing, when the broker did not answer.
    pub error: Option<String>,
}

/// Dead jobs waiting for an operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadJobsCount {
    pub waiting: i64,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub broker: BrokerView,
    pub queues: Vec<QueueView>,
    pub scheduler: SchedulerView,
    /// The last hour; minutes without a session are absent.
    pub sessions_per_minute: Vec<SessionsMinute>,
    /// The last hour.
    pub queue_depth_history: Vec<DepthMinute>,
    /// The last hour.
    pub lag_history: Vec<LagMinute>,
    pub outbox: OutboxView,
    pub dead_jobs: DeadJobsCount,
}

/// The fleet at a glance: queues, the scheduler, the last hour's sessions,
/// queue depths and lag, the outbox and the dead jobs.
#[utoipa::path(get, path = "/v1/ops/overview", tag = "operations", responses((status = 200, body = Overview), (status = 404, description = "Not an admin.")))]
pub async fn overview(State(state): State<AppState>, principal: Principal) -> Result<Json<Overview>, ApiError> {
    operator(&principal)?;
    let now = Utc::now();
    let hour_ago = now - Duration::hours(1);
    let (broker, queues) = match state.console.queues(&state.publisher).await {
        Ok((source, queues)) => (
            BrokerView {
                source: source.to_owned(),
                error: None,
            },
            queues,
        ),
        Err(error) => (
            BrokerView {
                source: "amqp".to_owned(),
                error: Some(error),
            },
            Vec::new(),
        ),
    };
    let lag = store::minutes(&state.pool, "lag", hour_ago).await?;
    let recent = now - Duration::minutes(5);
    let lag_seconds = percentiles(lag.iter().filter(|minute| minute.minute >= recent));
    let mut lag_by_minute: BTreeMap<DateTime<Utc>, Vec<&store::Minute>> = BTreeMap::new();
    for minute in &lag {
        lag_by_minute.entry(minute.minute).or_default().push(minute);
    }
    let lag_history = lag_by_minute
        .into_iter()
        .map(|(minute, buckets)| {
            let Percentiles { p50, p99 } = percentiles(buckets.into_iter());
            LagMinute { minute, p50, p99 }
        })
        .collect();
    // The workers label the minutes with the sessions' statuses.
    let sessions_per_minute = store::minutes(&state.pool, "sessions", hour_ago)
        .await?
        .into_iter()
        .filter_map(|minute| {
            Some(SessionsMinute {
                minute: minute.minute,
                status: minute.label.parse().ok()?,
                count: minute.value as i64,
            })
        })
        .collect();
    let queue_depth_history = store::minutes(&state.pool, "queue_depth", hour_ago)
        .await?
        .into_iter()
        .map(|minute| DepthMinute {
            minute: minute.minute,
            queue: minute.label,
            ready: minute.value as i64,
        })
        .collect();
    let (backlog, oldest_at) = store::outbox(&state.pool).await?;
    Ok(Json(Overview {
        generated_at: now,
        broker,
        queues,
        scheduler: SchedulerView {
            leader: store::leader(&state.pool).await?,
            due_not_queued: store::due_not_queued(&state.pool).await?,
            lag_seconds,
        },
        sessions_per_minute,
        queue_depth_history,
        lag_history,
        outbox: OutboxView { backlog, oldest_at },
        dead_jobs: DeadJobsCount {
            waiting: store::dead_jobs_waiting(&state.pool).await?,
        },
    }))
}

/// The p50 and p99 of lag buckets (label: the bucket's upper bound, `+Inf`
/// past the last), summed over minutes and sources.
fn percentiles<'a>(buckets: impl Iterator<Item = &'a store::Minute>) -> Percentiles {
    let mut counts: BTreeMap<u64, f64> = BTreeMap::new();
    let mut largest = 0.0_f64;
    for bucket in buckets {
        let bound = match bucket.label.as_str() {
            "+Inf" => f64::INFINITY,
            label => label.parse().unwrap_or(f64::INFINITY),
        };
        if bound.is_finite() {
            largest = largest.max(bound);
        }
        *counts.entry(bound.to_bits()).or_default() += bucket.value;
    }
    // Positive floats order like their bits.
    let total: f64 = counts.values().sum();
    if total <= 0.0 {
        return Percentiles { p50: None, p99: None };
    }
    let at = |quantile: f64| {
        let mut seen = 0.0;
        for (bits, count) in &counts {
            seen += count;
            if seen >= quantile * total {
                let bound = f64::from_bits(*bits);
                return Some(if bound.is_finite() { bound } else { largest });
            }
        }
        Some(largest)
    };
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// A worker as the console shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub version: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// `live`, `draining` (stopping: takes no new job), `stopped` (drained
    /// and exited) or `silent` (its heartbeat is more than three intervals
    /// late: killed, hung or cut off).
    pub state: String,
    /// Deliveries in flight per queue (`priority`, `cadence`, `push`).
    #[schema(value_type = Object)]
    pub in_flight: serde_json::Value,
}

/// The workers seen in the last day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Workers {
    /// A worker this much late is silent (three of its intervals; the
    /// largest interval among them).
    pub silent_after_seconds: f64,
    /// Live first, then silent, draining and stopped; most recently seen first.
    pub workers: Vec<WorkerView>,
}

/// Every worker seen in the last day, from the heartbeats they write.
#[utoipa::path(get, path = "/v1/ops/workers", tag = "operations", responses((status = 200, body = Workers), (status = 404, description = "Not an admin.")))]
pub async fn workers(State(state): State<AppState>, principal: Principal) -> Result<Json<Workers>, ApiError> {
    operator(&principal)?;
    let rows = store::workers(&state.pool).await?;
    let silent_after_seconds = rows
        .iter()
        .map(|row| row.interval_ms)
        .max()
        .map_or(30.0, |interval_ms| f64::from(interval_ms) * 3.0 / 1000.0);
    let mut workers: Vec<WorkerView> = rows
        .into_iter()
        .map(|row| {
            let state = match (row.stopped_at.is_some(), row.silent, row.draining) {
                (true, _, _) => "stopped",
                (false, true, _) => "silent",
                (false, false, true) => "draining",
                (false, false, false) => "live",
            };
            WorkerView {
                id: row.worker_id,
                version: row.version,
                host: row.host,
                started_at: row.started_at,
                last_seen_at: row.last_seen_at,
                state: state.to_owned(),
                in_flight: row.in_flight,
            }
        })
        .collect();
    let rank = |state: &str| match state {
        "live" => 0,
        "silent" => 1,
        "draining" => 2,
        _ => 3,
    };
    workers.sort_by_key(|worker| rank(&worker.state));
    Ok(Json(Workers {
        silent_after_seconds,
        workers,
    }))
}

static DEAD_LIST: list::Spec = list::Spec {
    list: "dead_jobs",
    columns: &[list::column("dead_at", "d.dead_at", list::Kind::Time, false)],
    id_sql: "d.id",
    default_sort: "dead_at",
    default_order: list::Order::Desc,
};

/// The dead jobs.
pub struct DeadJobs;

impl list::Listing for DeadJobs {
    const SPEC: &'static list::Spec = &DEAD_LIST;
}

/// Which dead jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadJobQuery {
    /// Where they stand (by default, waiting for an operator).
    #[serde(default)]
    #[param(value_type = Option<DeadJobStatus>)]
    status: Option<String>,
    /// Why they died, e.g. `delivery_limit` or `retries_exhausted`.
    #[serde(default)]
    reason: Option<String>,
    /// What the jobs asked for.
    #[serde(default)]
    #[param(value_type = Option<JobKind>)]
    kind: Option<String>,
    /// Their user's organization.
    #[serde(default)]
    #[param(value_type = Option<Uuid>)]
    organization_id: Option<String>,
    /// Dead at or after this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
}

/// A dead-job filter as a bulk action takes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadJobFilter {
    /// Why they died.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the jobs asked for.
    #[serde(default)]
    pub kind: Option<JobKind>,
    #[serde(default)]
    pub organization_id: Option<Uuid>,
    /// Dead at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

fn reason_filter(reason: Option<&str>) -> Result<Option<String>, ApiError> {
    match reason.map(str::trim) {
        None => Ok(None),
        Some("") => Err(ApiError::invalid("reason", "reason must not be empty")),
        Some(reason) if reason.len() > 200 => Err(ApiError::invalid("reason", "reason is at most 200 characters")),
        Some(reason) => Ok(Some(reason.to_owned())),
    }
}

/// Dead jobs, newest first: those waiting for an operator by default.
#[utoipa::path(get, path = "/v1/ops/dead-jobs", tag = "operations", params(DeadJobQuery, list::PageParams<DeadJobs>), responses((status = 200, body = list::Listed<DeadJob>), (status = 404, description = "Not an admin.")))]
pub async fn list_dead_jobs(
    State(state): State<AppState>,
    principal: Principal,
    ListQuery(query, paging): ListQuery<DeadJobQuery, DeadJobs>,
) -> Result<Json<list::Listed<DeadJob>>, ApiError> {
    operator(&principal)?;
    let filter = DeadFilter {
        status: query
            .status
            .as_deref()
            .map(|raw| list::one_of("status", raw, DeadJobStatus::ALL))
            .transpose()?,
        reason: reason_filter(query.reason.as_deref())?,
        kind: query
            .kind
            .as_deref()
            .map(|raw| list::one_of("kind", raw, JobKind::ALL))
            .transpose()?,
        organization_id: query
            .organization_id
            .as_deref()
            .map(|raw| crate::routes::parse_id("organization_id", raw))
            .transpose()?,
        since: query.since.as_deref().map(|raw| list::time("since", raw)).transpose()?,
    };
    let page = paging.page(&format!("{filter:?}"))?;
    let (total, rows) = store::dead_page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish(rows)?;
    Ok(Json(list::Listed {
        items,
        next_cursor,
        total,
    }))
}

/// A dead job, inspected.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadJobDetail {
    #[serde(flatten)]
    pub job: DeadJob,
    /// The job as it was on the queue; null when the message was not JSON.
    #[schema(value_type = Option<Object>)]
    pub envelope: Option<serde_json::Value>,
    /// The message's text when it was not JSON (at most 4 kB).
    pub payload_text: Option<String>,
    /// Every session the job ran, oldest first, with its error.
    pub attempts: Vec<store::Attempt>,
}

/// A dead job with its envelope and every attempt's error.
#[utoipa::path(get, path = "/v1/ops/dead-jobs/{id}", tag = "operations", params(("id" = Uuid, Path, description = "The dead job.")), responses((status = 200, body = DeadJobDetail), (status = 404, description = "No such dead job, or not an admin.")))]
pub async fn get_dead_job(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<DeadJobDetail>, ApiError> {
    operator(&principal)?;
    let mut connection = state.pool.acquire().await?;
    let (job, payload) = store::dead_job(&mut connection, id, false)
        .await?
        .ok_or_else(|| ApiError::not_found("dead job"))?;
    drop(connection);
    let envelope: Option<serde_json::Value> = serde_json::from_slice(&payload).ok();
    let payload_text = match envelope {
        Some(_) => None,
        None => Some(String::from_utf8_lossy(&payload[..payload.len().min(4096)]).into_owned()),
    };
    let attempts = match job.job_id {
        Some(job_id) => store::attempts(&state.pool, job_id).await?,
        None => Vec::new(),
    };
    Ok(Json(DeadJobDetail {
        job,
        envelope,
        payload_text,
        attempts,
    }))
}

/// The job a replay publishes: its id derived from the dead job's, so a
/// replay retried after an unknown outcome publishes the same job again,
/// which the worker runs once (a finished job delivered again runs nothing).
fn replay_id(dead_job: Uuid) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"syncfleet dead job replay\0")
        .chain_update(dead_job.as_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What became of one dead job in an action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    pub id: Uuid,
    /// `replayed`, `discarded`, `already` (it was already in that state:
    /// nothing done), `conflict` (it was in the other one, or cannot be
    /// replayed) or `not_found`.
    pub outcome: String,
    pub message: Option<String>,
    /// The job the replay published (or the user's job already queued that
    /// syncs them instead).
    pub replay_job_id: Option<Uuid>,
}

/// What one replay or discard did, and the job's state after it.
enum Done {
    Changed(DeadJob),
    Already(DeadJob),
}

/// A dead job locked for a replay or a discard.
enum Locked {
    /// Waiting for an operator, with its payload.
    Dead(DeadJob, Vec<u8>),
    /// In the state the action leads to already.
    Already(DeadJob),
}

/// Locks dead job `id` for `action`; the other resolution is a conflict: a
/// replayed job is never discarded, nor a discarded one replayed.
async fn locked(connection: &mut sqlx::PgConnection, id: Uuid, action: DeadJobAction) -> Result<Locked, ApiError> {
    let (dead, payload) = store::dead_job(connection, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("dead job"))?;
    let to = action.leads_to();
    match dead.status {
        DeadJobStatus::Dead => Ok(Locked::Dead(dead, payload)),
        status if status == to => Ok(Locked::Already(dead)),
        other => {
            let code = match other {
                DeadJobStatus::Replayed => "dead_job_replayed",
                _ => "dead_job_discarded",
            };
            Err(ApiError::conflict(
                code,
                format!("this dead job was {other}; it cannot be {to}"),
            ))
        }
    }
}

async fn reread(state: &AppState, id: Uuid) -> Result<DeadJob, ApiError> {
    let mut connection = state.pool.acquire().await?;
    Ok(store::dead_job(&mut connection, id, false)
        .await?
        .ok_or_else(|| ApiError::not_found("dead job"))?
        .0)
}

/// Replays one dead job, in its own transaction: publishes a new job (a new
/// id, its first attempt) and records who did it. A job already replayed is
/// answered as it is; a discarded one, or a message that is not a job, is a
/// conflict.
async fn replay(state: &AppState, principal: &Principal, id: Uuid) -> Result<Done, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (dead, payload) = match locked(&mut tx, id, DeadJobAction::Replay).await? {
        Locked::Dead(dead, payload) => (dead, payload),
        Locked::Already(dead) => return Ok(Done::Already(dead)),
    };
    let Ok(mut job) = JobEnvelope::decode(&payload) else {
        return Err(ApiError::conflict(
            "dead_job_unreadable",
            "this dead message is not a job this build can run; discard it",
        ));
    };
    let previous = job.job_id;
    job.job_id = replay_id(dead.id);
    job.attempt = 1;
    job.enqueued_at = Utc::now();
    job.trace = telemetry::trace_context(&Span::current());
    let route = match (job.kind, job.trigger) {
        (JobKind::Sync, Trigger::Cadence) => Route::Cadence,
        (JobKind::Sync | JobKind::Admin, _) => Route::Priority,
        (JobKind::Push, _) => Route::Push,
    };
    if let Some(user_id) = job.user_id {
        if !store::user_exists(&mut tx, user_id).await? {
            return Err(ApiError::conflict(
                "user_gone",
                "the job's user was deleted; discard the job",
            ));
        }
        if route == Route::Cadence
            && let Queued::Already(queued) = store::queue_cadence_replay(&mut tx, user_id, job.job_id).await?
        {
            // The user's next cadence job is queued: it syncs them.
            store::resolve(&mut tx, id, &principal.label, DeadJobStatus::Replayed, Some(queued)).await?;
            tx.commit().await.map_err(ApiError::at_commit)?;
            info!(dead_job = %id, queued = %queued, by = %principal.label, "Dead job replayed by the user's queued job.");
            return Ok(Done::Changed(reread(state, id).await?));
        }
    }
    store::copy_admin_job(&mut tx, previous, job.job_id, &principal.label).await?;
    // Published before the commit: a failed publish changes nothing.
    if let Err(error) = state.publisher.publish(route, std::slice::from_ref(&job)).await {
        warn!(%error, dead_job = %id, "Could not publish a replayed job.");
        return Err(ApiError::unavailable(
            "the job could not be queued; nothing was changed, try again",
        ));
    }
    store::resolve(&mut tx, id, &principal.label, DeadJobStatus::Replayed, Some(job.job_id)).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    info!(dead_job = %id, job_id = %job.job_id, by = %principal.label, "Dead job replayed.");
    Ok(Done::Changed(reread(state, id).await?))
}

/// Discards one dead job: it stays listed under `status=discarded`.
async fn discard(state: &AppState, principal: &Principal, id: Uuid) -> Result<Done, ApiError> {
    let mut tx = state.pool.begin().await?;
    if let Locked::Already(dead) = locked(&mut tx, id, DeadJobAction::Discard).await? {
        return Ok(Done::Already(dead));
    }
    store::resolve(&mut tx, id, &principal.label, DeadJobStatus::Discarded, None).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    info!(dead_job = %id, by = %principal.label, "Dead job discarded.");
    Ok(Done::Changed(reread(state, id).await?))
}

/// Replays a dead job: a new job (a new id, its first attempt) is published
/// and who did it recorded. Replaying it again publishes nothing and answers
/// the same; a cadence sync whose user has their next job queued already is
/// replayed by that job.
#[utoipa::path(post, path = "/v1/ops/dead-jobs/{id}/replay", tag = "operations", params(("id" = Uuid, Path, description = "The dead job.")), responses((status = 200, body = DeadJob), (status = 404, description = "No such dead job, or not an admin."), (status = 409, description = "Discarded, not a job, or its user is gone.")))]
pub async fn replay_dead_job(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<DeadJob>, ApiError> {
    operator(&principal)?;
    match replay(&state, &principal, id).await? {
        Done::Changed(job) | Done::Already(job) => Ok(Json(job)),
    }
}

/// Discards a dead job (it stays listed under `status=discarded`).
#[utoipa::path(delete, path = "/v1/ops/dead-jobs/{id}", tag = "operations", params(("id" = Uuid, Path, description = "The dead job.")), responses((status = 200, body = DeadJob), (status = 404, description = "No such dead job, or not an admin."), (status = 409, description = "Replayed already.")))]
pub async fn discard_dead_job(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<DeadJob>, ApiError> {
    operator(&principal)?;
    match discard(&state, &principal, id).await? {
        Done::Changed(job) | Done::Already(job) => Ok(Json(job)),
    }
}

/// Which dead jobs an action covers: a selection or a filter (of the jobs
/// waiting, oldest first, at most 1,000 per call).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadJobsAction {
    /// The dead jobs (1 to 500).
    #[serde(default)]
    pub ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub filter: Option<DeadJobFilter>,
}

/// Every job's outcome, in the order they were taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResults {
    pub results: Vec<ActionResult>,
}

/// The most jobs a filtered action takes in one call.
const FILTER_LIMIT: i64 = 1000;

/// Replays or discards a selection of dead jobs, or those a filter matches;
/// each job in its own transaction, with its own outcome.
#[utoipa::path(post, path = "/v1/ops/dead-jobs/actions/{action}", tag = "operations", params(("action" = inline(DeadJobAction), Path, description = "What to do with them.")), request_body = DeadJobsAction, responses((status = 200, body = ActionResults), (status = 400, description = "Neither or both of ids and filter, or a bad value."), (status = 404, description = "Not an admin, or no such action.")))]
pub async fn dead_jobs_action(
    State(state): State<AppState>,
    principal: Principal,
    axum::extract::Path(action): axum::extract::Path<String>,
    ApiJson(body): ApiJson<DeadJobsAction>,
) -> Result<Json<ActionResults>, ApiError> {
    operator(&principal)?;
    let action = action
        .parse::<DeadJobAction>()
        .map_err(|_| ApiError::not_found("action"))?;
    let ids = match (body.ids, body.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > 500 {
                return Err(ApiError::invalid("ids", "ids holds 1 to 500 dead jobs"));
            }
            let mut seen = std::collections::HashSet::new();
            ids.into_iter().filter(|id| seen.insert(*id)).collect()
        }
        (None, Some(filter)) => {
            let filter = DeadFilter {
                status: None,
                reason: reason_filter(filter.reason.as_deref()).map_err(|error| error.on_field("filter.reason"))?,
                kind: filter.kind,
                organization_id: filter.organization_id,
                since: filter.since,
            };
            store::dead_ids(&state.pool, &filter, FILTER_LIMIT).await?
        }
        (Some(_), Some(_)) => return Err(ApiError::invalid("filter", "give either ids or filter, not both")),
        (None, None) => return Err(ApiError::invalid("ids", "give ids or filter")),
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let done = match action {
            DeadJobAction::Replay => replay(&state, &principal, id).await,
            DeadJobAction::Discard => discard(&state, &principal, id).await,
        };
        results.push(match done {
            Ok(Done::Changed(job)) => ActionResult {
                id,
                outcome: action.leads_to().to_string(),
                message: None,
                replay_job_id: job.replay_job_id,
            },
            Ok(Done::Already(job)) => ActionResult {
                id,
                outcome: "already".to_owned(),
                message: Some(format!("it was {} already", job.status)),
                replay_job_id: job.replay_job_id,
            },
            Err(error) => ActionResult {
                id,
                outcome: match error.status().as_u16() {
                    404 => "not_found",
                    409 => "conflict",
                    _ => "failed",
                }
                .to_owned(),
                message: Some(error.message().to_owned()),
                replay_job_id: None,
            },
        });
    }
    Ok(Json(ActionResults { results }))
}

/// A cooldown running now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CooldownView {
    /// `graph`, `ews`, `gmail`, `salesforce`, or the limit's own name.
    pub provider: String,
    /// The account (a mailbox, a tenant, a Salesforce org).
    pub account: String,
    pub until: DateTime<Utc>,
    pub reason: Option<String>,
}

/// A Salesforce org's daily API usage, as its last answer reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrgUsageView {
    /// The org's id.
    pub org: String,
    pub used: i64,
    pub allocation: i64,
    /// The share of the allocation the fleet leaves to the org's other clients.
    pub reserve_percent: i16,
    /// What the fleet may use: the allocation less the reserve.
    pub usable: i64,
    pub observed_at: DateTime<Utc>,
    /// At or above 90% of what the fleet may use.
    pub near_reserve: bool,
}

/// Throttled answers from a provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThrottledCount {
    pub provider: String,
    pub count: i64,
}

/// The fleet's limits now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    /// Accounts cooling down after a provider asked to wait, soonest to end first.
    pub cooldowns: Vec<CooldownView>,
    /// Why the cooldowns are missing, when Redis did not answer.
    pub cooldowns_error: Option<String>,
    /// The orgs nearest their limit first.
    pub salesforce_orgs: Vec<OrgUsageView>,
    /// Over the last hour, by provider.
    pub throttled_last_hour: Vec<ThrottledCount>,
}

/// Accounts cooling down, each Salesforce org's usage against its
/// allocation and reserve, and throttled answers over the last hour.
#[utoipa::path(get, path = "/v1/ops/limits", tag = "operations", responses((status = 200, body = Limits), (status = 404, description = "Not an admin.")))]
pub async fn limits(State(state): State<AppState>, principal: Principal) -> Result<Json<Limits>, ApiError> {
    operator(&principal)?;
    let (cooldowns, cooldowns_error) = match state.console.cooldowns().await {
        Ok(cooldowns) => (
            cooldowns
                .into_iter()
                .map(|cooldown| {
                    let (provider, account) = match cooldown.account.split_once(':') {
                        Some((provider, account)) => (provider.to_owned(), account.to_owned()),
                        None => (cooldown.account.clone(), cooldown.account.clone()),
                    };
                    CooldownView {
                        provider,
                        account,
                        until: Utc
                            .timestamp_millis_opt(cooldown.until_ms)
                            .single()
                            .unwrap_or_else(Utc::now),
                        reason: cooldown.reason,
                    }
                })
                .collect(),
            None,
        ),
        Err(error) => (Vec::new(), Some(error)),
    };
    let salesforce_orgs = store::salesforce_usage(&state.pool)
        .await?
        .into_iter()
        .map(|usage| {
            // The rule the leader's gauge of the orgs near the reserve counts by.
            let reported = reserve::OrgUsage {
                used: usage.used,
                allocation: usage.allocation,
                reserve_percent: usage.reserve_percent,
            };
            OrgUsageView {
                near_reserve: reported.near_reserve(),
                usable: reported.usable(),
                org: usage.org,
                used: usage.used,
                allocation: usage.allocation,
                reserve_percent: usage.reserve_percent,
                observed_at: usage.observed_at,
            }
        })
        .collect();
    let mut throttled: BTreeMap<String, i64> = BTreeMap::new();
    for minute in store::minutes(&state.pool, "throttled", Utc::now() - Duration::hours(1)).await? {
        *throttled.entry(minute.label).or_default() += minute.value as i64;
    }
    Ok(Json(Limits {
        cooldowns,
        cooldowns_error,
        salesforce_orgs,
        throttled_last_hour: throttled
            .into_iter()
            .map(|(provider, count)| ThrottledCount { provider, count })
            .collect(),
    }))
}

static SUSPENDED_LIST: list::Spec = list::Spec {
    list: "suspended",
    columns: &[list::column(
        "suspended_at",
        "u.sync_status_changed_at",
        list::Kind::Time,
        false,
    )],
    id_sql: "u.id",
    default_sort: "suspended_at",
    default_order: list::Order::Desc,
};

/// The suspended users.
pub struct SuspendedUsers;

impl list::Listing for SuspendedUsers {
    const SPEC: &'static list::Spec = &SUSPENDED_LIST;
}

/// Which suspended users to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuspendedQuery {
    #[serde(default)]
    #[param(value_type = Option<Uuid>)]
    organization_id: Option<String>,
    /// `auth`, `throttling` or `other`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(auth|throttling|other)$")]
    class: Option<String>,
}

/// Suspended users: the groups, and a page of the users.
#[derive(Debug, Serialize, ToSchema)]
pub struct Suspended {
    /// By class and organization, the largest first (every suspended user,
    /// whatever the filters).
    pub groups: Vec<store::SuspendedGroup>,
    pub items: Vec<store::SuspendedUser>,
    pub next_cursor: Option<String>,
    /// How many users match the filters.
    pub total: i64,
}

/// Users auto-suspend disabled, by class and organization, with the error
/// that suspended them. Re-enable them with the users' actions (`enable-sync`).
#[utoipa::path(get, path = "/v1/ops/suspended", tag = "operations", params(SuspendedQuery, list::PageParams<SuspendedUsers>), responses((status = 200, body = Suspended), (status = 404, description = "Not an admin.")))]
pub async fn suspended(
    State(state): State<AppState>,
    principal: Principal,
    ListQuery(query, paging): ListQuery<SuspendedQuery, SuspendedUsers>,
) -> Result<Json<Suspended>, ApiError> {
    operator(&principal)?;
    let filter = store::SuspendedFilter {
        organization_id: query
            .organization_id
            .as_deref()
            .map(|raw| crate::routes::parse_id("organization_id", raw))
            .transpose()?,
        status: match query.class.as_deref() {
            None => None,
            Some("auth") => Some(SyncStatus::DisabledAuthError),
            Some("throttling") => Some(SyncStatus::DisabledThrottlingError),
            Some("other") => Some(SyncStatus::DisabledOtherError),
            Some(raw) => {
                return Err(ApiError::invalid(
                    "class",
                    format!("{raw:?} is not a class: use one of auth, throttling, other"),
                ));
            }
        },
    };
    let page = paging.page(&format!("{:?}|{:?}", filter.organization_id, filter.status))?;
    let (total, rows) = store::suspended_page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish(rows)?;
    Ok(Json(Suspended {
        groups: store::suspended_groups(&state.pool).await?,
        items,
        next_cursor,
        total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(label: &str, value: f64) -> store::Minute {
        store::Minute {
            minute: Utc::now(),
            label: label.to_owned(),
            value,
        }
    }

    #[test]
    fn percentiles_are_the_bounds_of_the_buckets_that_hold_them() {
        let buckets = [bucket("0.5", 60.0), bucket("2", 39.0), bucket("+Inf", 1.0)];
        assert_eq!(
            percentiles(buckets.iter()),
            Percentiles {
                p50: Some(0.5),
                p99: Some(2.0)
            }
        );
        let late = [bucket("0.5", 1.0), bucket("1800", 1.0), bucket("+Inf", 98.0)];
        assert_eq!(percentiles(late.iter()).p99, Some(1800.0));
        assert_eq!(percentiles([].iter()), Percentiles { p50: None, p99: None });
    }

    #[test]
    fn a_replay_id_is_the_same_for_the_same_dead_job_only() {
        let (one, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(replay_id(one), replay_id(one));
        assert_ne!(replay_id(one), replay_id(other));
    }
}
