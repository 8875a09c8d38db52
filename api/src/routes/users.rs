//! Users: reading one, and the sync switch (`enable-sync`, `disable-sync`)
//! on one user or a selection, each change recorded as an activity.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use syncfleet_common::{
    domain::{AccessType, EffectiveSyncStatus, SessionStatus, SyncStatus, UserRole},
    secrets::CredentialKind,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiQuery, ListQuery, PathId};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    idempotency::Idempotency,
    routes::{list, parse_id},
    store::{
        self,
        activities::NewActivity,
        users::{Lock, ProfileChange, UserRow},
    },
};

/// The most users one bulk action takes.
const MAX_BULK: usize = 1000;

/// The user routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_organization_users))
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub notification_email: Option<String>,
    pub organization_id: Uuid,
    pub plan_id: Option<Uuid>,
    pub description: String,
    /// The Exchange account name, when it differs from the email.
    pub account_logon: Option<String>,
    pub role: UserRole,
    pub sync_status: SyncStatus,
    /// What the fleet does: the user's own status, or `organization_disabled`
    /// while their organization is disabled.
    pub effective_sync_status: EffectiveSyncStatus,
    pub disabled_reason: Option<String>,
    pub mailbox_status: String,
    pub next_sync_at: DateTime<Utc>,
    pub last_session: Option<LastSession>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The user's most recent session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastSession {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub status: SessionStatus,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        let last_session = match (row.last_session_id, row.last_session_at, row.last_session_status) {
            (Some(id), Some(at), Some(status)) => Some(LastSession { id, at, status }),
            _ => None,
        };
        Self {
            effective_sync_status: EffectiveSyncStatus::of(row.sync_status, row.organization_enabled),
            id: row.id,
            name: row.name,
            email: row.email,
            notification_email: row.notification_email,
            organization_id: row.organization_id,
            plan_id: row.plan_id,
            description: row.description,
            account_logon: row.account_logon,
            role: row.role,
            sync_status: row.sync_status,
            disabled_reason: row.disabled_reason,
            mailbox_status: row.mailbox_status,
            next_sync_at: row.next_sync_at,
            last_session,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Reads a user the caller may see, optionally locking the row.
async fn load(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> Result<UserRow, ApiError> {
    let lock = if lock { Lock::ForUpdate } else { Lock::None };
    store::users::find(tx, id, lock)
        .await?
        .filter(|user| principal.may_act_on_user(user.id, user.organization_id))
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The view of a user the caller may act on, optionally locking the row,
/// for the other modules' actions (404 when the caller may not see them).
pub(crate) async fn view(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> Result<UserView, ApiError> {
    Ok(load(tx, principal, id, lock).await?.into())
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "The user (Sync ID).")), responses((status = 200, body = UserView)))]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<UserView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let user = load(&mut tx, &principal, id, false).await?;
    Ok(Json(user.into()))
}

/// `PATCH /v1/users/{id}`: every field optional; `null` clears
/// `notification_email`, `description`, `account_logon` and `plan_id`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// 1 to 200 characters.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = String)]
    name: Option<Option<String>>,
    /// The mailbox's SMTP address, unique; a user may not change their own.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = String)]
    email: Option<Option<String>>,
    /// Where the user's notifications go (`null`: to `email`).
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    notification_email: Option<Option<String>>,
    /// Free text, at most 2000 characters.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// Exchange Direct Logon's account name, when it differs from the address.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<String>)]
    account_logon: Option<Option<String>>,
    /// Moves the user, as the change-organization action does.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Uuid)]
    organization_id: Option<Option<Uuid>>,
    /// Assigns a plan (`null`: none), as the change-plan action does.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = Option<Uuid>)]
    plan_id: Option<Option<Uuid>>,
    /// Grants or revokes the permission to push customizations to
    /// colleagues; admins and the organization's admins only.
    #[serde(default, deserialize_with = "crate::routes::present")]
    #[schema(value_type = UserRole)]
    role: Option<Option<UserRole>>,
}

/// A field that may be left out but not cleared.
fn required<T>(field: &'static str, value: Option<Option<T>>) -> Result<Option<T>, ApiError> {
    match value {
        Some(None) => Err(ApiError::invalid(field, format!("{field} cannot be null"))),
        Some(Some(value)) => Ok(Some(value)),
        None => Ok(None),
    }
}

/// Edits a user (M6) in one transaction: their own fields, the mailbox
/// address and account (through the email configuration's checks), the
/// organization and the plan (as the actions do), each change an activity.
/// A user may edit their own name, notification address, description and
/// account name; not their address, organization or plan.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "The user.")), request_body = UserChange, responses((status = 200, body = UserView)))]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    let name = required("name", change.name)?
        .map(|name| {
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(ApiError::invalid("name", "name must be 1 to 200 characters"));
            }
            Ok(name)
        })
        .transpose()?;
    let email = required("email", change.email)?.map(|email| email.trim().to_owned());
    if let Some(Some(notify)) = &change.notification_email
        && !crate::routes::valid_email(notify)
    {
        return Err(ApiError::invalid(
            "notification_email",
            format!("{notify:?} is not an email address"),
        ));
    }
    let description = change.description.map(Option::unwrap_or_default);
    if description
        .as_ref()
        .is_some_and(|description| description.chars().count() > 2000)
    {
        return Err(ApiError::invalid(
            "description",
            "description must be at most 2000 characters",
        ));
    }
    let organization = required("organization_id", change.organization_id)?;
    let role = required("role", change.role)?;
    let plan = change.plan_id;

    let mut tx = state.pool.begin().await?;
    let user = load(&mut tx, &principal, id, true).await?;
    if principal.role == Role::User {
        if organization.is_some_and(|organization| organization != user.organization_id) {
            return Err(
                ApiError::forbidden("a user may not move themself to another organization").on_field("organization_id"),
            );
        }
        if plan.is_some_and(|plan| plan != user.plan_id) {
            return Err(ApiError::forbidden("a user may not assign themself a plan").on_field("plan_id"));
        }
        if role.is_some_and(|role| role != user.role) {
            return Err(
                ApiError::forbidden("only an admin or an organization admin can grant the permission to push")
                    .on_field("role"),
            );
        }
    }
    // The organization first: the account name is checked against the
    // access type the user ends up with.
    if let Some(organization) = organization.filter(|organization| *organization != user.organization_id) {
        move_user(&mut tx, &principal, &user, organization).await?;
    }
    if let Some(plan) = plan.filter(|plan| *plan != user.plan_id) {
        assign_plan(&mut tx, &principal, &user, plan).await?;
    }
    let mut changed = crate::routes::configuration::apply(
        &state,
        &mut tx,
        &principal,
        id,
        crate::routes::configuration::Change {
            email: email.map(|value| crate::routes::configuration::Named::new("email", value)),
            account_logon: change
                .account_logon
                .map(|value| crate::routes::configuration::Named::new("account_logon", value)),
            ..Default::default()
        },
    )
    .await?;
    if name.as_ref().is_some_and(|name| *name != user.name) {
        changed.push("name");
    }
    if change
        .notification_email
        .as_ref()
        .is_some_and(|notify| *notify != user.notification_email)
    {
        changed.push("notification_email");
    }
    if description
        .as_ref()
        .is_some_and(|description| *description != user.description)
    {
        changed.push("description");
    }
    if role.is_some_and(|role| role != user.role) {
        changed.push("role");
    }
    if changed
        .iter()
        .any(|field| ["name", "notification_email", "description", "role"].contains(field))
    {
        let profile = ProfileChange {
            name,
            notification_email: change.notification_email,
            description,
            role,
        };
        store::users::update_profile(&mut tx, id, &profile).await?;
    }
    let user = load(&mut tx, &principal, id, false).await?;
    if !changed.is_empty() {
        let role = if changed.contains(&"role") {
            format!(" (role now {})", user.role)
        } else {
            String::new()
        };
        store::activities::record(
            &mut tx,
            NewActivity {
                organization_id: user.organization_id,
                user_id: Some(id),
                actor: &principal.label,
                kind: "user_updated",
                details: format!("changed: {}{role}", changed.join(", ")),
            },
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(user.into()))
}

/// The sync switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Enable,
    Disable,
}

impl Switch {
    /// The switch an action name asks for.
    pub fn from_action(action: &str) -> Option<Self> {
        match action {
            "enable-sync" => Some(Self::Enable),
            "disable-sync" => Some(Self::Disable),
            _ => None,
        }
    }
}

/// The answer for one user of an action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    pub user_id: Uuid,
    /// Whether anything changed (enabling an enabled user changes nothing).
    pub changed: bool,
    pub user: UserView,
}

/// Turns a user's sync on or off, in one transaction with its activity.
/// Enabling also clears an auto-suspend and makes the user due at once.
pub async fn switch_sync(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    switch: Switch,
) -> Result<ActionResult, ApiError> {
    let user = load(tx, principal, id, true).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can switch synchronization",
        ));
    }
    let (target, kind) = match switch {
        Switch::Enable => (SyncStatus::Enabled, "sync_enabled"),
        Switch::Disable => (SyncStatus::Disabled, "sync_disabled"),
    };
    let changed = user.sync_status != target;
    if changed {
        let reason = format!("disabled by {}", principal.label);
        store::users::switch_sync(tx, id, target, &reason).await?;
        store::activities::record(
            tx,
            NewActivity {
                organization_id: user.organization_id,
                user_id: Some(id),
                actor: &principal.label,
                kind,
                details: format!(
                    "synchronization was {} (it was {})",
                    target,
                    user.sync_status.as_str().replace('_', " ")
                ),
            },
        )
        .await?;
    }
    let user = load(tx, principal, id, false).await?;
    Ok(ActionResult {
        user_id: id,
        changed,
        user: user.into(),
    })
}

/// `{"user_ids": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    pub user_ids: Vec<String>,
}

impl Selection {
    /// The ids, checked: at least one, at most [`MAX_BULK`], each a UUID,
    /// no repeats.
    pub fn ids(&self) -> Result<Vec<Uuid>, ApiError> {
        if self.user_ids.is_empty() {
            return Err(ApiError::invalid("user_ids", "user_ids must name at least one user"));
        }
        if self.user_ids.len() > MAX_BULK {
            return Err(ApiError::invalid(
                "user_ids",
                format!("at most {MAX_BULK} users at a time"),
            ));
        }
        let mut ids = Vec::with_capacity(self.user_ids.len());
        for (index, raw) in self.user_ids.iter().enumerate() {
            let id: Uuid = raw
                .parse()
                .map_err(|_| ApiError::invalid(format!("user_ids[{index}]"), format!("{raw:?} is not a UUID")))?;
            if ids.contains(&id) {
                return Err(ApiError::invalid(
                    format!("user_ids[{index}]"),
                    format!("{id} is listed twice"),
                ));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

/// The user list's query (M6): filters `organization_id`, `sync_status`,
/// `effective_sync_status`, `mailbox_status`, `plan_id`, `q` (in the name or
/// email), then keyset paging (see `routes::list`). A `user` token lists only
/// themself: their colleagues' settings and statuses are not theirs to read.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// Only the users of this organization.
    #[serde(default)]
    #[param(value_type = Option<Uuid>)]
    organization_id: Option<String>,
    /// The user's own synchronization status.
    #[serde(default)]
    #[param(value_type = Option<SyncStatus>)]
    sync_status: Option<String>,
    /// What the fleet does (the organization's switch included).
    #[serde(default)]
    #[param(value_type = Option<EffectiveSyncStatus>)]
    effective_sync_status: Option<String>,
    /// `initialized` or `not_initialized`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(initialized|not_initialized)$")]
    mailbox_status: Option<String>,
    /// Only the users with this plan.
    #[serde(default)]
    #[param(value_type = Option<Uuid>)]
    plan_id: Option<String>,
    /// Found anywhere in the name or the email, ignoring case.
    #[serde(default)]
    q: Option<String>,
}

/// The query of an organization's user list: the user list's, without
/// `organization_id` (the path names it).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrganizationUserListQuery {
    /// The user's own synchronization status.
    #[serde(default)]
    #[param(value_type = Option<SyncStatus>)]
    sync_status: Option<String>,
    /// What the fleet does (the organization's switch included).
    #[serde(default)]
    #[param(value_type = Option<EffectiveSyncStatus>)]
    effective_sync_status: Option<String>,
    /// `initialized` or `not_initialized`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(initialized|not_initialized)$")]
    mailbox_status: Option<String>,
    /// Only the users with this plan.
    #[serde(default)]
    #[param(value_type = Option<Uuid>)]
    plan_id: Option<String>,
    /// Found anywhere in the name or the email, ignoring case.
    #[serde(default)]
    q: Option<String>,
}

impl From<OrganizationUserListQuery> for UserListQuery {
    fn from(query: OrganizationUserListQuery) -> Self {
        Self {
            organization_id: None,
            sync_status: query.sync_status,
            effective_sync_status: query.effective_sync_status,
            mailbox_status: query.mailbox_status,
            plan_id: query.plan_id,
            q: query.q,
        }
    }
}

static USER_LIST: list::Spec = list::Spec {
    list: "users",
    columns: &[
        list::Column {
            name: "name",
            sql: "lower(u.name)",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "email",
            sql: "lower(u.email)",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "notification_email",
            sql: "u.notification_email",
            kind: list::Kind::Text,
            nullable: true,
        },
        list::Column {
            name: "organization",
            sql: "o.name",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "sync_status",
            sql: "u.sync_status",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "effective_sync_status",
            sql: "(CASE WHEN o.sync_enabled THEN u.sync_status ELSE 'organization_disabled' END)",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "mailbox_status",
            sql: "u.mailbox_status",
            kind: list::Kind::Text,
            nullable: false,
        },
        list::Column {
            name: "last_session_at",
            sql: "r.last_session_at",
            kind: list::Kind::Time,
            nullable: true,
        },
        list::Column {
            name: "next_sync_at",
            sql: "r.next_sync_at",
            kind: list::Kind::Time,
            nullable: false,
        },
        list::Column {
            name: "created_at",
            sql: "u.created_at",
            kind: list::Kind::Time,
            nullable: false,
        },
        list::Column {
            name: "updated_at",
            sql: "u.updated_at",
            kind: list::Kind::Time,
            nullable: false,
        },
    ],
    id_sql: "u.id",
    default_sort: "name",
    default_order: list::Order::Asc,
};

/// The user lists (names and emails sort ignoring case; `organization` is
/// the organization's name).
pub struct Users;

impl list::Listing for Users {
    const SPEC: &'static list::Spec = &USER_LIST;
}

/// `GET /v1/users`: the users the caller may see, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserListQuery, list::PageParams<Users>), responses((status = 200, body = list::Listed<UserView>)))]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    ListQuery(query, paging): ListQuery<UserListQuery, Users>,
) -> Result<Json<list::Listed<UserView>>, ApiError> {
    Ok(Json(user_page(&state, &principal, query, &paging, None).await?))
}

/// `GET /v1/organizations/{id}/users` (M5): the user list, within one
/// organization.
#[utoipa::path(get, path = "/v1/organizations/{id}/users", tag = "organizations", params(("id" = Uuid, Path, description = "The organization."), OrganizationUserListQuery, list::PageParams<Users>), responses((status = 200, body = list::Listed<UserView>)))]
pub async fn list_organization_users(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ListQuery(query, paging): ListQuery<OrganizationUserListQuery, Users>,
) -> Result<Json<list::Listed<UserView>>, ApiError> {
    let visible = match principal.role {
        Role::Admin => true,
        Role::OrgAdmin | Role::User => principal.organization_id == Some(id),
    };
    if !(visible && store::organizations::exists(&state.pool, id).await?) {
        return Err(ApiError::not_found("organization"));
    }
    Ok(Json(
        user_page(&state, &principal, query.into(), &paging, Some(id)).await?,
    ))
}

/// One page of the users the caller may see, matching the query, within
/// `organization` when given.
async fn user_page(
    state: &AppState,
    principal: &Principal,
    query: UserListQuery,
    paging: &list::PageParams<Users>,
    organization: Option<Uuid>,
) -> Result<list::Listed<UserView>, ApiError> {
    let filtered_organization = query
        .organization_id
        .as_deref()
        .map(|raw| parse_id("organization_id", raw))
        .transpose()?;
    let sync_status = query
        .sync_status
        .as_deref()
        .map(|raw| list::one_of("sync_status", raw, SyncStatus::ALL))
        .transpose()?;
    let effective = query
        .effective_sync_status
        .as_deref()
        .map(|raw| list::one_of("effective_sync_status", raw, EffectiveSyncStatus::ALL))
        .transpose()?;
    if let Some(status) = &query.mailbox_status
        && !matches!(status.as_str(), "initialized" | "not_initialized")
    {
        return Err(ApiError::invalid(
            "mailbox_status",
            "mailbox_status is initialized or not_initialized",
        ));
    }
    let plan = query
        .plan_id
        .as_deref()
        .map(|raw| parse_id("plan_id", raw))
        .transpose()?;
    let pattern = crate::routes::contains_pattern(query.q.as_deref());
    let filters = format!(
        "{organization:?}|{filtered_organization:?}|{sync_status:?}|{effective:?}|{:?}|{plan:?}|{pattern:?}",
        query.mailbox_status
    );
    let page = paging.page(&filters)?;
    let filter = store::users::ListFilter {
        scope: match principal.role {
            Role::Admin => store::users::Scope::All,
            Role::OrgAdmin => store::users::Scope::Organization(principal.organization_id),
            Role::User => store::users::Scope::User(principal.user_id),
        },
        organizations: [organization, filtered_organization].into_iter().flatten().collect(),
        sync_status,
        effective_sync_status: effective,
        mailbox_status: query.mailbox_status.as_deref(),
        plan,
        pattern: pattern.as_deref(),
    };
    let (total, rows) = store::users::page(&state.pool, &filter, &page).await?;
    let (rows, next_cursor) = page.finish::<UserRow>(rows)?;
    Ok(list::Listed {
        items: rows.into_iter().map(UserView::from).collect(),
        next_cursor,
        total,
    })
}

/// `POST /v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    email: String,
    #[serde(default)]
    organization_id: Option<Uuid>,
    #[serde(default)]
    notification_email: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Creates a user (M7): synchronization starts disabled until configured;
/// without an organization the user lands in the default one.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser, responses((status = 201, body = UserView)))]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(axum::http::StatusCode, Json<UserView>), ApiError> {
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can add users",
        ));
    }
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "name must be 1 to 200 characters"));
    }
    let email = new.email.trim();
    if !crate::routes::valid_email(email) {
        return Err(ApiError::invalid("email", format!("{email:?} is not an email address")));
    }
    if let Some(notify) = &new.notification_email
        && !crate::routes::valid_email(notify)
    {
        return Err(ApiError::invalid(
            "notification_email",
            format!("{notify:?} is not an email address"),
        ));
    }
    let organization = match new.organization_id {
        Some(organization) => organization,
        None => match principal.role {
            Role::OrgAdmin => principal.organization_id.unwrap_or_default(),
            _ => Uuid::from_u128(1),
        },
    };
    if principal.role == Role::OrgAdmin && principal.organization_id != Some(organization) {
        return Err(ApiError::not_found("organization").on_field("organization_id"));
    }
    let mut tx = state.pool.begin().await?;
    idempotency.claim(&mut tx).await?;
    if store::organizations::hold(&mut tx, organization).await?.is_none() {
        return Err(ApiError::not_found("organization").on_field("organization_id"));
    }
    crate::routes::ensure_email_free(&mut tx, email, None).await?;
    let id = Uuid::new_v4();
    let user = store::users::NewUser {
        id,
        organization_id: organization,
        name,
        email,
        notification_email: new.notification_email.as_deref(),
        description: new.description.as_deref().unwrap_or(""),
    };
    store::users::insert(&mut tx, &user).await?;
    store::activities::record(
        &mut tx,
        NewActivity {
            organization_id: organization,
            user_id: Some(id),
            actor: &principal.label,
            kind: "user_added",
            details: format!("user {email} added"),
        },
    )
    .await?;
    let user: UserView = load(&mut tx, &principal, id, false).await?.into();
    idempotency
        .answer(&mut tx, axum::http::StatusCode::CREATED, &user)
        .await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok((axum::http::StatusCode::CREATED, Json(user)))
}

/// `DELETE /v1/users/{id}[?force=true]`: refused while the mailbox is
/// initialized, unless forced (M8 "Delete" and "Force delete").
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even when the mailbox is initialized.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "The user."), DeleteQuery), responses((status = 204, description = "Deleted.")))]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<axum::http::StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    remove(&mut tx, &principal, id, query.force).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Deletes a user with its activity (M8 "Delete", "Force delete"): refused
/// while the mailbox is initialized unless `force`.
pub async fn remove(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    force: bool,
) -> Result<(), ApiError> {
    // Not found before forbidden: a foreign user is not there.
    let user = load(tx, principal, id, true).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can delete users",
        ));
    }
    if user.mailbox_status == "initialized" && !force {
        return Err(ApiError::conflict(
            "mailbox_initialized",
            "the user's mailbox is initialized: reset it first, or delete with force=true",
        ));
    }
    store::activities::record(
        tx,
        NewActivity {
            organization_id: user.organization_id,
            user_id: None,
            actor: &principal.label,
            kind: "user_removed",
            details: format!("user {} removed{}", user.email, if force { " (forced)" } else { "" }),
        },
    )
    .await?;
    store::users::delete(tx, id).await?;
    Ok(())
}

/// Moves a user to another organization (M8 "Change organization").
pub async fn change_organization(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    organization_id: Uuid,
) -> Result<ActionResult, ApiError> {
    let user = load(tx, principal, id, true).await?;
    let changed = move_user(tx, principal, &user, organization_id).await?;
    let user = load(tx, principal, id, false).await?;
    Ok(ActionResult {
        user_id: id,
        changed,
        user: user.into(),
    })
}

/// Assigns a plan, or none (M8 "Change plan").
pub async fn change_plan(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    plan_id: Option<Uuid>,
) -> Result<ActionResult, ApiError> {
    let user = load(tx, principal, id, true).await?;
    let changed = assign_plan(tx, principal, &user, plan_id).await?;
    let user = load(tx, principal, id, false).await?;
    Ok(ActionResult {
        user_id: id,
        changed,
        user: user.into(),
    })
}

/// Moves `user` (locked by the caller's transaction) to `organization_id`,
/// with an `organization_changed` activity in both organizations; false when
/// the user is already there.
///
/// An organization the caller may not see answers 404 on `organization_id`.
/// Across access types the move is refused (409 `access_type_mismatch`) when
/// a stored mailbox credential would not open the mailbox under the new type,
/// or when an initialized mailbox would be read through another API (its
/// cursors and item ids mean nothing there): delete the credential or reset
/// the mailbox first. The user leaves their settings group (the old
/// organization's); their own preset, customization and CRM credentials
/// move with them; their user tokens follow, and an organization-admin
/// token of theirs is revoked (they administer the old organization no more).
async fn move_user(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    user: &UserRow,
    organization_id: Uuid,
) -> Result<bool, ApiError> {
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can move a user to another organization",
        ));
    }
    let target = store::organizations::hold(tx, organization_id)
        .await?
        .filter(|_| principal.role == Role::Admin || principal.organization_id == Some(organization_id))
        .ok_or_else(|| ApiError::not_found("organization").on_field("organization_id"))?;
    if organization_id == user.organization_id {
        return Ok(false);
    }
    let source = store::organizations::hold(tx, user.organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let kinds = store::users::credential_kinds(tx, user.id).await?;
    if let Err(reason) = mailbox_fits(
        source.access_type,
        target.access_type,
        &kinds,
        user.mailbox_status == "initialized",
    ) {
        return Err(ApiError::conflict("access_type_mismatch", reason).on_field("organization_id"));
    }
    store::users::move_to(tx, user.id, organization_id).await?;
    let details = format!("user {} moved from {:?} to {:?}", user.email, source.name, target.name);
    for organization in [user.organization_id, organization_id] {
        store::activities::record(
            tx,
            NewActivity {
                organization_id: organization,
                user_id: Some(user.id),
                actor: &principal.label,
                kind: "organization_changed",
                details: details.clone(),
            },
        )
        .await?;
    }
    Ok(true)
}

/// Which mailbox API opens a mailbox of this access type with these
/// credentials (the worker's choice: a Direct Logon user with a Microsoft
/// authorization goes through Graph).
fn mailbox_api(access: AccessType, has_refresh_token: bool) -> &'static str {
    match access {
        AccessType::Office365 => "Graph",
        AccessType::ExchangeDirect if has_refresh_token => "Graph",
        AccessType::ExchangeDirect | AccessType::ExchangeImpersonation => "EWS",
        AccessType::Gmail => "Gmail",
    }
}

/// Whether a user with these stored credential kinds (and an initialized
/// mailbox or not) can move from one access type to another; why not.
fn mailbox_fits(from: AccessType, to: AccessType, kinds: &[String], initialized: bool) -> Result<(), String> {
    if from == to {
        return Ok(());
    }
    let has = |kind: CredentialKind| kinds.iter().any(|stored| stored == kind.as_str());
    let password = has(CredentialKind::MailboxPassword);
    let token = has(CredentialKind::MailboxRefreshToken);
    if password && to != AccessType::ExchangeDirect {
        return Err(format!(
            "the user's stored mailbox password is only used by Exchange Direct Logon, not {}: delete it first",
            to.as_str()
        ));
    }
    if token {
        let fits = if from == AccessType::Gmail {
            to == AccessType::Gmail
        } else {
            matches!(to, AccessType::Office365 | AccessType::ExchangeDirect)
        };
        if !fits {
            return Err(format!(
                "the user's stored {} authorization cannot open a {} mailbox: delete it first",
                if from == AccessType::Gmail {
                    "Google"
                } else {
                    "Microsoft"
                },
                to.as_str()
            ));
        }
    }
    let (before, after) = (mailbox_api(from, token), mailbox_api(to, token));
    if initialized && before != after {
        return Err(format!(
            "the user's mailbox was initialized through {before}, and {} reads it through {after}: reset the mailbox first",
            to.as_str()
        ));
    }
    Ok(())
}

/// Assigns `plan` (or none) to `user` (locked by the caller's transaction),
/// with a `plan_assigned` activity; false when it is already theirs. An
/// unknown plan answers 404 on `plan_id`.
async fn assign_plan(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    user: &UserRow,
    plan: Option<Uuid>,
) -> Result<bool, ApiError> {
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can assign plans",
        ));
    }
    let new_name = match plan {
        Some(plan) => Some(
            store::users::plan_name(tx, plan)
                .await?
                .ok_or_else(|| ApiError::not_found("plan").on_field("plan_id"))?,
        ),
        None => None,
    };
    if plan == user.plan_id {
        return Ok(false);
    }
    let old_name = match user.plan_id {
        Some(old) => store::users::plan_name(tx, old).await?,
        None => None,
    };
    store::users::set_plan(tx, user.id, plan).await?;
    let quoted = |name: Option<String>| name.map_or_else(|| "none".to_owned(), |name| format!("{name:?}"));
    store::activities::record(
        tx,
        NewActivity {
            organization_id: user.organization_id,
            user_id: Some(user.id),
            actor: &principal.label,
            kind: "plan_assigned",
            details: format!("plan {} (was {})", quoted(new_name), quoted(old_name)),
        },
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_decide_whether_a_user_moves_across_access_types() {
        use AccessType::*;
        let kinds = |list: &[&str]| list.iter().map(|kind| (*kind).to_owned()).collect::<Vec<_>>();
        let none = kinds(&[]);
        let token = kinds(&["mailbox_refresh_token", "crm_refresh_token"]);
        let password = kinds(&["mailbox_password"]);
        assert!(mailbox_fits(Gmail, Office365, &kinds(&["crm_refresh_token"]), false).is_ok());
        assert!(
            mailbox_fits(Office365, ExchangeDirect, &token, true).is_ok(),
            "Graph either way"
        );
        assert!(mailbox_fits(Office365, Gmail, &token, false).is_err());
        assert!(mailbox_fits(Gmail, Office365, &token, false).is_err());
        assert!(mailbox_fits(ExchangeDirect, ExchangeImpersonation, &password, false).is_err());
        assert!(
            mailbox_fits(ExchangeDirect, ExchangeImpersonation, &none, true).is_ok(),
            "EWS either way"
        );
        assert!(mailbox_fits(Office365, ExchangeImpersonation, &none, true).is_err());
        assert!(mailbox_fits(Office365, ExchangeImpersonation, &none, false).is_ok());
        assert!(mailbox_fits(Gmail, Gmail, &token, true).is_ok());
    }
}
