//! Leadership through a lease row: the holder renews `expires_at`; a
//! candidate takes the row once it has expired, bumping `term`. Each tick's
//! transaction first locks the row (FOR SHARE) as its holder and term, so a
//! deposed leader cannot commit a tick, and nobody can take over while a tick
//! is committing.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
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
        sqlx::query_scalar(
            "UPDATE leader_leases \
             SET holder = $2, term = term + 1, acquired_at = now(), \
                 expires_at = now() + $3 * interval '1 millisecond' \
             WHERE name = $1 AND (expires_at < now() OR holder IS NULL) \
             RETURNING term",
        )
        .bind(ROLE)
        .bind(self.holder)
        .bind(self.lease.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await
    }

    /// Extends the lease; `false` means another instance holds it now.
    pub async fn renew(&self, term: i64) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE leader_leases SET expires_at = now() + $4 * interval '1 millisecond' \
             WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > now()",
        )
        .bind(ROLE)
        .bind(self.holder)
        .bind(term)
        .bind(self.lease.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(&self, term: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE leader_leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2 AND term = $3")
            .bind(ROLE)
            .bind(self.holder)
            .bind(term)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Locks the lease row as its current holder for the rest of `tx`; `false`
/// means this instance is not the leader any more.
pub async fn fence(tx: &mut Transaction<'_, Postgres>, holder: Uuid, term: i64) -> Result<bool, sqlx::Error> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM leader_leases WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > now() FOR SHARE",
    )
    .bind(ROLE)
    .bind(holder)
    .bind(term)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(held.is_some())
}
