//! Organizations (M1-M4): create, list (sort, filter, search, paginate), read,
//! edit, delete. The external id is the customer's own and read-only once
//! saved; the default organization always exists; an Exchange Impersonation
//! organization names its EWS URL (SSRF-checked) and service account, whose
//! password is sealed and never answered. Every change is an activity.

use axum::{Json, extract::State, http::StatusCode};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use syncfleet_common::{
    domain::AccessType,
    secrets::{self, CredentialKind, Owner},
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, ListQuery, PathId};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    idempotency::Idempotency,
    routes::list,
    store::{self, activities::NewActivity},
};

/// The organization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(enable_sync))
        .routes(routes!(disable_sync))
}

pub use crate::store::organizations::OrganizationView;

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
    store::organizations::find(tx, id)
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

async fn ews_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    Ok(crate::routes::public_url(state.url_policy, "ews_url", raw)
        .await?
        .to_string())
}

/// `POST /v1/organizations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    name: String,
    external_id: String,
    access_type: AccessType,
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
    store::activities::record(
        tx,
        NewActivity {
            organization_id: organization,
            user_id: None,
            actor: &principal.label,
            kind,
            details,
        },
    )
    .await?;
    Ok(())
}

/// Creates an organization (admins only).
#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = NewOrganization, responses((status = 201, body = OrganizationView)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    ApiJson(new): ApiJson<NewOrganization>,
) -> Result<(StatusCode, Json<OrganizationView>), ApiError> {
    admin_only(&principal)?;
    let name = text("name", &new.name, 200)?;
    let external_id = text("external_id", &new.external_id, 100)?;
    let access = new.access_type;
    let impersonation = access == AccessType::ExchangeImpersonation;
    let ews = match (&new.ews_url, access) {
        (Some(url), access) if access.is_exchange() => Some(ews_url(&state, url).await?),
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
    idempotency.claim(&mut tx).await?;
    if store::organizations::external_id_taken(&mut tx, &external_id).await? {
        return Err(ApiError::conflict(
            "external_id_taken",
            format!("an organization already has the external id {external_id:?}"),
        )
        .on_field("external_id"));
    }
    let id = Uuid::now_v7();
    let organization = store::organizations::NewOrganization {
        id,
        external_id: &external_id,
        name: &name,
        access_type: access,
        sync_enabled: new.sync_enabled.unwrap_or(true),
        ews_url: ews.as_deref(),
        impersonation_account: account.as_deref(),
    };
    store::organizations::insert(&mut tx, &organization).await?;
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
    idempotency.answer(&mut tx, StatusCode::CREATED, &view).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The list's query (M2): filters `access_type`, `sync_enabled`, `q` (in the
/// name or external id), then keyset paging (see `routes::list`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrganizationListQuery {
    /// How the organization reaches its mailboxes.
    #[serde(default)]
    #[param(value_type = Option<AccessType>)]
    access_type: Option<String>,
    /// The organization's synchronization switch.
    #[serde(default)]
    #[param(value_type = Option<bool>)]
    sync_enabled: Option<String>,
    /// Found anywhere in the name or the external id, ignoring case.
    #[serde(default)]
    q: Option<String>,
}

static ORGANIZATION_LIST: list::Spec = list::Spec {
    list: "organizations",
    columns: &[
        list::Column {
            name: "name",
            sql: "lower(o.name)",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "external_id",
            sql: "o.external_id",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "access_type",
            sql: "o.access_type",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "sync_enabled",
            sql: "o.sync_enabled",
            kind: list::Kind::Bool,
            nullable: false,
        },
        list::Column {
            name: "created_at",
            sql: "o.created_at",
            kind: list::Kind::Time,
            nullable: false,
        },
        list::Column {
            name: "updated_at",
            sql: "o.updated_at",
            kind: list::Kind::Time,
            nullable: false,
        },
    ],
    id_sql: "o.id",
    default_sort: "name",
    default_order: list::Order::Asc,
};

/// The organization list (names sort ignoring case).
pub struct Organizations;

impl list::Listing for Organizations {
    const SPEC: &'static list::Spec = &ORGANIZATION_LIST;
}

/// The organizations the caller may see, a page at a time.
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", params(OrganizationListQuery, list::PageParams<Organizations>), responses((status = 200, body = list::Listed<OrganizationView>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ListQuery(query, paging): ListQuery<OrganizationListQuery, Organizations>,
) -> Result<Json<list::Listed<OrganizationView>>, ApiError> {
    let access = query
        .access_type
        .as_deref()
        .map(|raw| list::one_of("access_type", raw, AccessType::ALL))
        .transpose()?;
    let enabled = query
        .sync_enabled
        .as_deref()
        .map(|raw| list::boolean("sync_enabled", raw))
        .transpose()?;
    let pattern = crate::routes::contains_pattern(query.q.as_deref());
    let page = paging.page(&format!("{access:?}|{enabled:?}|{pattern:?}"))?;
    let filter = store::organizations::ListFilter {
        only: (principal.role != Role::Admin).then_some(principal.organization_id),
        access_type: access,
        sync_enabled: enabled,
        pattern: pattern.as_deref(),
    };
    let (total, rows) = store::organizations::page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish::<OrganizationView>(rows)?;
    Ok(Json(list::Listed {
        items,
        next_cursor,
        total,
    }))
}

/// One organization.
#[utoipa::path(get, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = OrganizationView)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<OrganizationView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    Ok(Json(load(&mut tx, &principal, id).await?))
}

/// `PATCH /v1/organizations/{id}`: every field optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
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
    PathId(id): PathId,
    ApiJson(change): ApiJson<Change>,
) -> Result<Json<OrganizationView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    // Not found before forbidden: a foreign organization is not there.
    let current = load(&mut tx, &principal, id).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can edit an organization",
        ));
    }
    if let Some(external_id) = &change.external_id
        && external_id != &current.external_id
    {
        return Err(ApiError::invalid("external_id", "external_id is read-only once saved"));
    }
    let name = change.name.as_deref().map(|name| text("name", name, 200)).transpose()?;
    let exchange = current.access_type.is_exchange();
    let impersonation = current.access_type == AccessType::ExchangeImpersonation;
    let ews = match &change.ews_url {
        Some(_) if !exchange => {
            return Err(ApiError::invalid(
                "ews_url",
                "only Exchange organizations have an EWS URL",
            ));
        }
        Some(url) => Some(ews_url(&state, url).await?),
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
    let settings = store::organizations::Settings {
        name: name.as_deref(),
        sync_enabled: change.sync_enabled,
        ews_url: ews.as_deref(),
        impersonation_account: account.as_deref(),
    };
    store::organizations::update(&mut tx, id, &settings).await?;
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
        Some(enabled) if enabled != current.sync_enabled => sync_switched(&mut tx, id, &principal, enabled).await?,
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
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// Deletes an organization and its users; refused while a user's mailbox is
/// initialized, and for the default organization.
#[utoipa::path(delete, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 204, description = "Deleted.")))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    // Not found before forbidden: a foreign organization is not there.
    let current = load(&mut tx, &principal, id).await?;
    admin_only(&principal)?;
    if current.is_default {
        return Err(ApiError::conflict(
            "default_organization",
            "the default organization cannot be deleted",
        ));
    }
    let initialized = store::organizations::initialized_mailboxes(&mut tx, id).await?;
    if initialized > 0 {
        return Err(ApiError::conflict(
            "mailboxes_initialized",
            format!("{initialized} user(s) of the organization have an initialized mailbox: reset them first"),
        ));
    }
    store::organizations::delete(&mut tx, id).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records that an organization's synchronization was switched (M3).
async fn sync_switched(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    principal: &Principal,
    enabled: bool,
) -> Result<(), ApiError> {
    let (kind, what) = if enabled {
        ("organization_sync_enabled", "enabled")
    } else {
        ("organization_sync_disabled", "disabled")
    };
    activity(
        tx,
        id,
        principal,
        kind,
        format!("synchronization {what} for the organization"),
    )
    .await
}

/// The answer of `POST /v1/organizations/{id}/sync/enable` and `/disable`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncSwitchResult {
    pub organization_id: Uuid,
    /// Whether anything changed (enabling an enabled organization does not).
    pub changed: bool,
    pub organization: OrganizationView,
}

/// Switches an organization's synchronization (admins, or its organization
/// admin), with its activity when it changes.
async fn switch_sync(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    enabled: bool,
) -> Result<Json<SyncSwitchResult>, ApiError> {
    let mut tx = state.pool.begin().await?;
    load(&mut tx, principal, id).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can switch an organization's synchronization",
        ));
    }
    let changed = store::organizations::switch_sync(&mut tx, id, enabled).await?;
    if changed {
        sync_switched(&mut tx, id, principal, enabled).await?;
    }
    let organization = load(&mut tx, principal, id).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(SyncSwitchResult {
        organization_id: id,
        changed,
        organization,
    }))
}

/// Enables synchronization for the organization (M3): its users sync again
/// by their own status.
#[utoipa::path(post, path = "/v1/organizations/{id}/sync/enable", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = SyncSwitchResult)))]
pub async fn enable_sync(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<SyncSwitchResult>, ApiError> {
    switch_sync(&state, &principal, id, true).await
}

/// Disables synchronization for the whole organization (M3): none of its
/// users syncs, whatever their own status (a job already queued ends as a
/// skipped session; force sync is refused).
#[utoipa::path(post, path = "/v1/organizations/{id}/sync/disable", tag = "organizations", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = SyncSwitchResult)))]
pub async fn disable_sync(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<SyncSwitchResult>, ApiError> {
    switch_sync(&state, &principal, id, false).await
}
