//! An organization's statistics (M5): the last session of each of its users,
//! keyset-paged by user name (see `routes::list`).

use axum::{Json, extract::State};
use serde::Deserialize;
use syncfleet_common::domain::SessionStatus;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

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

pub use crate::store::statistics::UserStatistics;

/// The statistics query: `status` (of the last session), `q` (in the name
/// or email), then keyset paging by `name` (default) and more.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatisticsQuery {
    /// Only the users whose last session ended so.
    #[serde(default)]
    #[param(value_type = Option<SessionStatus>)]
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
    let filter = crate::store::statistics::Filter {
        organization: id,
        status,
        pattern: pattern.as_deref(),
    };
    let (total, rows) = crate::store::statistics::page(&state.pool, &filter, &page).await?;
    let (items, next_cursor) = page.finish::<UserStatistics>(rows)?;
    Ok(Json(list::Listed {
        items,
        next_cursor,
        total,
    }))
}
