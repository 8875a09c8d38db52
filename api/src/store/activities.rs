//! Activities (M11): what happened, by whom, written in the transaction of
//! the change they describe so they commit or roll back with it.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;

/// One activity to record.
pub struct NewActivity<'a> {
    /// The organization it belongs to.
    pub organization_id: Uuid,
    /// The user it is about, when it is about one still there.
    pub user_id: Option<Uuid>,
    /// Who did it (the token's label).
    pub actor: &'a str,
    /// Its kind (see the `activities_kind_check` constraint).
    pub kind: &'a str,
    /// What changed, in words (never a secret).
    pub details: String,
}

/// Records `activity`.
pub async fn record(connection: &mut PgConnection, activity: NewActivity<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, $3, $4, $5, $6)",
        Uuid::now_v7(),
        activity.organization_id,
        activity.user_id,
        activity.actor,
        activity.kind,
        activity.details
    )
    .execute(connection)
    .await?;
    Ok(())
}
