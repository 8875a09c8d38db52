//! The live feed of notifications: one PostgreSQL `LISTEN` per api process,
//! fanned out to the open streams through tokio broadcast channels, one per
//! user with a stream open. Every api replica listens, so a notification
//! reaches its user whichever replica holds the stream.
//!
//! Whoever creates a notification calls `pg_notify` on [`CHANNEL`] in the
//! same transaction, with the notification as the payload (see
//! [`LiveNotification`]); PostgreSQL delivers it at commit, and never for a
//! transaction that rolled back. A notification too large for `NOTIFY`
//! (8000 bytes) may be announced by `{"id", "user_id"}` alone: its user's
//! streams then read it from the database.
//!
//! The listener starts with the first stream and stops once no stream is
//! left and its connection ends. When its connection is lost it reconnects
//! with backoff; every time it is (again) listening it raises the
//! `resync` generation, and each stream then reads from the database what
//! it may have missed meanwhile. A stream that falls behind its channel does
//! the same, so a notification is never lost to a slow reader. Streams end
//! once the process starts draining (their clients reconnect elsewhere).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use syncfleet_common::ops::Health;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use uuid::Uuid;

/// The `NOTIFY` channel notifications are announced on.
pub const CHANNEL: &str = "syncfleet_notifications";
/// Notifications a stream may fall behind by before it reads them back
/// from the database instead.
const PER_USER_CAPACITY: usize = 256;

/// A notification as `pg_notify` carries it (a `notifications` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveNotification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// The process's feed.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    health: Arc<Health>,
    state: Mutex<State>,
    /// Raised each time the listener is (again) listening.
    resync: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    users: HashMap<Uuid, broadcast::Sender<Live>>,
    listening_task: bool,
}

/// A stream's subscription: its user's notifications and the resync
/// generation. Dropping it leaves the feed.
pub struct Subscription {
    hub: Hub,
    user_id: Uuid,
    /// Always `Some` until dropped.
    receiver: Option<broadcast::Receiver<Live>>,
    /// Changes when the stream must read back from the database.
    resync: watch::Receiver<u64>,
}

/// What a user's channel carries.
#[derive(Debug, Clone)]
enum Live {
    /// The whole notification.
    Notification(Arc<LiveNotification>),
    /// Only that one exists: read it from the database.
    Announced,
}

/// An announcement without the notification (see the module's doc).
#[derive(Deserialize)]
struct Announcement {
    user_id: Uuid,
}

/// What woke a stream up.
pub enum Wake {
    /// A notification of the user.
    Notification(Arc<LiveNotification>),
    /// Some were missed (the stream fell behind, or the listener was
    /// (re)connected): read back from the database.
    ReadBack,
    /// Nothing within the period asked for.
    Idle,
    /// The feed is gone.
    Closed,
}

impl Subscription {
    /// Whether the process is draining: streams end.
    pub fn draining(&self) -> bool {
        self.hub.inner.health.is_draining()
    }

    /// Waits up to `period` for what the stream must do next.
    pub async fn wait(&mut self, period: Duration) -> Wake {
        let Some(receiver) = self.receiver.as_mut() else {
            return Wake::Closed;
        };
        tokio::select! {
            () = tokio::time::sleep(period) => Wake::Idle,
            received = receiver.recv() => match received {
                Ok(Live::Notification(notification)) => Wake::Notification(notification),
                Ok(Live::Announced) | Err(broadcast::error::RecvError::Lagged(_)) => Wake::ReadBack,
                Err(broadcast::error::RecvError::Closed) => Wake::Closed,
            },
            changed = self.resync.changed() => match changed {
                Ok(()) => Wake::ReadBack,
                Err(_) => Wake::Closed,
            },
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut state = self.hub.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .users
            .get(&self.user_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            state.users.remove(&self.user_id);
        }
    }
}

impl Hub {
    /// A feed over `pool`'s database; nothing runs until the first stream.
    /// Streams end when `health` says the process is draining.
    pub fn new(pool: PgPool, health: Arc<Health>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                health,
                state: Mutex::new(State::default()),
                resync: watch::Sender::new(0),
            }),
        }
    }

    /// Subscribes to a user's notifications, starting the listener if it
    /// is not running. The caller reads what it must replay from the
    /// database after this returns, so nothing falls between the two.
    pub fn subscribe(&self, user_id: Uuid) -> Subscription {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = state
            .users
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(PER_USER_CAPACITY).0)
            .subscribe();
        if !state.listening_task {
            state.listening_task = true;
            tokio::spawn(listen(self.clone()));
        }
        Subscription {
            hub: self.clone(),
            user_id,
            receiver: Some(receiver),
            resync: self.inner.resync.subscribe(),
        }
    }

    /// Hands an announcement to its user's streams, if any.
    fn deliver(&self, payload: &str) {
        let (user_id, live) = match serde_json::from_str::<LiveNotification>(payload) {
            Ok(notification) => (notification.user_id, Live::Notification(Arc::new(notification))),
            Err(_) => match serde_json::from_str::<Announcement>(payload) {
                Ok(announcement) => (announcement.user_id, Live::Announced),
                Err(error) => {
                    debug!(%error, "Ignored a notification payload that names no user.");
                    return;
                }
            },
        };
        let state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = state.users.get(&user_id) {
            let _ = sender.send(live);
        }
    }

    /// Marks the listener stopped when no stream is left; `true` then.
    fn stop_if_idle(&self) -> bool {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.users.is_empty() {
            state.listening_task = false;
            true
        } else {
            false
        }
    }
}

/// The listener's life: connect and `LISTEN`, announce a resync, relay
/// notifications; on a lost connection, reconnect with backoff. Stops when
/// no stream is left (checked whenever the connection ends or a
/// notification arrives) or the pool is closed.
async fn listen(hub: Hub) {
    let mut delay = Duration::from_millis(100);
    loop {
        if hub.inner.pool.is_closed() {
            hub.inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .listening_task = false;
            return;
        }
        let mut listener = match connect(&hub.inner.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                if hub.stop_if_idle() {
                    return;
                }
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "Cannot listen for notifications; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        info!("Listening for notifications.");
        hub.inner.resync.send_modify(|generation| *generation += 1);
        loop {
            match listener.try_recv().await {
                Ok(Some(message)) => {
                    hub.deliver(message.payload());
                    if hub.stop_if_idle() {
                        return;
                    }
                }
                // The connection was lost and re-established (listening
                // again): streams read back what went by meanwhile.
                Ok(None) => {
                    if hub.stop_if_idle() {
                        return;
                    }
                    warn!("The notification listener's connection was lost; listening again.");
                    hub.inner.resync.send_modify(|generation| *generation += 1);
                }
                Err(error) => {
                    if hub.stop_if_idle() {
                        return;
                    }
                    warn!(%error, "The notification listener failed; reconnecting.");
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
