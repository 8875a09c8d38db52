//! The admin actions that touch outside services (the mailbox, the CRM):
//! each is recorded as an admin job and runs on a worker from the priority
//! queue; the worker writes its result into the job's row.

use chrono::Utc;
use sqlx::{Postgres, Transaction};
use syncfleet_common::{
    queue::{AdminAction, JobEnvelope, Route},
    telemetry,
};
use tracing::{Span, info, warn};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
};

/// Queues `action` for one user: records the admin job (`queued`) in `tx`
/// and publishes its job on the priority queue; the caller commits `tx`
/// after (so a failed publish leaves nothing behind); answers the job's id. A user the caller may not act on answers 404; a user asking for
/// more than a check on themself, 403; a publish that fails, 503 with nothing
/// recorded.
pub async fn queue(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    user_id: Uuid,
    action: AdminAction,
) -> Result<Uuid, ApiError> {
    // The row lock makes the worker, which locks the same row before it reads
    // the job, wait for this transaction to commit.
    let organization_id = crate::store::users::lock_owner(tx, user_id)
        .await?
        .filter(|organization_id| principal.may_act_on_user(user_id, *organization_id))
        .ok_or_else(|| ApiError::not_found("user"))?;
    // A user may run on themself only what leaves the mailbox as it is: the checks.
    if principal.role == Role::User && action.mutates() {
        return Err(ApiError::forbidden(format!(
            "only an admin or an organization admin can {}; a user may run the checks on themself",
            action.as_str().replace('-', " ")
        )));
    }

    let mut job = JobEnvelope::admin(user_id, action.as_str(), Utc::now());
    job.trace = telemetry::trace_context(&Span::current());
    let record = crate::store::jobs::NewJob {
        id: job.job_id,
        action: action.as_str(),
        organization_id,
        user_id,
        requested_by: &principal.label,
        request: Some(&job.params),
    };
    crate::store::jobs::insert(tx, &record).await?;
    // Published before the commit, so a failed publish leaves nothing behind.
    if let Err(error) = state
        .publisher
        .publish(Route::Priority, std::slice::from_ref(&job))
        .await
    {
        warn!(%error, action = action.as_str(), "Could not queue an admin job.");
        return Err(ApiError::unavailable(
            "the job could not be queued; nothing was changed, try again",
        ));
    }
    info!(job_id = %job.job_id, action = action.as_str(), requested_by = %principal.label, "Admin job queued.");
    Ok(job.job_id)
}
