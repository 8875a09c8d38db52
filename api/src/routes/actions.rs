//! User actions (M8), on one user (`POST /v1/users/{id}/actions/{action}`)
//! or a selection (`POST /v1/users/actions/{action}`, one result per user,
//! each user in its own transaction). Actions that reach outside services
//! run as jobs on the priority queue: the answer carries the job, and
//! `?wait=N` waits up to N seconds for its result. Force sync: at most once
//! a minute per user.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use syncfleet_common::{
    domain::{SyncStatus, Trigger},
    queue::{AdminAction, JobEnvelope, Route},
    telemetry,
};
use tracing::{Span, info, warn};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use sqlx::{Postgres, Transaction};

use crate::extract::{ApiJson, PathId};
use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    idempotency::Idempotency,
    routes::{
        admin_jobs, customization,
        jobs::{self, JobView},
        parse_id,
        users::{self, ActionResult, Switch, UserView},
    },
};

/// The action routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(user_action))
        .routes(routes!(bulk_action))
}
/// The shortest time between two force syncs of one user.
const FORCE_SYNC_SPACING_SECONDS: f64 = 60.0;
/// The longest `?wait=`.
const MAX_WAIT_SECONDS: u64 = 60;

/// Reads `wait` from the query string: whole seconds, 0 to 60.
fn wait_seconds(query: Option<&str>) -> Result<u64, ApiError> {
    let Some(query) = query else { return Ok(0) };
    let mut wait = 0;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "wait" => {
                wait = value
                    .parse::<u64>()
                    .ok()
                    .filter(|seconds| *seconds <= MAX_WAIT_SECONDS)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "wait",
                            format!("wait must be whole seconds from 0 to {MAX_WAIT_SECONDS}, got {value:?}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    "query",
                    format!("unknown query parameter {other:?}; expected wait"),
                ));
            }
        }
    }
    Ok(wait)
}

/// Queues a force sync for one user: refused inside the minute (429 with
/// the time left), or while sync is disabled (409); nothing is changed then.
/// Runs in `tx`, which the caller commits after the publish.
pub async fn queue_force_sync(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    user_id: uuid::Uuid,
) -> Result<uuid::Uuid, ApiError> {
    let target = crate::store::users::force_sync_target(tx, user_id)
        .await?
        .filter(|target| principal.may_act_on_user(user_id, target.organization_id))
        .ok_or_else(|| ApiError::not_found("user"))?;
    if !target.organization_enabled {
        return Err(ApiError::conflict(
            "sync_disabled",
            "synchronization is disabled for the user's organization; enable it first",
        ));
    }
    if target.sync_status != SyncStatus::Enabled {
        return Err(ApiError::conflict(
            "sync_disabled",
            format!(
                "synchronization is {} for this user; enable it first",
                target.sync_status.as_str().replace('_', " ")
            ),
        ));
    }
    if let Some(since) = target
        .seconds_since_force
        .filter(|since| *since < FORCE_SYNC_SPACING_SECONDS)
    {
        let left = (FORCE_SYNC_SPACING_SECONDS - since).ceil().max(1.0) as u64;
        return Err(ApiError::too_many_requests(
            left,
            format!(
                "a force sync was requested {}s ago; at most one a minute: try again in {left}s",
                since.floor() as u64
            ),
        ));
    }

    let mut job = JobEnvelope::sync(user_id, Trigger::Force, chrono::Utc::now());
    job.trace = telemetry::trace_context(&Span::current());
    let record = crate::store::jobs::NewJob {
        id: job.job_id,
        action: "force-sync",
        organization_id: target.organization_id,
        user_id,
        requested_by: &principal.label,
        request: None,
    };
    crate::store::jobs::insert(tx, &record).await?;
    crate::store::users::stamp_force_sync(tx, user_id).await?;
    // Published before the commit: the worker's claim waits for this
    // transaction (it locks the same user row), and a failed publish leaves
    // nothing behind, not even the once-a-minute stamp.
    if let Err(error) = state
        .publisher
        .publish(Route::Priority, std::slice::from_ref(&job))
        .await
    {
        warn!(%error, "Could not queue a force sync.");
        return Err(ApiError::unavailable(
            "the job could not be queued; nothing was changed, try again",
        ));
    }
    info!(job_id = %job.job_id, requested_by = %principal.label, "Force sync queued.");
    Ok(job.job_id)
}

/// An action's name, as the path gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Switch(Switch),
    ForceSync,
    Job(AdminAction),
    ResetCustomization,
    ChangeOrganization,
    ChangePlan,
    Delete,
    ForceDelete,
}

/// Every action name, for the error naming them.
const ACTIONS: &str = "enable-sync, disable-sync, force-sync, reset-mailbox, reinitialize-mailbox, \
     check-settings, check-crm, check-mailbox, install-sidebar, remove-sidebar, check-sidebar, \
     reset-customization, change-organization, change-plan, delete, force-delete";

impl Action {
    fn parse(name: &str) -> Result<Self, ApiError> {
        if let Some(switch) = Switch::from_action(name) {
            return Ok(Self::Switch(switch));
        }
        if let Some(job) = AdminAction::from_action(name) {
            return Ok(Self::Job(job));
        }
        Ok(match name {
            "force-sync" => Self::ForceSync,
            "reset-customization" => Self::ResetCustomization,
            "change-organization" => Self::ChangeOrganization,
            "change-plan" => Self::ChangePlan,
            "delete" => Self::Delete,
            "force-delete" => Self::ForceDelete,
            _ => {
                return Err(ApiError::not_found_code(
                    "unknown_action",
                    format!("no action {name:?}; actions: {ACTIONS}"),
                )
                .on_field("action"));
            }
        })
    }
}

/// What some actions take besides the user: `organization_id` for
/// change-organization, `plan_id` (a plan, or `null` for none) for
/// change-plan. A bulk action's body adds `user_ids`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionParameters {
    /// The organization to move to (change-organization).
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The plan to assign, `null` for none (change-plan).
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    pub plan_id: Option<Option<String>>,
}

/// `{"user_ids": [...]}` plus the action's parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// The users, at most 1000, no repeats.
    pub user_ids: Vec<String>,
    /// As for one user.
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    pub plan_id: Option<Option<String>>,
}

/// The parameters an action needs, checked before any user is touched.
#[derive(Debug, Clone, Copy)]
enum Checked {
    None,
    Organization(Uuid),
    Plan(Option<Uuid>),
}

impl ActionParameters {
    fn check(&self, action: Action) -> Result<Checked, ApiError> {
        let unexpected = |field: &'static str| {
            ApiError::invalid(field, format!("{field} is only taken by the action that needs it"))
        };
        match action {
            Action::ChangeOrganization => {
                if self.plan_id.is_some() {
                    return Err(unexpected("plan_id"));
                }
                let raw = self
                    .organization_id
                    .as_deref()
                    .ok_or_else(|| ApiError::invalid("organization_id", "change-organization needs organization_id"))?;
                Ok(Checked::Organization(parse_id("organization_id", raw)?))
            }
            Action::ChangePlan => {
                if self.organization_id.is_some() {
                    return Err(unexpected("organization_id"));
                }
                let raw = self
                    .plan_id
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid("plan_id", "change-plan needs plan_id (null for no plan)"))?;
                Ok(Checked::Plan(
                    raw.as_deref().map(|raw| parse_id("plan_id", raw)).transpose()?,
                ))
            }
            _ if self.organization_id.is_some() => Err(unexpected("organization_id")),
            _ if self.plan_id.is_some() => Err(unexpected("plan_id")),
            _ => Ok(Checked::None),
        }
    }
}

/// One user's outcome, before it is answered.
enum Outcome {
    /// Done at once; `user` is absent once the user is deleted.
    Done { changed: bool, user: Option<Box<UserView>> },
    /// Queued as a job.
    Queued(Uuid),
}

impl From<ActionResult> for Outcome {
    fn from(result: ActionResult) -> Self {
        Self::Done {
            changed: result.changed,
            user: Some(Box::new(result.user)),
        }
    }
}

/// Runs one action on one user in one transaction: it claims
/// `idempotency` first, runs the action (a job is published before the
/// commit), stores the answer `answer` gives for the outcome (a job as
/// queued) when the request has a key, then commits.
async fn run(
    state: &AppState,
    principal: &Principal,
    idempotency: &Idempotency,
    user_id: Uuid,
    (action, parameters): (Action, Checked),
    answer: impl FnOnce(&Outcome, Option<JobView>) -> (StatusCode, serde_json::Value),
) -> Result<Outcome, ApiError> {
    let mut tx = state.pool.begin().await?;
    idempotency.claim(&mut tx).await?;
    let outcome = match (action, parameters) {
        (Action::Switch(switch), _) => users::switch_sync(&mut tx, principal, user_id, switch).await?.into(),
        (Action::ForceSync, _) => Outcome::Queued(queue_force_sync(state, &mut tx, principal, user_id).await?),
        (Action::Job(job), _) => Outcome::Queued(admin_jobs::queue(state, &mut tx, principal, user_id, job).await?),
        (Action::ResetCustomization, _) => customization::reset(&mut tx, principal, user_id).await?.into(),
        (Action::ChangeOrganization, Checked::Organization(organization)) => {
            users::change_organization(&mut tx, principal, user_id, organization)
                .await?
                .into()
        }
        (Action::ChangePlan, Checked::Plan(plan)) => {
            users::change_plan(&mut tx, principal, user_id, plan).await?.into()
        }
        (Action::Delete | Action::ForceDelete, _) => {
            users::remove(&mut tx, principal, user_id, action == Action::ForceDelete).await?;
            Outcome::Done {
                changed: true,
                user: None,
            }
        }
        // `Checked` always matches its action: `ActionParameters::check`.
        (Action::ChangeOrganization | Action::ChangePlan, _) => {
            return Err(ApiError::invalid("body", "the action's parameters are missing"));
        }
    };
    if idempotency.is_some() {
        let job = match &outcome {
            Outcome::Queued(job_id) => jobs::read(&mut *tx, *job_id).await?,
            Outcome::Done { .. } => None,
        };
        let (status, body) = answer(&outcome, job);
        idempotency.answer(&mut tx, status, &body).await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(outcome)
}

/// The answer for one user.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionAnswer {
    pub user_id: Uuid,
    /// The action's name.
    pub action: String,
    /// Whether anything changed (enabling an enabled user changes nothing;
    /// a queued job counts as a change).
    pub changed: bool,
    /// The user after the action (absent for a job, and once deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
    /// The job, for the actions that run as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// `?wait=N`: whole seconds, 0 to 60.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct WaitQuery {
    /// For a job: wait up to this many seconds (0-60) for its result.
    wait: Option<u64>,
}

/// Reads an optional JSON body.
fn parameters<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    crate::extract::json(body)
}

/// One action on one user. A job answers 202 while it runs, 200 with its
/// result once finished (within `?wait=`).
#[utoipa::path(
    post,
    path = "/v1/users/{id}/actions/{action}",
    tag = "actions",
    params(
        ("id" = Uuid, Path, description = "The user."),
        ("action" = String, Path, description = "enable-sync, disable-sync, force-sync, reset-mailbox, \
            reinitialize-mailbox, check-settings, check-crm, check-mailbox, install-sidebar, remove-sidebar, \
            check-sidebar, reset-customization, change-organization, change-plan, delete or force-delete."),
        WaitQuery
    ),
    request_body(content = Option<ActionParameters>, description = "Only change-organization and change-plan take one."),
    responses(
        (status = 200, body = ActionAnswer, description = "Done (or the job finished)."),
        (status = 202, body = ActionAnswer, description = "The job is queued or running."),
    )
)]
#[tracing::instrument(name = "user_action", skip_all, fields(user_id = %user_id, action = %name))]
pub async fn user_action(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    PathId(user_id): PathId,
    Path((_, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<ActionAnswer>), ApiError> {
    let action = Action::parse(&name)?;
    let wait = wait_seconds(query.as_deref())?;
    let parameters: ActionParameters = parameters(&body)?;
    let checked = parameters.check(action)?;
    let answer = |changed, user, job| ActionAnswer {
        user_id,
        action: name.clone(),
        changed,
        user,
        job,
    };
    // The answer kept with the effect, for a retry whose first answer was
    // lost: the same as below, a job as queued.
    let kept = |outcome: &Outcome, job| {
        let (status, kept) = match outcome {
            Outcome::Done { changed, user } => (StatusCode::OK, answer(*changed, user.as_deref().cloned(), None)),
            Outcome::Queued(_) => (StatusCode::ACCEPTED, answer(true, None, job)),
        };
        (status, serde_json::to_value(kept).unwrap_or_default())
    };
    match run(&state, &principal, &idempotency, user_id, (action, checked), kept).await? {
        Outcome::Done { changed, user } => Ok((StatusCode::OK, Json(answer(changed, user.map(|user| *user), None)))),
        Outcome::Queued(job_id) => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let view = jobs::load(&state, &principal, job_id).await?;
                if view.is_finished() {
                    return Ok((StatusCode::OK, Json(answer(true, None, Some(view)))));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok((StatusCode::ACCEPTED, Json(answer(true, None, Some(view)))));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One user's outcome in a bulk action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkItem {
    pub user_id: Uuid,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BulkError>,
}

impl BulkItem {
    /// One user's result.
    fn of(user_id: Uuid, result: Result<&Outcome, &ApiError>) -> Self {
        let (changed, job_id) = match result {
            Ok(Outcome::Done { changed, .. }) => (Some(*changed), None),
            Ok(Outcome::Queued(job_id)) => (Some(true), Some(*job_id)),
            Err(_) => (None, None),
        };
        Self {
            user_id,
            ok: result.is_ok(),
            changed,
            job_id,
            error: result.err().map(|error| BulkError {
                code: error.code().to_owned(),
                message: error.message().to_owned(),
            }),
        }
    }
}

/// Why an action failed for one user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkError {
    pub code: String,
    pub message: String,
}

/// One action on a selection: each user is handled on its own (its own
/// transaction) and gets its own result, in the order given.
#[utoipa::path(
    post,
    path = "/v1/users/actions/{action}",
    tag = "actions",
    params(("action" = String, Path, description = "As for one user.")),
    request_body = BulkRequest,
    responses((status = 200, body = Vec<BulkItem>, description = "One result per user."))
)]
pub async fn bulk_action(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<BulkRequest>,
) -> Result<Json<Vec<BulkItem>>, ApiError> {
    let action = Action::parse(&name)?;
    let ids = users::Selection {
        user_ids: request.user_ids,
    }
    .ids()?;
    let checked = ActionParameters {
        organization_id: request.organization_id,
        plan_id: request.plan_id,
    }
    .check(action)?;
    let mut results = Vec::with_capacity(ids.len());
    for user_id in ids {
        // Each user's part claims the key for that user in its own
        // transaction, with its result: a retry after a partial run acts
        // only on the users not done, and answers the others' results.
        let part = idempotency.item(user_id);
        let kept = |outcome: &Outcome, _| {
            let item = BulkItem::of(user_id, Ok(outcome));
            (StatusCode::OK, serde_json::to_value(item).unwrap_or_default())
        };
        let item = match run(&state, &principal, &part, user_id, (action, checked), kept).await {
            Err(error) if Idempotency::is_taken(&error) => part
                .stored_item(&state.pool)
                .await?
                .and_then(|stored| serde_json::from_value(stored).ok())
                .unwrap_or(BulkItem {
                    user_id,
                    ok: true,
                    changed: None,
                    job_id: None,
                    error: None,
                }),
            result => BulkItem::of(user_id, result.as_ref()),
        };
        results.push(item);
    }
    // The whole answer, for a retry of the whole request.
    if idempotency.is_some() {
        let mut tx = state.pool.begin().await?;
        idempotency.claim(&mut tx).await?;
        idempotency.answer(&mut tx, StatusCode::OK, &results).await?;
        tx.commit().await.map_err(ApiError::at_commit)?;
    }
    Ok(Json(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_whole_seconds_up_to_a_minute() {
        assert_eq!(wait_seconds(None).unwrap(), 0);
        assert_eq!(wait_seconds(Some("wait=15")).unwrap(), 15);
        assert!(wait_seconds(Some("wait=61")).is_err());
        assert!(wait_seconds(Some("wait=soon")).is_err());
        assert!(wait_seconds(Some("force=yes")).is_err());
    }
}
