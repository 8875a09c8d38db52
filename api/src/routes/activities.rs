//! Activity (audit) of a user and of an organization (M11): when, who, what
//! and details, newest first, as JSON or as a CSV download. An
//! organization's activity includes its users' (each activity is recorded
//! with the organization of its user at the time).
//!
//! `rows` bounds the answer (0 to 2000, 0 meaning all, default 60) rather
//! than paging it: the panel shows the last n rows. The CSV is streamed from
//! the database, so `rows=0` on a large organization does not build the
//! whole file in memory.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::{ApiQuery, PathId};
use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    routes::{list, scope},
};

/// The activity routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(user_activities))
        .routes(routes!(user_activities_csv))
        .routes(routes!(organization_activities))
        .routes(routes!(organization_activities_csv))
}

/// The kinds of activity (the database's CHECK constraint spells the same;
/// `kind`'s documented pattern too, which a test checks).
const KINDS: &[&str] = &[
    "user_added",
    "user_removed",
    "sync_enabled",
    "sync_disabled",
    "disabled_auth_error",
    "disabled_throttling_error",
    "disabled_other_error",
    "customization_reapplied",
    "organization_changed",
    "sync_disabled_customization_uninstalled",
    "plan_assigned",
    "organization_created",
    "organization_updated",
    "organization_sync_enabled",
    "organization_sync_disabled",
    "customization_pushed",
    "customization_reset",
    "mailbox_reset",
    "mailbox_reinitialized",
    "sidebar_installed",
    "sidebar_removed",
    "user_updated",
    "customization_saved",
    "default_customization_updated",
    "sync_settings_changed",
];

/// The default number of rows.
const DEFAULT_ROWS: i64 = 60;
/// The most rows one may ask for (besides 0, all).
const MAX_ROWS: i64 = 2000;

pub use crate::store::activities::ActivityView;
use crate::store::activities::{self as store, Subject};

/// The activity query: `rows` (0 to 2000, 0 meaning all, default 60),
/// `kind`, `since`, `until`. Newest first.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// How many of the newest rows: 0 to 2000, 0 meaning all; default 60.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2000)]
    rows: Option<String>,
    /// Only activities of this type.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(user_added|user_removed|sync_enabled|sync_disabled|disabled_auth_error|disabled_throttling_error|disabled_other_error|customization_reapplied|organization_changed|sync_disabled_customization_uninstalled|plan_assigned|organization_created|organization_updated|organization_sync_enabled|organization_sync_disabled|customization_pushed|customization_reset|mailbox_reset|mailbox_reinitialized|sidebar_installed|sidebar_removed|user_updated|customization_saved|default_customization_updated|sync_settings_changed)$")]
    kind: Option<String>,
    /// Only activities at or after this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// Only activities before this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
}

/// The newest activities.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityList {
    pub items: Vec<ActivityView>,
    /// Whether older activities match too (never with `rows=0`).
    pub more: bool,
}

/// The checked query: whose, which kind and period, and the row bound
/// (None: all).
fn filter(subject: Subject, query: &ActivityQuery) -> Result<(store::Filter, Option<i64>), ApiError> {
    let rows = match query.rows.as_deref() {
        Some(raw) => list::integer("rows", raw, 0..=MAX_ROWS)?,
        None => DEFAULT_ROWS,
    };
    let kind = match query.kind.as_deref() {
        Some(kind) if KINDS.contains(&kind) => Some(kind.to_owned()),
        Some(kind) => {
            return Err(ApiError::invalid(
                "kind",
                format!("{kind:?} is not an activity type: use one of {}", KINDS.join(", ")),
            ));
        }
        None => None,
    };
    let list::Period { since, until } = list::period(query.since.as_deref(), query.until.as_deref())?;
    let bound = (rows > 0).then_some(rows);
    Ok((
        store::Filter {
            subject,
            kind,
            since,
            until,
            // One more than asked: whether older ones match too.
            limit: bound.map(|rows| rows + 1),
        },
        bound,
    ))
}

async fn activities(pool: &PgPool, subject: Subject, query: &ActivityQuery) -> Result<ActivityList, ApiError> {
    let (filter, bound) = filter(subject, query)?;
    let mut items = store::newest(pool, &filter).await?;
    let more = bound.is_some_and(|rows| i64::try_from(items.len()).unwrap_or(i64::MAX) > rows);
    if let Some(rows) = bound {
        items.truncate(usize::try_from(rows).unwrap_or(usize::MAX));
    }
    Ok(ActivityList { items, more })
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, quotes doubled. A cell a spreadsheet would read as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
/// prefixed with `'` and quoted, so it is shown as text, never evaluated.
fn push_cell(line: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || value.contains([',', '"', '\n', '\r']) {
        line.push('"');
        if formula {
            line.push('\'');
        }
        line.push_str(&value.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(value);
    }
}

const CSV_HEADER: &str = "occurred_at,actor,kind,details,log,user_id\r\n";

fn push_row(out: &mut String, activity: &ActivityView) {
    let cells = [
        activity.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        activity.actor.clone(),
        activity.kind.clone(),
        activity.details.clone(),
        activity.log.clone().unwrap_or_default(),
        activity.user_id.map(|id| id.to_string()).unwrap_or_default(),
    ];
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// Streams the activities as CSV: rows are read from the database as the
/// client takes them. A database error midway ends the body early (the
/// client sees a truncated download, never a partial file claiming to be
/// whole).
fn csv(pool: PgPool, subject: Subject, query: &ActivityQuery, filename: String) -> Result<Response, ApiError> {
    let (filter, bound) = filter(subject, query)?;
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(store::send_each(pool, filter, sender));
    // Rows become CSV in chunks of about 64 kB; the store stops reading once
    // the bound is reached (the receiver is dropped) or the client leaves.
    let stream = futures_util::stream::unfold(
        (receiver, Some(String::from(CSV_HEADER)), 0_i64),
        move |(mut receiver, pending, mut written)| async move {
            let mut chunk = pending?;
            loop {
                match receiver.recv().await {
                    Some(Ok(activity)) if bound.is_none_or(|rows| written < rows) => {
                        written += 1;
                        push_row(&mut chunk, &activity);
                        if chunk.len() >= 64 * 1024 {
                            return Some((Ok(chunk), (receiver, Some(String::new()), written)));
                        }
                    }
                    Some(Ok(_)) | None => return Some((Ok(chunk), (receiver, None, written))),
                    Some(Err(error)) => {
                        tracing::error!(%error, "Reading activities for a CSV download failed.");
                        return Some((
                            Err(std::io::Error::other("the activity export failed")),
                            (receiver, None, written),
                        ));
                    }
                }
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A user's activity (M11), newest first.
#[utoipa::path(get, path = "/v1/users/{id}/activities", tag = "activities", params(("id" = Uuid, Path, description = "The user."), ActivityQuery), responses((status = 200, body = ActivityList)))]
pub async fn user_activities(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Json<ActivityList>, ApiError> {
    let user = scope::user(&state.pool, &principal, id).await?;
    Ok(Json(activities(&state.pool, Subject::User(user.id), &query).await?))
}

/// A user's activity (M11) as a CSV download.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/activities.csv",
    tag = "activities",
    params(("id" = Uuid, Path, description = "The user."), ActivityQuery),
    responses((
        status = 200,
        description = "The activities, newest first, with a header row: occurred_at, actor, kind, details, log, user_id.",
        content_type = "text/csv",
        body = String,
        headers(("content-disposition" = String, description = "attachment; filename=\"user-<id>-activities.csv\""))
    ))
)]
pub async fn user_activities_csv(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Response, ApiError> {
    let user = scope::user(&state.pool, &principal, id).await?;
    csv(
        state.pool.clone(),
        Subject::User(user.id),
        &query,
        format!("user-{id}-activities.csv"),
    )
}

/// An organization's activity (M11), its users' included, newest first.
#[utoipa::path(get, path = "/v1/organizations/{id}/activities", tag = "activities", params(("id" = Uuid, Path, description = "The organization."), ActivityQuery), responses((status = 200, body = ActivityList)))]
pub async fn organization_activities(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Json<ActivityList>, ApiError> {
    scope::organization(&state.pool, &principal, id).await?;
    Ok(Json(activities(&state.pool, Subject::Organization(id), &query).await?))
}

/// An organization's activity (M11) as a CSV download.
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/activities.csv",
    tag = "activities",
    params(("id" = Uuid, Path, description = "The organization."), ActivityQuery),
    responses((
        status = 200,
        description = "The activities, newest first, with a header row: occurred_at, actor, kind, details, log, user_id.",
        content_type = "text/csv",
        body = String,
        headers(("content-disposition" = String, description = "attachment; filename=\"organization-<id>-activities.csv\""))
    ))
)]
pub async fn organization_activities_csv(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Response, ApiError> {
    scope::organization(&state.pool, &principal, id).await?;
    csv(
        state.pool.clone(),
        Subject::Organization(id),
        &query,
        format!("organization-{id}-activities.csv"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(value: &str) -> String {
        let mut line = String::new();
        push_cell(&mut line, value);
        line
    }

    #[test]
    fn the_documented_kinds_are_the_accepted_ones() {
        use utoipa::IntoParams;
        let parameters = ActivityQuery::into_params(|| None);
        let kind = parameters
            .iter()
            .find(|parameter| parameter.name == "kind")
            .expect("a kind parameter");
        let schema = serde_json::to_value(&kind.schema).expect("serializes");
        assert_eq!(schema["pattern"], format!("^({})$", KINDS.join("|")));
    }

    #[test]
    fn cells_are_quoted_per_rfc_4180_and_formulas_are_neutralized() {
        assert_eq!(cell("plain text"), "plain text");
        assert_eq!(cell("a, b"), "\"a, b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(cell("=1+2"), "\"'=1+2\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-1"), "\"'-1\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("=\"x\""), "\"'=\"\"x\"\"\"");
        assert_eq!(cell(""), "");
    }
}
