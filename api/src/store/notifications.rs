//! An add-in user's notifications: pages of them, read marks, and the
//! read-back of the live stream.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;

/// A notification.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    /// What it is about: `customization_pushed`...
    pub kind: String,
    pub title: String,
    pub body: String,
    /// Details for the add-in (for a push: `push_id`, `version`, `from`).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Null while unread.
    pub read_at: Option<DateTime<Utc>>,
}

/// Where a notification sits in a user's list: its creation, then its id.
pub type Position = (DateTime<Utc>, Uuid);

/// When the user's notification `id` was created, when it is theirs.
pub async fn created_at(pool: &PgPool, user: Uuid, id: Uuid) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT created_at FROM notifications WHERE id = $1 AND user_id = $2",
        id,
        user
    )
    .fetch_optional(pool)
    .await?)
}

/// Up to `limit` of the user's notifications (only the unread ones when
/// `unread_only`), newest first, from the one after `before` on.
pub async fn newest_first(
    pool: &PgPool,
    user: Uuid,
    unread_only: bool,
    before: Option<Position>,
    limit: i64,
) -> StoreResult<Vec<NotificationView>> {
    Ok(sqlx::query_as!(
        NotificationView,
        "SELECT id, kind, title, body, payload, created_at, read_at FROM notifications \
         WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
        user,
        unread_only,
        before.map(|(at, _)| at),
        before.map(|(_, id)| id),
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Up to `limit` of the user's notifications created after `after` (all of
/// them without it), oldest first.
pub async fn oldest_first(
    pool: &PgPool,
    user: Uuid,
    after: Option<Position>,
    limit: i64,
) -> StoreResult<Vec<NotificationView>> {
    Ok(sqlx::query_as!(
        NotificationView,
        "SELECT id, kind, title, body, payload, created_at, read_at FROM notifications WHERE user_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) \
         ORDER BY created_at, id LIMIT $4",
        user,
        after.map(|(at, _)| at),
        after.map(|(_, id)| id),
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Where the user's newest notification sits, when they have one.
pub async fn newest(pool: &PgPool, user: Uuid) -> StoreResult<Option<Position>> {
    let newest = sqlx::query!(
        "SELECT created_at, id FROM notifications WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        user
    )
    .fetch_optional(pool)
    .await?;
    Ok(newest.map(|row| (row.created_at, row.id)))
}

/// How many of the user's notifications are unread.
pub async fn unread(pool: &PgPool, user: Uuid) -> StoreResult<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM notifications WHERE user_id = $1 AND read_at IS NULL"#,
        user
    )
    .fetch_one(pool)
    .await?)
}

/// Whether the user's notification `id` is unread, when it is theirs; its
/// row locked (`FOR UPDATE`) until the transaction ends.
pub async fn lock_unread(connection: &mut PgConnection, user: Uuid, id: Uuid) -> StoreResult<Option<bool>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT read_at IS NULL AS "unread!" FROM notifications WHERE id = $1 AND user_id = $2 FOR UPDATE"#,
        id,
        user
    )
    .fetch_optional(connection)
    .await?)
}

/// Marks the notification read (a read one keeps when it was read);
/// answers it.
pub async fn mark_read(connection: &mut PgConnection, id: Uuid) -> StoreResult<NotificationView> {
    Ok(sqlx::query_as!(
        NotificationView,
        "UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE id = $1 \
         RETURNING id, kind, title, body, payload, created_at, read_at",
        id
    )
    .fetch_one(connection)
    .await?)
}

/// Marks every unread notification of the user read; answers how many.
pub async fn mark_all_read(connection: &mut PgConnection, user: Uuid) -> StoreResult<u64> {
    Ok(sqlx::query!(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
        user
    )
    .execute(connection)
    .await?
    .rows_affected())
}
