//! The `/v1` routes.

pub mod actions;
pub mod activities;
pub mod admin_jobs;
pub mod configuration;
pub mod customization;
pub mod jobs;
pub mod list;
pub mod notifications;
pub mod ops;
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
    let taken = crate::store::users::email_taken(tx, email, except).await?;
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
    crate::store::activities::record(
        tx,
        crate::store::activities::NewActivity {
            organization_id,
            user_id,
            actor,
            kind,
            details,
        },
    )
    .await?;
    Ok(())
}

/// Tells `"field": null` (clear it) from a missing field (keep it).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// How long saving a URL waits for its host name to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Parses an admin-supplied URL (an EWS endpoint, a Salesforce instance) and
/// checks it against the api's policy (R7): the scheme, credentials, a
/// literal address, and, when the host is a name, every address it resolves
/// to now, so one resolving to a loopback, private or link-local address is
/// refused when saved (400 naming `field`). A name that does not resolve
/// (yet) is accepted: DNS may change, and the connectors check every address
/// again at connect time.
pub async fn public_url(
    policy: syncfleet_connectors::ssrf::UrlPolicy,
    field: &str,
    raw: &str,
) -> Result<reqwest::Url, ApiError> {
    use syncfleet_connectors::ssrf;
    let url: reqwest::Url = raw
        .parse()
        .map_err(|_| ApiError::invalid(field, format!("{raw:?} is not a URL")))?;
    ssrf::check_url(&url, policy).map_err(|refused| ApiError::invalid(field, refused.to_string()))?;
    if let Some(host) = url.domain() {
        let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await;
        if let Ok(Ok(addresses)) = resolved {
            for address in addresses {
                ssrf::check_address(address.ip(), policy).map_err(|refused| {
                    ApiError::invalid(field, format!("{host} resolves to a non-public address ({refused})"))
                })?;
            }
        }
    }
    Ok(url)
}
