//! Customizations (M13-M16): the add-in's settings document per user, the
//! organization's default, and resetting users to it.

use uuid::Uuid;

use crate::{AppState, auth::Principal, error::ApiError, routes::users::ActionResult};

/// Resets a user's customization to their organization's default (M8
/// "Reset sidebar customization").
pub async fn reset(_state: &AppState, _principal: &Principal, _id: Uuid) -> Result<ActionResult, ApiError> {
    Err(ApiError::not_implemented(
        "reset-customization is not available in this build",
    ))
}
