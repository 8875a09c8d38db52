//! Customization pushes (M14): a pusher's saved customization copied to
//! selected colleagues, or to every user of their organization, as a
//! background job on the push queue (the worker's `push` module applies it).
//!
//! Who may push. The seed gives pushing to "a product Admin or a user with
//! special permissions": an admin or the organization's admin names the user
//! whose saved customization is pushed (`from_user_id`); a user token pushes
//! their own, and only when that user is their organization's admin
//! (`users.role = 'org_admin'`, the "Admin" of the add-in). Recipients are
//! always users of the pusher's organization, never the pusher: a user of
//! another organization is never reached, even with `{"all": true}`, and
//! naming one answers 404 as an unknown id does.
//!
//! The request, in one transaction: the pusher's saved customization
//! (version and document) is snapshotted into `pushes`, the recipients are
//! inserted by one `INSERT ... SELECT` with the filters, the activity is
//! written, and the job is published (with the broker's confirm) before the
//! commit. The worker's first step takes the same advisory lock as this
//! transaction ([`store::lock`]), so it waits for the commit and finds either
//! the whole push or nothing.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use syncfleet_common::{
    domain::UserRole,
    queue::{JobEnvelope, Route},
    telemetry,
};
use tracing::{Span, info, warn};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, PathId};
use crate::store::pushes::{self as store, NewPush, PushRow, Recipients};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    idempotency::Idempotency,
    routes::{contains_pattern, parse_id, record_activity},
};

/// The most users one push names.
const MAX_SELECTED: usize = 10_000;
/// The longest search text of a filter.
const MAX_SEARCH: usize = 200;

/// The push routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_push))
        .routes(routes!(get_push))
}

/// `POST /v1/pushes`: `user_ids` or `"all": true`, optional filters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The colleagues to push to: at most 10,000, no repeats. Give this or
    /// `all`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Uuid>>)]
    user_ids: Option<Vec<String>>,
    /// `true`: every user of the organization (the filters apply).
    #[serde(default)]
    all: Option<bool>,
    /// Whose saved customization is pushed: a user token pushes its own
    /// (this may be omitted or name themself); an admin or organization
    /// admin names the user.
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    from_user_id: Option<String>,
    /// Which of the selected users are reached.
    #[serde(default)]
    filter: Option<PushFilter>,
}

/// The seed's filters of the recipients; every given one must match.
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushFilter {
    /// Only users of the product: users who signed in to the add-in with
    /// Salesforce (a stored Salesforce authorization) or received a pushed
    /// customization at least once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub product_users_only: bool,
    /// The name contains this text (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// The email address contains this text (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub email: Option<String>,
    /// Only the users of this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<UserRole>,
    /// The members of this group of the organization (a group preset's
    /// name); without it, the whole organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub group: Option<String>,
}

/// A push and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushView {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The user whose customization is pushed (null once deleted).
    pub pusher_user_id: Option<Uuid>,
    /// Who asked for it.
    pub requested_by: String,
    /// The version of the pusher's customization that is pushed.
    pub customization_version: i64,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    /// Whether every user of the organization was selected (else `user_ids`).
    pub all: bool,
    /// The filters applied.
    pub filter: PushFilter,
    /// Recipients in all.
    pub total: i32,
    /// Recipients whose customization was replaced.
    pub applied: i32,
    /// Recipients it could not reach (moved to another organization or
    /// deleted meanwhile).
    pub failed: i32,
    /// Recipients still to do.
    pub pending: i32,
    pub created_at: DateTime<Utc>,
    /// When it completed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<PushRow> for PushView {
    fn from(row: PushRow) -> Self {
        let all = row.filter.get("all").and_then(serde_json::Value::as_bool) == Some(true);
        let filter = row
            .filter
            .get("filter")
            .cloned()
            .and_then(|filter| serde_json::from_value(filter).ok())
            .unwrap_or_default();
        Self {
            id: row.id,
            organization_id: row.organization_id,
            pusher_user_id: row.pusher_user_id,
            requested_by: row.requested_by,
            customization_version: row.customization_version,
            status: row.status,
            all,
            filter,
            total: row.total,
            applied: row.applied,
            failed: row.failed,
            pending: (row.total - row.applied - row.failed).max(0),
            created_at: row.created_at,
            finished_at: row.finished_at,
        }
    }
}

/// The request, checked before anything is read.
struct Checked {
    from: Option<Uuid>,
    user_ids: Option<Vec<Uuid>>,
    filter: PushFilter,
}

impl PushRequest {
    fn check(self) -> Result<Checked, ApiError> {
        let user_ids = match (self.user_ids, self.all) {
            (Some(_), Some(true)) => {
                return Err(ApiError::invalid(
                    "all",
                    "give either user_ids or \"all\": true, not both",
                ));
            }
            (Some(raw), _) => {
                if raw.is_empty() {
                    return Err(ApiError::invalid("user_ids", "user_ids must name at least one user"));
                }
                if raw.len() > MAX_SELECTED {
                    return Err(ApiError::invalid(
                        "user_ids",
                        format!("at most {MAX_SELECTED} users; push to all users with a filter instead"),
                    ));
                }
                let mut ids = Vec::with_capacity(raw.len());
                let mut seen = std::collections::HashSet::with_capacity(raw.len());
                for (index, raw) in raw.iter().enumerate() {
                    let id: Uuid = raw.parse().map_err(|_| {
                        ApiError::invalid(format!("user_ids[{index}]"), format!("{raw:?} is not a UUID"))
                    })?;
                    if !seen.insert(id) {
                        return Err(ApiError::invalid(
                            format!("user_ids[{index}]"),
                            format!("{id} is listed twice"),
                        ));
                    }
                    ids.push(id);
                }
                Some(ids)
            }
            (None, Some(true)) => None,
            (None, _) => {
                return Err(ApiError::invalid(
                    "user_ids",
                    "name the recipients in user_ids, or push to all users with \"all\": true",
                ));
            }
        };
        let from = self
            .from_user_id
            .as_deref()
            .map(|raw| parse_id("from_user_id", raw))
            .transpose()?;
        let filter = self.filter.unwrap_or_default();
        for (field, value) in [
            ("filter.name", &filter.name),
            ("filter.email", &filter.email),
            ("filter.group", &filter.group),
        ] {
            if value.as_deref().is_some_and(|text| text.chars().count() > MAX_SEARCH) {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} is at most {MAX_SEARCH} characters"),
                ));
            }
        }
        Ok(Checked { from, user_ids, filter })
    }
}

/// Queues a push of the pusher's saved customization: 202 with the push.
/// Refused, with nothing written: 400 for a bad request (naming the field),
/// 403 for a user who may not push, 404 for a pusher or recipient the caller
/// may not reach, 409 `no_saved_customization` when the pusher never saved
/// one, 409 `no_recipients` when no user matches, 503 when the job could not
/// be queued.
#[utoipa::path(
    post,
    path = "/v1/pushes",
    tag = "customization",
    request_body = PushRequest,
    responses((status = 202, body = PushView, description = "Queued; follow it with GET /v1/pushes/{id}."))
)]
#[tracing::instrument(name = "create_push", skip_all)]
pub async fn create_push(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    ApiJson(request): ApiJson<PushRequest>,
) -> Result<(StatusCode, Json<PushView>), ApiError> {
    let checked = request.check()?;
    let pusher_id = match (principal.role, principal.user_id, checked.from) {
        (Role::User, Some(own), None) => own,
        (Role::User, Some(own), Some(from)) if from == own => own,
        (Role::User, _, _) => {
            return Err(ApiError::forbidden("a user pushes their own saved customization only"));
        }
        (_, _, Some(from)) => from,
        (_, _, None) => {
            return Err(ApiError::invalid(
                "from_user_id",
                "name the user whose saved customization is pushed in from_user_id",
            ));
        }
    };

    let mut tx = state.pool.begin().await?;
    // First, so that a twin of this request waits here for its commit and
    // never publishes.
    idempotency.claim(&mut tx).await?;
    let pusher = store::pusher(&mut tx, pusher_id)
        .await?
        .filter(|pusher| match principal.role {
            Role::Admin => true,
            Role::OrgAdmin | Role::User => principal.organization_id == Some(pusher.organization_id),
        })
        .ok_or_else(|| ApiError::not_found("user").on_field("from_user_id"))?;
    if principal.role == Role::User && pusher.role != UserRole::OrgAdmin {
        return Err(ApiError::forbidden(
            "pushing customizations is for admins: an admin, the organization's admin, or a user who is their organization's admin",
        ));
    }
    let Some(saved) = crate::store::customizations::of_user(&mut tx, pusher_id).await? else {
        return Err(ApiError::conflict(
            "no_saved_customization",
            format!(
                "{} has not saved a customization; save it before pushing it",
                pusher.email
            ),
        ));
    };
    if let Some(ids) = &checked.user_ids {
        let found = store::users_of(&mut tx, pusher.organization_id, ids).await?;
        let found: std::collections::HashSet<Uuid> = found.into_iter().collect();
        if let Some(index) = ids.iter().position(|id| !found.contains(id)) {
            return Err(ApiError::not_found("user").on_field(format!("user_ids[{index}]")));
        }
    }
    let group = match &checked.filter.group {
        Some(name) => Some(
            crate::store::presets::group_id(&mut tx, pusher.organization_id, name)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid("filter.group", format!("the organization has no group named {name:?}"))
                })?,
        ),
        None => None,
    };

    let push_id = Uuid::now_v7();
    store::lock(&mut tx, push_id).await?;
    let stored_filter = serde_json::json!({
        "all": checked.user_ids.is_none(),
        "filter": checked.filter,
    });
    let push = NewPush {
        id: push_id,
        organization_id: pusher.organization_id,
        pusher_user_id: pusher_id,
        requested_by: &principal.label,
        customization_version: saved.version,
        document: &saved.document,
        filter: &stored_filter,
    };
    store::insert(&mut tx, &push).await?;
    let name = contains_pattern(checked.filter.name.as_deref());
    let email = contains_pattern(checked.filter.email.as_deref());
    let recipients = Recipients {
        users: checked.user_ids.as_deref(),
        product_users_only: checked.filter.product_users_only,
        name: name.as_deref(),
        email: email.as_deref(),
        role: checked.filter.role,
        group,
    };
    let total = store::add_recipients(&mut tx, &push, &recipients).await?;
    if total == 0 {
        return Err(ApiError::conflict(
            "no_recipients",
            "no user of the organization matches (the pusher is never a recipient); nothing was queued",
        ));
    }
    let total = i32::try_from(total).unwrap_or(i32::MAX);
    let row = store::set_total(&mut tx, push_id, total).await?;
    record_activity(
        &mut tx,
        pusher.organization_id,
        Some(pusher_id),
        &principal.label,
        "customization_push_queued",
        format!(
            "customization version {} queued to be pushed to {total} users (push {push_id})",
            saved.version
        ),
    )
    .await?;

    let view = PushView::from(row);
    idempotency.answer(&mut tx, StatusCode::ACCEPTED, &view).await?;

    let mut job = JobEnvelope::push(push_id, Utc::now());
    job.trace = telemetry::trace_context(&Span::current());
    // Published before the commit: a failed publish leaves nothing behind,
    // and the worker waits on the push's lock for the commit.
    if let Err(error) = state.publisher.publish(Route::Push, std::slice::from_ref(&job)).await {
        warn!(%error, "Could not queue a push.");
        return Err(ApiError::unavailable(
            "the push could not be queued; nothing was changed, try again",
        ));
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    info!(push_id = %push_id, total, requested_by = %principal.label, "Customization push queued.");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// A push's progress: to admins, the organization's admins and the pusher.
#[utoipa::path(
    get,
    path = "/v1/pushes/{id}",
    tag = "customization",
    params(("id" = Uuid, Path, description = "The push.")),
    responses((status = 200, body = PushView))
)]
pub async fn get_push(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<PushView>, ApiError> {
    let row = store::find(&state.pool, id)
        .await?
        .filter(|row| match principal.role {
            Role::Admin => true,
            Role::OrgAdmin => principal.organization_id == Some(row.organization_id),
            Role::User => principal.user_id.is_some() && principal.user_id == row.pusher_user_id,
        })
        .ok_or_else(|| ApiError::not_found("push"))?;
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Checked, ApiError> {
        crate::extract::json::<PushRequest>(json.to_string().as_bytes())?.check()
    }

    #[test]
    fn a_request_names_its_recipients_one_way() {
        let id = Uuid::new_v4();
        assert!(request(serde_json::json!({"all": true})).is_ok_and(|checked| checked.user_ids.is_none()));
        assert!(request(serde_json::json!({"user_ids": [id]})).is_ok_and(|checked| checked.user_ids == Some(vec![id])));
        for (bad, field) in [
            (serde_json::json!({}), "user_ids"),
            (serde_json::json!({"all": false}), "user_ids"),
            (serde_json::json!({"user_ids": []}), "user_ids"),
            (serde_json::json!({"user_ids": [id], "all": true}), "all"),
            (serde_json::json!({"user_ids": [id, id]}), "user_ids[1]"),
            (serde_json::json!({"user_ids": ["nope"]}), "user_ids[0]"),
            (
                serde_json::json!({"all": true, "filter": {"role": "boss"}}),
                "filter.role",
            ),
            (
                serde_json::json!({"all": true, "filter": {"name": "x".repeat(201)}}),
                "filter.name",
            ),
        ] {
            let error = request(bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            let body = format!("{:?}", error);
            assert!(body.contains(field), "{bad}: {body}");
        }
    }
}
