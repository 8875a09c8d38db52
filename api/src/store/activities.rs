//! Activities (M11): what happened, by whom, written in the transaction of
//! the change they describe so they commit or roll back with it.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoreResult;

/// One activity.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ActivityView {
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who did it: an admin's label, a user's email, or `system`.
    pub actor: String,
    /// Its type, e.g. `sync_enabled`, `disabled_auth_error`, `organization_created`.
    pub kind: String,
    pub details: String,
    /// The log that goes with it, when there is one.
    pub log: Option<String>,
    pub organization_id: Uuid,
    /// The user concerned; null for an organization's own activity and for
    /// a user since removed.
    pub user_id: Option<Uuid>,
}

const COLUMNS: &str = "a.id, a.occurred_at, a.actor, a.kind, a.details, a.log, a.organization_id, a.user_id";

/// Whose activities.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    User(Uuid),
    /// The organization's own and its users'.
    Organization(Uuid),
}

/// Which activities to read, newest first.
#[derive(Debug)]
pub struct Filter {
    pub subject: Subject,
    pub kind: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows; None: all.
    pub limit: Option<i64>,
}

fn select(filter: &Filter) -> QueryBuilder<'static, Postgres> {
    let mut builder = QueryBuilder::new(format!("SELECT {COLUMNS} FROM activities a WHERE "));
    match filter.subject {
        Subject::User(id) => builder.push("a.user_id = ").push_bind(id),
        Subject::Organization(id) => builder.push("a.organization_id = ").push_bind(id),
    };
    if let Some(kind) = &filter.kind {
        builder.push(" AND a.kind = ").push_bind(kind.clone());
    }
    if let Some(since) = filter.since {
        builder.push(" AND a.occurred_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        builder.push(" AND a.occurred_at < ").push_bind(until);
    }
    builder.push(" ORDER BY a.occurred_at DESC, a.id DESC");
    if let Some(limit) = filter.limit {
        builder.push(" LIMIT ").push_bind(limit);
    }
    builder
}

/// The activities `filter` names, newest first.
pub async fn newest(pool: &PgPool, filter: &Filter) -> StoreResult<Vec<ActivityView>> {
    Ok(select(filter).build_query_as::<ActivityView>().fetch_all(pool).await?)
}

/// Sends the activities `filter` names, newest first, one at a time as the
/// receiver takes them (a download streams them); stops when the receiver
/// is dropped, and sends the error that ends a failed read.
pub async fn send_each(pool: PgPool, filter: Filter, sender: mpsc::Sender<StoreResult<ActivityView>>) {
    let mut builder = select(&filter);
    let mut rows = builder.build_query_as::<ActivityView>().fetch(&pool);
    loop {
        let next = match rows.try_next().await {
            Ok(Some(activity)) => Ok(activity),
            Ok(None) => return,
            Err(error) => Err(error.into()),
        };
        let failed = next.is_err();
        if sender.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// One activity to record.
pub struct NewActivity<'a> {
    /// The organization it belongs to.
    pub organization_id: Uuid,
    /// The user it is about, when it is about one still there.
    pub user_id: Option<Uuid>,
    /// Who did it (the token's label).
    pub actor: &'a str,
    /// Its kind (see the `activities_kind_check` constraint).
    pub kind: &'a str,
    /// What changed, in words (never a secret).
    pub details: String,
}

/// Records `activity`.
pub async fn record(connection: &mut PgConnection, activity: NewActivity<'_>) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) VALUES ($1, $2, $3, $4, $5, $6)",
        Uuid::now_v7(),
        activity.organization_id,
        activity.user_id,
        activity.actor,
        activity.kind,
        activity.details
    )
    .execute(connection)
    .await?;
    Ok(())
}
