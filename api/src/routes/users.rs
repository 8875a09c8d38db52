//! Users: reading one, and the sync switch (`enable-sync`, `disable-sync`)
//! on one user or a selection, each change recorded as an activity.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use syncfleet_common::domain::{EffectiveSyncStatus, SyncStatus};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    routes::parse_id,
};

/// The most users one bulk action takes.
const MAX_BULK: usize = 1000;

/// The user routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub notification_email: Option<String>,
    pub organization_id: Uuid,
    pub plan_id: Option<Uuid>,
    pub description: String,
    pub sync_status: String,
    /// What the fleet does: `enabled`, `organization_disabled`, `user_disabled`,
    /// `disabled_auth_error`, `disabled_throttling_error`, `disabled_other_error` or `paused`.
    #[schema(value_type = String)]
    pub effective_sync_status: EffectiveSyncStatus,
    pub disabled_reason: Option<String>,
    pub mailbox_status: String,
    pub next_sync_at: DateTime<Utc>,
    pub last_session: Option<LastSession>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The user's most recent session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastSession {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub status: String,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    name: String,
    email: String,
    notification_email: Option<String>,
    organization_id: Uuid,
    plan_id: Option<Uuid>,
    description: String,
    sync_status: String,
    disabled_reason: Option<String>,
    mailbox_status: String,
    next_sync_at: DateTime<Utc>,
    last_session_id: Option<Uuid>,
    last_session_at: Option<DateTime<Utc>>,
    last_session_status: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    organization_enabled: bool,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        let status = row.sync_status.parse().unwrap_or(SyncStatus::Disabled);
        let last_session = match (row.last_session_id, row.last_session_at, row.last_session_status) {
            (Some(id), Some(at), Some(status)) => Some(LastSession { id, at, status }),
            _ => None,
        };
        Self {
            effective_sync_status: EffectiveSyncStatus::of(status, row.organization_enabled),
            id: row.id,
            name: row.name,
            email: row.email,
            notification_email: row.notification_email,
            organization_id: row.organization_id,
            plan_id: row.plan_id,
            description: row.description,
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

const USER_COLUMNS: &str = "u.id, u.name, u.email, u.notification_email, u.organization_id, u.plan_id, \
     u.description, u.sync_status, u.disabled_reason, u.mailbox_status, u.next_sync_at, u.last_session_id, \
     u.last_session_at, u.last_session_status, u.created_at, u.updated_at, o.sync_enabled AS organization_enabled";

/// Reads a user the caller may see, optionally locking the row.
async fn load(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> Result<UserRow, ApiError> {
    let query = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1{}",
        if lock { " FOR UPDATE OF u" } else { "" }
    );
    sqlx::query_as::<_, UserRow>(&query)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .filter(|user| principal.may_act_on_user(user.id, user.organization_id))
        .ok_or_else(|| ApiError::not_found("user"))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "The user (Sync ID).")), responses((status = 200, body = UserView)))]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let id = parse_id("id", &id)?;
    let mut tx = state.pool.begin().await?;
    let user = load(&mut tx, &principal, id, false).await?;
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
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    switch: Switch,
) -> Result<ActionResult, ApiError> {
    let mut tx = state.pool.begin().await?;
    let user = load(&mut tx, principal, id, true).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can switch synchronization",
        ));
    }
    let (target, kind) = match switch {
        Switch::Enable => ("enabled", "sync_enabled"),
        Switch::Disable => ("disabled", "sync_disabled"),
    };
    let changed = user.sync_status != target;
    if changed {
        sqlx::query(
            "UPDATE users SET sync_status = $2, sync_status_changed_at = now(), updated_at = now(), \
                 disabled_reason = CASE WHEN $2 = 'disabled' THEN $3 END, \
                 consecutive_failures = CASE WHEN $2 = 'enabled' THEN 0 ELSE consecutive_failures END, \
                 failure_class = CASE WHEN $2 = 'enabled' THEN NULL ELSE failure_class END, \
                 next_sync_at = CASE WHEN $2 = 'enabled' THEN now() ELSE next_sync_at END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(target)
        .bind(format!("disabled by {}", principal.label))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(user.organization_id)
        .bind(id)
        .bind(&principal.label)
        .bind(kind)
        .bind(format!("synchronization was {} (it was {})", target, user.sync_status.replace('_', " ")))
        .execute(&mut *tx)
        .await?;
    }
    let user = load(&mut tx, principal, id, false).await?;
    tx.commit().await?;
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

/// The user list's query: `organization_id`, `sync_status`, `mailbox_status`,
/// `q` (name or email), `sort` (`name`, `email`, `created_at`, `updated_at`,
/// `sync_status`, `mailbox_status`; `-` for descending), `limit` (1-500,
/// default 50), `offset`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    sync_status: Option<String>,
    #[serde(default)]
    mailbox_status: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

const SORTABLE: &[&str] = &[
    "name",
    "email",
    "created_at",
    "updated_at",
    "sync_status",
    "mailbox_status",
];

/// `GET /v1/users`: the users the caller may see, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserListQuery), responses((status = 200, body = UserPage)))]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<axum::extract::Query<UserListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserPage>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let sort = query.sort.as_deref().unwrap_or("name");
    let (column, descending) = match sort.strip_prefix('-') {
        Some(column) => (column, true),
        None => (sort, false),
    };
    let Some(column) = SORTABLE.iter().find(|candidate| **candidate == column) else {
        return Err(ApiError::invalid(
            "sort",
            format!(
                "cannot sort by {sort:?}: use one of {}, with - for descending",
                SORTABLE.join(", ")
            ),
        ));
    };
    let organization = query
        .organization_id
        .as_deref()
        .map(|raw| parse_id("organization_id", raw))
        .transpose()?;
    if let Some(status) = &query.sync_status
        && status.parse::<SyncStatus>().is_err()
    {
        return Err(ApiError::invalid(
            "sync_status",
            format!("{status:?} is not a sync status"),
        ));
    }
    if let Some(status) = &query.mailbox_status
        && !matches!(status.as_str(), "initialized" | "not_initialized")
    {
        return Err(ApiError::invalid(
            "mailbox_status",
            "mailbox_status is initialized or not_initialized",
        ));
    }
    let (limit, offset) = crate::routes::page(query.limit, query.offset)?;
    let filter = |builder: &mut sqlx::QueryBuilder<'_, Postgres>| {
        builder.push(" WHERE TRUE");
        match principal.role {
            Role::Admin => {}
            Role::OrgAdmin => {
                builder
                    .push(" AND u.organization_id = ")
                    .push_bind(principal.organization_id);
            }
            Role::User => {
                builder.push(" AND u.id = ").push_bind(principal.user_id);
            }
        }
        if let Some(organization) = organization {
            builder.push(" AND u.organization_id = ").push_bind(organization);
        }
        if let Some(status) = &query.sync_status {
            builder.push(" AND u.sync_status = ").push_bind(status.clone());
        }
        if let Some(status) = &query.mailbox_status {
            builder.push(" AND u.mailbox_status = ").push_bind(status.clone());
        }
        if let Some(pattern) = crate::routes::contains_pattern(query.q.as_deref()) {
            builder
                .push(" AND (u.name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR u.email ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
    };
    let from = " FROM users u JOIN organizations o ON o.id = u.organization_id";
    let mut counting = sqlx::QueryBuilder::new(format!("SELECT count(*){from}"));
    filter(&mut counting);
    let total: i64 = counting.build_query_scalar().fetch_one(&state.pool).await?;
    let mut listing = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS}{from}"));
    filter(&mut listing);
    // `column` is one of SORTABLE, never the caller's text.
    listing.push(format!(
        " ORDER BY u.{column} {}, u.id LIMIT ",
        if descending { "DESC" } else { "ASC" }
    ));
    listing.push_bind(limit).push(" OFFSET ").push_bind(offset);
    let rows = listing.build_query_as::<UserRow>().fetch_all(&state.pool).await?;
    Ok(Json(UserPage {
        items: rows.into_iter().map(UserView::from).collect(),
        total,
        limit,
        offset,
    }))
}

/// `POST /v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    email: String,
    #[serde(default)]
    organization_id: Option<String>,
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
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<UserView>), ApiError> {
    let new: NewUser = serde_json::from_slice(&body)
        .map_err(|error| ApiError::invalid("body", format!("expected a user object: {error}")))?;
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
    let organization = match new.organization_id.as_deref() {
        Some(raw) => parse_id("organization_id", raw)?,
        None => match principal.role {
            Role::OrgAdmin => principal.organization_id.unwrap_or_default(),
            _ => Uuid::from_u128(1),
        },
    };
    if principal.role == Role::OrgAdmin && principal.organization_id != Some(organization) {
        return Err(ApiError::not_found("organization").on_field("organization_id"));
    }
    let mut tx = state.pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)")
        .bind(organization)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(ApiError::not_found("organization").on_field("organization_id"));
    }
    crate::routes::ensure_email_free(&mut tx, email, None).await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, notification_email, description) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(organization)
    .bind(name)
    .bind(email)
    .bind(&new.notification_email)
    .bind(new.description.as_deref().unwrap_or(""))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, $3, $4, 'user_added', $5)",
    )
    .bind(Uuid::now_v7())
    .bind(organization)
    .bind(id)
    .bind(&principal.label)
    .bind(format!("user {email} added"))
    .execute(&mut *tx)
    .await?;
    let user = load(&mut tx, &principal, id, false).await?;
    tx.commit().await?;
    Ok((axum::http::StatusCode::CREATED, Json(user.into())))
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
    Path(id): Path<String>,
    query: Result<axum::extract::Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let axum::extract::Query(query) = query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let id = parse_id("id", &id)?;
    remove(&state, &principal, id, query.force).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Deletes a user with its activity (M8 "Delete", "Force delete"): refused
/// while the mailbox is initialized unless `force`.
pub async fn remove(state: &AppState, principal: &Principal, id: Uuid, force: bool) -> Result<(), ApiError> {
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can delete users",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let user = load(&mut tx, principal, id, true).await?;
    if user.mailbox_status == "initialized" && !force {
        return Err(ApiError::conflict(
            "mailbox_initialized",
            "the user's mailbox is initialized: reset it first, or delete with force=true",
        ));
    }
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, NULL, $3, 'user_removed', $4)",
    )
    .bind(Uuid::now_v7())
    .bind(user.organization_id)
    .bind(&principal.label)
    .bind(format!("user {} removed{}", user.email, if force { " (forced)" } else { "" }))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Moves a user to another organization (M8 "Change organization").
pub async fn change_organization(
    _state: &AppState,
    _principal: &Principal,
    _id: Uuid,
    _organization_id: Uuid,
) -> Result<ActionResult, ApiError> {
    Err(ApiError::not_implemented(
        "change-organization is not available in this build",
    ))
}

/// Assigns a plan, or none (M8 "Change plan").
pub async fn change_plan(
    _state: &AppState,
    _principal: &Principal,
    _id: Uuid,
    _plan_id: Option<Uuid>,
) -> Result<ActionResult, ApiError> {
    Err(ApiError::not_implemented("change-plan is not available in this build"))
}
