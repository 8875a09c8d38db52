//! Organizations (M1-M4): create, list (sort, filter, search, paginate), read,
//! edit, delete. The external id is the customer's own and read-only once
//! saved; the default organization always exists; an Exchange Impersonation
//! organization names its EWS URL (SSRF-checked) and service account, whose
//! password is sealed and never answered. Every change is an activity.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder, Transaction};
use syncfleet_common::{
    domain::AccessType,
    secrets::{self, CredentialKind, Owner},
};
use syncfleet_connectors::ssrf;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    routes::parse_id,
};

/// The organization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// An organization as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct OrganizationView {
    pub id: Uuid,
    pub external_id: String,
    pub name: String,
    pub access_type: String,
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

const COLUMNS: &str = "o.id, o.external_id, o.name, o.access_type, o.sync_enabled, o.is_default, o.ews_url, \
     o.impersonation_account, \
     EXISTS (SELECT 1 FROM credentials c WHERE c.organization_id = o.id AND c.kind = 'impersonation_password') \
         AS impersonation_password_set, \
     (SELECT count(*) FROM users u WHERE u.organization_id = o.id) AS users, o.created_at, o.updated_at";

fn admin_only(principal: &Principal) -> Result<(), ApiError> {
    if principal.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin can create or delete organizations"))
    }
}

fn may_see(principal: &Principal, id: Uuid) -> bool {
    match principal.role {
        Role::Admin => true,
        Role::OrgAdmin | Role::User => principal.organization_id == Some(id),
    }
}

async fn load(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
) -> Result<OrganizationView, ApiError> {
    let query = format!("SELECT {COLUMNS} FROM organizations o WHERE o.id = $1");
    sqlx::query_as::<_, OrganizationView>(&query)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .filter(|organization| may_see(principal, organization.id))
        .ok_or_else(|| ApiError::not_found("organization"))
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn ews_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let url: Url = raw
        .parse()
        .map_err(|_| ApiError::invalid("ews_url", format!("{raw:?} is not a URL")))?;
    ssrf::check_url(&url, state.url_policy).map_err(|refused| ApiError::invalid("ews_url", refused.to_string()))?;
    Ok(url.to_string())
}

/// `POST /v1/organizations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    name: String,
    external_id: String,
    access_type: String,
    #[serde(default)]
    sync_enabled: Option<bool>,
    #[serde(default)]
    ews_url: Option<String>,
    #[serde(default)]
    impersonation_account: Option<String>,
    #[serde(default)]
    #[schema(write_only)]
    impersonation_password: Option<String>,
}

async fn activity(
    tx: &mut Transaction<'_, Postgres>,
    organization: Uuid,
    principal: &Principal,
    kind: &str,
    details: String,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO activities (id, organization_id, actor, kind, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(Uuid::now_v7())
        .bind(organization)
        .bind(&principal.label)
        .bind(kind)
        .bind(details)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates an organization (admins only).
#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = NewOrganization, responses((status = 201, body = OrganizationView)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<OrganizationView>), ApiError> {
    admin_only(&principal)?;
    let new: NewOrganization = crate::routes::secret_safe_json(&body, "an organization object")?;
    let name = text("name", &new.name, 200)?;
    let external_id = text("external_id", &new.external_id, 100)?;
    let access = new.access_type.parse::<AccessType>().map_err(|_| {
        ApiError::invalid(
            "access_type",
            "access_type must be exchange_direct, exchange_impersonation, office365 or gmail",
        )
    })?;
    let impersonation = access == AccessType::ExchangeImpersonation;
    let ews = match (&new.ews_url, access) {
        (Some(url), AccessType::ExchangeDirect | AccessType::ExchangeImpersonation) => Some(ews_url(&state, url)?),
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "ews_url",
                "only Exchange organizations have an EWS URL",
            ));
        }
        (None, AccessType::ExchangeImpersonation) => {
            return Err(ApiError::invalid(
                "ews_url",
                "an Exchange Impersonation organization needs its EWS URL",
            ));
        }
        (None, _) => None,
    };
    let account = match (&new.impersonation_account, impersonation) {
        (Some(account), true) => Some(text("impersonation_account", account, 256)?),
        (None, true) => {
            return Err(ApiError::invalid(
                "impersonation_account",
                "an Exchange Impersonation organization needs its service account",
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "impersonation_account",
                "only an Exchange Impersonation organization has a service account",
            ));
        }
        (None, false) => None,
    };
    let password = match (new.impersonation_password, impersonation) {
        (Some(password), true) if !password.is_empty() => Some(SecretString::from(password)),
        (_, true) => {
            return Err(ApiError::invalid(
                "impersonation_password",
                "an Exchange Impersonation organization needs its service account's password",
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "impersonation_password",
                "only an Exchange Impersonation organization has a service account",
            ));
        }
        (None, false) => None,
    };
    let ring = match &password {
        Some(_) => Some(state.key_ring.as_ref().ok_or_else(|| {
            ApiError::unavailable("credentials cannot be stored: SYNCFLEET_ENCRYPTION_KEYS is not configured")
        })?),
        None => None,
    };

    let mut tx = state.pool.begin().await?;
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE external_id = $1)")
        .bind(&external_id)
        .fetch_one(&mut *tx)
        .await?;
    if taken {
        return Err(ApiError::conflict(
            "external_id_taken",
            format!("an organization already has the external id {external_id:?}"),
        )
        .on_field("external_id"));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled, ews_url, impersonation_account) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&external_id)
    .bind(&name)
    .bind(access.as_str())
    .bind(new.sync_enabled.unwrap_or(true))
    .bind(&ews)
    .bind(&account)
    .execute(&mut *tx)
    .await?;
    if let (Some(password), Some(ring)) = (&password, ring) {
        secrets::store(
            &mut *tx,
            ring,
            Owner::Organization(id),
            CredentialKind::ImpersonationPassword,
            password,
        )
        .await?;
    }
    activity(
        &mut tx,
        id,
        &principal,
        "organization_created",
        format!("organization {name:?} created"),
    )
    .await?;
    let view = load(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The list's query: `sort` (`name`, `-name`, `access_type`, `sync_enabled`,
/// `created_at`; `-` for descending), `access_type`, `sync_enabled`, `q` (in
/// the name or external id), `limit` (1-500, default 50), `offset`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    access_type: Option<String>,
    #[serde(default)]
    sync_enabled: Option<bool>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

/// A page of the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationPage {
    pub items: Vec<OrganizationView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// The organizations the caller may see.
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", params(ListQuery), responses((status = 200, body = OrganizationPage)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OrganizationPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let (column, descending) = match query.sort.as_deref().unwrap_or("name") {
        sort @ ("name" | "access_type" | "sync_enabled" | "created_at" | "external_id") => (sort.to_owned(), false),
        sort if sort.starts_with('-')
            && matches!(
                &sort[1..],
                "name" | "access_type" | "sync_enabled" | "created_at" | "external_id"
            ) =>
        {
            (sort[1..].to_owned(), true)
        }
        other => {
            return Err(ApiError::invalid(
                "sort",
                format!(
                    "cannot sort by {other:?}: use name, external_id, access_type, sync_enabled or created_at, with - for descending"
                ),
            ));
        }
    };
    if let Some(access) = &query.access_type
        && access.parse::<AccessType>().is_err()
    {
        return Err(ApiError::invalid(
            "access_type",
            format!("{access:?} is not an access type"),
        ));
    }
    let (limit, offset) = crate::routes::page(query.limit, query.offset)?;
    let filter = |builder: &mut QueryBuilder<'_, Postgres>| {
        builder.push(" WHERE TRUE");
        if principal.role != Role::Admin {
            builder.push(" AND o.id = ").push_bind(principal.organization_id);
        }
        if let Some(access) = &query.access_type {
            builder.push(" AND o.access_type = ").push_bind(access.clone());
        }
        if let Some(enabled) = query.sync_enabled {
            builder.push(" AND o.sync_enabled = ").push_bind(enabled);
        }
        if let Some(pattern) = crate::routes::contains_pattern(query.q.as_deref()) {
            builder
                .push(" AND (o.name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR o.external_id ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
    };
    let mut counting = QueryBuilder::new("SELECT count(*) FROM organizations o");
    filter(&mut counting);
    let total: i64 = counting.build_query_scalar().fetch_one(&state.pool).await?;
    let mut listing = QueryBuilder::new(format!("SELECT {COLUMNS} FROM organizations o"));
    filter(&mut listing);
    // `column` is one of the names matched above, never the caller's text.
    listing.push(format!(
        " ORDER BY o.{column} {}, o.id LIMIT ",
        if descending { "DESC" } else { "ASC" }
    ));
    listing.push_bind(limit).push(" OFFSET ").push_bind(offset);
    let items = listing
        .build_query_as::<OrganizationView>()
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(OrganizationPage {
        items,
        total,
        limit,
        offset,
    }))
}

/// One organization.
#[utoipa::path(get, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = OrganizationView)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<OrganizationView>, ApiError> {
    let id = parse_id("id", &id)?;
    let mut tx = state.pool.begin().await?;
    Ok(Json(load(&mut tx, &principal, id).await?))
}

/// `PATCH /v1/organizations/{id}`: every field optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    sync_enabled: Option<bool>,
    #[serde(default)]
    ews_url: Option<String>,
    #[serde(default)]
    impersonation_account: Option<String>,
    #[serde(default)]
    #[schema(write_only)]
    impersonation_password: Option<String>,
}

/// Edits an organization; the external id cannot change.
#[utoipa::path(patch, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), request_body = Change, responses((status = 200, body = OrganizationView)))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OrganizationView>, ApiError> {
    let id = parse_id("id", &id)?;
    let change: Change = crate::routes::secret_safe_json(&body, "an organization object")?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can edit an organization",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let current = load(&mut tx, &principal, id).await?;
    if let Some(external_id) = &change.external_id
        && external_id != &current.external_id
    {
        return Err(ApiError::invalid("external_id", "external_id is read-only once saved"));
    }
    let name = change.name.as_deref().map(|name| text("name", name, 200)).transpose()?;
    let exchange = matches!(
        current.access_type.as_str(),
        "exchange_direct" | "exchange_impersonation"
    );
    let impersonation = current.access_type == AccessType::ExchangeImpersonation.as_str();
    let ews = match &change.ews_url {
        Some(_) if !exchange => {
            return Err(ApiError::invalid(
                "ews_url",
                "only Exchange organizations have an EWS URL",
            ));
        }
        Some(url) => Some(ews_url(&state, url)?),
        None => None,
    };
    let account = match &change.impersonation_account {
        Some(_) if !impersonation => {
            return Err(ApiError::invalid(
                "impersonation_account",
                "only an Exchange Impersonation organization has a service account",
            ));
        }
        Some(account) => Some(text("impersonation_account", account, 256)?),
        None => None,
    };
    let password = match change.impersonation_password {
        Some(_) if !impersonation => {
            return Err(ApiError::invalid(
                "impersonation_password",
                "only an Exchange Impersonation organization has a service account",
            ));
        }
        Some(password) if password.is_empty() => {
            return Err(ApiError::invalid(
                "impersonation_password",
                "impersonation_password must not be empty",
            ));
        }
        Some(password) => Some(SecretString::from(password)),
        None => None,
    };
    sqlx::query(
        "UPDATE organizations SET name = COALESCE($2, name), sync_enabled = COALESCE($3, sync_enabled), \
             ews_url = COALESCE($4, ews_url), impersonation_account = COALESCE($5, impersonation_account), \
             updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&name)
    .bind(change.sync_enabled)
    .bind(&ews)
    .bind(&account)
    .execute(&mut *tx)
    .await?;
    if let Some(password) = &password {
        let ring = state.key_ring.as_ref().ok_or_else(|| {
            ApiError::unavailable("credentials cannot be stored: SYNCFLEET_ENCRYPTION_KEYS is not configured")
        })?;
        secrets::store(
            &mut *tx,
            ring,
            Owner::Organization(id),
            CredentialKind::ImpersonationPassword,
            password,
        )
        .await?;
    }
    match change.sync_enabled {
        Some(enabled) if enabled != current.sync_enabled => {
            let (kind, what) = if enabled {
                ("organization_sync_enabled", "enabled")
            } else {
                ("organization_sync_disabled", "disabled")
            };
            activity(
                &mut tx,
                id,
                &principal,
                kind,
                format!("synchronization {what} for the organization"),
            )
            .await?;
        }
        _ => {}
    }
    if name.is_some() || ews.is_some() || account.is_some() || password.is_some() {
        activity(
            &mut tx,
            id,
            &principal,
            "organization_updated",
            "settings changed".to_owned(),
        )
        .await?;
    }
    let view = load(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// Deletes an organization and its users; refused while a user's mailbox is
/// initialized, and for the default organization.
#[utoipa::path(delete, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 204, description = "Deleted.")))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("id", &id)?;
    admin_only(&principal)?;
    let mut tx = state.pool.begin().await?;
    let current = load(&mut tx, &principal, id).await?;
    if current.is_default {
        return Err(ApiError::conflict(
            "default_organization",
            "the default organization cannot be deleted",
        ));
    }
    let initialized: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE organization_id = $1 AND mailbox_status = 'initialized'")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if initialized > 0 {
        return Err(ApiError::conflict(
            "mailboxes_initialized",
            format!("{initialized} user(s) of the organization have an initialized mailbox: reset them first"),
        ));
    }
    sqlx::query("DELETE FROM organizations WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
