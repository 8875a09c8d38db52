//! Users: their rows, and every write to them the api makes.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, postgres::PgRow};
use syncfleet_common::domain::{AccessType, EffectiveSyncStatus, SessionStatus, SyncStatus, UserRole};
use uuid::Uuid;

use super::StoreResult;
use crate::routes::list;

/// A user as stored, with their organization's switch.
#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub notification_email: Option<String>,
    pub organization_id: Uuid,
    pub plan_id: Option<Uuid>,
    pub description: String,
    pub account_logon: Option<String>,
    pub role: UserRole,
    pub sync_status: SyncStatus,
    pub disabled_reason: Option<String>,
    pub mailbox_status: String,
    pub next_sync_at: DateTime<Utc>,
    pub last_session_id: Option<Uuid>,
    pub last_session_at: Option<DateTime<Utc>>,
    pub last_session_status: Option<SessionStatus>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub organization_enabled: bool,
}

/// The columns of a [`UserRow`], over `users u JOIN user_runs r JOIN organizations o`.
pub const COLUMNS: &str = "u.id, u.name, u.email, u.notification_email, u.organization_id, u.plan_id, \
     u.description, u.account_logon, u.role, u.sync_status, u.disabled_reason, u.mailbox_status, r.next_sync_at, \
     r.last_session_id, r.last_session_at, r.last_session_status, u.created_at, u.updated_at, \
     o.sync_enabled AS organization_enabled";

/// Whether [`find`] locks the user's row for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// `FOR UPDATE` of the user's row.
    ForUpdate,
}

/// The user, when there is one.
///
/// The lock is taken by a statement of its own on `users` alone: a locking
/// read over the join would, after waiting for a concurrent move to commit,
/// recheck the row against the organization it had before and lose it (a
/// user who exists answering 404).
pub async fn find(connection: &mut PgConnection, id: Uuid, lock: Lock) -> StoreResult<Option<UserRow>> {
    if lock == Lock::ForUpdate && lock_owner(&mut *connection, id).await?.is_none() {
        return Ok(None);
    }
    // The columns of `COLUMNS`, spelled out for the compile-time check.
    Ok(sqlx::query_as!(
        UserRow,
        "SELECT u.id, u.name, u.email, u.notification_email, u.organization_id, u.plan_id, u.description, \
             u.account_logon, u.role AS \"role: _\", u.sync_status AS \"sync_status: _\", u.disabled_reason, \
             u.mailbox_status, r.next_sync_at, r.last_session_id, r.last_session_at, \
             r.last_session_status AS \"last_session_status: _\", u.created_at, u.updated_at, \
             o.sync_enabled AS organization_enabled \
         FROM users u JOIN user_runs r ON r.user_id = u.id JOIN organizations o ON o.id = u.organization_id \
         WHERE u.id = $1",
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// Whether a user other than `except` has `email` (ignoring case). The
/// unique index still decides a race: [`insert`] and [`update_profile`]
/// answer 409 `email_taken` through it.
pub async fn email_taken(connection: &mut PgConnection, email: &str, except: Option<Uuid>) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND id IS DISTINCT FROM $2) AS "taken!""#,
        email,
        except
    )
    .fetch_one(connection)
    .await?)
}

/// A user to add.
pub struct NewUser<'a> {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: &'a str,
    pub email: &'a str,
    pub notification_email: Option<&'a str>,
    pub description: &'a str,
}

/// Adds a user (sync disabled until configured).
pub async fn insert(connection: &mut PgConnection, user: &NewUser<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO users (id, organization_id, name, email, notification_email, description) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        user.id,
        user.organization_id,
        user.name,
        user.email,
        user.notification_email,
        user.description
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A change to a user's own fields; `None` keeps a field.
#[derive(Default)]
pub struct ProfileChange {
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub notification_email: Option<Option<String>>,
    pub description: Option<String>,
    pub role: Option<UserRole>,
}

/// Writes `change` to the user.
pub async fn update_profile(connection: &mut PgConnection, id: Uuid, change: &ProfileChange) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE users SET name = COALESCE($2, name), \
             notification_email = CASE WHEN $3 THEN $4 ELSE notification_email END, \
             description = COALESCE($5, description), role = COALESCE($6, role), updated_at = now() \
         WHERE id = $1",
        id,
        change.name.as_deref(),
        change.notification_email.is_some(),
        change.notification_email.clone().flatten(),
        change.description.as_deref(),
        change.role as Option<UserRole>
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets the user's own sync status to `status`: `enabled` also clears an
/// auto-suspend and makes them due at once; any other keeps `reason`.
pub async fn switch_sync(connection: &mut PgConnection, id: Uuid, status: SyncStatus, reason: &str) -> StoreResult<()> {
    sqlx::query!(
        "WITH switched AS ( \
             UPDATE users SET sync_status = $2, \
                 sync_status_changed_at = now(), updated_at = now(), \
                 disabled_reason = CASE WHEN $3 THEN NULL ELSE $4 END \
             WHERE id = $1 RETURNING id \
         ) \
         UPDATE user_runs SET consecutive_failures = 0, failure_class = NULL, next_sync_at = now() \
         WHERE $3 AND user_id IN (SELECT id FROM switched)",
        id,
        status as SyncStatus,
        status == SyncStatus::Enabled,
        reason
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Deletes the user (their credentials, sessions and the rest cascade).
pub async fn delete(connection: &mut PgConnection, id: Uuid) -> StoreResult<()> {
    sqlx::query!("DELETE FROM users WHERE id = $1", id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The kinds of the credentials stored for the user.
pub async fn credential_kinds(connection: &mut PgConnection, id: Uuid) -> StoreResult<Vec<String>> {
    Ok(
        sqlx::query_scalar!("SELECT kind FROM credentials WHERE user_id = $1", id)
            .fetch_all(connection)
            .await?,
    )
}

/// Moves the user to `organization_id`: they become a plain `user` there,
/// leave their settings group, take their own preset along; their user
/// tokens follow and an organization-admin token of theirs is revoked.
pub async fn move_to(connection: &mut PgConnection, id: Uuid, organization_id: Uuid) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE users SET organization_id = $2, role = $3, updated_at = now() WHERE id = $1",
        id,
        organization_id,
        UserRole::User as UserRole
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!("DELETE FROM sync_settings_group_members WHERE user_id = $1", id)
        .execute(&mut *connection)
        .await?;
    sqlx::query!(
        "UPDATE sync_settings_presets SET organization_id = $2 WHERE user_id = $1 AND scope = 'user'",
        id,
        organization_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE api_tokens SET organization_id = CASE WHEN role = 'user' THEN $2 ELSE organization_id END, \
             revoked_at = CASE WHEN role = 'org_admin' THEN COALESCE(revoked_at, now()) ELSE revoked_at END \
         WHERE user_id = $1",
        id,
        organization_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The name of a plan, when it exists.
pub async fn plan_name(connection: &mut PgConnection, plan: Uuid) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar!("SELECT name FROM plans WHERE id = $1", plan)
        .fetch_optional(connection)
        .await?)
}

/// Assigns `plan` (or none) to the user.
pub async fn set_plan(connection: &mut PgConnection, id: Uuid, plan: Option<Uuid>) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE users SET plan_id = $2, updated_at = now() WHERE id = $1",
        id,
        plan
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Whose users a list may show.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Every user (an admin).
    All,
    /// The users of one organization (its admin).
    Organization(Option<Uuid>),
    /// One user (themself).
    User(Option<Uuid>),
}

/// What a user list is filtered by.
pub struct ListFilter<'a> {
    pub scope: Scope,
    /// Users of each of these organizations (all of them: a path's and a
    /// filter's).
    pub organizations: Vec<Uuid>,
    pub sync_status: Option<SyncStatus>,
    pub effective_sync_status: Option<EffectiveSyncStatus>,
    pub mailbox_status: Option<&'a str>,
    pub plan: Option<Uuid>,
    /// An `ILIKE` pattern on the name or the email.
    pub pattern: Option<&'a str>,
}

impl ListFilter<'_> {
    fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        builder.push(" WHERE TRUE");
        match self.scope {
            Scope::All => {}
            Scope::Organization(organization) => {
                builder.push(" AND u.organization_id = ").push_bind(organization);
            }
            Scope::User(user) => {
                builder.push(" AND u.id = ").push_bind(user);
            }
        }
        for organization in &self.organizations {
            builder.push(" AND u.organization_id = ").push_bind(*organization);
        }
        if let Some(status) = self.sync_status {
            builder.push(" AND u.sync_status = ").push_bind(status);
        }
        match self.effective_sync_status.map(EffectiveSyncStatus::own) {
            None => {}
            Some(None) => {
                builder.push(" AND NOT o.sync_enabled");
            }
            // The other effective statuses are the user's own, in an enabled
            // organization.
            Some(Some(status)) => {
                builder
                    .push(" AND o.sync_enabled AND u.sync_status = ")
                    .push_bind(status);
            }
        }
        if let Some(status) = self.mailbox_status {
            builder.push(" AND u.mailbox_status = ").push_bind(status.to_owned());
        }
        if let Some(plan) = self.plan {
            builder.push(" AND u.plan_id = ").push_bind(plan);
        }
        if let Some(pattern) = self.pattern {
            push_name_or_email(builder, pattern);
        }
    }
}

/// Appends ` AND` the user `u`'s name or email matching `pattern` (`ILIKE`).
pub(super) fn push_name_or_email(builder: &mut QueryBuilder<'_, Postgres>, pattern: &str) {
    builder
        .push(" AND (u.name ILIKE ")
        .push_bind(pattern.to_owned())
        .push(" OR u.email ILIKE ")
        .push_bind(pattern.to_owned())
        .push(")");
}

/// How many users match `filter`, and the rows of `page` among them (with
/// the page's keys, for `Page::finish`).
pub async fn page(pool: &PgPool, filter: &ListFilter<'_>, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    let from = "users u JOIN user_runs r ON r.user_id = u.id JOIN organizations o ON o.id = u.organization_id";
    super::counted_page(pool, COLUMNS, from, |builder| filter.push(builder), page).await
}

/// A user's mailbox and CRM configuration, with the kinds of their stored
/// credentials.
#[derive(Debug)]
pub struct ConfigurationRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub access_type: AccessType,
    pub email: String,
    pub account_logon: Option<String>,
    pub salesforce_instance_url: Option<String>,
    pub kinds: Vec<String>,
}

/// The user's configuration, their row locked for the transaction (by a
/// statement of its own, as [`find`] does).
pub async fn configuration(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<ConfigurationRow>> {
    if find(&mut *connection, id, Lock::ForUpdate).await?.is_none() {
        return Ok(None);
    }
    Ok(sqlx::query_as!(
        ConfigurationRow,
        r#"SELECT u.id, u.organization_id, o.access_type AS "access_type: _", u.email, u.account_logon, u.salesforce_instance_url,
               ARRAY(SELECT c.kind FROM credentials c WHERE c.user_id = u.id) AS "kinds!"
           FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1"#,
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// A change to a user's addresses; `None` keeps a field, `Some(None)`
/// clears it.
pub struct AddressChange<'a> {
    pub email: Option<&'a str>,
    pub account_logon: Option<Option<&'a str>>,
    pub salesforce_instance_url: Option<Option<&'a str>>,
}

/// Writes `change`; an address another user has answers 409 `email_taken`.
pub async fn set_addresses(connection: &mut PgConnection, id: Uuid, change: &AddressChange<'_>) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE users SET email = COALESCE($2, email), \
             account_logon = CASE WHEN $3 THEN $4 ELSE account_logon END, \
             salesforce_instance_url = CASE WHEN $5 THEN $6 ELSE salesforce_instance_url END, \
             updated_at = now() \
         WHERE id = $1",
        id,
        change.email,
        change.account_logon.is_some(),
        change.account_logon.flatten(),
        change.salesforce_instance_url.is_some(),
        change.salesforce_instance_url.flatten()
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Who a user is, for checking whether a caller may see them.
#[derive(Debug)]
pub struct Owner {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub last_session_id: Option<Uuid>,
}

/// The user's owner fields, when there is one.
pub async fn owner(pool: &PgPool, id: Uuid) -> StoreResult<Option<Owner>> {
    Ok(sqlx::query_as!(
        Owner,
        "SELECT u.id, u.organization_id, r.last_session_id \
         FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

/// What a force sync checks of a user.
#[derive(Debug)]
pub struct ForceSyncTarget {
    pub organization_id: Uuid,
    pub sync_status: SyncStatus,
    pub organization_enabled: bool,
    /// Seconds since the last force sync was asked for, if ever.
    pub seconds_since_force: Option<f64>,
}

/// What a force sync checks of the user, their row locked for the
/// transaction (by a statement of its own, as [`find`] does).
pub async fn force_sync_target(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<ForceSyncTarget>> {
    if lock_owner(&mut *connection, id).await?.is_none() {
        return Ok(None);
    }
    Ok(sqlx::query_as!(
        ForceSyncTarget,
        "SELECT u.organization_id, u.sync_status AS \"sync_status: _\", o.sync_enabled AS organization_enabled, \
                EXTRACT(EPOCH FROM now() - u.force_sync_requested_at)::float8 AS seconds_since_force \
         FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1",
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// Records that a force sync was asked for now.
pub async fn stamp_force_sync(connection: &mut PgConnection, id: Uuid) -> StoreResult<()> {
    sqlx::query!("UPDATE users SET force_sync_requested_at = now() WHERE id = $1", id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The user's organization, their row locked for the transaction (a worker
/// reading a job of theirs waits for it).
pub async fn lock_owner(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<Uuid>> {
    Ok(
        sqlx::query_scalar!("SELECT organization_id FROM users WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(connection)
            .await?,
    )
}

/// The user's organization, when there is such a user.
pub async fn organization_of(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<Uuid>> {
    Ok(
        sqlx::query_scalar!("SELECT organization_id FROM users WHERE id = $1", id)
            .fetch_optional(connection)
            .await?,
    )
}
