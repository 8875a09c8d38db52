//! An organization's statistics (M5): the last session of each of its users,
//! keyset-paged by user name (see `routes::list`).

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use syncfleet_common::domain::SessionStatus;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ListQuery, PathId};
use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    routes::{list, scope},
};

/// The statistics route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(organization_statistics))
}

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
    /// `succeeded`, `succeeded_with_issues`, `failed`, `skipped` or `abandoned`.
    pub last_session_status: Option<String>,
    /// Changes the last session wrote to the CRM.
    pub items_to_crm: Option<i32>,
    /// Changes the last session wrote to the mailbox.
    pub items_to_mailbox: Option<i32>,
    pub issue_count: Option<i32>,
    pub error_category: Option<String>,
    /// `mailbox`, `crm` or `engine`.
    pub error_source: Option<String>,
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

/// The statistics query: `status` (of the last session), `q` (in the name
/// or email), then keyset paging by `name` (default) and more.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatisticsQuery {
    /// Only the users whose last session ended so.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(running|succeeded|succeeded_with_issues|failed|skipped|abandoned)$")]
    status: Option<String>,
    /// Found anywhere in the name or the email, ignoring case.
    #[serde(default)]
    q: Option<String>,
}

static STATISTICS: list::Spec = list::Spec {
    list: "statistics",
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
            name: "last_session_at",
            sql: "r.last_session_at",
            kind: list::Kind::Time,
            nullable: true,
        },
        list::Column {
            name: "last_session_status",
            sql: "r.last_session_status",
            kind: list::Kind::Text,
            nullable: true,
        },
        list::Column {
            name: "issue_count",
            sql: "s.issue_count",
            kind: list::Kind::Int,
            nullable: true,
        },
    ],
    id_sql: "u.id",
    default_sort: "name",
    default_order: list::Order::Asc,
};

/// The statistics list (names and emails sort ignoring case).
pub struct Statistics;

impl list::Listing for Statistics {
    const SPEC: &'static list::Spec = &STATISTICS;
}

/// The last session of each user of an organization (M5 "statistics").
#[utoipa::path(get, path = "/v1/organizations/{id}/statistics", tag = "statistics", params(("id" = Uuid, Path, description = "The organization."), StatisticsQuery, list::PageParams<Statistics>), responses((status = 200, body = list::Listed<UserStatistics>)))]
pub async fn organization_statistics(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ListQuery(query, paging): ListQuery<StatisticsQuery, Statistics>,
) -> Result<Json<list::Listed<UserStatistics>>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|raw| list::one_of("status", raw, SessionStatus::ALL))
        .transpose()?;
    let pattern = crate::routes::contains_pattern(query.q.as_deref());
    let page = paging.page(&format!("{id}|{status:?}|{pattern:?}"))?;
    scope::organization(&state.pool, &principal, id).await?;
    let filter = |builder: &mut QueryBuilder<'_, Postgres>| {
        builder.push(" WHERE u.organization_id = ").push_bind(id);
        if let Some(status) = status {
            builder.push(" AND r.last_session_status = ").push_bind(status.as_str());
        }
        if let Some(pattern) = &pattern {
            builder
                .push(" AND (u.name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR u.email ILIKE ")
                .push_bind(pattern.clone())
                .push(")");
        }
    };
    let mut counting = QueryBuilder::new("SELECT count(*) FROM users u JOIN user_runs r ON r.user_id = u.id");
    filter(&mut counting);
    let total: i64 = counting.build_query_scalar().fetch_one(&state.pool).await?;
    let mut listing = QueryBuilder::new(format!("SELECT {COLUMNS}{}{FROM}", page.keys()));
    filter(&mut listing);
    page.push_seek(&mut listing);
    page.push_order(&mut listing);
    let rows = listing.build().fetch_all(&state.pool).await?;
    let (items, next_cursor) = page.finish::<UserStatistics>(rows)?;
    Ok(Json(list::Listed {
        items,
        next_cursor,
        total,
    }))
}
