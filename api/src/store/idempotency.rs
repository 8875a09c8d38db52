//! Idempotency keys (issue 17): a keyed request's row, claimed in the
//! transaction of its effect, and the answer kept for its retries.

use sqlx::{PgConnection, PgPool};

use super::StoreResult;

/// A request's key, as its row is found by.
#[derive(Debug, Clone, Copy)]
pub struct KeyRow<'a> {
    /// The caller's token id.
    pub scope: &'a [u8],
    pub key: &'a str,
    /// Empty for a request; a user's id for one user's part of a bulk action.
    pub item: &'a str,
    /// The SHA-256 of the request (method, path, query, body).
    pub fingerprint: &'a [u8],
}

/// A key's row, as a retry reads it.
#[derive(Debug)]
pub struct Stored {
    pub fingerprint: Vec<u8>,
    /// The answer's status; none until the answer is stored.
    pub status: Option<i16>,
    /// The answer's body; none until stored, or when too large to keep.
    pub answer: Option<Vec<u8>>,
}

/// Inserts the key's row (an expired one is taken over); whether it was
/// claimed. A live row's transaction is waited for on the unique index.
pub async fn claim(connection: &mut PgConnection, key: KeyRow<'_>) -> StoreResult<bool> {
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (scope, key, item, fingerprint) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, key, item) DO UPDATE \
             SET fingerprint = EXCLUDED.fingerprint, status = NULL, answer = NULL, \
                 created_at = now(), expires_at = now() + interval '24 hours' \
             WHERE idempotency_keys.expires_at <= now()",
        key.scope,
        key.key,
        key.item,
        key.fingerprint
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Stores the answer of the request that holds the key (a row claimed by
/// another request is left alone).
pub async fn store_answer<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    key: KeyRow<'_>,
    status: i16,
    answer: Option<&[u8]>,
) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE idempotency_keys SET status = $5, answer = $6 \
         WHERE scope = $1 AND key = $2 AND item = $3 AND fingerprint = $4",
        key.scope,
        key.key,
        key.item,
        key.fingerprint,
        status,
        answer
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// The key's row, unless it expired (whatever request it was claimed for).
pub async fn find_live(pool: &PgPool, key: KeyRow<'_>) -> StoreResult<Option<Stored>> {
    Ok(sqlx::query_as!(
        Stored,
        "SELECT fingerprint, status, answer FROM idempotency_keys \
         WHERE scope = $1 AND key = $2 AND item = $3 AND expires_at > now()",
        key.scope,
        key.key,
        key.item
    )
    .fetch_optional(pool)
    .await?)
}

/// Deletes up to `batch` expired keys; answers how many.
pub async fn delete_expired(pool: &PgPool, batch: i64) -> StoreResult<u64> {
    Ok(sqlx::query!(
        "DELETE FROM idempotency_keys WHERE ctid IN \
         (SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT $1)",
        batch
    )
    .execute(pool)
    .await?
    .rows_affected())
}
