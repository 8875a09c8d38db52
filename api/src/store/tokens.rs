//! Bearer tokens: stored by their SHA-256 only, resolved on every request.

use sqlx::PgPool;
use uuid::Uuid;

use super::StoreResult;

/// A live token as stored.
#[derive(Debug)]
pub struct TokenRow {
    pub id: Uuid,
    /// `admin`, `org_admin` or `user`.
    pub role: String,
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub label: String,
}

/// The token whose SHA-256 is `hash`, when it is neither revoked nor expired.
pub async fn find_live(pool: &PgPool, hash: &[u8]) -> StoreResult<Option<TokenRow>> {
    Ok(sqlx::query_as!(
        TokenRow,
        "SELECT id, role, organization_id, user_id, label FROM api_tokens \
         WHERE token_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        hash
    )
    .fetch_optional(pool)
    .await?)
}
