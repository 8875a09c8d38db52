//! Admin jobs: what the api queues for a worker, and their results.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;

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

/// The job, when there is one.
pub async fn find<'e>(executor: impl sqlx::PgExecutor<'e>, id: Uuid) -> StoreResult<Option<JobView>> {
    Ok(sqlx::query_as!(
        JobView,
        "SELECT id, action, user_id, organization_id, status, requested_by, created_at, started_at, finished_at, \
                result, error FROM admin_jobs WHERE id = $1",
        id
    )
    .fetch_optional(executor)
    .await?)
}

/// A job to record as queued.
pub struct NewJob<'a> {
    pub id: Uuid,
    pub action: &'a str,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub requested_by: &'a str,
    /// The action's parameters (none: `{}`).
    pub request: Option<&'a serde_json::Value>,
}

/// Records the job as queued.
pub async fn insert(connection: &mut PgConnection, job: &NewJob<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO admin_jobs (id, action, organization_id, user_id, requested_by, status, request) \
         VALUES ($1, $2, $3, $4, $5, 'queued', COALESCE($6, '{}'::jsonb))",
        job.id,
        job.action,
        job.organization_id,
        job.user_id,
        job.requested_by,
        job.request
    )
    .execute(connection)
    .await?;
    Ok(())
}
