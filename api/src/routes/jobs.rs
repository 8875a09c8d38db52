//! `GET /v1/jobs/{id}`: the state and result of an admin job.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::PathId;
use crate::{AppState, auth::Principal, error::ApiError};

/// The job route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_job))
}

/// An admin job as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub action: String,
    pub user_id: Option<Uuid>,
    #[serde(skip)]
    pub organization_id: Option<Uuid>,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl JobView {
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }
}

/// Reads a job, whoever may see it (in the transaction that queues it, say).
pub async fn read<'e>(executor: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<Option<JobView>, ApiError> {
    Ok(sqlx::query_as::<_, JobView>(
        "SELECT id, action, user_id, organization_id, status, requested_by, created_at, started_at, finished_at, \
                result, error FROM admin_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?)
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
