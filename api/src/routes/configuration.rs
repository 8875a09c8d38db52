//! A user's email configuration (M9) and credentials (R6): the SMTP address,
//! the Exchange account name and password, the Salesforce instance URL, and
//! the OAuth refresh tokens the add-in hands over after consent. Secrets go
//! in, sealed, and never come out: the answers say only whether each is set.
//!
//! - Exchange Direct Logon takes an account name and a password, or an
//!   Office 365 authorization instead; storing a password switches back from
//!   the authorization (its refresh token is deleted).
//! - Exchange Impersonation takes only the SMTP address per user; the rest is
//!   the organization's.
//! - Office 365 and Gmail take a mailbox refresh token.
//! - A user may never change their own SMTP address.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use syncfleet_common::{
    domain::AccessType,
    secrets::{self, CredentialKind, KeyRing, Owner},
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, PathId};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
};

/// The longest secret accepted.
const MAX_SECRET: usize = 4096;

/// The configuration routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_configuration, put_configuration))
        .routes(routes!(put_credential, delete_credential))
        .routes(routes!(put_mailbox))
        .routes(routes!(put_crm))
}

/// What the API shows of a user's configuration.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigurationView {
    pub user_id: Uuid,
    pub access_type: AccessType,
    pub email: String,
    pub account_logon: Option<String>,
    pub salesforce_instance_url: Option<String>,
    /// An Exchange password is stored.
    pub mailbox_password_set: bool,
    /// A Microsoft or Google authorization (refresh token) is stored.
    pub mailbox_authorized: bool,
    /// A Salesforce authorization is stored.
    pub crm_authorized: bool,
}

use crate::store::users::ConfigurationRow as Row;

impl From<Row> for ConfigurationView {
    fn from(row: Row) -> Self {
        let has = |kind: CredentialKind| row.kinds.iter().any(|stored| stored == kind.as_str());
        Self {
            mailbox_password_set: has(CredentialKind::MailboxPassword),
            mailbox_authorized: has(CredentialKind::MailboxRefreshToken),
            crm_authorized: has(CredentialKind::CrmRefreshToken),
            user_id: row.id,
            access_type: row.access_type,
            email: row.email,
            account_logon: row.account_logon,
            salesforce_instance_url: row.salesforce_instance_url,
        }
    }
}

async fn load(tx: &mut Transaction<'_, Postgres>, principal: &Principal, id: Uuid) -> Result<Row, ApiError> {
    crate::store::users::configuration(tx, id)
        .await?
        .filter(|row| principal.may_act_on_user(row.id, row.organization_id))
        .ok_or_else(|| ApiError::not_found("user"))
}

fn key_ring(state: &AppState) -> Result<&KeyRing, ApiError> {
    state.key_ring.as_ref().ok_or_else(|| {
        ApiError::unavailable("credentials cannot be stored: SYNCFLEET_ENCRYPTION_KEYS is not configured")
    })
}

/// `GET /v1/users/{id}/email-configuration`.
#[utoipa::path(get, path = "/v1/users/{id}/email-configuration", tag = "users", params(("id" = Uuid, Path, description = "The user.")), responses((status = 200, body = ConfigurationView)))]
pub async fn get_configuration(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<ConfigurationView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let row = load(&mut tx, &principal, id).await?;
    Ok(Json(row.into()))
}

/// The body of `PUT /v1/users/{id}/email-configuration`: every field is
/// optional; `null` clears `account_logon` and `salesforce_instance_url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationChange {
    #[serde(default)]
    email: Option<String>,
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    account_logon: Option<Option<String>>,
    #[serde(default)]
    #[schema(write_only)]
    password: Option<String>,
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    salesforce_instance_url: Option<Option<String>>,
}

fn secret(field: &str, value: String) -> Result<SecretString, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, format!("{field} must not be empty")));
    }
    if value.len() > MAX_SECRET {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than {MAX_SECRET} bytes"),
        ));
    }
    Ok(SecretString::from(value))
}

/// One field of a [`Change`] with the name the caller's body gives it, so
/// that an error names the field the caller sent.
pub(crate) struct Named<T> {
    pub name: &'static str,
    pub value: T,
}

impl<T> Named<T> {
    pub(crate) fn new(name: &'static str, value: T) -> Self {
        Self { name, value }
    }
}

/// A change to a user's mailbox and CRM configuration; a field left `None`
/// keeps its value, `Some(None)` clears it. Every route that configures a
/// user (`PATCH /v1/users/{id}`, `PUT .../email-configuration`, `.../mailbox`,
/// `.../crm`, `.../credentials/{kind}`) goes through [`apply`].
#[derive(Default)]
pub(crate) struct Change {
    pub email: Option<Named<String>>,
    pub account_logon: Option<Named<Option<String>>>,
    pub password: Option<Named<String>>,
    pub mailbox_refresh_token: Option<Named<String>>,
    pub salesforce_instance_url: Option<Named<Option<String>>>,
    pub crm_refresh_token: Option<Named<String>>,
}

/// Checks every field of `change` against the user's access type (M9) and
/// the caller's role, then writes them in the caller's transaction, which
/// commits them with its activity. Returns what changed, for that activity:
/// secrets are named, never shown.
///
/// A user may never change their own SMTP address (under Exchange
/// Impersonation the organization's service account opens whatever mailbox
/// the address names); admins and organization admins can.
pub(crate) async fn apply(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    change: Change,
) -> Result<Vec<&'static str>, ApiError> {
    let row = load(tx, principal, id).await?;
    let access = row.access_type;
    let direct_only = |name: &'static str, what: &str| {
        ApiError::invalid(
            name,
            format!("{what} is only used by Exchange Direct Logon, not {}", row.access_type),
        )
    };

    if let Some(Named { name, value: email }) = &change.email {
        if principal.role == Role::User && *email != row.email {
            return Err(ApiError::forbidden("a user may not change their own SMTP address").on_field(*name));
        }
        if !crate::routes::valid_email(email) {
            return Err(ApiError::invalid(*name, format!("{email:?} is not an email address")));
        }
    }
    if let Some(Named {
        name,
        value: Some(logon),
    }) = &change.account_logon
    {
        if access != AccessType::ExchangeDirect {
            return Err(direct_only(name, "an account name"));
        }
        if logon.is_empty() || logon.len() > 256 {
            return Err(ApiError::invalid(*name, format!("{name} must be 1 to 256 characters")));
        }
    }
    let password = match change.password {
        Some(Named { name, value }) => {
            if access != AccessType::ExchangeDirect {
                return Err(ApiError::invalid(
                    name,
                    format!(
                        "a password is only used by Exchange Direct Logon; {} users authorize instead",
                        row.access_type
                    ),
                ));
            }
            Some(secret(name, value)?)
        }
        None => None,
    };
    let mailbox_token = match change.mailbox_refresh_token {
        Some(Named { name, value }) => {
            if access == AccessType::ExchangeImpersonation {
                return Err(ApiError::invalid(
                    name,
                    "an Exchange Impersonation mailbox is reached through the organization's service account, not a user's authorization",
                ));
            }
            if password.is_some() {
                return Err(ApiError::invalid(
                    name,
                    "send a password or a refresh token, not both: a password switches back from the authorization",
                ));
            }
            Some(secret(name, value)?)
        }
        None => None,
    };
    if let Some(Named { name, value: Some(url) }) = &change.salesforce_instance_url {
        crate::routes::public_url(state.url_policy, name, url).await?;
    }
    let crm_token = match change.crm_refresh_token {
        Some(Named { name, value }) => Some(secret(name, value)?),
        None => None,
    };
    let ring = if password.is_some() || mailbox_token.is_some() || crm_token.is_some() {
        Some(key_ring(state)?)
    } else {
        None
    };

    let mut changed = Vec::new();
    let email = change.email.map(|named| named.value);
    if let Some(email) = &email
        && *email != row.email
    {
        crate::routes::ensure_email_free(tx, email, Some(id)).await?;
        changed.push("email");
    }
    let logon = change.account_logon.map(|named| named.value);
    if logon.as_ref().is_some_and(|logon| *logon != row.account_logon) {
        changed.push("account_logon");
    }
    let url = change.salesforce_instance_url.map(|named| named.value);
    if url.as_ref().is_some_and(|url| *url != row.salesforce_instance_url) {
        changed.push("salesforce_instance_url");
    }
    if !changed.is_empty() {
        let addresses = crate::store::users::AddressChange {
            email: email.as_deref(),
            account_logon: logon.as_ref().map(Option::as_deref),
            salesforce_instance_url: url.as_ref().map(Option::as_deref),
        };
        crate::store::users::set_addresses(tx, id, &addresses).await?;
    }
    if let Some(ring) = ring {
        let owner = Owner::User(id);
        if let Some(password) = &password {
            secrets::store(&mut **tx, ring, owner, CredentialKind::MailboxPassword, password).await?;
            // Back from Office 365 OAuth to the password.
            secrets::delete(&mut **tx, owner, CredentialKind::MailboxRefreshToken).await?;
            changed.push("mailbox password");
        }
        if let Some(token) = &mailbox_token {
            secrets::store(&mut **tx, ring, owner, CredentialKind::MailboxRefreshToken, token).await?;
            changed.push("mailbox refresh token");
        }
        if let Some(token) = &crm_token {
            secrets::store(&mut **tx, ring, owner, CredentialKind::CrmRefreshToken, token).await?;
            changed.push("CRM refresh token");
        }
    }
    Ok(changed)
}

/// Applies `change` in its own transaction with its activity, and answers
/// the configuration after it.
async fn configure(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    change: Change,
) -> Result<ConfigurationView, ApiError> {
    let mut tx = state.pool.begin().await?;
    let changed = apply(state, &mut tx, principal, id, change).await?;
    let row = load(&mut tx, principal, id).await?;
    if !changed.is_empty() {
        crate::routes::record_activity(
            &mut tx,
            row.organization_id,
            Some(id),
            &principal.label,
            "user_updated",
            format!("configuration changed: {}", changed.join(", ")),
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(row.into())
}

/// `PUT /v1/users/{id}/email-configuration`: checks every field first, then
/// writes them all in one transaction (nothing is half-applied).
#[utoipa::path(put, path = "/v1/users/{id}/email-configuration", tag = "users", params(("id" = Uuid, Path, description = "The user.")), request_body = ConfigurationChange, responses((status = 200, body = ConfigurationView)))]
pub async fn put_configuration(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<ConfigurationChange>,
) -> Result<Json<ConfigurationView>, ApiError> {
    let change = Change {
        email: change.email.map(|value| Named::new("email", value)),
        account_logon: change.account_logon.map(|value| Named::new("account_logon", value)),
        password: change.password.map(|value| Named::new("password", value)),
        salesforce_instance_url: change
            .salesforce_instance_url
            .map(|value| Named::new("salesforce_instance_url", value)),
        ..Change::default()
    };
    Ok(Json(configure(&state, &principal, id, change).await?))
}

/// The body of `PUT /v1/users/{id}/mailbox`: the mailbox's side of the
/// configuration by access type (M9). Every field is optional; `null` clears
/// `account_logon`. Secrets are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxChange {
    /// The mailbox's SMTP address (a user may not change their own).
    #[serde(default)]
    email: Option<String>,
    /// Exchange Direct Logon: the account name, when it differs from the address.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    account_logon: Option<Option<String>>,
    /// Exchange Direct Logon: the password (switches back from an Office 365 authorization).
    #[serde(default)]
    #[schema(write_only)]
    password: Option<String>,
    /// Office 365, Gmail, or Exchange Direct Logon through Office 365: the
    /// refresh token the add-in obtained.
    #[serde(default)]
    #[schema(write_only)]
    refresh_token: Option<String>,
}

/// `PUT /v1/users/{id}/mailbox`: the mailbox's address, account and
/// credentials, checked against the organization's access type, all or
/// nothing; the secrets are sealed and never answered.
#[utoipa::path(put, path = "/v1/users/{id}/mailbox", tag = "users", params(("id" = Uuid, Path, description = "The user.")), request_body = MailboxChange, responses((status = 200, body = ConfigurationView)))]
pub async fn put_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<MailboxChange>,
) -> Result<Json<ConfigurationView>, ApiError> {
    let change = Change {
        email: change.email.map(|value| Named::new("email", value)),
        account_logon: change.account_logon.map(|value| Named::new("account_logon", value)),
        password: change.password.map(|value| Named::new("password", value)),
        mailbox_refresh_token: change.refresh_token.map(|value| Named::new("refresh_token", value)),
        ..Change::default()
    };
    Ok(Json(configure(&state, &principal, id, change).await?))
}

/// The body of `PUT /v1/users/{id}/crm`: the Salesforce side. `null` clears
/// `instance_url`; the refresh token is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmChange {
    /// The Salesforce instance URL (https, public addresses only).
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    instance_url: Option<Option<String>>,
    /// The Salesforce refresh token the add-in obtained.
    #[serde(default)]
    #[schema(write_only)]
    refresh_token: Option<String>,
}

/// `PUT /v1/users/{id}/crm`: the Salesforce instance URL (SSRF-checked) and
/// refresh token (sealed, never answered), all or nothing.
#[utoipa::path(put, path = "/v1/users/{id}/crm", tag = "users", params(("id" = Uuid, Path, description = "The user.")), request_body = CrmChange, responses((status = 200, body = ConfigurationView)))]
pub async fn put_crm(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<CrmChange>,
) -> Result<Json<ConfigurationView>, ApiError> {
    let change = Change {
        salesforce_instance_url: change.instance_url.map(|value| Named::new("instance_url", value)),
        crm_refresh_token: change.refresh_token.map(|value| Named::new("refresh_token", value)),
        ..Change::default()
    };
    Ok(Json(configure(&state, &principal, id, change).await?))
}

/// The credentials a path may name, in their documented spelling (the
/// stored kind's).
const PATH_KINDS: [CredentialKind; 3] = [
    CredentialKind::MailboxPassword,
    CredentialKind::MailboxRefreshToken,
    CredentialKind::CrmRefreshToken,
];

/// The refresh tokens `PUT .../credentials/{kind}` stores.
pub(crate) const TOKEN_KINDS: [CredentialKind; 2] =
    [CredentialKind::MailboxRefreshToken, CredentialKind::CrmRefreshToken];

/// The credentials `DELETE .../credentials/{kind}` forgets.
pub(crate) const FORGETTABLE_KINDS: [CredentialKind; 3] = PATH_KINDS;

/// A credential named in a path: `mailbox_refresh_token` as documented, or
/// the same words joined by hyphens (`mailbox-refresh-token`), which earlier
/// clients send.
fn credential_kind(raw: &str) -> Result<CredentialKind, ApiError> {
    let spelled = raw.replace('-', "_");
    PATH_KINDS
        .into_iter()
        .find(|kind| kind.as_str() == spelled)
        .ok_or_else(|| {
            ApiError::not_found_code(
                "unknown_credential",
                format!("no credential {raw:?}: use mailbox_password, mailbox_refresh_token or crm_refresh_token"),
            )
            .on_field("kind")
        })
}

/// The path of the credential routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct TokenPath {
    /// The user.
    id: Uuid,
    /// The refresh token to store.
    #[param(schema_with = crate::openapi::token_kind)]
    kind: String,
}

/// The path of `DELETE .../credentials/{kind}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct CredentialPath {
    /// The user.
    id: Uuid,
    /// The credential to forget.
    #[param(schema_with = crate::openapi::forgettable_kind)]
    kind: String,
}

/// `{"token": "..."}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(write_only)]
    token: String,
}

/// `PUT /v1/users/{id}/credentials/{kind}` with `{"token": "..."}`: stores a
/// refresh token the add-in obtained (the Microsoft or Google one for the
/// mailbox, the Salesforce one for the CRM), sealed. Passwords go through the
/// email configuration.
#[utoipa::path(put, path = "/v1/users/{id}/credentials/{kind}", tag = "users", params(TokenPath), request_body = TokenBody, responses((status = 200, body = ConfigurationView)))]
pub async fn put_credential(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Path((_, kind)): Path<(String, String)>,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<ConfigurationView>, ApiError> {
    let kind = credential_kind(&kind)?;
    if kind == CredentialKind::MailboxPassword {
        return Err(ApiError::invalid(
            "kind",
            "a password is set through PUT /v1/users/{id}/email-configuration",
        ));
    }
    let token = Some(Named::new("token", body.token));
    let change = match kind {
        CredentialKind::CrmRefreshToken => Change {
            crm_refresh_token: token,
            ..Change::default()
        },
        _ => Change {
            mailbox_refresh_token: token,
            ..Change::default()
        },
    };
    Ok(Json(configure(&state, &principal, id, change).await?))
}

/// `DELETE /v1/users/{id}/credentials/{kind}`: forgets a stored credential
/// (for example the Office 365 refresh token of a Direct Logon user).
#[utoipa::path(delete, path = "/v1/users/{id}/credentials/{kind}", tag = "users", params(CredentialPath), responses((status = 204, description = "Forgotten.")))]
pub async fn delete_credential(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Path((_, kind)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind = credential_kind(&kind)?;
    let mut tx = state.pool.begin().await?;
    let row = load(&mut tx, &principal, id).await?;
    let deleted = secrets::delete(&mut *tx, Owner::User(id), kind).await?;
    if deleted {
        crate::routes::record_activity(
            &mut tx,
            row.organization_id,
            Some(id),
            &principal.label,
            "user_updated",
            format!("{} deleted", kind.as_str().replace('_', " ")),
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found_code(
            "credential_not_stored",
            format!("no {} is stored for this user", kind.as_str()),
        ))
    }
}
