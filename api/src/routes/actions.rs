//! User actions. Force sync: at most once a minute per user, as a job on the
//! priority queue; `?wait=N` waits up to N seconds for its result.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
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
        parse_id,
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

    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let view = jobs::load(&state, &principal, job.job_id).await?;
        if view.is_finished() {
            return Ok((StatusCode::OK, Json(view)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((StatusCode::ACCEPTED, Json(view)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
