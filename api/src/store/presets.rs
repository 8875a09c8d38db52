//! Synchronization settings presets (M12): an organization's (its values
//! also written to `organizations.settings`, which the worker reads), a
//! group's with its members, and a user's.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;

/// The organization's stored settings and its preset's locks.
#[derive(Debug)]
pub struct OrganizationPreset {
    /// `organizations.settings`: every setting the worker reads, known here
    /// or not.
    pub settings: Value,
    /// None until the organization's preset is first saved.
    pub locked: Option<Vec<String>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The organization's settings with its preset, if one was saved.
pub async fn of_organization(connection: &mut PgConnection, organization: Uuid) -> StoreResult<OrganizationPreset> {
    Ok(sqlx::query_as!(
        OrganizationPreset,
        r#"SELECT o.settings, p.locked AS "locked?", p.updated_at AS "updated_at?" FROM organizations o
           LEFT JOIN sync_settings_presets p ON p.organization_id = o.id AND p.scope = 'organization'
           WHERE o.id = $1"#,
        organization
    )
    .fetch_one(connection)
    .await?)
}

/// Locks the organization's row `FOR UPDATE` until the transaction ends:
/// writers of its settings take their turns.
pub async fn lock_organization_settings(connection: &mut PgConnection, organization: Uuid) -> StoreResult<()> {
    sqlx::query_scalar!("SELECT id FROM organizations WHERE id = $1 FOR UPDATE", organization)
        .fetch_optional(connection)
        .await?;
    Ok(())
}

/// Saves the organization's preset: `values` replace the `known` settings of
/// `organizations.settings` (the others stay), and the preset row holds them
/// with `locked`.
pub async fn save_organization(
    connection: &mut PgConnection,
    organization: Uuid,
    known: &[String],
    values: &Value,
    locked: &[String],
) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE organizations SET settings = (settings - $2::text[]) || $3, updated_at = now() WHERE id = $1",
        organization,
        known,
        values
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO sync_settings_presets (id, organization_id, scope, settings, locked) \
         VALUES ($1, $2, 'organization', $3, $4) \
         ON CONFLICT (organization_id) WHERE scope = 'organization' \
         DO UPDATE SET settings = EXCLUDED.settings, locked = EXCLUDED.locked, updated_at = now()",
        Uuid::now_v7(),
        organization,
        values,
        locked
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A group preset's row.
#[derive(Debug)]
pub struct GroupPreset {
    pub id: Uuid,
    pub settings: Value,
    pub locked: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

/// The organization's group preset named `name` and its members (by id),
/// when there is one.
pub async fn group(
    connection: &mut PgConnection,
    organization: Uuid,
    name: &str,
) -> StoreResult<Option<(GroupPreset, Vec<Uuid>)>> {
    let Some(preset) = sqlx::query_as!(
        GroupPreset,
        "SELECT id, settings, locked, updated_at FROM sync_settings_presets \
         WHERE organization_id = $1 AND scope = 'group' AND group_name = $2",
        organization,
        name
    )
    .fetch_optional(&mut *connection)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query_scalar!(
        "SELECT user_id FROM sync_settings_group_members WHERE preset_id = $1 ORDER BY user_id",
        preset.id
    )
    .fetch_all(connection)
    .await?;
    Ok(Some((preset, members)))
}

/// The id of the organization's group preset named `name`, when there is one.
pub async fn group_id(connection: &mut PgConnection, organization: Uuid, name: &str) -> StoreResult<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM sync_settings_presets WHERE organization_id = $1 AND scope = 'group' AND group_name = $2",
        organization,
        name
    )
    .fetch_optional(connection)
    .await?)
}

/// The names of the organization's groups, in order.
pub async fn group_names(connection: &mut PgConnection, organization: Uuid) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT group_name AS "group_name!" FROM sync_settings_presets WHERE organization_id = $1 AND scope = 'group'
           ORDER BY group_name"#,
        organization
    )
    .fetch_all(connection)
    .await?)
}

/// Where a user to make a group member stands.
#[derive(Debug)]
pub struct Membership {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    /// The group they are in, if any.
    pub group_name: Option<String>,
}

/// The users of `users` that exist, with their organization and group, their
/// rows locked (`FOR UPDATE`) until the transaction ends.
pub async fn lock_memberships(connection: &mut PgConnection, users: &[Uuid]) -> StoreResult<Vec<Membership>> {
    Ok(sqlx::query_as!(
        Membership,
        r#"SELECT u.id AS user_id, u.organization_id, g.group_name AS "group_name?" FROM users u
           LEFT JOIN sync_settings_group_members m ON m.user_id = u.id
           LEFT JOIN sync_settings_presets g ON g.id = m.preset_id
           WHERE u.id = ANY($1) FOR UPDATE OF u"#,
        users
    )
    .fetch_all(connection)
    .await?)
}

/// Creates or replaces the organization's group preset named `name`;
/// answers its id.
pub async fn save_group(
    connection: &mut PgConnection,
    organization: Uuid,
    name: &str,
    values: &Value,
    locked: &[String],
) -> StoreResult<Uuid> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO sync_settings_presets (id, organization_id, scope, group_name, settings, locked) \
         VALUES ($1, $2, 'group', $3, $4, $5) \
         ON CONFLICT (organization_id, group_name) WHERE scope = 'group' \
         DO UPDATE SET settings = EXCLUDED.settings, locked = EXCLUDED.locked, updated_at = now() \
         RETURNING id",
        Uuid::now_v7(),
        organization,
        name,
        values,
        locked
    )
    .fetch_one(connection)
    .await?)
}

/// Makes `members` the group's members, and nobody else.
pub async fn replace_members(connection: &mut PgConnection, preset: Uuid, members: &[Uuid]) -> StoreResult<()> {
    sqlx::query!("DELETE FROM sync_settings_group_members WHERE preset_id = $1", preset)
        .execute(&mut *connection)
        .await?;
    sqlx::query!(
        "INSERT INTO sync_settings_group_members (user_id, preset_id) SELECT user_id, $2 FROM UNNEST($1::uuid[]) AS user_id",
        members,
        preset
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Deletes the organization's group preset named `name` (its memberships
/// go with it); whether there was one.
pub async fn delete_group(connection: &mut PgConnection, organization: Uuid, name: &str) -> StoreResult<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM sync_settings_presets WHERE organization_id = $1 AND scope = 'group' AND group_name = $2",
        organization,
        name
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Every preset that applies to a user: their organization's settings and
/// locks, their group's, their own.
#[derive(Debug)]
pub struct UserLayers {
    pub organization_id: Uuid,
    pub organization_settings: Value,
    pub organization_locked: Option<Vec<String>>,
    pub group_name: Option<String>,
    pub group_settings: Option<Value>,
    pub group_locked: Option<Vec<String>>,
    pub user_settings: Option<Value>,
    pub user_locked: Option<Vec<String>>,
    pub user_updated_at: Option<DateTime<Utc>>,
}

/// The presets that apply to the user.
pub async fn of_user(connection: &mut PgConnection, user: Uuid) -> StoreResult<UserLayers> {
    Ok(sqlx::query_as!(
        UserLayers,
        r#"SELECT u.organization_id, o.settings AS organization_settings, op.locked AS "organization_locked?",
                  g.group_name AS "group_name?", g.settings AS "group_settings?", g.locked AS "group_locked?",
                  p.settings AS "user_settings?", p.locked AS "user_locked?", p.updated_at AS "user_updated_at?"
           FROM users u JOIN organizations o ON o.id = u.organization_id
           LEFT JOIN sync_settings_presets op ON op.organization_id = o.id AND op.scope = 'organization'
           LEFT JOIN sync_settings_group_members m ON m.user_id = u.id
           LEFT JOIN sync_settings_presets g ON g.id = m.preset_id
           LEFT JOIN sync_settings_presets p ON p.user_id = u.id AND p.scope = 'user'
           WHERE u.id = $1"#,
        user
    )
    .fetch_one(connection)
    .await?)
}

/// Creates or replaces the user's own preset.
pub async fn save_user(
    connection: &mut PgConnection,
    organization: Uuid,
    user: Uuid,
    values: &Value,
    locked: &[String],
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO sync_settings_presets (id, organization_id, scope, user_id, settings, locked) \
         VALUES ($1, $2, 'user', $3, $4, $5) \
         ON CONFLICT (user_id) WHERE scope = 'user' \
         DO UPDATE SET settings = EXCLUDED.settings, locked = EXCLUDED.locked, updated_at = now()",
        Uuid::now_v7(),
        organization,
        user,
        values,
        locked
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Deletes the user's own preset; whether there was one.
pub async fn delete_user(connection: &mut PgConnection, user: Uuid) -> StoreResult<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM sync_settings_presets WHERE user_id = $1 AND scope = 'user'",
        user
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}
