//! The `/v1` routes.

pub mod actions;
pub mod admin_jobs;
pub mod configuration;
pub mod customization;
pub mod jobs;
pub mod organizations;
pub mod users;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::ApiError;

/// Parses a path id, naming the parameter when it is not a UUID.
pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a UUID, got {raw:?}")))
}

/// A list's `limit` (1-500, default 50) and `offset` (not negative), checked.
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1 to 500"));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset", "offset must not be negative"));
    }
    Ok((limit, offset))
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
