//! `GET /v1/jobs/{id}`: the state and result of an admin job.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::PathId;
use crate::{AppState, auth::Principal, error::ApiError};

/// The job route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_job))
}

pub use crate::store::jobs::JobView;

/// Reads a job, whoever may see it (in the transaction that queues it, say).
pub async fn read<'e>(executor: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<Option<JobView>, ApiError> {
    Ok(crate::store::jobs::find(executor, id).await?)
}

/// Reads a job the caller may see.
pub async fn load(state: &AppState, principal: &Principal, id: Uuid) -> Result<JobView, ApiError> {
    let job = read(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let visible = match (job.user_id, job.organization_id) {
        (Some(user_id), Some(organization_id)) => principal.may_act_on_user(user_id, organization_id),
        _ => principal.role == crate::auth::Role::Admin,
    };
    if !visible {
        return Err(ApiError::not_found("job"));
    }
    Ok(job)
}

/// An admin job's state and result.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "The job.")), responses((status = 200, body = JobView)))]
pub async fn get_job(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(load(&state, &principal, id).await?))
}
