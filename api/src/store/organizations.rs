//! Organizations: what the user routes need of them (the organization
//! routes' own statements move here next).

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;

/// What a move between organizations needs to know of one.
#[derive(Debug, sqlx::FromRow)]
pub struct Summary {
    pub name: String,
    pub access_type: String,
}

/// The organization, locked against deletion (`FOR KEY SHARE`) until the
/// transaction ends: a user added to it or moved into it cannot be left
/// pointing at an organization deleted meanwhile (the delete waits, then
/// takes the new user with it).
pub async fn hold(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<Summary>> {
    Ok(
        sqlx::query_as::<_, Summary>("SELECT name, access_type FROM organizations WHERE id = $1 FOR KEY SHARE")
            .bind(id)
            .fetch_optional(connection)
            .await?,
    )
}

/// Whether another organization has `external_id`. The unique constraint
/// decides a race: the insert then answers 409 `external_id_taken`.
pub async fn external_id_taken(connection: &mut PgConnection, external_id: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE external_id = $1)")
            .bind(external_id)
            .fetch_one(connection)
            .await?,
    )
}

/// Whether the organization exists.
pub async fn exists(pool: &sqlx::PgPool, id: Uuid) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Whether the organization exists; when `write`, it is also locked against
/// deletion and concurrent writers of its settings (`FOR NO KEY UPDATE`,
/// which users added to it meanwhile do not wait for) until the transaction
/// ends, so what is written for it cannot outlive it.
pub async fn find_for(connection: &mut PgConnection, id: Uuid, write: bool) -> StoreResult<bool> {
    let query = if write {
        "SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE"
    } else {
        "SELECT id FROM organizations WHERE id = $1"
    };
    Ok(sqlx::query_scalar::<_, Uuid>(query)
        .bind(id)
        .fetch_optional(connection)
        .await?
        .is_some())
}
