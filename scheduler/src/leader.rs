//! Leadership through a lease row: the holder renews `expires_at`; a
//! candidate takes the row once it has expired, bumping `term`. Each tick's
//! transaction first locks the row (FOR SHARE) as its holder and term, so a
//! deposed leader cannot commit a tick, and nobody can take over while a tick
//! is committing.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::{sync::watch, time::Instant};
use uuid::Uuid;

const ROLE: &str = "scheduler";

/// This process's claim to leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    pool: PgPool,
    holder: Uuid,
    lease: Duration,
}

impl Leadership {
    pub fn new(pool: PgPool, lease: Duration) -> Self {
        Self {
            pool,
            holder: Uuid::new_v4(),
            lease,
        }
    }

    pub fn holder(&self) -> Uuid {
        self.holder
    }

    /// Takes the lease if it is free or expired; returns the term.
    pub async fn try_acquire(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar!(
            "UPDATE leader_leases \
             SET holder = $2, term = term + 1, acquired_at = now(), \
                 expires_at = now() + $3 * interval '1 millisecond' \
             WHERE name = $1 AND (expires_at < now() OR holder IS NULL) \
             RETURNING term",
            ROLE,
            self.holder,
            self.lease.as_millis() as f64
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Extends the lease; `false` means another instance holds it now.
    pub async fn renew(&self, term: i64) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query!(
            "UPDATE leader_leases SET expires_at = now() + $4 * interval '1 millisecond' \
             WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > now()",
            ROLE,
            self.holder,
            term,
            self.lease.as_millis() as f64
        )
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(&self, term: i64) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE leader_leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2 AND term = $3",
            ROLE,
            self.holder,
            term
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Locks the lease row as its current holder for the rest of `tx`; `false`
/// means this instance is not the leader any more.
pub async fn fence(tx: &mut Transaction<'_, Postgres>, holder: Uuid, term: i64) -> Result<bool, sqlx::Error> {
    let held = sqlx::query_scalar!(
        "SELECT 1 FROM leader_leases WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > now() FOR SHARE",
        ROLE,
        holder,
        term
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(held.is_some())
}

/// What this instance may claim of the lease by its own clock, behind the
/// `syncfleet_scheduler_leader` gauge: 1 only while the last renewal (or the
/// acquisition) is recent enough that the lease cannot have expired, less a
/// margin, and no renewal or tick's fence has failed since. A standby can
/// only take over once the lease expired by the database's clock, after the
/// gauge went to 0 here, so two schedulers never both read 1.
#[derive(Debug, Clone)]
pub struct Tenure {
    state: watch::Sender<TenureState>,
    gauge: Gauge,
    validity: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TenureState {
    /// Until when the last renewal holds by the local clock.
    until: Option<Instant>,
    /// A renewal or a tick's fence failed since: not known to hold.
    doubted: bool,
}

impl Tenure {
    /// The tenure of a lease of `lease`, shown on `gauge`; the gauge falls
    /// a quarter of the lease before a renewal's expiry.
    pub fn new(gauge: Gauge, lease: Duration) -> Self {
        let (state, _) = watch::channel(TenureState {
            until: None,
            doubted: false,
        });
        Self {
            state,
            gauge,
            validity: lease - lease / 4,
        }
    }

    /// The lease was taken or renewed by a statement sent at `asked`.
    pub fn renewed(&self, asked: Instant) {
        self.state.send_replace(TenureState {
            until: Some(asked + self.validity),
            doubted: false,
        });
    }

    /// A tick's fence held: the last renewal's tenure stands.
    pub fn fenced(&self) {
        self.state
            .send_if_modified(|state| std::mem::replace(&mut state.doubted, false));
    }

    /// A renewal or a fence failed, or could not be checked: the gauge
    /// falls at once, until the next renewal (or fence) succeeds.
    pub fn doubted(&self) {
        self.gauge.set(0);
        self.state
            .send_if_modified(|state| !std::mem::replace(&mut state.doubted, true));
    }

    /// The lease is gone (lost, released, or this instance stopped leading).
    pub fn ended(&self) {
        self.gauge.set(0);
        self.state.send_replace(TenureState {
            until: None,
            doubted: false,
        });
    }

    /// Keeps the gauge in step with the tenure, falling when it runs out by
    /// the local clock; runs until the task is dropped.
    pub async fn watch(self) {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            let holds_until = state.until.filter(|until| !state.doubted && *until > Instant::now());
            self.gauge.set(i64::from(holds_until.is_some()));
            let expiry = async {
                match holds_until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = expiry => {}
            }
        }
    }
}
