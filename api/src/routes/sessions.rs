//! A user's sync sessions and issues (M10): the sessions list, one session
//! with its issues, its log as a zip, and the issues of the last session.
//!
//! Sessions, issues and logs are partitioned by day: every query names the
//! user (their indexes lead with it) or the exact partition key.

mod zip;

use std::io::Read;

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use syncfleet_common::domain::{IssueCategory, IssueSource, Scope, SessionStatus, Trigger};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ListQuery, PathId};
use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    routes::{list, parse_id, scope},
};

/// The session and issue routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(get_session))
        .routes(routes!(session_log))
        .routes(routes!(list_issues))
}

/// The most a stored log may hold once decompressed.
const MAX_LOG_BYTES: u64 = 256 * 1024 * 1024;

use crate::store::sessions as store;
pub use crate::store::sessions::{IssueView, SessionView};

/// `GET /v1/users/{id}/sessions`: filters `status`, `trigger`, `scope`,
/// `since` and `until` (on the start), then keyset paging (see
/// `routes::list`), newest first by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionListQuery {
    /// Only the sessions that ended so (or are `running`).
    #[serde(default)]
    #[param(value_type = Option<SessionStatus>)]
    status: Option<String>,
    /// Only the sessions of jobs caused so.
    #[serde(default)]
    #[param(value_type = Option<Trigger>)]
    trigger: Option<String>,
    /// Only the sessions that covered this.
    #[serde(default)]
    #[param(value_type = Option<Scope>)]
    scope: Option<String>,
    /// Only sessions started at or after this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// Only sessions started before this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
}

static SESSION_LIST: list::Spec = list::Spec {
    list: "sessions",
    columns: &[
        list::column("started_at", "s.started_at", list::Kind::Time, false),
        list::column("ended_at", "s.ended_at", list::Kind::Time, true),
        list::column("status", "s.status", list::Kind::Text, false),
        list::column("scope", "s.scope", list::Kind::Text, false),
        list::column("trigger", "s.trigger", list::Kind::Text, false),
        list::column("issue_count", "s.issue_count", list::Kind::Int, false),
        list::column("items_to_crm", "s.items_to_crm", list::Kind::Int, false),
        list::column("items_to_mailbox", "s.items_to_mailbox", list::Kind::Int, false),
    ],
    id_sql: "s.id",
    default_sort: "started_at",
    default_order: list::Order::Desc,
};

/// A user's sessions.
pub struct Sessions;

impl list::Listing for Sessions {
    const SPEC: &'static list::Spec = &SESSION_LIST;
}

/// A user's sessions (M10), newest first by default.
#[utoipa::path(get, path = "/v1/users/{id}/sessions", tag = "statistics", params(("id" = Uuid, Path, description = "The user."), SessionListQuery, list::PageParams<Sessions>), responses((status = 200, body = list::Listed<SessionView>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ListQuery(query, paging): ListQuery<SessionListQuery, Sessions>,
) -> Result<Json<list::Listed<SessionView>>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|raw| list::one_of("status", raw, SessionStatus::ALL))
        .transpose()?;
    let trigger = query
        .trigger
        .as_deref()
        .map(|raw| list::one_of("trigger", raw, Trigger::ALL))
        .transpose()?;
    let session_scope = query
        .scope
        .as_deref()
        .map(|raw| list::one_of("scope", raw, Scope::ALL))
        .transpose()?;
    let list::Period { since, until } = list::period(query.since.as_deref(), query.until.as_deref())?;
    let page = paging.page(&format!(
        "{id}|{status:?}|{trigger:?}|{session_scope:?}|{since:?}|{until:?}"
    ))?;
    let user = scope::user(&state.pool, &principal, id).await?;
    let filter = store::SessionFilter {
        user: user.id,
        status,
        trigger,
        scope: session_scope,
        since,
        until,
    };
    let (total, rows) = store::page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish::<SessionView>(rows)?;
    Ok(Json(list::Listed {
        items,
        next_cursor,
        total,
    }))
}

/// Reads a session whose user the caller may see.
async fn visible_session(state: &AppState, principal: &Principal, id: Uuid) -> Result<SessionView, ApiError> {
    // The id alone has no partition key: one probe of each partition's
    // primary key. Visibility follows the user's organization now, as for
    // every user route.
    let Some((session, organization)) = store::find(&state.pool, id).await? else {
        return Err(ApiError::not_found("session"));
    };
    if !principal.may_act_on_user(session.user_id, organization) {
        return Err(ApiError::not_found("session"));
    }
    Ok(session)
}

/// Whether the session succeeded without changing anything (the worker
/// stores no log for such a session).
fn is_quiet(session: &SessionView) -> bool {
    session.status == SessionStatus::Succeeded
        && session.issue_count == 0
        && session.items_to_crm == 0
        && session.items_to_mailbox == 0
}

/// The one-line log of a session that ended without changing anything (the
/// worker stores no log for it).
fn quiet_session_log(session: &SessionView) -> Vec<u8> {
    let took = session
        .ended_at
        .map_or(0, |ended| (ended - session.started_at).num_milliseconds().max(0));
    let entry = syncfleet_common::session_log::LogEntry {
        at_ms: u64::try_from(took).unwrap_or_default(),
        step: "session".to_owned(),
        level: "info".to_owned(),
        message: format!(
            "The session {} in {took} ms with nothing to do: no new mail to log and no CRM change to write. Calls made: {}.",
            session.status.as_str().replace('_', " "),
            session.calls
        ),
        duration_ms: Some(u64::try_from(took).unwrap_or_default()),
    };
    let mut line = serde_json::to_vec(&entry).unwrap_or_default();
    line.push(b'\n');
    line
}

/// One session with its issues.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetail {
    pub session: SessionView,
    /// Its issues, oldest first: at most 500 (`GET
    /// /v1/users/{id}/issues?session_id=` pages through all of them).
    pub issues: Vec<IssueView>,
    /// Whether the session has more issues than `issues` holds.
    pub more_issues: bool,
}

/// One session (M10) with its issues.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "statistics", params(("id" = Uuid, Path, description = "The session.")), responses((status = 200, body = SessionDetail)))]
pub async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<SessionDetail>, ApiError> {
    let session = visible_session(&state, &principal, id).await?;
    let limit = list::MAX_PAGE_SIZE;
    // A session's issues are written when it ends, so never before it started.
    let mut issues = store::issues_of(&state.pool, &session, limit + 1).await?;
    let more_issues = issues.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    issues.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(SessionDetail {
        session,
        issues,
        more_issues,
    }))
}

/// A zip archive, as the OpenAPI document describes it.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ZipArchive(Vec<u8>);

/// A session's log (M10) as a zip holding `session-<id>.jsonl`: one JSON
/// object per line, every step with its timing.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/log.zip",
    tag = "statistics",
    params(("id" = Uuid, Path, description = "The session.")),
    responses((
        status = 200,
        description = "The log, zipped.",
        content_type = "application/zip",
        body = ZipArchive,
        headers(("content-disposition" = String, description = "attachment; filename=\"session-<id>.zip\""))
    ))
)]
pub async fn session_log(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let session = visible_session(&state, &principal, id).await?;
    let stored = store::log(&state.pool, &session).await?;
    let unreadable = |error: std::io::Error| {
        tracing::error!(session_id = %id, %error, "A stored session log cannot be read.");
        ApiError::unavailable("the session log cannot be read")
    };
    let mut lines = Vec::new();
    match stored {
        Some(stored) => {
            flate2::read::MultiGzDecoder::new(stored.as_slice())
                .take(MAX_LOG_BYTES)
                .read_to_end(&mut lines)
                .map_err(unreadable)?;
        }
        // A session that changed nothing keeps no log of its own: its
        // summary is the session row. A running session has no log yet.
        None if is_quiet(&session) => lines = quiet_session_log(&session),
        None => return Err(ApiError::not_found("session log")),
    }
    let archive = zip::single_file(&format!("session-{id}.jsonl"), session.started_at, &lines).map_err(unreadable)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"session-{id}.zip\""),
            ),
        ],
        archive,
    )
        .into_response())
}

/// `GET /v1/users/{id}/issues`: the issues of the user's last session by
/// default; `session_id` names another session, or `all` for every issue of
/// the user (those recorded outside a session included). Filters `source`
/// and `category`, then keyset paging, newest first by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IssueListQuery {
    /// A session of the user (a UUID), or `all`; the last session when absent.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(all|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$")]
    session_id: Option<String>,
    /// Only the issues of this side.
    #[serde(default)]
    #[param(value_type = Option<IssueSource>)]
    source: Option<String>,
    /// Only the issues of this category.
    #[serde(default)]
    #[param(value_type = Option<IssueCategory>)]
    category: Option<String>,
}

/// A page of issues.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuePage {
    pub items: Vec<IssueView>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
    /// How many issues match the filters, on every page.
    pub total: i64,
    /// The session listed; null for `session_id=all`, or when the user has
    /// no session yet.
    pub session_id: Option<Uuid>,
}

static ISSUE_LIST: list::Spec = list::Spec {
    list: "issues",
    columns: &[
        list::column("created_at", "i.created_at", list::Kind::Time, false),
        list::column("source", "i.source", list::Kind::Text, false),
        list::column("category", "i.category", list::Kind::Text, false),
    ],
    id_sql: "i.id",
    default_sort: "created_at",
    default_order: list::Order::Desc,
};

/// A user's sync issues.
pub struct IssueList;

impl list::Listing for IssueList {
    const SPEC: &'static list::Spec = &ISSUE_LIST;
}

/// Which issues a list covers.
#[derive(Debug)]
enum Issues {
    All,
    Session(Uuid),
    LastSession,
}

/// A user's sync issues (M10): those of the last session by default.
#[utoipa::path(get, path = "/v1/users/{id}/issues", tag = "statistics", params(("id" = Uuid, Path, description = "The user."), IssueListQuery, list::PageParams<IssueList>), responses((status = 200, body = IssuePage)))]
pub async fn list_issues(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ListQuery(query, paging): ListQuery<IssueListQuery, IssueList>,
) -> Result<Json<IssuePage>, ApiError> {
    let which = match query.session_id.as_deref() {
        None => Issues::LastSession,
        Some("all") => Issues::All,
        Some(raw) => Issues::Session(parse_id("session_id", raw)?),
    };
    let source = query
        .source
        .as_deref()
        .map(|raw| list::one_of("source", raw, IssueSource::ALL))
        .transpose()?;
    let category = query
        .category
        .as_deref()
        .map(|raw| list::one_of("category", raw, IssueCategory::ALL))
        .transpose()?;
    let page = paging.page(&format!("{id}|{which:?}|{source:?}|{category:?}"))?;
    let user = scope::user(&state.pool, &principal, id).await?;
    let session = match which {
        Issues::All => None,
        Issues::Session(session) => Some(session),
        Issues::LastSession => user.last_session_id,
    };
    // The session's start bounds its issues' partitions.
    let started_at: Option<DateTime<Utc>> = match session {
        Some(session) => {
            let found = store::started_at(&state.pool, user.id, session).await?;
            match (found, &which) {
                (Some(started_at), _) => Some(started_at),
                (None, Issues::Session(_)) => {
                    return Err(ApiError::not_found("session").on_field("session_id"));
                }
                // The last session's partition is gone: it has no issues left.
                (None, _) => {
                    return Ok(Json(IssuePage {
                        items: Vec::new(),
                        next_cursor: None,
                        total: 0,
                        session_id: Some(session),
                    }));
                }
            }
        }
        None => None,
    };
    if session.is_none() && !matches!(which, Issues::All) {
        // No session yet: no issues of the last session.
        return Ok(Json(IssuePage {
            items: Vec::new(),
            next_cursor: None,
            total: 0,
            session_id: None,
        }));
    }
    let filter = store::IssueFilter {
        user: user.id,
        session: session.zip(started_at),
        source,
        category,
    };
    let (total, rows) = store::issue_page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish::<IssueView>(rows)?;
    Ok(Json(IssuePage {
        items,
        next_cursor,
        total,
        session_id: session,
    }))
}
