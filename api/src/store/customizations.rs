//! Customizations: a user's versioned settings document for the add-in and
//! their organization's default.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;

/// A user's customization.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct CustomizationView {
    pub user_id: Uuid,
    /// Grows by one on every save; 0 until the first, when the document is
    /// the organization's default (or `{}` without one).
    pub version: i64,
    /// How this state came: `saved`, `imported`, `pushed`, `retrieved` or `default`.
    pub source: String,
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// Null until the first save.
    pub saved_at: Option<DateTime<Utc>>,
}

/// An organization's default customization (M16).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct DefaultCustomizationView {
    pub organization_id: Uuid,
    /// Grows by one on every save; 0 (and `{}`) until the first.
    pub version: i64,
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// Who saved it last; null until the first save.
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The organization's default, when one was saved.
pub async fn default_of(
    connection: &mut PgConnection,
    organization: Uuid,
) -> StoreResult<Option<DefaultCustomizationView>> {
    Ok(sqlx::query_as!(
        DefaultCustomizationView,
        r#"SELECT organization_id, version, document, updated_by AS "updated_by?", updated_at AS "updated_at?"
           FROM organization_default_customizations WHERE organization_id = $1"#,
        organization
    )
    .fetch_optional(connection)
    .await?)
}

/// The document of the organization's default, when one was saved.
pub async fn default_document(connection: &mut PgConnection, organization: Uuid) -> StoreResult<Option<Value>> {
    Ok(sqlx::query_scalar!(
        "SELECT document FROM organization_default_customizations WHERE organization_id = $1",
        organization
    )
    .fetch_optional(connection)
    .await?)
}

/// Saves the organization's default as its next version.
pub async fn set_default(
    connection: &mut PgConnection,
    organization: Uuid,
    document: &Value,
    by: &str,
) -> StoreResult<DefaultCustomizationView> {
    Ok(sqlx::query_as!(
        DefaultCustomizationView,
        r#"INSERT INTO organization_default_customizations (organization_id, document, updated_by)
           VALUES ($1, $2, $3)
           ON CONFLICT (organization_id) DO UPDATE SET version = organization_default_customizations.version + 1,
               document = EXCLUDED.document, updated_by = EXCLUDED.updated_by, updated_at = now()
           RETURNING organization_id, version, document, updated_by AS "updated_by?", updated_at AS "updated_at?""#,
        organization,
        document,
        by
    )
    .fetch_one(connection)
    .await?)
}

/// The user's saved customization, when they saved one.
pub async fn of_user(connection: &mut PgConnection, user: Uuid) -> StoreResult<Option<CustomizationView>> {
    Ok(sqlx::query_as!(
        CustomizationView,
        r#"SELECT user_id, version, source, document, saved_at AS "saved_at?" FROM customizations WHERE user_id = $1"#,
        user
    )
    .fetch_optional(connection)
    .await?)
}

/// Saves `document` as the user's next version, from `source`.
pub async fn save(
    connection: &mut PgConnection,
    user: Uuid,
    document: &Value,
    source: &str,
) -> StoreResult<CustomizationView> {
    Ok(sqlx::query_as!(
        CustomizationView,
        r#"INSERT INTO customizations (user_id, document, source) VALUES ($1, $2, $3)
           ON CONFLICT (user_id) DO UPDATE SET version = customizations.version + 1,
               document = EXCLUDED.document, source = EXCLUDED.source, saved_at = now()
           RETURNING user_id, version, source, document, saved_at AS "saved_at?""#,
        user,
        document,
        source
    )
    .fetch_one(connection)
    .await?)
}

/// A colleague, with their saved customization if any.
#[derive(Debug)]
pub struct Colleague {
    pub email: String,
    pub version: Option<i64>,
    pub document: Option<Value>,
}

/// The user `id` of `organization`, with their saved customization.
pub async fn colleague(connection: &mut PgConnection, id: Uuid, organization: Uuid) -> StoreResult<Option<Colleague>> {
    Ok(sqlx::query_as!(
        Colleague,
        r#"SELECT u.email, c.version AS "version?", c.document AS "document?"
           FROM users u LEFT JOIN customizations c ON c.user_id = u.id
           WHERE u.id = $1 AND u.organization_id = $2"#,
        id,
        organization
    )
    .fetch_optional(connection)
    .await?)
}
