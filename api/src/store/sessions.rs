//! Sync sessions, their issues and logs, as the api reads them. They are
//! partitioned by day: every statement names the user (their indexes lead
//! with it) or the exact partition key. A running session is on its user's
//! run row until it ends: sessions are read through `sync_sessions_all`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row, postgres::PgRow};
use syncfleet_common::domain::{IssueCategory, IssueSource, Scope, SessionStatus, Trigger};
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;
use crate::routes::list;

/// A sync session (M10).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    /// The job that ran it.
    pub job_id: Uuid,
    pub user_id: Uuid,
    /// The user's organization when the session ran.
    pub organization_id: Uuid,
    /// The job's delivery attempt.
    pub attempt: i32,
    pub trigger: Trigger,
    pub scope: Scope,
    pub status: SessionStatus,
    /// The slot the job was scheduled for, or when it was requested.
    pub scheduled_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// Null while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// Changes written to the CRM.
    pub items_to_crm: i32,
    /// Changes written to the mailbox.
    pub items_to_mailbox: i32,
    pub issue_count: i32,
    /// Calls made per provider, e.g. `{"graph": 12, "salesforce": 4}`.
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub calls: serde_json::Value,
    /// Why it failed.
    pub error_category: Option<IssueCategory>,
    /// Which side it failed on.
    pub error_source: Option<IssueSource>,
    pub error_message: Option<String>,
    pub exception: Option<String>,
}

pub const SESSION_COLUMNS: &str = "s.id, s.job_id, s.user_id, s.organization_id, s.attempt, s.trigger, s.scope, \
     s.status, s.scheduled_at, s.started_at, s.ended_at, s.items_to_crm, s.items_to_mailbox, s.issue_count, \
     s.calls, s.error_category, s.error_source, s.error_message, s.exception";

/// A sync issue: one item (or the whole session) that went wrong.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct IssueView {
    pub id: Uuid,
    /// Null for an issue recorded outside a session (a dead-lettered job).
    pub session_id: Option<Uuid>,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub source: IssueSource,
    pub category: IssueCategory,
    /// The item concerned, when there is one.
    pub item_ref: Option<String>,
    pub message: String,
}

pub const ISSUE_COLUMNS: &str =
    "i.id, i.session_id, i.user_id, i.created_at, i.source, i.category, i.item_ref, i.message";

/// What a user's session list is filtered by.
pub struct SessionFilter {
    pub user: Uuid,
    pub status: Option<SessionStatus>,
    pub trigger: Option<Trigger>,
    pub scope: Option<Scope>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
}

impl SessionFilter {
    fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        builder.push(" WHERE s.user_id = ").push_bind(self.user);
        if let Some(status) = self.status {
            builder.push(" AND s.status = ").push_bind(status);
        }
        if let Some(trigger) = self.trigger {
            builder.push(" AND s.trigger = ").push_bind(trigger);
        }
        if let Some(scope) = self.scope {
            builder.push(" AND s.scope = ").push_bind(scope);
        }
        if let Some(since) = self.since {
            builder.push(" AND s.started_at >= ").push_bind(since);
        }
        if let Some(until) = self.until {
            builder.push(" AND s.started_at < ").push_bind(until);
        }
    }
}

/// How many sessions match `filter`, and the rows of `page` among them.
pub async fn page(pool: &PgPool, filter: &SessionFilter, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    super::counted_page(
        pool,
        SESSION_COLUMNS,
        "sync_sessions_all s",
        |builder| filter.push(builder),
        page,
    )
    .await
}

/// The session, with the organization its user is in now (visibility
/// follows it). The id alone has no partition key: one probe of each
/// partition's primary key, and a scan of the run rows for a session still
/// running (no index covers a running session's id, so that its claim and
/// close stay HOT updates).
pub async fn find(pool: &PgPool, id: Uuid) -> StoreResult<Option<(SessionView, Uuid)>> {
    let query = format!(
        "SELECT {SESSION_COLUMNS}, u.organization_id AS current_organization_id \
         FROM sync_sessions_all s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
    );
    let Some(row) = sqlx::query(&query).bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    Ok(Some((
        SessionView::from_row(&row)?,
        row.try_get("current_organization_id")?,
    )))
}

/// The session's first `limit` issues, oldest first (written when it ends,
/// so never before it started).
pub async fn issues_of(pool: &PgPool, session: &SessionView, limit: i64) -> StoreResult<Vec<IssueView>> {
    Ok(sqlx::query_as!(
        IssueView,
        "SELECT i.id, i.session_id, i.user_id, i.created_at, i.source AS \"source: _\", \
                i.category AS \"category: _\", i.item_ref, i.message \
         FROM sync_issues i \
         WHERE i.user_id = $1 AND i.session_id = $2 AND i.created_at >= $3 \
         ORDER BY i.created_at, i.id LIMIT $4",
        session.user_id,
        session.id,
        session.started_at,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// The session's stored log (gzip), when it has one.
pub async fn log(pool: &PgPool, session: &SessionView) -> StoreResult<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar!(
        "SELECT log_gzip FROM sync_session_logs WHERE session_id = $1 AND started_at = $2 AND user_id = $3",
        session.id,
        session.started_at,
        session.user_id
    )
    .fetch_optional(pool)
    .await?)
}

/// When the user's session started, when it (still) exists.
pub async fn started_at(pool: &PgPool, user: Uuid, session: Uuid) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT started_at AS \"started_at!\" FROM sync_sessions_all WHERE user_id = $1 AND id = $2",
        user,
        session
    )
    .fetch_optional(pool)
    .await?)
}

/// What a user's issue list is filtered by.
pub struct IssueFilter {
    pub user: Uuid,
    /// Only this session's (with its start, which bounds its partitions).
    pub session: Option<(Uuid, DateTime<Utc>)>,
    pub source: Option<IssueSource>,
    pub category: Option<IssueCategory>,
}

impl IssueFilter {
    fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        builder.push(" WHERE i.user_id = ").push_bind(self.user);
        if let Some((session, started_at)) = self.session {
            builder
                .push(" AND i.session_id = ")
                .push_bind(session)
                .push(" AND i.created_at >= ")
                .push_bind(started_at);
        }
        if let Some(source) = self.source {
            builder.push(" AND i.source = ").push_bind(source);
        }
        if let Some(category) = self.category {
            builder.push(" AND i.category = ").push_bind(category);
        }
    }
}

/// How many issues match `filter`, and the rows of `page` among them.
pub async fn issue_page(pool: &PgPool, filter: &IssueFilter, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    super::counted_page(
        pool,
        ISSUE_COLUMNS,
        "sync_issues i",
        |builder| filter.push(builder),
        page,
    )
    .await
}
