//! Whether the caller may see a user or an organization named in a path:
//! anything out of reach answers 404, exactly as if it did not exist.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::ApiError,
};

/// A user the caller may see.
pub use crate::store::users::Owner as VisibleUser;

/// The user, when the caller may see them (themself for a `user` token).
pub async fn user(pool: &PgPool, principal: &Principal, id: Uuid) -> Result<VisibleUser, ApiError> {
    crate::store::users::owner(pool, id)
        .await?
        .filter(|user| principal.may_act_on_user(user.id, user.organization_id))
        .ok_or_else(|| ApiError::not_found("user"))
}

/// Checks that the organization exists and that the caller may read what
/// concerns all its users (activity, statistics): an admin, or its own
/// organization admin. A `user` token gets 404 for another organization and
/// 403 for their own.
pub async fn organization(pool: &PgPool, principal: &Principal, id: Uuid) -> Result<(), ApiError> {
    let own = principal.organization_id == Some(id);
    let exists = crate::store::organizations::exists(pool, id).await?;
    match principal.role {
        _ if !exists => Err(ApiError::not_found("organization")),
        Role::Admin => Ok(()),
        Role::OrgAdmin if own => Ok(()),
        Role::User if own => Err(ApiError::forbidden(
            "only an admin or an organization admin can read what concerns a whole organization",
        )),
        Role::OrgAdmin | Role::User => Err(ApiError::not_found("organization")),
    }
}
