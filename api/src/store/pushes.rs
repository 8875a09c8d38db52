//! Customization pushes (M14): the push's snapshot, its recipients chosen in
//! one set-based statement, and its progress, which the worker's `push`
//! module writes.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use syncfleet_common::domain::UserRole;
use uuid::Uuid;

use super::StoreResult;

/// A push as stored (without its document).
#[derive(Debug)]
pub struct PushRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub pusher_user_id: Option<Uuid>,
    pub requested_by: String,
    pub customization_version: i64,
    pub status: String,
    /// `{"all": ..., "filter": {...}}`: how the recipients were chosen.
    pub filter: Value,
    pub total: i32,
    pub applied: i32,
    pub failed: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The push, when there is one.
pub async fn find(pool: &PgPool, id: Uuid) -> StoreResult<Option<PushRow>> {
    Ok(sqlx::query_as!(
        PushRow,
        "SELECT id, organization_id, pusher_user_id, requested_by, customization_version, status, \
                filter, total, applied, failed, created_at, finished_at \
         FROM pushes WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

/// What a push needs to know of its pusher.
#[derive(Debug)]
pub struct Pusher {
    pub organization_id: Uuid,
    pub role: UserRole,
    pub email: String,
}

/// The user whose customization is pushed, when there is one.
pub async fn pusher(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<Pusher>> {
    Ok(sqlx::query_as!(
        Pusher,
        r#"SELECT organization_id, role AS "role: _", email FROM users WHERE id = $1"#,
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// Which of `users` are users of `organization`.
pub async fn users_of(connection: &mut PgConnection, organization: Uuid, users: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = ANY($1) AND organization_id = $2",
        users,
        organization
    )
    .fetch_all(connection)
    .await?)
}

/// Takes the push's advisory lock for the rest of the transaction: the api
/// holds it from before the publish to the commit, and the worker's `push`
/// module takes it (the same statement) before reading the push, so it
/// never reads a push half-written. The key is the push's id as
/// PostgreSQL spells a `uuid` as text (lower case, hyphenated), as the
/// worker's binds it.
pub async fn lock(connection: &mut PgConnection, id: Uuid) -> StoreResult<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('syncfleet.push:' || $1::text, 0))",
        id.hyphenated().to_string()
    )
    .fetch_one(connection)
    .await?;
    Ok(())
}

/// A push to queue.
pub struct NewPush<'a> {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub pusher_user_id: Uuid,
    pub requested_by: &'a str,
    /// The pusher's saved customization: its version and document.
    pub customization_version: i64,
    pub document: &'a Value,
    /// How the recipients are chosen, as [`PushRow::filter`] shows it.
    pub filter: &'a Value,
}

/// Records the push as queued, with no recipients yet.
pub async fn insert(connection: &mut PgConnection, push: &NewPush<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO pushes (id, organization_id, pusher_user_id, requested_by, customization_version, document, filter) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        push.id,
        push.organization_id,
        push.pusher_user_id,
        push.requested_by,
        push.customization_version,
        push.document,
        push.filter
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Who a push reaches among the users of its organization (never the
/// pusher); every given filter must match.
pub struct Recipients<'a> {
    /// Only these users; `None`: all of them.
    pub users: Option<&'a [Uuid]>,
    /// Only users with a stored Salesforce authorization or who received a
    /// push before.
    pub product_users_only: bool,
    /// `ILIKE` patterns on the name and the email.
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub role: Option<UserRole>,
    /// Only members of this group preset.
    pub group: Option<Uuid>,
}

/// Adds the push's recipients in one statement, set-based (the push's
/// organization bounds every selection); answers how many.
pub async fn add_recipients(
    connection: &mut PgConnection,
    push: &NewPush<'_>,
    to: &Recipients<'_>,
) -> StoreResult<u64> {
    Ok(sqlx::query!(
        "INSERT INTO push_recipients (push_id, user_id) \
         SELECT $1, u.id FROM users u \
         WHERE u.organization_id = $2 AND u.id <> $3 \
           AND ($4::uuid[] IS NULL OR u.id = ANY($4)) \
           AND (NOT $5 OR EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id AND c.kind = 'crm_refresh_token') \
                OR EXISTS (SELECT 1 FROM push_recipients p WHERE p.user_id = u.id AND p.status = 'applied')) \
           AND ($6::text IS NULL OR u.name ILIKE $6) \
           AND ($7::text IS NULL OR u.email ILIKE $7) \
           AND ($8::text IS NULL OR u.role = $8) \
           AND ($9::uuid IS NULL OR EXISTS (SELECT 1 FROM sync_settings_group_members g \
                                             WHERE g.user_id = u.id AND g.preset_id = $9))",
        push.id,
        push.organization_id,
        push.pusher_user_id,
        to.users,
        to.product_users_only,
        to.name,
        to.email,
        to.role as Option<UserRole>,
        to.group
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Records how many recipients the push has; answers the push.
pub async fn set_total(connection: &mut PgConnection, id: Uuid, total: i32) -> StoreResult<PushRow> {
    Ok(sqlx::query_as!(
        PushRow,
        "UPDATE pushes SET total = $2 WHERE id = $1 \
         RETURNING id, organization_id, pusher_user_id, requested_by, customization_version, status, \
                   filter, total, applied, failed, created_at, finished_at",
        id,
        total
    )
    .fetch_one(connection)
    .await?)
}
