//! The `/v1` routes.

pub mod actions;
pub mod activities;
pub mod admin_jobs;
pub mod configuration;
pub mod customization;
pub mod jobs;
pub mod list;
pub mod notifications;
pub mod organizations;
pub mod plans;
pub mod presets;
pub mod pushes;
pub mod scope;
pub mod sessions;
pub mod statistics;
pub mod users;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::ApiError;

/// Parses a path id, naming the parameter when it is not a UUID.
pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a UUID, got {raw:?}")))
}

/// An `ILIKE` pattern finding `q` anywhere, its wildcards escaped; `None`
/// for a blank search.
pub fn contains_pattern(q: Option<&str>) -> Option<String> {
    let q = q.map(str::trim).filter(|q| !q.is_empty())?;
    Some(format!(
        "%{}%",
        q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
    ))
}

/// Whether `email` looks like an SMTP address (`local@domain.tld`).
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Refuses `email` when another user than `except` has it (409, naming the
/// field).
pub async fn ensure_email_free(
    tx: &mut Transaction<'_, Postgres>,
    email: &str,
    except: Option<Uuid>,
) -> Result<(), ApiError> {
    let taken: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND id IS DISTINCT FROM $2)",
    )
    .bind(email)
    .bind(except)
    .fetch_one(&mut **tx)
    .await?;
    if taken {
        return Err(
            ApiError::conflict("email_taken", format!("another user already has the address {email}"))
                .on_field("email"),
        );
    }
    Ok(())
}

/// Records an activity (M11) in the caller's transaction, so it commits or
/// rolls back with the change it describes.
pub async fn record_activity(
    tx: &mut Transaction<'_, Postgres>,
    organization_id: Uuid,
    user_id: Option<Uuid>,
    actor: &str,
    kind: &str,
    details: String,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(user_id)
    .bind(actor)
    .bind(kind)
    .bind(details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads a JSON body that may hold a secret: a parse error names the
/// position and what is wrong with the shape, never a value.
pub fn secret_safe_json<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let reason = match error.classify() {
            serde_json::error::Category::Data => {
                // Data errors quote field names, never values, for unknown
                // fields; other data errors may quote a value.
                let text = error.to_string();
                if text.starts_with("unknown field") || text.starts_with("missing field") {
                    text
                } else {
                    format!(
                        "a field has the wrong type (line {}, column {})",
                        error.line(),
                        error.column()
                    )
                }
            }
            _ => format!("not JSON (line {}, column {})", error.line(), error.column()),
        };
        ApiError::invalid("body", format!("expected {expected}: {reason}"))
    })
}

/// Tells `"field": null` (clear it) from a missing field (keep it).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
