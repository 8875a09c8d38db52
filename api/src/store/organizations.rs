//! Organizations: their rows, and every write to them the api makes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, postgres::PgRow};
use syncfleet_common::domain::AccessType;
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;
use crate::routes::list;

/// An organization as the API shows it (its row, with its users counted).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct OrganizationView {
    pub id: Uuid,
    pub external_id: String,
    pub name: String,
    pub access_type: AccessType,
    pub sync_enabled: bool,
    pub is_default: bool,
    pub ews_url: Option<String>,
    pub impersonation_account: Option<String>,
    /// The impersonation account's password is stored (never the password).
    pub impersonation_password_set: bool,
    pub users: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "o.id, o.external_id, o.name, o.access_type, o.sync_enabled, o.is_default, o.ews_url, \
     o.impersonation_account, \
     EXISTS (SELECT 1 FROM credentials c WHERE c.organization_id = o.id AND c.kind = 'impersonation_password') \
         AS impersonation_password_set, \
     (SELECT count(*) FROM users u WHERE u.organization_id = o.id) AS users, o.created_at, o.updated_at";

/// The organization, when there is one.
pub async fn find(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<OrganizationView>> {
    // The columns of `COLUMNS`, spelled out for the compile-time check.
    Ok(sqlx::query_as!(
        OrganizationView,
        r#"SELECT o.id, o.external_id, o.name, o.access_type AS "access_type: _", o.sync_enabled, o.is_default, o.ews_url,
               o.impersonation_account,
               EXISTS (SELECT 1 FROM credentials c WHERE c.organization_id = o.id AND c.kind = 'impersonation_password')
                   AS "impersonation_password_set!",
               (SELECT count(*) FROM users u WHERE u.organization_id = o.id) AS "users!", o.created_at, o.updated_at
           FROM organizations o WHERE o.id = $1"#,
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// An organization to create.
pub struct NewOrganization<'a> {
    pub id: Uuid,
    pub external_id: &'a str,
    pub name: &'a str,
    pub access_type: AccessType,
    pub sync_enabled: bool,
    pub ews_url: Option<&'a str>,
    pub impersonation_account: Option<&'a str>,
}

/// Creates the organization; an external id already taken answers 409
/// `external_id_taken`.
pub async fn insert(connection: &mut PgConnection, organization: &NewOrganization<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled, ews_url, impersonation_account) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        organization.id,
        organization.external_id,
        organization.name,
        organization.access_type as AccessType,
        organization.sync_enabled,
        organization.ews_url,
        organization.impersonation_account
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A change to an organization's settings; `None` keeps a field.
pub struct Settings<'a> {
    pub name: Option<&'a str>,
    pub sync_enabled: Option<bool>,
    pub ews_url: Option<&'a str>,
    pub impersonation_account: Option<&'a str>,
}

/// Writes `settings`.
pub async fn update(connection: &mut PgConnection, id: Uuid, settings: &Settings<'_>) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE organizations SET name = COALESCE($2, name), sync_enabled = COALESCE($3, sync_enabled), \
             ews_url = COALESCE($4, ews_url), impersonation_account = COALESCE($5, impersonation_account), \
             updated_at = now() WHERE id = $1",
        id,
        settings.name,
        settings.sync_enabled,
        settings.ews_url,
        settings.impersonation_account
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Switches the organization's synchronization; whether anything changed.
pub async fn switch_sync(connection: &mut PgConnection, id: Uuid, enabled: bool) -> StoreResult<bool> {
    let changed = sqlx::query!(
        "UPDATE organizations SET sync_enabled = $2, updated_at = now() WHERE id = $1 AND sync_enabled <> $2",
        id,
        enabled
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// How many of the organization's users have an initialized mailbox.
pub async fn initialized_mailboxes(connection: &mut PgConnection, id: Uuid) -> StoreResult<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM users WHERE organization_id = $1 AND mailbox_status = 'initialized'"#,
        id
    )
    .fetch_one(connection)
    .await?)
}

/// Deletes the organization with its users and everything theirs.
pub async fn delete(connection: &mut PgConnection, id: Uuid) -> StoreResult<()> {
    sqlx::query!("DELETE FROM organizations WHERE id = $1", id)
        .execute(connection)
        .await?;
    Ok(())
}

/// What a move between organizations needs to know of one.
#[derive(Debug)]
pub struct Summary {
    pub name: String,
    pub access_type: AccessType,
}

/// The organization, locked against deletion (`FOR KEY SHARE`) until the
/// transaction ends: a user added to it or moved into it cannot be left
/// pointing at an organization deleted meanwhile (the delete waits, then
/// takes the new user with it).
pub async fn hold(connection: &mut PgConnection, id: Uuid) -> StoreResult<Option<Summary>> {
    Ok(sqlx::query_as!(
        Summary,
        r#"SELECT name, access_type AS "access_type: _" FROM organizations WHERE id = $1 FOR KEY SHARE"#,
        id
    )
    .fetch_optional(connection)
    .await?)
}

/// Whether another organization has `external_id`. The unique constraint
/// decides a race: the insert then answers 409 `external_id_taken`.
pub async fn external_id_taken(connection: &mut PgConnection, external_id: &str) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM organizations WHERE external_id = $1) AS "taken!""#,
        external_id
    )
    .fetch_one(connection)
    .await?)
}

/// Whether the organization exists.
pub async fn exists(pool: &sqlx::PgPool, id: Uuid) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS "exists!""#,
        id
    )
    .fetch_one(pool)
    .await?)
}

/// Whether the organization exists; when `write`, it is also locked against
/// deletion and concurrent writers of its settings (`FOR NO KEY UPDATE`,
/// which users added to it meanwhile do not wait for) until the transaction
/// ends, so what is written for it cannot outlive it.
pub async fn find_for(connection: &mut PgConnection, id: Uuid, write: bool) -> StoreResult<bool> {
    let found = if write {
        sqlx::query_scalar!("SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE", id)
            .fetch_optional(connection)
            .await?
    } else {
        sqlx::query_scalar!("SELECT id FROM organizations WHERE id = $1", id)
            .fetch_optional(connection)
            .await?
    };
    Ok(found.is_some())
}

/// What an organization list is filtered by.
pub struct ListFilter<'a> {
    /// Only this organization (an organization admin's or a user's own).
    pub only: Option<Option<Uuid>>,
    pub access_type: Option<AccessType>,
    pub sync_enabled: Option<bool>,
    /// An `ILIKE` pattern on the name or the external id.
    pub pattern: Option<&'a str>,
}

impl ListFilter<'_> {
    fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        builder.push(" WHERE TRUE");
        if let Some(only) = self.only {
            builder.push(" AND o.id = ").push_bind(only);
        }
        if let Some(access) = self.access_type {
            builder.push(" AND o.access_type = ").push_bind(access);
        }
        if let Some(enabled) = self.sync_enabled {
            builder.push(" AND o.sync_enabled = ").push_bind(enabled);
        }
        if let Some(pattern) = self.pattern {
            builder
                .push(" AND (o.name ILIKE ")
                .push_bind(pattern.to_owned())
                .push(" OR o.external_id ILIKE ")
                .push_bind(pattern.to_owned())
                .push(")");
        }
    }
}

/// How many organizations match `filter`, and the rows of `page` among them
/// (with the page's keys, for `Page::finish`).
pub async fn page(pool: &PgPool, filter: &ListFilter<'_>, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    super::counted_page(pool, COLUMNS, "organizations o", |builder| filter.push(builder), page).await
}
