//! An add-in user's notifications (M14: "restart Outlook" after a push):
//! the list, marking them read, and the live stream (Server-Sent Events) fed
//! by the process's [`crate::live::Hub`]. Every route is the caller's own,
//! so only a user token has notifications: any other answers 403.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    time::Duration,
};

use axum::{
    Extension, Json,
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiQuery, PathId};
pub use crate::store::notifications::NotificationView;
use crate::store::notifications::{self as store, Position};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    live::{Hub, LiveNotification, Subscription, Wake},
    routes::{parse_id, record_activity},
};

/// The default and largest page.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;
/// Rows one read-back of the stream takes at a time.
const REPLAY_BATCH: i64 = 500;
/// How often an idle stream sends a comment, so proxies keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often a stream checks whether the process is draining.
const DRAIN_CHECK: Duration = Duration::from_secs(1);
/// Ids a stream remembers having sent, so a notification that arrives both
/// live and in a read-back is sent once.
const REMEMBERED: usize = 1024;

/// The notification routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
        .routes(routes!(stream_notifications))
}

impl From<&LiveNotification> for NotificationView {
    fn from(live: &LiveNotification) -> Self {
        Self {
            id: live.id,
            kind: live.kind.clone(),
            title: live.title.clone(),
            body: live.body.clone(),
            payload: live.payload.clone(),
            created_at: live.created_at,
            read_at: live.read_at,
        }
    }
}

/// A page of notifications, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    /// The next page's `cursor`; null on the last page.
    pub next_cursor: Option<String>,
    /// The user's unread notifications in all.
    pub unread: i64,
}

/// `GET /v1/me/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// `true`: only the unread ones.
    #[serde(default)]
    unread: Option<bool>,
    /// 1-200, default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    page_size: Option<i64>,
    /// Where the previous page ended (its `next_cursor`).
    #[serde(default)]
    cursor: Option<String>,
}

/// `POST /v1/me/notifications/read-all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MarkedRead {
    /// Notifications that were unread and are now read.
    pub marked: u64,
}

/// The caller's user: only a user token has notifications.
fn me(principal: &Principal) -> Result<Uuid, ApiError> {
    match (principal.role, principal.user_id) {
        (Role::User, Some(user_id)) => Ok(user_id),
        _ => Err(ApiError::forbidden(
            "notifications belong to add-in users: call with the user's own token",
        )),
    }
}

/// Where a notification of this user sits, for seeking past it.
async fn position(pool: &PgPool, user_id: Uuid, id: Uuid) -> Result<Option<Position>, ApiError> {
    Ok(store::created_at(pool, user_id, id).await?.map(|at| (at, id)))
}

/// The caller's notifications, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "notifications", params(NotificationQuery), responses((status = 200, body = NotificationPage)))]
pub async fn list_notifications(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let user_id = me(&principal)?;
    let size = query.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(ApiError::invalid(
            "page_size",
            format!("page_size is 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let after = match query.cursor.as_deref() {
        Some(raw) => {
            let id = parse_id("cursor", raw)?;
            let position = position(&state.pool, user_id, id)
                .await?
                .ok_or_else(|| ApiError::invalid("cursor", "the cursor names none of your notifications"))?;
            Some(position)
        }
        None => None,
    };
    let mut items = store::newest_first(&state.pool, user_id, query.unread.unwrap_or(false), after, size + 1).await?;
    let next_cursor = if items.len() as i64 > size {
        items.truncate(size as usize);
        items.last().map(|last| last.id.to_string())
    } else {
        None
    };
    let unread = store::unread(&state.pool, user_id).await?;
    Ok(Json(NotificationPage {
        items,
        next_cursor,
        unread,
    }))
}

/// Marks one of the caller's notifications read (again: unchanged).
#[utoipa::path(post, path = "/v1/me/notifications/{id}/read", tag = "notifications", params(("id" = Uuid, Path, description = "The notification.")), responses((status = 200, body = NotificationView)))]
pub async fn mark_read(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<NotificationView>, ApiError> {
    // Only users have notifications: for anyone else no id is one.
    let user_id = me(&principal).map_err(|_| ApiError::not_found("notification"))?;
    let mut tx = state.pool.begin().await?;
    let unread = store::lock_unread(&mut tx, user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("notification"))?;
    let view = store::mark_read(&mut tx, id).await?;
    if unread {
        record_read(
            &mut tx,
            user_id,
            &principal.label,
            format!("notification {:?} marked read", view.title),
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// Marks every unread notification of the caller read.
#[utoipa::path(post, path = "/v1/me/notifications/read-all", tag = "notifications", responses((status = 200, body = MarkedRead)))]
pub async fn mark_all_read(State(state): State<AppState>, principal: Principal) -> Result<Json<MarkedRead>, ApiError> {
    let user_id = me(&principal)?;
    let mut tx = state.pool.begin().await?;
    let marked = store::mark_all_read(&mut tx, user_id).await?;
    if marked > 0 {
        record_read(
            &mut tx,
            user_id,
            &principal.label,
            format!("{marked} notifications marked read"),
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(MarkedRead { marked }))
}

async fn record_read(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Uuid,
    actor: &str,
    details: String,
) -> Result<(), ApiError> {
    let organization_id = crate::store::users::organization_of(tx, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    record_activity(tx, organization_id, Some(user_id), actor, "notifications_read", details).await
}

/// The caller's notifications as they are created: Server-Sent Events, each
/// `event: notification` with `id:` the notification's id and `data:` the
/// notification as JSON; a `heartbeat` comment every 15 seconds. A client
/// that reconnects with `Last-Event-ID` first gets every notification
/// created after that one. The stream lasts until the client leaves, the
/// api starts draining or the database cannot be read (the client then
/// reconnects).
#[utoipa::path(
    get,
    path = "/v1/me/notifications/stream",
    tag = "notifications",
    params(("Last-Event-ID" = Option<Uuid>, Header, description = "The last notification received: those created after it are sent first.")),
    responses((status = 200, content_type = "text/event-stream", body = String, description = "The event stream."))
)]
pub async fn stream_notifications(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let user_id = me(&principal)?;
    let last = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<Uuid>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "Last-Event-ID must be a notification id"))
        })
        .transpose()?;
    // Subscribe first, then fix where the read-back starts: a notification
    // committed in between is both live and read back, and sent once.
    let subscription = hub.subscribe(user_id);
    let replay_from = match last {
        Some(id) => position(&state.pool, user_id, id).await?,
        None => None,
    };
    let cursor = match replay_from {
        Some(cursor) => Some(cursor),
        None => store::newest(&state.pool, user_id).await?,
    };
    let feed = Feed {
        pool: state.pool.clone(),
        user_id,
        subscription,
        cursor,
        replay: replay_from.is_some(),
        greeted: false,
        sent: HashSet::new(),
        sent_order: VecDeque::new(),
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

/// One stream's state.
struct Feed {
    pool: PgPool,
    user_id: Uuid,
    subscription: Subscription,
    /// The newest notification sent (or existing when the stream opened):
    /// a read-back starts after it.
    cursor: Option<Position>,
    /// Whether to read back before the first live event (`Last-Event-ID`).
    replay: bool,
    greeted: bool,
    sent: HashSet<Uuid>,
    sent_order: VecDeque<Uuid>,
    pending: VecDeque<NotificationView>,
}

impl Feed {
    /// The next event; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if !self.greeted {
            self.greeted = true;
            return Some(Event::default().retry(Duration::from_secs(3)).comment("listening"));
        }
        if std::mem::take(&mut self.replay) && !self.read_back().await {
            return None;
        }
        loop {
            if self.subscription.draining() {
                return None;
            }
            if let Some(notification) = self.pending.pop_front() {
                return Some(self.event(notification));
            }
            match self.subscription.wait(DRAIN_CHECK).await {
                Wake::Notification(live) => {
                    let view = NotificationView::from(live.as_ref());
                    if !self.sent.contains(&view.id) {
                        self.pending.push_back(view);
                    }
                }
                Wake::ReadBack => {
                    if !self.read_back().await {
                        return None;
                    }
                }
                Wake::Idle => {}
                Wake::Closed => return None,
            }
        }
    }

    /// Queues what was created after the cursor and not sent yet; `false`
    /// when the database cannot be read.
    async fn read_back(&mut self) -> bool {
        let mut cursor = self.cursor;
        loop {
            let rows = store::oldest_first(&self.pool, self.user_id, cursor, REPLAY_BATCH).await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "A notification stream could not read back; closing it.");
                    return false;
                }
            };
            let full = rows.len() as i64 == REPLAY_BATCH;
            for row in rows {
                cursor = Some((row.created_at, row.id));
                if !self.sent.contains(&row.id) && !self.pending.iter().any(|pending| pending.id == row.id) {
                    self.pending.push_back(row);
                }
            }
            if !full {
                return true;
            }
        }
    }

    fn event(&mut self, notification: NotificationView) -> Event {
        if self
            .cursor
            .is_none_or(|cursor| (notification.created_at, notification.id) > cursor)
        {
            self.cursor = Some((notification.created_at, notification.id));
        }
        self.sent.insert(notification.id);
        self.sent_order.push_back(notification.id);
        if self.sent_order.len() > REMEMBERED
            && let Some(oldest) = self.sent_order.pop_front()
        {
            self.sent.remove(&oldest);
        }
        let id = notification.id.to_string();
        Event::default()
            .id(id)
            .event("notification")
            .json_data(&notification)
            .unwrap_or_else(|_| Event::default().comment("unreadable notification"))
    }
}
