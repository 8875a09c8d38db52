//! Bearer tokens: the api stores only their SHA-256, and every route takes a
//! [`Principal`]. Roles: `admin` (every organization), `org_admin` (one
//! organization), `user` (themself).

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's id (never the token).
    pub token_id: Uuid,
    /// The token's role.
    pub role: Role,
    /// For `org_admin`: their organization; for `user`: the user's.
    pub organization_id: Option<Uuid>,
    /// For `user`: themself.
    pub user_id: Option<Uuid>,
    /// What activities and jobs record as the actor.
    pub label: String,
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    OrgAdmin,
    User,
}

impl Principal {
    /// Whether the caller may act on this user of this organization.
    pub fn may_act_on_user(&self, user_id: Uuid, organization_id: Uuid) -> bool {
        match self.role {
            Role::Admin => true,
            Role::OrgAdmin => self.organization_id == Some(organization_id),
            Role::User => self.user_id == Some(user_id),
        }
    }
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new random token (shown once; only its hash is stored).
pub fn new_token() -> String {
    format!("sf_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Stores a token and returns it.
pub async fn create_token(
    pool: &PgPool,
    role: &str,
    organization_id: Option<Uuid>,
    user_id: Option<Uuid>,
    label: &str,
) -> Result<String, sqlx::Error> {
    let token = new_token();
    sqlx::query!(
        "INSERT INTO api_tokens (id, token_sha256, role, organization_id, user_id, label) \
         VALUES ($1, $2, $3, COALESCE($4, (SELECT organization_id FROM users WHERE id = $5)), $5, $6)",
        Uuid::now_v7(),
        token_hash(&token),
        role,
        organization_id,
        user_id,
        label
    )
    .execute(pool)
    .await?;
    Ok(token)
}

/// The label of the token stored from `SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN`.
const BOOTSTRAP_LABEL: &str = "bootstrap admin";

/// Stores the bootstrap admin token (hashed) and revokes any earlier one, in
/// one transaction; running it again with the same token changes nothing.
pub async fn store_bootstrap_token(pool: &PgPool, token: &str) -> Result<(), sqlx::Error> {
    let hash = token_hash(token);
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "UPDATE api_tokens SET revoked_at = now() \
         WHERE label = $1 AND role = 'admin' AND revoked_at IS NULL AND token_sha256 <> $2",
        BOOTSTRAP_LABEL,
        &hash
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO api_tokens (id, token_sha256, role, label) VALUES ($1, $2, 'admin', $3) \
         ON CONFLICT (token_sha256) DO UPDATE SET revoked_at = NULL, role = 'admin', label = EXCLUDED.label",
        Uuid::now_v7(),
        &hash,
        BOOTSTRAP_LABEL
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Resolved already by a middleware (the idempotency keys').
        if let Some(principal) = parts.extensions.get::<Self>() {
            return Ok(principal.clone());
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer token is required"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))?;
        let row = crate::store::tokens::find_live(&state.pool, &token_hash(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token is unknown, expired or revoked"))?;
        let role = match row.role.as_str() {
            "admin" => Role::Admin,
            "org_admin" => Role::OrgAdmin,
            _ => Role::User,
        };
        Ok(Self {
            token_id: row.id,
            role,
            organization_id: row.organization_id,
            user_id: row.user_id,
            label: if row.label.is_empty() {
                format!("token {}", row.id)
            } else {
                row.label
            },
        })
    }
}
