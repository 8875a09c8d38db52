//! An organization's statistics: each user with their last session.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, postgres::PgRow};
use syncfleet_common::domain::{IssueCategory, IssueSource, SessionStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;
use crate::routes::list;

/// A user and their last session; the session's fields are null when the
/// user never synchronized (or the session has expired from retention).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct UserStatistics {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub last_session_id: Option<Uuid>,
    /// When the last session ended.
    pub last_session_at: Option<DateTime<Utc>>,
    pub last_session_status: Option<SessionStatus>,
    /// Changes the last session wrote to the CRM.
    pub items_to_crm: Option<i32>,
    /// Changes the last session wrote to the mailbox.
    pub items_to_mailbox: Option<i32>,
    pub issue_count: Option<i32>,
    pub error_category: Option<IssueCategory>,
    pub error_source: Option<IssueSource>,
    pub error_message: Option<String>,
}

const COLUMNS: &str = "u.id AS user_id, u.name, u.email, r.last_session_id, r.last_session_at, \
     r.last_session_status, s.items_to_crm, s.items_to_mailbox, s.issue_count, s.error_category, s.error_source, \
     s.error_message";

/// The user's last session, found through the user index of the
/// partitioned sessions (newest first, no later than its end).
const FROM: &str = " FROM users u JOIN user_runs r ON r.user_id = u.id LEFT JOIN LATERAL ( \
         SELECT s.items_to_crm, s.items_to_mailbox, s.issue_count, s.error_category, s.error_source, s.error_message \
         FROM sync_sessions s \
         WHERE s.user_id = u.id AND s.id = r.last_session_id AND s.started_at <= r.last_session_at \
         ORDER BY s.started_at DESC LIMIT 1) s ON TRUE";

/// Which users a statistics page covers.
pub struct Filter<'a> {
    pub organization: Uuid,
    /// Their last session's status.
    pub status: Option<SessionStatus>,
    /// An `ILIKE` pattern on the name or the email.
    pub pattern: Option<&'a str>,
}

impl Filter<'_> {
    fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        builder.push(" WHERE u.organization_id = ").push_bind(self.organization);
        if let Some(status) = self.status {
            builder.push(" AND r.last_session_status = ").push_bind(status);
        }
        if let Some(pattern) = self.pattern {
            super::users::push_name_or_email(builder, pattern);
        }
    }
}

/// How many users match `filter`, and the rows of `page` among them (the
/// count needs no session).
pub async fn page(pool: &PgPool, filter: &Filter<'_>, page: &list::Page) -> StoreResult<(i64, Vec<PgRow>)> {
    let mut counting = QueryBuilder::new("SELECT count(*) FROM users u JOIN user_runs r ON r.user_id = u.id");
    filter.push(&mut counting);
    let total: i64 = counting.build_query_scalar().fetch_one(pool).await?;
    let mut listing = QueryBuilder::new(format!("SELECT {COLUMNS}{}{FROM}", page.keys()));
    filter.push(&mut listing);
    page.push_seek(&mut listing);
    page.push_order(&mut listing);
    Ok((total, listing.build().fetch_all(pool).await?))
}
