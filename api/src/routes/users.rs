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
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    routes::parse_id,
};

/// The most users one bulk action takes.
const MAX_BULK: usize = 1000;

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub notification_email: Option<String>,
    pub organization_id: Uuid,
    pub plan_id: Option<Uuid>,
    pub description: String,
    pub sync_status: String,
    pub effective_sync_status: EffectiveSyncStatus,
    pub disabled_reason: Option<String>,
    pub mailbox_status: String,
    pub next_sync_at: DateTime<Utc>,
    pub last_session: Option<LastSession>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The user's most recent session.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Serialize)]
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    user_ids: Vec<String>,
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
