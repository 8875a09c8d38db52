//! Plans: the catalogue users are assigned from.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;

/// A plan.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct PlanView {
    pub id: Uuid,
    /// Stable, unique: lower-case letters, digits, `-` and `_`.
    pub code: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Every plan, by code.
pub async fn all(pool: &PgPool) -> StoreResult<Vec<PlanView>> {
    Ok(
        sqlx::query_as!(PlanView, "SELECT id, code, name, created_at FROM plans ORDER BY code")
            .fetch_all(pool)
            .await?,
    )
}

/// Adds a plan; `None` when another plan has the code.
pub async fn insert(connection: &mut PgConnection, id: Uuid, code: &str, name: &str) -> StoreResult<Option<PlanView>> {
    Ok(sqlx::query_as!(
        PlanView,
        "INSERT INTO plans (id, code, name) VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING \
         RETURNING id, code, name, created_at",
        id,
        code,
        name
    )
    .fetch_optional(connection)
    .await?)
}
