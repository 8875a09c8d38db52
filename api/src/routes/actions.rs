//! User actions. Force sync: at most once a minute per user, as a job on the
//! priority queue; `?wait=N` waits up to N seconds for its result.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use serde::Serialize;
use syncfleet_common::{
    domain::Trigger,
    queue::{JobEnvelope, Route},
    telemetry,
};
use tracing::{Span, info, warn};

use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    routes::{
        jobs::{self, JobView},
        parse_id, users,
    },
};

/// The shortest time between two force syncs of one user.
const FORCE_SYNC_SPACING_SECONDS: f64 = 60.0;
/// The longest `?wait=`.
const MAX_WAIT_SECONDS: u64 = 60;

#[derive(sqlx::FromRow)]
struct Target {
    organization_id: uuid::Uuid,
    sync_status: String,
    organization_enabled: bool,
    seconds_since_force: Option<f64>,
}

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

#[tracing::instrument(name = "force_sync", skip_all, fields(user_id = %raw_id))]
pub async fn force_sync(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let user_id = parse_id("id", &raw_id)?;
    let wait = wait_seconds(query.as_deref())?;
    let job_id = queue_force_sync(&state, &principal, user_id).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let view = jobs::load(&state, &principal, job_id).await?;
        if view.is_finished() {
            return Ok((StatusCode::OK, Json(view)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((StatusCode::ACCEPTED, Json(view)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queues a force sync for one user: refused inside the minute (429 with
/// the time left), or while sync is disabled (409); nothing is changed then.
pub async fn queue_force_sync(
    state: &AppState,
    principal: &Principal,
    user_id: uuid::Uuid,
) -> Result<uuid::Uuid, ApiError> {
    let mut tx = state.pool.begin().await?;
    let target = sqlx::query_as::<_, Target>(
        "SELECT u.organization_id, u.sync_status, o.sync_enabled AS organization_enabled, \
                EXTRACT(EPOCH FROM now() - u.force_sync_requested_at)::float8 AS seconds_since_force \
         FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1 FOR UPDATE OF u",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?
    .filter(|target| principal.may_act_on_user(user_id, target.organization_id))
    .ok_or_else(|| ApiError::not_found("user"))?;
    if !target.organization_enabled {
        return Err(ApiError::conflict(
            "sync_disabled",
            "synchronization is disabled for the user's organization; enable it first",
        ));
    }
    if target.sync_status != "enabled" {
        return Err(ApiError::conflict(
            "sync_disabled",
            format!(
                "synchronization is {} for this user; enable it first",
                target.sync_status.replace('_', " ")
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
    sqlx::query(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by, status) \
         VALUES ($1, 'force-sync', $2, $3, $4, 'queued')",
    )
    .bind(job.job_id)
    .bind(target.organization_id)
    .bind(user_id)
    .bind(&principal.label)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE users SET force_sync_requested_at = now() WHERE id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
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
    tx.commit().await?;
    info!(job_id = %job.job_id, requested_by = %principal.label, "Force sync queued.");
    Ok(job.job_id)
}

/// Actions of the admin panel this build does not run yet.
const NOT_YET: [&str; 12] = [
    "reset-mailbox",
    "reinitialize-mailbox",
    "check-settings",
    "check-crm",
    "check-mailbox",
    "install-sidebar",
    "remove-sidebar",
    "check-sidebar",
    "reset-customization",
    "change-organization",
    "change-plan",
    "delete",
];

fn unknown_action(action: &str) -> ApiError {
    if NOT_YET.contains(&action) || action == "force-delete" {
        return ApiError::not_implemented(format!("the {action} action is not available in this build"));
    }
    ApiError::not_found_code(
        "unknown_action",
        format!("no action {action:?}; actions: force-sync, enable-sync, disable-sync"),
    )
}

/// `POST /v1/users/{id}/actions/{action}` for the actions without a route of
/// their own.
pub async fn user_action(
    State(state): State<AppState>,
    principal: Principal,
    Path((raw_id, action)): Path<(String, String)>,
) -> Result<Json<users::ActionResult>, ApiError> {
    let user_id = parse_id("id", &raw_id)?;
    let switch = users::Switch::from_action(&action).ok_or_else(|| unknown_action(&action))?;
    Ok(Json(users::switch_sync(&state, &principal, user_id, switch).await?))
}

/// One user's outcome in a bulk action.
#[derive(Debug, Serialize)]
pub struct BulkItem {
    pub user_id: uuid::Uuid,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BulkError>,
}

#[derive(Debug, Serialize)]
pub struct BulkError {
    pub code: &'static str,
    pub message: String,
}

/// `POST /v1/users/actions/{action}` with `{"user_ids": [...]}`: each user is
/// handled on its own (its own transaction) and gets its own result.
pub async fn bulk_action(
    State(state): State<AppState>,
    principal: Principal,
    Path(action): Path<String>,
    body: Bytes,
) -> Result<Json<Vec<BulkItem>>, ApiError> {
    let selection: users::Selection = serde_json::from_slice(&body)
        .map_err(|error| ApiError::invalid("body", format!("expected {{\"user_ids\": [...]}}: {error}")))?;
    let ids = selection.ids()?;
    let switch = users::Switch::from_action(&action);
    if switch.is_none() && action != "force-sync" {
        return Err(unknown_action(&action));
    }
    let mut results = Vec::with_capacity(ids.len());
    for user_id in ids {
        let outcome = match switch {
            Some(switch) => users::switch_sync(&state, &principal, user_id, switch)
                .await
                .map(|result| (Some(result.changed), None)),
            None => queue_force_sync(&state, &principal, user_id)
                .await
                .map(|job| (None, Some(job))),
        };
        results.push(match outcome {
            Ok((changed, job_id)) => BulkItem {
                user_id,
                ok: true,
                changed,
                job_id,
                error: None,
            },
            Err(error) => BulkItem {
                user_id,
                ok: false,
                changed: None,
                job_id: None,
                error: Some(BulkError {
                    code: error.code(),
                    message: error.message().to_owned(),
                }),
            },
        });
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
